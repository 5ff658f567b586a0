"""Run a coroutine from synchronous code, also inside a running event loop (Jupyter).

Example:
    >>> import asyncio
    >>> from tl_concepts._sync import run_sync
    >>> async def two():
    ...     return 2
    >>> run_sync(two())
    2
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def loop_is_running() -> bool:
    """True when called from inside a running asyncio loop (a Jupyter cell, say)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``; inside a running loop, on a worker thread with its own loop.

    The calling thread waits for the result (a notebook cell blocks as with any long call);
    exceptions, ``KeyboardInterrupt`` aside, are re-raised in the caller unchanged.
    """
    if not loop_is_running():
        return asyncio.run(coro)
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def work() -> None:
        try:
            box["value"] = ctx.run(asyncio.run, coro)
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    t = threading.Thread(target=work, name="tl-concepts-sync", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
