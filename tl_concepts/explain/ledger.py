"""A metering wrapper around any LLM: concurrency cap and a per-call ledger.

Every request made through :class:`UnitMeter` waits for a slot of a shared semaphore
(the concurrency cap) and appends one JSON line to the ledger: unit, stage, backend,
model, tokens, cached, ok / failure kind, seconds. No prompt text and no secret is
written. Usage per unit is also kept in memory for the unit's result file.

Example:
    >>> cap = asyncio.Semaphore(8)                                     # doctest: +SKIP
    >>> llm = UnitMeter(inner, cap, ledger_path="runs/x/ledger.jsonl", unit="h.3")  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from typing import Any, Sequence

from tl_concepts.llm.base import LLM, ChatResult, Distributions, Message


class UnitMeter(LLM):
    """Delegates to ``inner`` under a shared semaphore and records each call."""

    def __init__(self, inner: LLM, semaphore: asyncio.Semaphore, *, ledger_path: str | os.PathLike | None = None,
                 unit: str = "") -> None:
        self.inner = inner
        self.semaphore = semaphore
        self.ledger_path = ledger_path
        self.unit = unit
        self.name = getattr(inner, "name", "llm")
        self.model = getattr(inner, "model", "")
        self.usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def __getattr__(self, item: str) -> Any:
        # Attributes such as ``tokenizer`` come from the wrapped backend.
        if item in ("inner", "semaphore", "usage"):
            raise AttributeError(item)
        if item == "anext_token_distributions_batch":
            fn = getattr(self.inner, item)  # AttributeError when the backend has none

            async def batched(prompts: Sequence[str], positions: Sequence[Sequence[int]],
                              candidates: Sequence[str], *, stage: str = "default") -> list[Distributions]:
                async with self.semaphore:
                    t0 = time.perf_counter()
                    out = await fn(prompts, positions, candidates, stage=stage)
                for r in out:
                    self._record(stage, r, time.perf_counter() - t0, op="distributions_batch")
                return out

            return batched
        return getattr(self.inner, item)

    def _record(self, stage: str, r: ChatResult | Distributions, seconds: float, op: str) -> None:
        u = self.usage[stage]
        u["requests"] += 1
        u["prompt_tokens"] += int(r.prompt_tokens or 0)
        u["completion_tokens"] += int(r.completion_tokens or 0)
        u["cached"] += int(bool(r.cached))
        u["failures"] += int(not r.ok)
        if self.ledger_path is None:
            return
        line = {"time": time.time(), "unit": self.unit, "stage": stage, "op": op,
                "backend": r.backend or self.name, "model": r.model or self.model,
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "cached": r.cached, "ok": r.ok, "failure": None if r.failure is None else r.failure.kind,
                "seconds": round(seconds, 4)}
        with open(self.ledger_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    async def achat(self, messages: Sequence[Message], **kw: Any) -> ChatResult:
        stage = kw.get("stage", "default")
        async with self.semaphore:
            t0 = time.perf_counter()
            r = await self.inner.achat(messages, **kw)
        self._record(stage, r, time.perf_counter() - t0, "chat")
        return r

    async def anext_token_distributions(self, prompt: str, positions: Sequence[int], candidates: Sequence[str],
                                        *, stage: str = "default") -> Distributions:
        async with self.semaphore:
            t0 = time.perf_counter()
            r = await self.inner.anext_token_distributions(prompt, positions, candidates, stage=stage)
        self._record(stage, r, time.perf_counter() - t0, "distributions")
        return r

    def usage_dict(self) -> dict[str, dict[str, int]]:
        """Calls, tokens, cache hits and failures per stage."""
        return {k: dict(v) for k, v in self.usage.items()}
