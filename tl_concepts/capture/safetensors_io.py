"""Atomic safetensors writes and memory-mapped reads (no copy until a slice is used).

Example:
    >>> write_tensors("x.safetensors", {"a": np.zeros((2, 3), np.float32)})   # doctest: +SKIP
    >>> read_tensors("x.safetensors")["a"].shape                                # doctest: +SKIP
    (2, 3)
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import save_file

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
           "I32": np.int32, "BF16": None, "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Run ``write(tmp_path)``, fsync the file and rename it to ``path``.

    A reader never sees a half-written file under the final name; on any error (a full
    disk included) the temp file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to a safetensors file atomically (see :func:`atomic_write`)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))


def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Memory-map every tensor of a safetensors file as a read-only numpy array."""
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == begin:
            out[name] = np.zeros(shape, dtype)
            continue
        out[name] = np.memmap(path, dtype=dtype, mode="r", offset=8 + n + begin, shape=shape)
    return out


def write_json(path: str | Path, obj: object) -> None:
    """Write JSON atomically (see :func:`atomic_write`)."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
