"""Explainers: turn a unit's training records into a one-phrase explanation.

* :class:`LLMExplainer`: Bills et al.'s prompt (``token<TAB>activation`` lines, 0..10,
  few-shot examples, completion of "the main thing this neuron does is find"); ``n > 1``
  samples several explanations at ``temperature``.
* :func:`best_of_n`: keeps the candidate whose simulation correlates best with the
  **calibration** split (never the test split).
* :class:`TokenLookupExplainer`: the baseline without an LLM: the tokens that drive the
  unit, as an explanation text and as a :class:`LookupTableSimulator`.

Only ``train_top`` and ``train_random`` records are ever shown to an explainer.

Example:
    >>> from tl_concepts.capture.records import ActivationRecord, UnitRecords
    >>> u = UnitRecords("h", 0, train_top=[ActivationRecord(["On", " Monday"], [0.0, 4.0])],
    ...                 max_activation=4.0)
    >>> TokenLookupExplainer().explain(u).text
    'the tokens "Monday"'
"""
from __future__ import annotations

import abc
import asyncio
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.errors import InputError
from tl_concepts.ids import unit_id
from tl_concepts.llm.base import LLM, Failure
from tl_concepts.explain.prompts import (
    EXPLAIN_TEMPLATE,
    FEW_SHOT,
    FewShotExample,
    explanation_messages,
    display_max,
    normalize_activations,
    parse_explanation,
)
from tl_concepts.explain.scoring import correlation
from tl_concepts.explain.simulators import LookupTableSimulator, Simulator


@dataclass
class Explanation:
    """One explanation of a unit, or why there is none."""

    text: str | None
    """The phrase completing "the main thing this neuron does is find"; None on failure."""
    explainer: str
    """Which explainer made it (``llm``, ``token-lookup``, ``best-of-n``)."""
    template: str = ""
    """Prompt template id (``name@version``); empty for the lookup baseline."""
    model: str = ""
    """LLM that wrote it (empty for the baseline)."""
    raw: str | None = None
    """Raw LLM answer."""
    failure: Failure | None = None
    """Set when no explanation could be made."""
    selection_score: float | None = None
    """Calibration-split correlation used by best-of-n (None when not selected that way)."""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """Best-of-n: every candidate with its calibration score."""

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "explainer": self.explainer, "template": self.template,
                "model": self.model, "raw": self.raw, "selection_score": self.selection_score,
                "candidates": self.candidates,
                "failure": None if self.failure is None else
                {"kind": self.failure.kind, "message": self.failure.message}}


class Explainer(abc.ABC):
    """Makes explanations from a unit's training records."""

    name: str = "explainer"

    @abc.abstractmethod
    async def aexplain(self, unit: UnitRecords, n: int = 1) -> list[Explanation]:
        """``n`` explanations (failures included, never dropped)."""

    def explain(self, unit: UnitRecords) -> Explanation:
        """Sync: one explanation."""
        return asyncio.run(self.aexplain(unit, 1))[0]


def train_records(unit: UnitRecords, max_records: int | None = None) -> list[ActivationRecord]:
    """The records an explainer may see: ``train_top`` then ``train_random``."""
    recs = list(unit.train_top) + list(unit.train_random)
    return recs[:max_records] if max_records else recs


def check_finite(unit: UnitRecords, records: Sequence[ActivationRecord], split: str = "training") -> None:
    """Raise :class:`~tl_concepts.errors.InputError` naming the unit when a record holds a
    NaN or infinite activation (capture refuses them by default; such a unit cannot be
    shown to an explainer honestly)."""
    for i, r in enumerate(records):
        if not all(math.isfinite(float(a)) for a in r.activations):
            raise InputError(
                f"unit {unit_id(unit.hook, unit.unit)}: {split} record {i} (doc {r.doc}) has NaN/inf activations; "
                "recapture without them (capture refuses NaN by default) or drop the unit")


def _display_max(unit: UnitRecords, recs: Sequence[ActivationRecord]) -> float:
    """Top of the 0..10 scale: the largest finite activation of the records shown
    (Bills et al. normalise by the max over the explanation records)."""
    check_finite(unit, recs)
    return display_max(recs)


class LLMExplainer(Explainer):
    """Bills et al.'s explainer through any chat LLM.

    Args:
        llm: chat backend.
        temperature: sampling temperature (use > 0 with ``n > 1``).
        max_records: how many training records to show (top first).
        few_shot: in-prompt examples.
        max_tokens: answer budget.

    Example:
        >>> LLMExplainer(llm).explain(unit).text        # doctest: +SKIP
        'days of the week'
    """

    name = "llm"

    def __init__(self, llm: LLM, *, temperature: float = 0.0, max_records: int | None = 10,
                 few_shot: Sequence[FewShotExample] = FEW_SHOT, max_tokens: int = 48,
                 stage: str = "explain") -> None:
        self.llm = llm
        self.temperature = temperature
        self.max_records = max_records
        self.few_shot = tuple(few_shot)
        self.max_tokens = max_tokens
        self.stage = stage

    async def _one(self, unit: UnitRecords, temperature: float) -> Explanation:
        recs = train_records(unit, self.max_records)
        if not recs:
            return Explanation(None, self.name, EXPLAIN_TEMPLATE.id, failure=Failure(
                "error", f"unit {unit.hook}:{unit.unit} has no training records to explain"))
        msgs = explanation_messages(recs, _display_max(unit, recs), few_shot=self.few_shot)
        r = await self.llm.achat(msgs, temperature=temperature, max_tokens=self.max_tokens, stage=self.stage)
        model = r.model or getattr(self.llm, "model", "")
        if not r.ok:
            return Explanation(None, self.name, EXPLAIN_TEMPLATE.id, model=model, failure=r.failure)
        text = parse_explanation(r.text)
        if text is None:
            return Explanation(None, self.name, EXPLAIN_TEMPLATE.id, model=model, raw=r.text,
                               failure=Failure("unparseable", "empty explanation", raw=r.text))
        return Explanation(text, self.name, EXPLAIN_TEMPLATE.id, model=model, raw=r.text)

    async def aexplain(self, unit: UnitRecords, n: int = 1) -> list[Explanation]:
        temp = self.temperature if n == 1 or self.temperature > 0 else 1.0
        return list(await asyncio.gather(*(self._one(unit, temp) for _ in range(n))))


async def best_of_n(
    explainer: Explainer,
    simulator: Simulator,
    unit: UnitRecords,
    n: int,
) -> Explanation:
    """Make ``n`` explanations and keep the one whose simulation of the calibration split
    (top + random) correlates best with the truth. The test split is never looked at.

    Candidates whose simulation fails score nan and are not chosen; when every candidate
    fails, the returned explanation carries the failure.
    """
    cal = list(unit.calibration_top) + list(unit.calibration_random)
    if not cal:
        raise ValueError(f"best-of-n needs a calibration split; unit {unit.hook}:{unit.unit} has none")
    cands = await explainer.aexplain(unit, n)
    scored: list[tuple[float, Explanation]] = []
    info = []
    for e in cands:
        sc = float("nan")
        if e.ok:
            sims = await simulator.asimulate_many(e.text or "", [r.tokens for r in cal])
            if all(s.ok for s in sims):
                sc = correlation(np.concatenate([r.activations for r in cal]),
                                 np.concatenate([s.activations for s in sims]))
        info.append({"text": e.text, "calibration_correlation": None if math.isnan(sc) else sc,
                     "failure": None if e.failure is None else e.failure.kind})
        scored.append((sc, e))
    good = [(s, e) for s, e in scored if not math.isnan(s)]
    if good:
        best_s, best = max(good, key=lambda x: x[0])
    else:
        best_s, best = float("nan"), next((e for e in cands if e.ok), cands[0])
        if best.ok:
            best = Explanation(best.text, best.explainer, best.template, best.model, best.raw,
                               failure=Failure("error", "no candidate could be simulated on the calibration split"))
    return Explanation(best.text, f"best-of-{n}:{best.explainer}", best.template, best.model, best.raw,
                       failure=best.failure, selection_score=None if math.isnan(best_s) else best_s,
                       candidates=info)


class TokenLookupExplainer(Explainer):
    """Baseline without an LLM: the tokens on which the unit fires in training records.

    For each token (whitespace stripped) it takes the mean normalised activation (0..10)
    over its occurrences in ``train_top`` + ``train_random``. Tokens whose mean is at
    least ``min_mean`` are kept, ranked by total activation, at most ``top_k``. The
    explanation reads ``the tokens "A", "B"``; :meth:`simulator` predicts the mean
    activation of each token (0 for tokens not in the table).

    Example:
        >>> TokenLookupExplainer(top_k=3).explain(unit).text     # doctest: +SKIP
        'the tokens "Monday", "Friday", "Sunday"'
    """

    name = "token-lookup"

    def __init__(self, *, top_k: int = 10, min_mean: float = 2.0) -> None:
        self.top_k = top_k
        self.min_mean = min_mean

    def table(self, unit: UnitRecords) -> dict[str, float]:
        """Token -> mean normalised activation over all training occurrences."""
        recs = train_records(unit)
        m = _display_max(unit, recs)
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for r in recs:
            for tok, v in zip(r.tokens, normalize_activations(r.activations, m)):
                key = tok.strip()
                sums[key] += v
                counts[key] += 1
        return {k: sums[k] / counts[k] for k in sums}

    def top_tokens(self, unit: UnitRecords) -> list[str]:
        """The tokens that drive the unit, strongest total activation first."""
        recs = train_records(unit)
        m = _display_max(unit, recs)
        totals: dict[str, float] = defaultdict(float)
        for r in recs:
            for tok, v in zip(r.tokens, normalize_activations(r.activations, m)):
                totals[tok.strip()] += v
        means = self.table(unit)
        keep = [t for t in means if means[t] >= self.min_mean and t]
        keep.sort(key=lambda t: (-totals[t], t))
        return keep[: self.top_k]

    def simulator(self, unit: UnitRecords) -> LookupTableSimulator:
        """Predicts each kept token's mean training activation, 0 elsewhere."""
        means = self.table(unit)
        return LookupTableSimulator({t: means[t] for t in self.top_tokens(unit)})

    async def aexplain(self, unit: UnitRecords, n: int = 1) -> list[Explanation]:
        toks = self.top_tokens(unit)
        if not toks:
            e = Explanation(None, self.name, failure=Failure(
                "error", f"unit {unit.hook}:{unit.unit}: no token reaches mean activation {self.min_mean}/10 in training records"))
        else:
            e = Explanation("the tokens " + ", ".join(f'"{t}"' for t in toks), self.name)
        return [e] * n
