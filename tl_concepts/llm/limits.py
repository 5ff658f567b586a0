"""Limits shared by every stage that uses one backend: a cap on requests in flight, a
requests-per-minute and a tokens-per-minute budget, and the retry policy.

Example:
    >>> lim = Limiter(max_concurrency=8, requests_per_minute=500, tokens_per_minute=200_000)
    >>> async def call():                                   # doctest: +SKIP
    ...     async with lim.slot(tokens=1200):
    ...         ...                                         # one HTTP request
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import AsyncIterator


class _Bucket:
    """Token bucket with reservations: a caller takes what it needs (the level may go
    negative) and waits for the deficit to refill, so the long-run rate is exact and
    callers are served in arrival order."""

    def __init__(self, per_minute: float, burst_seconds: float) -> None:
        if per_minute <= 0:
            raise ValueError("a per-minute limit must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.t = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self, n: float) -> float:
        """Take ``n``; return the seconds to wait before using them."""
        with self._lock:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
            self.t = now
            self.level -= n
            return 0.0 if self.level >= 0 else -self.level / self.rate

    def refund(self, n: float) -> None:
        """Give back ``n`` (negative: take more), e.g. estimated minus actual tokens."""
        with self._lock:
            self.level = min(self.capacity, self.level + n)


class Limiter:
    """One cap on requests in flight plus optional requests/tokens-per-minute budgets.

    Share one instance between everything that talks to the same endpoint (the factory
    does). The concurrency cap holds per event loop (the sync wrappers run one loop per
    call, so there it is trivially met); the per-minute budgets hold across loops and
    threads of the process.
    """

    def __init__(self, max_concurrency: int = 16, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, burst_seconds: float = 5.0) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.max_concurrency = int(max_concurrency)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.burst_seconds = burst_seconds
        self._rpm = _Bucket(requests_per_minute, burst_seconds) if requests_per_minute else None
        self._tpm = _Bucket(tokens_per_minute, burst_seconds) if tokens_per_minute else None
        self._sems: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.budget: object | None = None
        """A Ray actor handle of a :class:`SharedBudget` that holds the per-minute budgets
        instead of this process (set by :func:`shared_budget_limiter`)."""

    def __getstate__(self) -> dict[str, object]:
        # A limiter travels to Ray workers as its settings (and the shared budget's handle).
        return {"max_concurrency": self.max_concurrency, "requests_per_minute": self.requests_per_minute,
                "tokens_per_minute": self.tokens_per_minute, "burst_seconds": self.burst_seconds,
                "budget": self.budget}

    def __setstate__(self, state: dict[str, object]) -> None:
        budget = state.pop("budget")
        self.__init__(**state)  # type: ignore[misc]  # rebuild the locks and buckets
        self.budget = budget

    async def _reserve(self, tokens: int) -> float:
        if self.budget is not None:
            return float(await self.budget.reserve.remote(1, tokens))  # type: ignore[attr-defined]
        wait = 0.0
        if self._rpm is not None:
            wait = max(wait, self._rpm.reserve(1))
        if self._tpm is not None and tokens:
            wait = max(wait, self._tpm.reserve(tokens))
        return wait

    def _sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._sems.get(loop)
            if sem is None:
                sem = self._sems[loop] = asyncio.Semaphore(self.max_concurrency)
            return sem

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int = 0) -> AsyncIterator[None]:
        """Wait for the budgets and a free slot; hold the slot for the block."""
        wait = await self._reserve(tokens)
        if wait > 0:
            await asyncio.sleep(wait)
        async with self._sem():
            with self._lock:
                self.in_flight += 1
                self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self.in_flight -= 1

    def settle_tokens(self, estimated: int, actual: int) -> None:
        """Correct the token budget once the real usage of a request is known."""
        if self.budget is not None and self.tokens_per_minute and actual >= 0:
            self.budget.refund.remote(estimated - actual)  # type: ignore[attr-defined]
        elif self._tpm is not None and actual >= 0:
            self._tpm.refund(estimated - actual)


class SharedBudget:
    """The requests/tokens-per-minute budgets of one endpoint, shared by every Ray worker
    that talks to it (run as a named Ray actor: see :func:`shared_budget_limiter`)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None,
                 burst_seconds: float = 5.0) -> None:
        self._rpm = _Bucket(requests_per_minute, burst_seconds) if requests_per_minute else None
        self._tpm = _Bucket(tokens_per_minute, burst_seconds) if tokens_per_minute else None

    def reserve(self, requests: int, tokens: int) -> float:
        """Take one request's budget; return the seconds the caller waits before sending it."""
        wait = 0.0
        if self._rpm is not None and requests:
            wait = max(wait, self._rpm.reserve(requests))
        if self._tpm is not None and tokens:
            wait = max(wait, self._tpm.reserve(tokens))
        return wait

    def refund(self, tokens: float) -> None:
        """Give back estimated minus actual tokens."""
        if self._tpm is not None:
            self._tpm.refund(tokens)


def shared_budget_limiter(limiter: Limiter, endpoint: str, ray_address: str | None = None) -> Limiter:
    """A copy of ``limiter`` for Ray workers whose per-minute budgets live in one Ray actor
    per endpoint and settings (so N workers together stay under the limits; the
    concurrency cap stays per worker). Without per-minute limits, a plain copy.

    Example:
        >>> lim = shared_budget_limiter(Limiter(8, requests_per_minute=600), "http://x/v1")  # doctest: +SKIP
    """
    out = Limiter(limiter.max_concurrency, limiter.requests_per_minute, limiter.tokens_per_minute,
                  limiter.burst_seconds)
    if not (limiter.requests_per_minute or limiter.tokens_per_minute):
        return out
    from tl_concepts.executor import ensure_ray

    ray = ensure_ray(ray_address)
    name = (f"tl-concepts-budget:{endpoint}:{limiter.requests_per_minute}:{limiter.tokens_per_minute}:"
            f"{limiter.burst_seconds}")
    actor = ray.remote(num_cpus=0)(SharedBudget).options(name=name, get_if_exists=True)
    out.budget = actor.remote(limiter.requests_per_minute, limiter.tokens_per_minute, limiter.burst_seconds)
    return out


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter; ``Retry-After`` from the server wins.

    Retried: 429, 408, 409, 5xx, timeouts, connection errors and malformed bodies.
    Never retried: 400/401/403/404/422 (they stop the job or are recorded as failures).
    """

    max_retries: int = 5
    """Retries after the first attempt."""
    base_delay: float = 0.5
    """Seconds before the first retry (doubled each time, before jitter)."""
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    """A ``Retry-After`` longer than this is not waited for: the call fails at once."""
    jitter: float = 0.5
    """Fraction of each backoff delay drawn at random (0: none, 1: full jitter)."""

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (0-based) when the server gave no hint."""
        r = (rng or random).random()
        d = min(self.max_delay, self.base_delay * (2 ** attempt))
        return d * (1 - self.jitter * r)

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait, or None when the server's ``Retry-After`` is over the limit."""
        if retry_after is not None and retry_after >= 0:
            if retry_after > self.max_retry_after:
                return None
            return retry_after + random.random() * min(0.1 * retry_after, 1.0)
        return self.backoff(attempt)


def parse_retry_after(headers: object) -> float | None:
    """Seconds from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = get("retry-after")
    if not ra:
        return None
    try:
        return float(ra)
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(ra)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
