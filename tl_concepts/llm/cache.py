"""Persistent answer cache: rerunning a finished job makes zero requests, an interrupted
one resumes where it stopped.

One SQLite file in WAL mode (several processes may read and write it at once). The key
is the sha256 of a canonical JSON of everything that determines the answer: the
operation, the backend's :meth:`~tl_concepts.llm.base.LLM.cache_identity` (backend,
model, base URL, weights fingerprint, ...), the messages or prompt, and the parameters.
The API key is never part of it, nor stored anywhere in the file; the pipeline stage is
not part of it either (the same question asked by two stages is answered once).

Answers are stored as soon as they arrive. Transient failures
(:func:`~tl_concepts.llm.base.is_transient`: retries exhausted, transient) are never stored,
so a rerun after the server recovers asks again; nor are unexpected errors or missing
logprobs. Permanent ones (unparseable answer, refusal, content filter, context overflow,
truncated at ``max_tokens``) are, unless ``cache_failures=False``.

A cache file that cannot be opened or read as SQLite (garbage bytes, a folder, no
permission) raises :class:`~tl_concepts.errors.LLMError` with ``kind="cache"``, naming the
file and what to do; a passing problem (the disk is busy, locked) only logs a warning and
the call goes to the backend.

Example:
    >>> llm = CachedLLM(OpenAIBackend("gpt-4o-mini"), "runs/llm-cache.sqlite")  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from tl_concepts.errors import LLMError

from .base import LLM, ChatResult, Distributions, Failure, LLMWrapper, Message, is_transient
from .util import as_messages, canonical_json, check_distribution_args, request_key

log = logging.getLogger("tl_concepts.llm")

CACHEABLE_FAILURES = frozenset({"unparseable", "refusal", "content_filter", "context_overflow",
                                "truncated"})
"""Permanent failure kinds that may be cached (never a transient one)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    request TEXT NOT NULL,
    answer TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class LLMCache:
    """The SQLite store: ``get(key)`` / ``put(key, op, request, answer)``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.suffix == "" or self.path.is_dir():
            self.path = self.path / "llm-cache.sqlite"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connect()
        except (OSError, sqlite3.Error) as e:
            raise self._unusable(e) from None

    def _unusable(self, e: BaseException) -> LLMError:
        p = str(self.path)
        return LLMError(
            f"the LLM answer cache {p} cannot be used ({e}). Move it aside to start a fresh "
            f"cache (mv '{p}' '{p}.bad'), point TL_CONCEPTS_LLM_CACHE / cache= at another "
            "file, or pass cache=False to run without a cache.", "cache")

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False,
                               isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            for _ in range(50):  # switching to WAL needs a moment alone with the file
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    time.sleep(0.1)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            conn.execute("SELECT key, op, request, answer, created FROM answers LIMIT 0")
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _failed(self, e: sqlite3.Error, what: str) -> None:
        """Corruption stops the job (LLMError "cache"); a passing problem is a warning."""
        if not isinstance(e, sqlite3.OperationalError):  # DatabaseError: not a database,
            raise self._unusable(e) from None            # malformed image, ...
        log.warning("LLM cache %s failed (%s) on %s; %s", what, e, self.path,
                    "treating as a miss" if what == "read" else "the answer is not cached")

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with self._lock:
                row = self._connect().execute(
                    "SELECT answer FROM answers WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as e:
            self._failed(e, "read")
            return None
        if not row:
            return None
        try:
            found = json.loads(row[0])
        except (TypeError, ValueError) as e:
            log.warning("unreadable entry in the LLM cache %s (%s); asking again", self.path, e)
            return None
        return found if isinstance(found, dict) else None

    def put(self, key: str, op: str, request: Any, answer: dict[str, Any]) -> None:
        try:
            with self._lock:
                self._connect().execute(
                    "INSERT OR REPLACE INTO answers(key, op, request, answer, created) "
                    "VALUES (?,?,?,?,?)",
                    (key, op, canonical_json(request), json.dumps(answer), time.time()))
        except sqlite3.Error as e:
            self._failed(e, "write")

    def __len__(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._connect().execute("DELETE FROM answers")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


class CachedLLM(LLMWrapper):
    """Answers from the cache when it can, else asks the wrapped LLM and stores the answer.

    Identical requests in flight at the same time are sent once.
    """

    def __init__(self, inner: LLM, cache: LLMCache | str | os.PathLike[str], *,
                 cache_failures: bool = True) -> None:
        super().__init__(inner)
        self.cache = cache if isinstance(cache, LLMCache) else LLMCache(cache)
        self.cache_failures = cache_failures
        self.hits = 0
        self.misses = 0
        self._pending: dict[tuple[int, str], asyncio.Future[Any]] = {}

    def _storable(self, result: ChatResult | Distributions) -> bool:
        if result.failure is None:
            return True
        kind = result.failure.kind
        if is_transient(kind):  # a rerun must ask again (the cause may be gone)
            return False
        return self.cache_failures and kind in CACHEABLE_FAILURES

    async def _cached(self, op: str, request: dict[str, Any], call: Any, load: Any) -> Any:
        key = request_key(request)
        found = self.cache.get(key)
        if found is not None:
            self.hits += 1
            return load(found)
        slot = (id(asyncio.get_running_loop()), key)
        pending = self._pending.get(slot)
        if pending is not None:  # the same request is already on its way
            result = await asyncio.shield(pending)
            self.hits += 1
            return load(_dump(result))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[slot] = fut
        try:
            self.misses += 1
            result = await call()
            if self._storable(result):
                self.cache.put(key, op, request, _dump(result))
            fut.set_result(result)
            return result
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._pending.pop(slot, None)

    async def achat(self, messages: Sequence[Message], *, temperature: float = 0.0,
                    max_tokens: int = 256, json_output: bool = False,
                    stage: str = "default", **kw: Any) -> ChatResult:
        msgs = as_messages(messages)
        request = {"op": "chat", "llm": self.inner.cache_identity(),
                   "messages": [[m.role, m.content] for m in msgs],
                   "temperature": float(temperature), "max_tokens": int(max_tokens),
                   "json_output": bool(json_output), **kw}

        def call() -> Any:
            return self.inner.achat(msgs, temperature=temperature, max_tokens=max_tokens,
                                    json_output=json_output, stage=stage, **kw)

        return await self._cached("chat", request, call, _load_chat)

    async def anext_token_distributions(self, prompt: str, positions: Sequence[int],
                                        candidates: Sequence[str], *, stage: str = "default",
                                        **kw: Any) -> Distributions:
        pos, cands = check_distribution_args(prompt, positions, candidates)
        request = {"op": "next_token_distributions", "llm": self.inner.cache_identity(),
                   "prompt": prompt, "positions": pos, "candidates": cands, **kw}

        def call() -> Any:
            return self.inner.anext_token_distributions(prompt, pos, cands, stage=stage, **kw)

        return await self._cached("dist", request, call, _load_dist)


def _dump(result: ChatResult | Distributions) -> dict[str, Any]:
    d = asdict(result)
    for k in ("cached", "requests", "retries"):
        d.pop(k, None)
    return d


def _load_failure(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    if d.get("failure") is not None:
        d["failure"] = Failure(**d["failure"])
    return d


def _load_chat(d: dict[str, Any]) -> ChatResult:
    return ChatResult(**_load_failure(d), cached=True)


def _load_dist(d: dict[str, Any]) -> Distributions:
    return Distributions(**_load_failure(d), cached=True)
