"""Atomic safetensors writes and memory-mapped reads (no copy until a slice is used).

Example:
    >>> write_tensors("x.safetensors", {"a": np.zeros((2, 3), np.float32)})   # doctest: +SKIP
    >>> read_tensors("x.safetensors")["a"].shape                                # doctest: +SKIP
    (2, 3)
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tl_concepts.atomic import atomic_write, write_json

__all__ = ["atomic_write", "check_tensors", "read_tensors", "write_json", "write_tensors"]

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
           "I32": np.int32, "BF16": None, "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}


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


def check_tensors(path: str | Path) -> str | None:
    """Why the safetensors file at ``path`` cannot be read whole (missing, truncated, bad
    header), or None when its header parses and the file holds every byte it announces.
    Reads only the header."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size:
                return f"{path.name} has a damaged header"
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as e:
        return f"{path.name} is damaged ({type(e).__name__})"
    if size < 8 + n + end:
        return f"{path.name} is truncated ({size} of {8 + n + end} bytes)"
    return None
