"""LLM work on Ray workers: each worker rebuilds the caller's LLM, meters its own calls, and
the usage comes back to the caller's ledger, so a Ray run's ledger adds up like a local run's.

* :func:`llm_recipe`: a picklable setup that builds, in a worker, an LLM answering like the
  caller's (an OpenAI-compatible client with the endpoint's rate limits shared by all workers,
  an in-process model from its folder, or a picklable LLM as it is);
* :class:`WorkerMeter` / :func:`absorb_usage`: one item's calls metered in the worker, added
  to the stage's ledgers (and call logs) in the caller;
* :class:`Stopped`: a fatal LLM error returned with its item's usage, raised by the caller;
* :func:`imap_chats`: chat requests as Ray tasks, results as they finish;
* :func:`ask_chats`: the one batch loop of the chat stages (labels, descriptors), here or on Ray.

Example:
    >>> from tl_concepts.executor import map_items                       # doctest: +SKIP
    >>> map_items(fn, items, setup=llm_recipe(llm), executor="ray")       # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

from tl_concepts.crash import crashpoint
from tl_concepts.errors import LLMError
from tl_concepts.executor import LLMSpec, imap_items

R = TypeVar("R")
ChatRequest = tuple[str, str, list[Any], float, int]
"""``(unit, stage, messages, temperature, max_tokens)`` of one metered chat call."""


@dataclass(frozen=True)
class _Copy:
    """A setup returning a copy of a picklable LLM (e.g. a test fake), one per worker."""

    llm: Any

    def __call__(self) -> Any:
        return self.llm


def llm_recipe(llm: Any, ray_address: str | None = None) -> Callable[[], Any]:
    """A picklable setup that builds, in a Ray worker, an LLM answering like ``llm``.

    ``llm`` may be an :class:`LLMSpec` (built as is); otherwise the cache and ledger
    wrappers are stripped (each worker meters its own calls; the stage merges them into
    its ledger) and the backend is rebuilt from its settings: an OpenAI-compatible client
    (same model, endpoint, key, retry policy; its rate limits shared with the other
    workers through a Ray actor, see :func:`tl_concepts.llm.limits.shared_budget_limiter`),
    an in-process model from its folder, or any other picklable LLM copied as it is.
    The LLM cache (when ``llm`` has one) is the same file in the workers.
    """
    if isinstance(llm, LLMSpec):
        return llm.build
    from tl_concepts.llm.cache import CachedLLM
    from tl_concepts.llm.inprocess import InProcessBackend
    from tl_concepts.llm.openai_backend import OpenAIBackend

    cache: bool | str = False
    base = llm
    while hasattr(base, "inner"):
        if isinstance(base, CachedLLM):
            cache = str(base.cache.path)
        base = base.inner
    if isinstance(base, OpenAIBackend):
        from tl_concepts.llm.limits import shared_budget_limiter

        kw = {"base_url": base.base_url, "api_key": base._api_key, "timeout": base.timeout,
              "retry": base.retry, "context_length": base.context_length,
              "distribution_method": base.distribution_method, "alignment": base._alignment_setting,
              "limiter": shared_budget_limiter(base.limiter, base.base_url, ray_address)}
        return _BareLLM(LLMSpec(f"openai:{base.model}", kw, cache=cache))
    if isinstance(base, InProcessBackend) and (base.path is not None or base._embedded):
        where = f"in-process:{base.path}" if base.path is not None else "in-process"
        return _BareLLM(LLMSpec(where, {"device": base.device}, cache=cache))
    return _Copy(base)


@dataclass(frozen=True)
class _BareLLM:
    """Builds ``spec``'s LLM without the process ledger (the stage meters each item)."""

    spec: LLMSpec

    def __call__(self) -> Any:
        from tl_concepts.llm.factory import make_backend

        backend = make_backend(self.spec.spec, **self.spec.kwargs)
        if self.spec.cache:
            from tl_concepts.llm.cache import CachedLLM

            from tl_concepts.llm.factory import default_cache_path

            return CachedLLM(backend, default_cache_path() if self.spec.cache is True else self.spec.cache)
        return backend


@dataclass
class Stopped:
    """What a worker's item returns instead of raising a fatal error (``LLMError``: a wrong
    key, an unreachable endpoint): the error and the usage of the item's calls
    (:meth:`WorkerMeter.export`), so the caller counts the calls, as a local run does, and
    then raises the error."""

    error: BaseException
    usages: list[Any]


class WorkerMeter:
    """Meters one item's LLM calls in a worker: a fresh ledger (and call log) whose counts
    travel back with the result, for :func:`absorb_usage` to add to the stage's ledgers, so
    a Ray run's ledger totals equal a local run's."""

    def __init__(self) -> None:
        import tempfile

        from tl_concepts.llm.ledger import Ledger

        fd, self._sink = tempfile.mkstemp(prefix="tl-concepts-calls-", suffix=".jsonl")
        import os

        os.close(fd)
        self.ledger = Ledger(sink=self._sink)
        self._exported: dict[str, Any] | None = None

    def wrap(self, llm: Any) -> Any:
        """``llm`` metered into this item's ledger."""
        from tl_concepts.llm.ledger import MeteredLLM

        return MeteredLLM(llm, self.ledger)

    def export(self) -> dict[str, Any]:
        """The item's usage (:meth:`Ledger.to_dict`) and call-log lines; removes the log
        (a second call gives the same)."""
        import os
        from pathlib import Path

        if self._exported is None:
            try:
                lines = Path(self._sink).read_text(encoding="utf-8").splitlines()
            finally:
                os.unlink(self._sink)
            self._exported = {"ledger": self.ledger.to_dict(), "lines": lines}
        return self._exported


def absorb_usage(usage: dict[str, Any], ledgers: Sequence[Any]) -> None:
    """Add a worker item's usage (:meth:`WorkerMeter.export`) to each distinct ledger (and
    its call log, when it has one). ``None`` entries are skipped."""
    seen: set[int] = set()
    for led in ledgers:
        if led is None or id(led) in seen:
            continue
        seen.add(id(led))
        led.merge(usage["ledger"])
        if getattr(led, "sink", None) is not None and usage["lines"]:
            from pathlib import Path

            sink = Path(led.sink)
            sink.parent.mkdir(parents=True, exist_ok=True)
            with open(sink, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in usage["lines"]))
        for fn in getattr(led, "listeners", []):
            for _ in usage["lines"]:
                fn("", None)


def _chat_on_worker(item: tuple[str, str, list[Any], float, int], llm: Any) -> Any:
    """A Ray task: one chat request tagged ``unit``/``stage``, metered in the worker; returns
    ``(result, usage, exported)`` or :class:`Stopped` on a fatal LLM error."""
    from tl_concepts._sync import run_sync
    from tl_concepts.errors import LLMError

    unit, stage, messages, temperature, max_tokens = item
    meter = WorkerMeter()
    try:
        view = meter.wrap(llm).tagged(unit=unit, stage=stage)
        res = run_sync(view.achat(messages, temperature=temperature, max_tokens=max_tokens, stage=stage))
    except LLMError as e:
        return Stopped(e, [meter.export()])
    finally:
        meter.export()
    return res, view.usage(), meter.export()


def imap_chats(llm: Any, requests: Sequence[ChatRequest], *,
               ray_address: str | None = None) -> Iterator[tuple[int, Any, dict[str, Any]]]:
    """Chat requests ``(unit, stage, messages, temperature, max_tokens)`` as Ray tasks; yields
    ``(index, ChatResult, usage of that request)`` as each finishes. Each worker rebuilds
    ``llm`` (:func:`llm_recipe`); the workers' calls are added to ``llm.ledger`` (when it has
    one). A fatal LLM error stops the iteration and is raised here, as a local call raises it.

    Example:
        >>> for i, res, usage in imap_chats(llm, [("concept:3", "concepts.label", msgs, 0.0, 20)]):  # doctest: +SKIP
        ...     print(i, res.text, usage["requests"])
    """
    ledger = getattr(llm, "ledger", None)
    for i, out in imap_items(_chat_on_worker, requests, setup=llm_recipe(llm, ray_address), executor="ray",
                             ray_address=ray_address, ordered=False):
        if isinstance(out, Stopped):
            absorb_usage(out.usages[0], [ledger])
            raise out.error
        res, usage, exported = out
        absorb_usage(exported, [ledger])
        yield i, res, usage


async def ask_chats(llm: Any, requests: Sequence[ChatRequest], *, finish: Callable[[int, Any, dict[str, Any]], R],
                    save: Callable[[list[R]], None], batch_size: int, crash: str, executor: str = "local",
                    ray_address: str | None = None) -> None:
    """Ask every chat request and keep the answers batch by batch.

    ``finish(i, result, usage)`` turns the answer to ``requests[i]`` into a record;
    ``save(records)`` keeps a finished batch (``batch_size`` records; crash point ``crash``
    after each). Locally a batch's requests run concurrently; with ``executor="ray"`` they
    are Ray tasks (:func:`imap_chats`). A fatal :class:`~tl_concepts.errors.LLMError` stops
    the stage after the answers that finished are saved, and is raised.

    Example:
        >>> await ask_chats(llm, [("concept:3", "concepts.label", msgs, 0.0, 20)],            # doctest: +SKIP
        ...                 finish=lambda i, res, usage: res.text, save=print, batch_size=16, crash="x")
    """
    if executor == "ray":
        await asyncio.to_thread(_ask_on_ray, llm, requests, finish, save, batch_size, crash, ray_address)
        return

    async def one(i: int) -> R:
        unit, stage, messages, temperature, max_tokens = requests[i]
        view = llm.tagged(unit=unit, stage=stage)  # meters this item's call
        res = await view.achat(messages, temperature=temperature, max_tokens=max_tokens, stage=stage)
        return finish(i, res, view.usage())

    for start in range(0, len(requests), batch_size):
        got = await asyncio.gather(*(one(i) for i in range(start, min(start + batch_size, len(requests)))),
                                   return_exceptions=True)
        save([g for g in got if not isinstance(g, BaseException)])  # kept even when another request failed
        errors = [g for g in got if isinstance(g, BaseException)]
        if errors:  # a fatal LLM error (or a bug) stops the stage
            raise next((e for e in errors if isinstance(e, LLMError)), errors[0])
        crashpoint(crash)


def _ask_on_ray(llm: Any, requests: Sequence[ChatRequest], finish: Callable[[int, Any, dict[str, Any]], R],
                save: Callable[[list[R]], None], batch_size: int, crash: str, ray_address: str | None) -> None:
    pending: list[R] = []
    try:
        for i, res, usage in imap_chats(llm, requests, ray_address=ray_address):  # a fatal LLM error stops here
            pending.append(finish(i, res, usage))
            if len(pending) >= batch_size:
                save(pending)
                pending = []
                crashpoint(crash)
    finally:
        save(pending)  # what finished is kept when the stage stops
