"""Simulators: predict a unit's activation on every token from an explanation.

* :class:`AllAtOnceSimulator` (Bills et al.'s "all at once"): one prompt per record with a
  slot after every token; one ``next_token_distributions`` request per record (or one
  batched forward pass for several records when the backend offers
  ``anext_token_distributions_batch``). The prediction for a token is the expected value
  over the candidates ``"0".."10"`` of the next-token distribution at its slot,
  renormalised over the candidates. Endpoints without logprobs fall back to JSON
  (``fallback_json=True``), and the result is marked ``method="json"``.
* :class:`JsonSimulator`: asks the model for the activations as a JSON list.
* :class:`LookupTableSimulator`: no LLM; predicts each token's mean training activation
  (the token-lookup baseline's own prediction).

On "10": many tokenizers (SmolLM2's, LLaMA's) split numbers into digits, so "10" is not
one token and starts with the token "1". The candidates are always "0".."10"; a backend
scores "10" as it can (the in-process backend exactly, as P("1") P("0" | "1"); an
OpenAI-compatible endpoint reports it absent when it is not one token). Where "10" starts
with the token "1" in the backend's Hugging Face ``tokenizer``, P("1") also holds the
mass of "10", so :func:`ten_overlaps_one` detects that and the simulator uses
P("1") - P("10") for the value 1 (:func:`disjoint_candidates`).

A failed simulation is a :class:`Simulation` with ``failure`` set and no activations,
never a vector of zeros.

Example:
    >>> import asyncio                                                     # doctest: +SKIP
    >>> sim = AllAtOnceSimulator(llm)                                      # doctest: +SKIP
    >>> s = asyncio.run(sim.asimulate("days of the week", ["On", " Monday"]))  # doctest: +SKIP
    >>> s.activations if s.ok else s.failure                               # doctest: +SKIP
"""
from __future__ import annotations

import abc
import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from tl_concepts.llm.base import LLM, Distributions, Failure
from tl_concepts.explain.prompts import (
    FEW_SHOT,
    SIMULATE_JSON_TEMPLATE,
    FewShotExample,
    SIMULATE_TEMPLATE,
    json_simulation_messages,
    simulation_prompt,
)

ALL_CANDIDATES: tuple[str, ...] = tuple(str(i) for i in range(11))
"""The activation tokens "0".."10"."""


@dataclass
class Simulation:
    """Simulated activations of one record, or why there are none."""

    activations: list[float] | None
    """One prediction per token (0..10 scale before calibration); None on failure."""
    method: str | None = None
    """How the numbers were made: ``logits``, ``prompt_logprobs``, ``chat_top_logprobs``,
    ``json`` or ``lookup``; ``calibrated:`` is prefixed by the calibration wrapper."""
    failure: Failure | None = None
    """Set when the simulation failed."""
    template: str = ""
    """Prompt template id (``name@version``)."""

    @property
    def ok(self) -> bool:
        return self.failure is None and self.activations is not None

    def to_dict(self) -> dict[str, Any]:
        return {"activations": self.activations, "method": self.method, "template": self.template,
                "failure": None if self.failure is None else
                {"kind": self.failure.kind, "message": self.failure.message}}


def ten_overlaps_one(llm: Any) -> bool:
    """True when the LLM's Hugging Face ``tokenizer`` (if it exposes one) encodes "10" as
    "1" followed by more tokens, so that P("1") includes P("10")."""
    tok = getattr(llm, "tokenizer", None)
    if tok is None or not hasattr(tok, "encode"):
        return False
    try:
        ten, one = tok.encode("10", add_special_tokens=False), tok.encode("1", add_special_tokens=False)
    except TypeError:
        ten, one = tok.encode("10"), tok.encode("1")
    return len(ten) > len(one) and list(ten[: len(one)]) == list(one)


def disjoint_candidates(dist: dict[str, float]) -> dict[str, float]:
    """``dist`` with P("1") reduced by P("10") (floored at 0): the value 1 then means "1"
    not followed by "0". Use only when :func:`ten_overlaps_one` holds.

    Example:
        >>> disjoint_candidates({"0": 0.5, "1": 0.3, "10": 0.2})
        {'0': 0.5, '1': 0.09999999999999998, '10': 0.2}
    """
    out = dict(dist)
    if "1" in out and "10" in out:
        out["1"] = max(out["1"] - out["10"], 0.0)
    return out


class Simulator(abc.ABC):
    """Predicts activations from an explanation; subclasses implement :meth:`asimulate`."""

    name: str = "simulator"

    @abc.abstractmethod
    async def asimulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        """Simulated activations of one record."""

    async def asimulate_many(self, explanation: str, records: Sequence[Sequence[str]]) -> list[Simulation]:
        """Simulations of several records (``records`` are token lists), concurrently."""
        return list(await asyncio.gather(*(self.asimulate(explanation, t) for t in records)))

    def simulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        """Sync wrapper of :meth:`asimulate`."""
        return asyncio.run(self.asimulate(explanation, tokens))

    def simulate_many(self, explanation: str, records: Sequence[Sequence[str]]) -> list[Simulation]:
        """Sync wrapper of :meth:`asimulate_many`."""
        return asyncio.run(self.asimulate_many(explanation, records))


def _from_distributions(d: Distributions, n_tokens: int, overlap: bool = False) -> Simulation:
    if not d.ok:
        return Simulation(None, method=d.method, failure=d.failure, template=SIMULATE_TEMPLATE.id)
    if len(d.probs or []) != n_tokens:
        return Simulation(None, method=d.method, template=SIMULATE_TEMPLATE.id, failure=Failure(
            "error", f"asked for {n_tokens} positions, got {len(d.probs or [])} distributions"))
    if overlap:
        d = Distributions([disjoint_candidates(p) for p in d.probs or []], method=d.method)
    try:
        values = d.expected_values()
    except ValueError as e:
        return Simulation(None, method=d.method, template=SIMULATE_TEMPLATE.id,
                          failure=Failure("unparseable", str(e)))
    return Simulation(values, method=d.method, template=SIMULATE_TEMPLATE.id)


class AllAtOnceSimulator(Simulator):
    """Expected value over "0".."10" at every token's slot, one prompt per record.

    Args:
        llm: any :class:`~tl_concepts.llm.base.LLM`.
        candidates: activation tokens to score (default "0".."10").
        fallback_json: on a ``no_logprobs`` failure, ask for JSON instead (marked ``json``).
        batch_size: records per request when the backend has ``anext_token_distributions_batch``.
        few_shot: example neurons shown before the target (default: the two of
            :data:`~tl_concepts.explain.prompts.FEW_SHOT`; ``()`` gives a short prompt).
        stage: ledger stage name.

    Example:
        >>> sim = AllAtOnceSimulator(llm)                                    # doctest: +SKIP
        >>> sims = sim.simulate_many("days of the week", [["On", " Monday"]])  # doctest: +SKIP
    """

    name = "all-at-once"

    def __init__(self, llm: LLM, *, candidates: Sequence[str] | None = None, fallback_json: bool = True,
                 batch_size: int = 8, few_shot: Sequence[FewShotExample] = FEW_SHOT,
                 stage: str = "simulate") -> None:
        self.llm = llm
        self.few_shot = tuple(few_shot)
        self.candidates = tuple(candidates) if candidates is not None else ALL_CANDIDATES
        self.overlap = ten_overlaps_one(llm)
        self.fallback_json = fallback_json
        self.batch_size = batch_size
        self.stage = stage
        self._json = JsonSimulator(llm, stage=stage) if fallback_json else None

    async def asimulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        p = simulation_prompt(explanation, tokens, few_shot=self.few_shot)
        d = await self.llm.anext_token_distributions(p.text, p.positions, self.candidates, stage=self.stage)
        sim = _from_distributions(d, len(tokens), self.overlap)
        return await self._maybe_fallback(sim, explanation, tokens)

    async def _maybe_fallback(self, sim: Simulation, explanation: str, tokens: Sequence[str]) -> Simulation:
        if sim.ok or self._json is None or sim.failure is None or sim.failure.kind != "no_logprobs":
            return sim
        return await self._json.asimulate(explanation, tokens)

    async def asimulate_many(self, explanation: str, records: Sequence[Sequence[str]]) -> list[Simulation]:
        batch_fn = getattr(self.llm, "anext_token_distributions_batch", None)
        if batch_fn is None or len(records) <= 1:
            return await super().asimulate_many(explanation, records)
        prompts = [simulation_prompt(explanation, t, few_shot=self.few_shot) for t in records]
        out: list[Simulation] = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = prompts[i:i + self.batch_size]
            ds = await batch_fn([p.text for p in chunk], [p.positions for p in chunk],
                                self.candidates, stage=self.stage)
            for d, toks in zip(ds, records[i:i + self.batch_size]):
                out.append(await self._maybe_fallback(_from_distributions(d, len(toks), self.overlap), explanation, toks))
        return out


_JSON_RE = re.compile(r"\{.*\}", re.DOTALL)


class JsonSimulator(Simulator):
    """Asks for ``{"activations": [...]}`` in a chat answer (no logprobs needed).

    Coarser than :class:`AllAtOnceSimulator` (one integer per token, no distribution);
    every result is marked ``method="json"``. A wrong count or a non-number is a failure.
    """

    name = "json"

    def __init__(self, llm: LLM, *, stage: str = "simulate", max_tokens: int | None = None) -> None:
        self.llm = llm
        self.stage = stage
        self.max_tokens = max_tokens

    async def asimulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        msgs = json_simulation_messages(explanation, tokens)
        r = await self.llm.achat(msgs, temperature=0.0, json_output=True, stage=self.stage,
                                 max_tokens=self.max_tokens or 16 + 4 * len(tokens))
        tid = SIMULATE_JSON_TEMPLATE.id
        if not r.ok:
            return Simulation(None, method="json", failure=r.failure, template=tid)
        values = parse_json_activations(r.text or "", len(tokens))
        if values is None:
            return Simulation(None, method="json", template=tid, failure=Failure(
                "unparseable", f"expected a JSON list of {len(tokens)} numbers 0..10", raw=r.text))
        return Simulation(values, method="json", template=tid)


def parse_json_activations(text: str, n: int) -> list[float] | None:
    """``n`` numbers clipped to 0..10 from ``{"activations": [...]}`` or a bare list; None if absent.

    Example:
        >>> parse_json_activations('{"activations": [0, 3, 12]}', 3)
        [0.0, 3.0, 10.0]
    """
    obj: Any = None
    for cand in (text, *(m.group(0) for m in [_JSON_RE.search(text)] if m)):
        try:
            obj = json.loads(cand)
            break
        except (json.JSONDecodeError, TypeError):
            continue
    if isinstance(obj, dict):
        obj = obj.get("activations")
    if not isinstance(obj, list) or len(obj) != n:
        return None
    out = []
    for v in obj:
        if isinstance(v, dict):
            v = v.get("activation")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        out.append(float(min(10.0, max(0.0, v))))
    return out


@dataclass
class LookupTableSimulator(Simulator):
    """Predicts each token's mean training activation (0..10 scale); unseen tokens get 0.

    Built by :class:`~tl_concepts.explain.explainers.TokenLookupExplainer`; needs no LLM.

    Example:
        >>> sim = LookupTableSimulator({"Monday": 10.0})
        >>> sim.simulate("", ["On", " Monday"]).activations
        [0.0, 10.0]
    """

    table: dict[str, float] = field(default_factory=dict)
    """Normalised token (whitespace stripped) -> predicted activation."""
    name: str = "lookup-table"

    async def asimulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        return Simulation([float(self.table.get(t.strip(), 0.0)) for t in tokens], method="lookup")
