"""Accounting of every LLM call: requests, tokens, cache hits, failures and estimated cost,
per stage and model.

One :class:`Ledger` is shared by all stages of a run; :class:`MeteredLLM` records into it.
``ledger.summary_table()`` is what a run prints at the end, ``ledger.to_dict()`` what it
saves in its manifest.

Each call carries tags: ``stage`` and, optionally, ``unit`` (the item it was made for, e.g.
a unit id). A stage meters one item's calls with a tagged view, ``llm.tagged(unit=...)``,
and stores ``view.usage()`` (a plain dict, see :data:`USAGE_KEYS`) with that item's result;
:func:`merge_usage` adds such dicts up (e.g. usage stored by an earlier, interrupted
invocation plus this one's). ``Ledger(sink="ledger.jsonl")`` also appends one JSON line per
call (time, stage, unit, op, backend, model, tokens, cached, requests, retries, failure
kind, seconds): never prompt text, never a secret.

Example:
    >>> ledger = Ledger(sink="runs/x/llm-calls.jsonl")                   # doctest: +SKIP
    >>> llm = get_llm("openai:gpt-4o-mini", ledger=ledger)               # doctest: +SKIP
    >>> unit_llm = llm.tagged(unit="blocks.0.mlp.hook_post.7", stage="explain")  # doctest: +SKIP
    >>> ... await unit_llm.achat(messages) ...                           # doctest: +SKIP
    >>> unit_llm.usage()                                                 # doctest: +SKIP
    {'calls': 3, 'requests': 3, 'retries': 0, 'cache_hits': 0, ...}
    >>> ledger.usage(stage="explain", unit="blocks.0.mlp.hook_post.7")   # doctest: +SKIP

Prices are USD per million tokens, ``{"model": {"input": x, "output": y}}``. The built-in
table covers a few OpenAI models (list prices when this was written; check yours) and
is overridden by ``Ledger(prices=...)`` or a JSON file named by ``$TL_CONCEPTS_LLM_PRICES``.
A model with no price gets no cost (shown as ``n/a``), never a guessed one; the
in-process backend costs 0.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .base import LLM, ChatResult, Distributions, LLMFatalError, LLMWrapper, Message

log = logging.getLogger("tl_concepts.llm")

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
    "gpt-4o": {"input": 2.50, "output": 10.00},
    "gpt-4.1": {"input": 2.00, "output": 8.00},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40},
    "gpt-3.5-turbo": {"input": 0.50, "output": 1.50},
    "gpt-3.5-turbo-instruct": {"input": 1.50, "output": 2.00},
    "o4-mini": {"input": 1.10, "output": 4.40},
}
"""USD per million tokens. Overridable; see the module docstring."""

FREE_BACKENDS = {"in-process"}


@dataclass
class LedgerRow:
    """Counters of one (stage, backend, model)."""

    stage: str
    backend: str
    model: str
    calls: int = 0
    """Calls to ``chat`` / ``next_token_distributions``."""
    requests: int = 0
    """Requests actually made (HTTP requests or forward passes), retries included."""
    retries: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    """Tokens of requests actually made (cache hits are not counted)."""
    completion_tokens: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    """Failure kind -> count."""
    cost_usd: float | None = 0.0
    """Estimated cost; None when the model has no price."""


USAGE_KEYS = ("calls", "requests", "retries", "cache_hits", "prompt_tokens",
              "completion_tokens", "failures", "cost_usd")
"""Keys of a usage dict: counts (int), ``failures`` (failure kind -> count; a call that
stopped the job counts as ``"fatal:<kind>"``) and ``cost_usd`` (float, or None when a
model without a price made requests)."""


def empty_usage() -> dict[str, Any]:
    """A usage dict with every count 0 (see :data:`USAGE_KEYS`)."""
    return {"calls": 0, "requests": 0, "retries": 0, "cache_hits": 0, "prompt_tokens": 0,
            "completion_tokens": 0, "failures": {}, "cost_usd": 0.0}


def merge_usage(*usages: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sum of usage dicts (None entries are skipped); cost None when any part is None.

    Example:
        >>> a = {**empty_usage(), "calls": 2, "requests": 2, "failures": {"truncated": 1}}
        >>> b = {**empty_usage(), "calls": 1, "cache_hits": 1, "failures": {"truncated": 1}}
        >>> m = merge_usage(a, b)
        >>> m["calls"], m["cache_hits"], m["failures"]
        (3, 1, {'truncated': 2})
    """
    out = empty_usage()
    for u in usages:
        if u:
            _add_usage(out, u)
    return out


def _add_usage(into: dict[str, Any], u: Mapping[str, Any]) -> None:
    for k in ("calls", "requests", "retries", "cache_hits", "prompt_tokens",
              "completion_tokens"):
        into[k] += int(u.get(k) or 0)
    for kind, n in (u.get("failures") or {}).items():
        into["failures"][kind] = into["failures"].get(kind, 0) + int(n)
    cost = u.get("cost_usd", 0.0)
    if cost is None or into["cost_usd"] is None:
        into["cost_usd"] = None
    else:
        into["cost_usd"] += float(cost)


class Ledger:
    """Thread-safe counters per (stage, backend, model) and per (stage, unit), with a cost
    estimate and an optional JSONL sink (one line per call).

    Args:
        prices: USD per million tokens, ``{"model": {"input": x, "output": y}}``, over the
            built-in table.
        sink: a JSONL file to append one line per call to (created with its folder);
            settable later as ``ledger.sink``.
    """

    def __init__(self, prices: Mapping[str, Mapping[str, float]] | None = None, *,
                 sink: str | os.PathLike[str] | None = None) -> None:
        self.prices: dict[str, dict[str, float]] = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
        env = os.environ.get("TL_CONCEPTS_LLM_PRICES")
        if env:
            try:
                with open(env, encoding="utf-8") as f:
                    self.prices.update(_check_prices(json.load(f)))
            except (OSError, ValueError) as e:
                raise LLMFatalError(f"cannot read the price table TL_CONCEPTS_LLM_PRICES={env}: {e}")
        if prices:
            self.prices.update(_check_prices(prices))
        self.sink: Path | None = Path(sink) if sink is not None else None
        """JSONL file that gets one line per call (None: no file)."""
        self._rows: dict[tuple[str, str, str], LedgerRow] = {}
        self._units: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._sink_lock = threading.Lock()
        self._sink_warned = False
        self.listeners: list[Callable[[str, str | None], None]] = []
        """Called as ``fn(stage, unit)`` after each recorded call (e.g. to move a progress bar)."""

    # -- recording
    def _row(self, stage: str, backend: str, model: str) -> LedgerRow:
        key = (stage, backend, model)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = LedgerRow(stage, backend, model)
            if self.price(backend, model) is None:
                row.cost_usd = None
        return row

    def call_usage(self, result: ChatResult | Distributions, *, backend: str = "",
                   model: str = "") -> dict[str, Any]:
        """The usage dict of one call's result (cost from this ledger's prices)."""
        backend = backend or result.backend
        model = model or result.model
        u = empty_usage()
        u["calls"] = 1
        if result.cached:
            u["cache_hits"] = 1
        else:
            u["requests"] = int(result.requests)
            u["retries"] = int(result.retries)
            u["prompt_tokens"] = int(result.prompt_tokens)
            u["completion_tokens"] = int(result.completion_tokens)
            price = self.price(backend, model)
            if price is None:
                u["cost_usd"] = None if u["requests"] else 0.0
            else:
                u["cost_usd"] = (u["prompt_tokens"] * price["input"]
                                 + u["completion_tokens"] * price["output"]) / 1e6
        if result.failure is not None:
            u["failures"] = {result.failure.kind: 1}
        return u

    def record(self, result: ChatResult | Distributions, *, stage: str,
               unit: str | None = None, backend: str = "", model: str = "",
               op: str | None = None, seconds: float | None = None,
               also: dict[str, Any] | None = None) -> dict[str, Any]:
        """Count one call's result under ``stage`` (and ``unit``); returns its usage dict.

        ``also``: another usage dict to add the call to (a tagged view's own counters).
        """
        backend = backend or result.backend
        model = model or result.model  # the model asked for, not a dated alias
        u = self.call_usage(result, backend=backend, model=model)
        with self._lock:
            row = self._row(stage, backend, model)
            row.calls += 1
            if result.cached:
                row.cache_hits += 1
            else:
                row.requests += u["requests"]
                row.retries += u["retries"]
                row.prompt_tokens += u["prompt_tokens"]
                row.completion_tokens += u["completion_tokens"]
                if row.cost_usd is not None and u["cost_usd"] is not None:
                    row.cost_usd += u["cost_usd"]
            for kind, n in u["failures"].items():
                row.failures[kind] = row.failures.get(kind, 0) + n
            self._add_unit(stage, unit, u, also)
        if op is None:
            op = "chat" if isinstance(result, ChatResult) else "distributions"
        self._write_line(stage, unit, op, backend, model, u, seconds,
                         None if result.failure is None else result.failure.kind)
        for fn in self.listeners:
            fn(stage, unit)
        return u

    def record_fatal(self, kind: str, *, stage: str, backend: str, model: str,
                     unit: str | None = None, op: str = "chat",
                     also: dict[str, Any] | None = None) -> None:
        """Count a call that stopped the job (auth, unknown model, ...) as
        ``failures["fatal:<kind>"]``."""
        u = {**empty_usage(), "calls": 1, "failures": {"fatal:" + kind: 1}}
        with self._lock:
            row = self._row(stage, backend, model)
            row.calls += 1
            row.failures["fatal:" + kind] = row.failures.get("fatal:" + kind, 0) + 1
            self._add_unit(stage, unit, u, also)
        self._write_line(stage, unit, op, backend, model, u, None, "fatal:" + kind)

    def _add_unit(self, stage: str, unit: str | None, u: dict[str, Any],
                  also: dict[str, Any] | None) -> None:
        if unit is not None:
            _add_usage(self._units.setdefault((stage, unit), empty_usage()), u)
        if also is not None:
            _add_usage(also, u)

    def _write_line(self, stage: str, unit: str | None, op: str, backend: str, model: str,
                    u: dict[str, Any], seconds: float | None, failure: str | None) -> None:
        sink = self.sink
        if sink is None:
            return
        line = {"time": round(time.time(), 3), "stage": stage, "unit": unit, "op": op,
                "backend": backend, "model": model, "cached": bool(u["cache_hits"]),
                "requests": u["requests"], "retries": u["retries"],
                "prompt_tokens": u["prompt_tokens"],
                "completion_tokens": u["completion_tokens"], "cost_usd": u["cost_usd"],
                "failure": failure,
                "seconds": None if seconds is None else round(seconds, 4)}
        text = json.dumps(line, ensure_ascii=False) + "\n"
        try:
            with self._sink_lock:
                sink = Path(sink)
                sink.parent.mkdir(parents=True, exist_ok=True)
                with open(sink, "a", encoding="utf-8") as f:
                    f.write(text)
        except OSError as e:
            if not self._sink_warned:
                self._sink_warned = True
                log.warning("cannot append to the LLM call log %s (%s); calls are still "
                            "counted in memory", sink, e)

    def price(self, backend: str, model: str) -> dict[str, float] | None:
        """Price of ``model`` (exact name, else the longest known prefix), or None."""
        if backend in FREE_BACKENDS:
            return {"input": 0.0, "output": 0.0}
        if model in self.prices:
            return self.prices[model]
        best = max((k for k in self.prices if model.startswith(k)), key=len, default=None)
        return self.prices[best] if best else None

    # -- reading
    def rows(self) -> list[LedgerRow]:
        with self._lock:
            return [LedgerRow(**{**asdict(r), "failures": dict(r.failures)})
                    for r in self._rows.values()]

    def units(self) -> list[tuple[str, str]]:
        """The (stage, unit) tags seen, in first-seen order."""
        with self._lock:
            return list(self._units)

    def usage(self, stage: str | None = None, unit: str | None = None) -> dict[str, Any]:
        """Usage (see :data:`USAGE_KEYS`) of the calls tagged ``stage`` and/or ``unit``
        (None: any); ``usage()`` is the whole ledger.

        Example:
            >>> ledger.usage(stage="explain", unit="blocks.0.mlp.hook_post.7")["requests"]  # doctest: +SKIP
            3
        """
        out = empty_usage()
        with self._lock:
            if unit is not None:
                for (s, un), u in self._units.items():
                    if un == unit and (stage is None or s == stage):
                        _add_usage(out, u)
                return out
            for r in self._rows.values():
                if stage is None or r.stage == stage:
                    d = asdict(r)
                    if r.cost_usd is None and not r.requests:
                        d["cost_usd"] = 0.0  # an unpriced model that made no requests
                    _add_usage(out, d)
        return out

    def totals(self) -> dict[str, Any]:
        """Sums over all rows (cost None when any row with requests has no price)."""
        return self.usage()

    def to_dict(self, units: bool = True) -> dict[str, Any]:
        """JSON-ready: rows, totals and the prices used (for the run's manifest); with
        ``units``, also one entry per (stage, unit) tag seen (key ``"units"``, present
        only when calls were tagged). :meth:`from_dict` reads it back."""
        rows = self.rows()
        used = {r.model: self.price(r.backend, r.model) for r in rows}
        out: dict[str, Any] = {"rows": [asdict(r) for r in rows], "totals": self.totals(),
                               "prices_usd_per_million_tokens": used}
        if units:
            with self._lock:
                tagged = [{"stage": s, "unit": un, **_copy_usage(u)}
                          for (s, un), u in self._units.items()]
            if tagged:
                out["units"] = tagged
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *,
                  sink: str | os.PathLike[str] | None = None) -> "Ledger":
        """A ledger holding what :meth:`to_dict` wrote (rows, per-unit usage, prices), e.g.
        to add a resumed run to. ``from_dict(l.to_dict()).to_dict() == l.to_dict()``."""
        prices = {m: p for m, p in (data.get("prices_usd_per_million_tokens") or {}).items()
                  if p is not None}
        led = cls(prices=prices, sink=sink)
        led.merge(data)
        return led

    def merge(self, other: "Ledger | Mapping[str, Any]") -> "Ledger":
        """Add another ledger's counts (a :class:`Ledger` or its :meth:`to_dict`) to this
        one, e.g. the usage saved by an earlier, interrupted invocation. Returns self.

        Example:
            >>> led = Ledger().merge(json.load(open("run.json"))["llm_ledger"])  # doctest: +SKIP
        """
        data = other.to_dict() if isinstance(other, Ledger) else other
        with self._lock:
            for r in data.get("rows", []):
                add = LedgerRow(**{**r, "failures": dict(r.get("failures") or {})})
                key = (add.stage, add.backend, add.model)
                row = self._rows.get(key)
                if row is None:
                    self._rows[key] = add
                    continue
                for k in ("calls", "requests", "retries", "cache_hits", "prompt_tokens",
                          "completion_tokens"):
                    setattr(row, k, getattr(row, k) + getattr(add, k))
                for kind, n in add.failures.items():
                    row.failures[kind] = row.failures.get(kind, 0) + n
                row.cost_usd = (None if row.cost_usd is None or add.cost_usd is None
                                else row.cost_usd + add.cost_usd)
            for u in data.get("units", []):
                key2 = (str(u["stage"]), str(u["unit"]))
                _add_usage(self._units.setdefault(key2, empty_usage()), u)
        return self

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str],
                   prices: Mapping[str, Mapping[str, float]] | None = None) -> "Ledger":
        """A ledger rebuilt from a sink file (a torn last line, as after ``kill -9``, is
        skipped), e.g. to recover the usage of an interrupted invocation."""
        led = cls(prices=prices)
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                c = json.loads(line)
                stage, backend, model = str(c["stage"]), str(c["backend"]), str(c["model"])
            except (ValueError, KeyError, TypeError):
                continue
            u = {**empty_usage(), "calls": 1, "cache_hits": int(bool(c.get("cached"))),
                 **{k: int(c.get(k) or 0) for k in ("requests", "retries", "prompt_tokens",
                                                    "completion_tokens")},
                 "failures": {c["failure"]: 1} if c.get("failure") else {},
                 "cost_usd": c.get("cost_usd", 0.0)}
            row = {"stage": stage, "backend": backend, "model": model, **u}
            led.merge({"rows": [row], "units": [] if c.get("unit") is None else
                       [{"stage": stage, "unit": c["unit"], **u}]})
        return led

    def summary_table(self) -> str:
        """A plain-text table, one line per (stage, backend, model), and a total."""
        rows = sorted(self.rows(), key=lambda r: (r.stage, r.backend, r.model))
        head = ["stage", "backend", "model", "calls", "requests", "retries", "cache hits",
                "prompt tok", "compl tok", "failures", "cost USD"]
        lines = [head]

        def fmt(r: Any, stage: str, backend: str, model: str) -> list[str]:
            fails = ", ".join(f"{k}={v}" for k, v in sorted(r["failures"].items())) or "0"
            cost = "n/a" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
            return [stage, backend, model, str(r["calls"]), str(r["requests"]), str(r["retries"]),
                    str(r["cache_hits"]), str(r["prompt_tokens"]), str(r["completion_tokens"]),
                    fails, cost]

        for r in rows:
            lines.append(fmt(asdict(r), r.stage, r.backend, r.model))
        lines.append(fmt(self.totals(), "TOTAL", "", ""))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
        out.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(out)

    def __repr__(self) -> str:
        t = self.totals()
        return (f"Ledger(calls={t['calls']}, requests={t['requests']}, "
                f"cache_hits={t['cache_hits']}, cost_usd={t['cost_usd']})")


def _copy_usage(u: Mapping[str, Any]) -> dict[str, Any]:
    return {**u, "failures": dict(u.get("failures") or {})}


def _check_prices(prices: Any) -> dict[str, dict[str, float]]:
    if not isinstance(prices, Mapping):
        raise ValueError("prices must map model -> {'input': usd_per_M, 'output': usd_per_M}")
    out = {}
    for model, p in prices.items():
        if not isinstance(p, Mapping) or not {"input", "output"} <= set(p):
            raise ValueError(f"price of {model!r} needs 'input' and 'output' (USD per million tokens)")
        out[str(model)] = {"input": float(p["input"]), "output": float(p["output"])}
    return out


class MeteredLLM(LLMWrapper):
    """Records every call of the wrapped LLM in a :class:`Ledger` (``self.ledger``).

    Put it outermost (around the cache) so cache hits are counted as such. Fatal errors
    (:class:`~tl_concepts.errors.LLMError` and subclasses) are counted and re-raised,
    never turned into a failure. :meth:`tagged` gives a view that tags its calls with a
    unit (and a default stage) and keeps that view's own usage.

    Args:
        inner: the LLM to meter.
        ledger: where calls are counted (default: a new :class:`Ledger`).
        unit: tag of every call made through this object (None: untagged).
        stage: stage used when a call does not name one (None: ``"default"``).
    """

    def __init__(self, inner: LLM, ledger: Ledger | None = None, *, unit: str | None = None,
                 stage: str | None = None) -> None:
        super().__init__(inner)
        self.ledger = ledger if ledger is not None else Ledger()
        self.unit = unit
        self.stage = stage
        self._usage = empty_usage()

    def tagged(self, *, unit: str | None = None, stage: str | None = None) -> "MeteredLLM":
        """A view on the same LLM and ledger that tags its calls with ``unit`` (and uses
        ``stage`` when a call names none); unset tags are inherited from this object.
        The view adds no concurrency cap of its own (the backend's limiter is the one
        cap). ``view.usage()`` counts the calls made through the view.

        Example:
            >>> u = llm.tagged(unit="blocks.0.mlp.hook_post.7", stage="explain")  # doctest: +SKIP
            >>> await u.achat(messages)                                            # doctest: +SKIP
            >>> result.usage = u.usage()                                           # doctest: +SKIP
        """
        return MeteredLLM(self.inner, self.ledger,
                          unit=self.unit if unit is None else unit,
                          stage=self.stage if stage is None else stage)

    def usage(self) -> dict[str, Any]:
        """Usage (see :data:`USAGE_KEYS`) of the calls made through this object."""
        with self.ledger._lock:
            return _copy_usage(self._usage)

    def _stage(self, stage: str | None) -> str:
        return stage or self.stage or "default"

    async def achat(self, messages: Sequence[Message], *, stage: str | None = None,
                    **kw: Any) -> ChatResult:
        stage = self._stage(stage)
        t0 = time.perf_counter()
        try:
            result = await self.inner.achat(messages, stage=stage, **kw)
        except LLMFatalError as e:
            self.ledger.record_fatal(e.kind, stage=stage, backend=self.name, model=self.model,
                                     unit=self.unit, op="chat", also=self._usage)
            raise
        self.ledger.record(result, stage=stage, unit=self.unit, backend=self.name,
                           model=self.model, op="chat", seconds=time.perf_counter() - t0,
                           also=self._usage)
        return result

    async def anext_token_distributions(self, prompt: str, positions: Sequence[int],
                                        candidates: Sequence[str], *,
                                        stage: str | None = None,
                                        **kw: Any) -> Distributions:
        stage = self._stage(stage)
        t0 = time.perf_counter()
        try:
            result = await self.inner.anext_token_distributions(
                prompt, positions, candidates, stage=stage, **kw)
        except LLMFatalError as e:
            self.ledger.record_fatal(e.kind, stage=stage, backend=self.name, model=self.model,
                                     unit=self.unit, op="distributions", also=self._usage)
            raise
        self.ledger.record(result, stage=stage, unit=self.unit, backend=self.name,
                           model=self.model, op="distributions",
                           seconds=time.perf_counter() - t0, also=self._usage)
        return result
