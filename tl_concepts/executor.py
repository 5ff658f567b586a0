"""Run independent item jobs locally or as Ray tasks, results in input order.

A stage that works item by item (units to explain, concepts to label, sentences to
describe, corpus shards to capture) can hand its items to :func:`map_items`:

* ``executor="local"``: in this process, one item after another.
* ``executor="ray"``: on a Ray cluster (``pip install tl-concepts[ray]``;
  ``ray_address=None`` starts or joins a local one, ``"auto"`` or ``"ray://host:10001"``
  joins an existing cluster). ``num_workers`` Ray actors each build their own context
  once (an LLM client, an in-process model: whatever ``setup`` returns), then take items
  as they free up; nothing unpicklable crosses the wire, only ``setup``, ``fn``, the
  items and the results.

``fn(item, context)`` must be a module-level function (or a picklable callable) and must
return data. A per-item failure should be returned as data (as the LLM layer's
``Failure``); an exception stops the whole map, as locally: the exception the item
raised (e.g. ``LLMError``) is re-raised in the caller, not a Ray wrapper.

:class:`LLMSpec` is a picklable recipe for an LLM (``get_llm`` arguments), so each
worker builds its own client or model: ``setup=LLMSpec("openai:gpt-4o-mini").build``.

Example:
    >>> def square(item, ctx):
    ...     return item * item + ctx
    >>> map_items(square, [1, 2, 3], setup=_Const(10))
    [11, 14, 19]
"""
from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence, TypeVar

from tl_concepts.errors import ConfigError

log = logging.getLogger("tl_concepts.executor")

T = TypeVar("T")
R = TypeVar("R")
ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class _Const:
    """A setup returning a fixed value (picklable)."""

    value: Any

    def __call__(self) -> Any:
        return self.value


@dataclass(frozen=True)
class LLMSpec:
    """A picklable recipe for an LLM: what :func:`tl_concepts.llm.get_llm` gets.

    Example:
        >>> spec = LLMSpec("openai:gpt-4o-mini", {"max_concurrency": 8})
        >>> spec
        LLMSpec(spec='openai:gpt-4o-mini', kwargs={'max_concurrency': 8}, cache=False)
    """

    spec: str | None = None
    """``get_llm`` spec (``"in-process"``, ``"openai:MODEL"``, ...; None: the default)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Backend arguments (``base_url``, ``max_concurrency``, ``batch_size``...). An
    ``api_key`` is carried to the workers but never shown; prefer the workers' own
    ``OPENAI_API_KEY`` (Ray ``runtime_env`` env_vars)."""
    cache: bool | str = False
    """``get_llm``'s cache argument in the worker (a path shared by the workers, or
    False; the default cache file is per machine)."""

    def __repr__(self) -> str:
        shown = {k: ("***" if "key" in k.lower() else v) for k, v in self.kwargs.items()}
        return f"LLMSpec(spec={self.spec!r}, kwargs={shown!r}, cache={self.cache!r})"

    def build(self) -> Any:
        """The LLM (``get_llm(spec, cache=cache, **kwargs)``), built where this runs."""
        from tl_concepts.llm import get_llm

        return get_llm(self.spec, cache=self.cache, **self.kwargs)


def check_executor(executor: str) -> str:
    """``executor`` if known, else a :class:`ConfigError` saying what to use."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}: use 'local' or 'ray'")
    return executor


def map_items(fn: Callable[[T, Any], R], items: Sequence[T], *, setup: Callable[[], Any] | None = None,
              executor: ExecutorName = "local", ray_address: str | None = None, num_workers: int | None = None,
              num_cpus: float = 1, num_gpus: float = 0, progress: bool = False) -> list[R]:
    """``[fn(item, context) for item in items]``, locally or on Ray, in input order.

    Args:
        fn: ``fn(item, context) -> result``; module-level (picklable) for Ray.
        items: the independent jobs (picklable for Ray).
        setup: builds the per-worker context once (e.g. ``LLMSpec(...).build``); None
            gives ``context=None``.
        executor: ``"local"`` or ``"ray"``.
        ray_address: cluster to join (None: a local cluster, started if needed).
        num_workers: Ray actors (default: the cluster's CPUs / ``num_cpus``, at most
            the number of items).
        num_cpus, num_gpus: resources per Ray worker (e.g. ``num_gpus=1`` for a model
            replica per GPU).
        progress: show a progress bar.

    Example:
        >>> map_items(lambda item, ctx: item + 1, [1, 2])
        [2, 3]
    """
    return [res for _, res in imap_items(fn, items, setup=setup, executor=executor, ray_address=ray_address,
                                         num_workers=num_workers, num_cpus=num_cpus, num_gpus=num_gpus,
                                         progress=progress, ordered=True)]


def imap_items(fn: Callable[[T, Any], R], items: Sequence[T], *, setup: Callable[[], Any] | None = None,
               executor: ExecutorName = "local", ray_address: str | None = None, num_workers: int | None = None,
               num_cpus: float = 1, num_gpus: float = 0, progress: bool = False,
               ordered: bool = True) -> Iterator[tuple[int, R]]:
    """Yield ``(index, fn(item, context))`` as results arrive, so a stage can write each one
    at once (an interrupted run keeps what finished).

    Arguments as :func:`map_items`. ``ordered=True`` yields in input order (a result waits
    for the ones before it: e.g. capture shards appended to one store); ``ordered=False``
    yields in completion order (e.g. one result file per unit). Closing the generator early
    stops the Ray workers.

    Example:
        >>> list(imap_items(lambda item, ctx: item * 2, [3, 4]))
        [(0, 6), (1, 8)]
    """
    check_executor(executor)
    items = list(items)
    if not items:
        return
    if executor == "local":
        ctx = setup() if setup is not None else None
        for i, item in enumerate(_bar(items, progress)):
            yield i, fn(item, ctx)
        return
    done_early: dict[int, Any] = {}
    nxt = 0
    for i, res in _imap_ray(fn, items, setup, ray_address, num_workers, num_cpus, num_gpus, progress):
        if not ordered:
            yield i, res
            continue
        done_early[i] = res
        while nxt in done_early:
            yield nxt, done_early.pop(nxt)
            nxt += 1


def _bar(items: list[Any], progress: bool) -> Any:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="items")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("executor 'ray' needs Ray: pip install 'tl-concepts[ray]'") from e
    return ray


def ensure_ray(ray_address: str | None = None) -> Any:
    """The ``ray`` module, connected (``ray.init(address=ray_address)`` unless already).

    A ``host:port`` / ``ray://host:port`` address that does not answer is a
    :class:`ConfigError` at once (``ray.init`` would retry it for minutes). When this process
    is already connected, that connection is used; a warning names it if ``ray_address``
    looks like another cluster.
    """
    ray = _import_ray()
    check_reachable(ray_address)
    if ray.is_initialized():
        if ray_address not in (None, "auto"):
            current = _connected_address(ray)
            if current and _host_port(ray_address) not in (None, _host_port(current)):
                log.warning("this process is already connected to the Ray cluster at %s, not %s: using that "
                            "one (restart the Python process, or call ray.shutdown(), to switch)", current, ray_address)
        return ray
    try:
        ray.init(address=ray_address, log_to_driver=False, ignore_reinit_error=True)
    except ConnectionError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {ray_address!r}: {e}; start one with "
                          "'ray start --head' or leave the address out for a local cluster") from e
    return ray


def _host_port(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` / ``ray://host:port`` address; None for ``auto`` and the like."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address or "")
    return (m.group(1), int(m.group(2))) if m else None


def _connected_address(ray: Any) -> str | None:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # an older Ray without the field: nothing to compare
        return None


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A :class:`ConfigError` at once when a ``host:port`` Ray address does not answer.

    Example:
        >>> check_reachable(None)   # None / "auto": Ray finds or starts the cluster itself
    """
    hp = _host_port(address)
    if hp is None:  # None, "auto", "local": Ray finds or starts the cluster itself
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({e.strerror or e}); start one with "
                          "'ray start --head', check the address, or leave it out for a local cluster") from None


class _Worker:
    """One Ray actor: its own context, then items on demand."""

    def __init__(self, setup: Callable[[], Any] | None) -> None:
        self.ctx = setup() if setup is not None else None

    def run(self, fn: Callable[[Any, Any], Any], index: int, item: Any) -> tuple[int, Any]:
        return index, fn(item, self.ctx)


def _imap_ray(fn: Callable[[Any, Any], Any], items: list[Any], setup: Callable[[], Any] | None,
              ray_address: str | None, num_workers: int | None, num_cpus: float, num_gpus: float,
              progress: bool) -> Iterator[tuple[int, Any]]:
    ray = ensure_ray(ray_address)
    if num_workers is None:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        num_workers = int(max(1, cpus // max(num_cpus, 1e-9))) if num_cpus else 1
    num_workers = max(1, min(num_workers, len(items)))
    actor_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_Worker)
    workers = [actor_cls.remote(setup) for _ in range(num_workers)]
    fn_ref = ray.put(fn)
    pending: dict[Any, Any] = {}
    queue = list(enumerate(items))[::-1]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="items (ray)")
    try:
        for w in workers:  # one item per worker in flight; the next when it frees up
            if queue:
                i, item = queue.pop()
                pending[w.run.remote(fn_ref, i, item)] = w
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            w = pending.pop(ref)
            try:
                i, res = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                raise (cause if isinstance(cause, BaseException) else e) from None
            if bar is not None:
                bar.update(1)
            if queue:
                j, item = queue.pop()
                pending[w.run.remote(fn_ref, j, item)] = w
            yield i, res
    finally:
        if bar is not None:
            bar.close()
        for w in workers:
            ray.kill(w)
