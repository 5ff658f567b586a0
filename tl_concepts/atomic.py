"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one.

Example:
    >>> from tl_concepts.atomic import write_json
    >>> write_json("/tmp/tl-concepts-example.json", {"a": 1})
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Run ``write(tmp_path)``, fsync the file and rename it to ``path``.

    On any error (a full disk included) the temp file is removed and the error re-raised;
    the file gets the usual permissions (not mkstemp's 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> Path:
    """Write JSON atomically (``indent=1``, UTF-8 kept, unless ``dump_kwargs`` say otherwise)."""
    kw = {"indent": 1, "ensure_ascii": False, **dump_kwargs}
    return write_text(path, json.dumps(obj, **kw))


@contextmanager
def replacing_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Build a folder aside and swap it in for ``out`` when the block succeeds.

    Example:
        >>> with replacing_dir("/tmp/tl-concepts-example-dir") as tmp:   # doctest: +SKIP
        ...     (tmp / "index.html").write_text("...")
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "this folder") -> Iterator[Path]:
    """Hold an exclusive writer lock on ``folder`` (``<folder>/.lock``) for the block.

    A second writer gets :class:`tl_concepts.errors.FolderLockedError` at once, naming the
    holder's pid; readers need no lock. The lock dies with its process (``flock``), so a
    ``kill -9`` never leaves a stale lock.

    Example:
        >>> with folder_lock("/tmp/tl-concepts-example-lock"):   # doctest: +SKIP
        ...     pass
    """
    import fcntl

    from tl_concepts.errors import FolderLockedError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    f = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise FolderLockedError(
                f"{folder} is being written by {holder}; wait for it to finish, or stop it, "
                f"before writing {what} again") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield folder
    finally:
        f.close()  # releases the lock
