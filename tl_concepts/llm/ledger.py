"""Accounting of every LLM call: requests, tokens, cache hits, failures and estimated cost,
per stage and model.

One :class:`Ledger` is shared by all stages of a run; :class:`MeteredLLM` records into it.
``ledger.summary_table()`` is what a run prints at the end, ``ledger.to_dict()`` what it
saves in its manifest.

Prices are USD per million tokens, ``{"model": {"input": x, "output": y}}``. The built-in
table covers a few OpenAI models (list prices when this was written; check yours) and
is overridden by ``Ledger(prices=...)`` or a JSON file named by ``$TL_CONCEPTS_LLM_PRICES``.
A model with no price gets no cost (shown as ``n/a``), never a guessed one; the
in-process backend costs 0.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from .base import LLM, ChatResult, Distributions, LLMFatalError, LLMWrapper, Message

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


class Ledger:
    """Thread-safe counters per (stage, backend, model), with a cost estimate."""

    def __init__(self, prices: Mapping[str, Mapping[str, float]] | None = None) -> None:
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
        self._rows: dict[tuple[str, str, str], LedgerRow] = {}
        self._lock = threading.Lock()

    # -- recording
    def _row(self, stage: str, backend: str, model: str) -> LedgerRow:
        key = (stage, backend, model)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = LedgerRow(stage, backend, model)
            if self.price(backend, model) is None:
                row.cost_usd = None
        return row

    def record(self, result: ChatResult | Distributions, *, stage: str, backend: str = "",
               model: str = "") -> None:
        """Count one call's result."""
        backend = backend or result.backend
        model = model or result.model  # the model asked for, not a dated alias
        with self._lock:
            row = self._row(stage, backend, model)
            row.calls += 1
            if result.cached:
                row.cache_hits += 1
            else:
                row.requests += result.requests
                row.retries += result.retries
                row.prompt_tokens += result.prompt_tokens
                row.completion_tokens += result.completion_tokens
                price = self.price(backend, model)
                if price is not None and row.cost_usd is not None:
                    row.cost_usd += (result.prompt_tokens * price["input"]
                                     + result.completion_tokens * price["output"]) / 1e6
            if result.failure is not None:
                row.failures[result.failure.kind] = row.failures.get(result.failure.kind, 0) + 1

    def record_fatal(self, kind: str, *, stage: str, backend: str, model: str) -> None:
        """Count a call that stopped the job (auth, unknown model, ...)."""
        with self._lock:
            row = self._row(stage, backend, model)
            row.calls += 1
            row.failures["fatal:" + kind] = row.failures.get("fatal:" + kind, 0) + 1

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

    def totals(self) -> dict[str, Any]:
        """Sums over all rows (cost None when any row with requests has no price)."""
        rows = self.rows()
        tot: dict[str, Any] = {k: sum(getattr(r, k) for r in rows) for k in
                               ("calls", "requests", "retries", "cache_hits",
                                "prompt_tokens", "completion_tokens")}
        fails: dict[str, int] = {}
        for r in rows:
            for k, v in r.failures.items():
                fails[k] = fails.get(k, 0) + v
        tot["failures"] = fails
        costs = [r.cost_usd for r in rows if r.requests]
        tot["cost_usd"] = None if any(c is None for c in costs) else float(sum(costs))  # type: ignore[arg-type]
        return tot

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: rows, totals and the prices used (for the run's manifest)."""
        rows = self.rows()
        used = {r.model: self.price(r.backend, r.model) for r in rows}
        return {"rows": [asdict(r) for r in rows], "totals": self.totals(),
                "prices_usd_per_million_tokens": used}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Ledger":
        """A ledger holding the rows of :meth:`to_dict` (e.g. to add a resumed run to)."""
        led = cls()
        for r in data.get("rows", []):
            row = LedgerRow(**r)
            led._rows[(row.stage, row.backend, row.model)] = row
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

    Put it outermost (around the cache) so cache hits are counted as such.
    """

    def __init__(self, inner: LLM, ledger: Ledger | None = None) -> None:
        super().__init__(inner)
        self.ledger = ledger if ledger is not None else Ledger()

    async def achat(self, messages: Sequence[Message], *, stage: str = "default",
                    **kw: Any) -> ChatResult:
        try:
            result = await self.inner.achat(messages, stage=stage, **kw)
        except LLMFatalError as e:
            self.ledger.record_fatal(e.kind, stage=stage, backend=self.name, model=self.model)
            raise
        self.ledger.record(result, stage=stage, backend=self.name, model=self.model)
        return result

    async def anext_token_distributions(self, prompt: str, positions: Sequence[int],
                                        candidates: Sequence[str], *, stage: str = "default",
                                        **kw: Any) -> Distributions:
        try:
            result = await self.inner.anext_token_distributions(
                prompt, positions, candidates, stage=stage, **kw)
        except LLMFatalError as e:
            self.ledger.record_fatal(e.kind, stage=stage, backend=self.name, model=self.model)
            raise
        self.ledger.record(result, stage=stage, backend=self.name, model=self.model)
        return result
