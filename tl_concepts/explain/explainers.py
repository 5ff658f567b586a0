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
    REVISE_TEMPLATE,
    FewShotExample,
    explanation_messages,
    display_max,
    normalize_activations,
    parse_explanation,
    revision_messages,
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
    revisions: list[dict[str, Any]] = field(default_factory=list)
    """Revision rounds (:func:`revise`): each proposal, its calibration correlation and
    whether it was kept."""

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "explainer": self.explainer, "template": self.template,
                "model": self.model, "raw": self.raw, "selection_score": self.selection_score,
                "candidates": self.candidates, "revisions": self.revisions,
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
        answer = r.text
        if not r.ok:
            answer = _whole_part(r)
            if answer is None:
                return Explanation(None, self.name, EXPLAIN_TEMPLATE.id, model=model,
                                   raw=r.failure.raw if r.failure else None, failure=r.failure)
        text = parse_explanation(answer)
        if text is None:
            return Explanation(None, self.name, EXPLAIN_TEMPLATE.id, model=model, raw=r.text,
                               failure=Failure("unparseable", "empty explanation", raw=r.text))
        return Explanation(text, self.name, EXPLAIN_TEMPLATE.id, model=model, raw=answer)

    async def aexplain(self, unit: UnitRecords, n: int = 1) -> list[Explanation]:
        temp = self.temperature if n == 1 or self.temperature > 0 else 1.0
        return list(await asyncio.gather(*(self._one(unit, temp) for _ in range(n))))


def _whole_part(r: Any) -> str | None:
    """From an answer cut at max_tokens (``truncated``), the part that had already ended: its
    first line, else its first sentence (up to ". "). That part is the explanation and only
    text after it was cut. None (a failure) when the cut fell inside the first sentence."""
    f = r.failure
    if f is None or f.kind != "truncated" or not f.raw:
        return None
    raw = f.raw.strip()
    if "\n" in raw:
        return raw.split("\n", 1)[0]
    if ". " in raw:
        return raw.split(". ", 1)[0]
    return None


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
        raise InputError(f"best-of-n needs a calibration split; unit {unit.hook}:{unit.unit} has none")
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


async def _calibration_fit(simulator: Simulator, text: str, cal: Sequence[ActivationRecord]
                           ) -> tuple[float, list[list[float]] | None]:
    sims = await simulator.asimulate_many(text, [r.tokens for r in cal])
    if not all(s.ok for s in sims):
        return float("nan"), None
    values = [list(s.activations or []) for s in sims]
    return correlation(np.concatenate([r.activations for r in cal]), np.concatenate(values)), values


def worst_records(records: Sequence[ActivationRecord], simulated: Sequence[Sequence[float]],
                  n: int = 3) -> list[int]:
    """Indices of the ``n`` records a simulation got most wrong: squared error after the
    least-squares linear map of simulated onto true values (fitted over all ``records``),
    skipping records where both truth and prediction are flat zero.

    Example:
        >>> recs = [ActivationRecord(["a", "b"], [0.0, 1.0]), ActivationRecord(["c", "d"], [0.0, 2.0]),
        ...         ActivationRecord(["e", "f"], [2.0, 0.0])]
        >>> worst_records(recs, [[0.0, 1.0], [0.0, 2.0], [0.0, 1.0]], n=1)
        [2]
    """
    t_all = np.concatenate([np.asarray(r.activations, float) for r in records])
    s_all = np.concatenate([np.asarray(s, float) for s in simulated])
    var = float(((s_all - s_all.mean()) ** 2).sum())
    slope = float(((s_all - s_all.mean()) * (t_all - t_all.mean())).sum()) / var if var > 0 else 0.0
    icpt = float(t_all.mean() - slope * s_all.mean())
    errs = []
    for i, (r, s) in enumerate(zip(records, simulated)):
        t, p = np.asarray(r.activations, float), np.asarray(s, float)
        if not (np.any(t > 0) or np.any(p > 0)):
            continue
        errs.append((float(((t - (slope * p + icpt)) ** 2).sum()), i))
    errs.sort(key=lambda x: (-x[0], x[1]))
    return [i for _, i in errs[:n]]


async def revise(
    explainer: "LLMExplainer",
    simulator: Simulator,
    unit: UnitRecords,
    explanation: Explanation,
    rounds: int = 1,
    *,
    n_show: int = 3,
) -> Explanation:
    """Revise an explanation from the calibration records it simulated worst.

    Each round shows the explainer's LLM the ``n_show`` calibration records where the
    simulation from the current explanation was furthest from the truth (its prediction and
    the true activations) and asks for a better phrase; the proposal is simulated on the
    whole calibration split and **kept only if its calibration correlation is higher**.
    Test records are never shown or simulated. Every round is recorded in
    ``Explanation.revisions``; ``selection_score`` is the kept explanation's calibration
    correlation. Round 0 in ``revisions`` is the explanation it started from.

    Example:
        >>> better = await revise(LLMExplainer(llm), AllAtOnceSimulator(llm), unit, expl, 2)  # doctest: +SKIP
    """
    cal = list(unit.calibration_top) + list(unit.calibration_random)
    if rounds <= 0 or not explanation.ok:
        return explanation
    if not cal:
        raise InputError(f"revision needs a calibration split; unit {unit_id(unit.hook, unit.unit)} has none")
    check_finite(unit, cal, "calibration")
    text = explanation.text or ""
    score_now, sims_now = await _calibration_fit(simulator, text, cal)
    history: list[dict[str, Any]] = [{"round": 0, "text": text, "kept": True,
                                      "calibration_correlation": None if math.isnan(score_now) else score_now}]
    template, raw = explanation.template, explanation.raw
    m = _display_max(unit, train_records(unit, explainer.max_records))
    for k in range(1, rounds + 1):
        if sims_now is None:
            history.append({"round": k, "text": None, "calibration_correlation": None, "kept": False,
                            "failure": "the current explanation could not be simulated on the calibration split"})
            break
        idx = worst_records(cal, sims_now, n_show)
        if not idx:
            break
        msgs = revision_messages(text, [cal[i] for i in idx], [sims_now[i] for i in idx], m)
        r = await explainer.llm.achat(msgs, temperature=explainer.temperature, max_tokens=explainer.max_tokens,
                                      stage=explainer.stage)
        proposal = parse_explanation(r.text) if r.ok else None
        if proposal is None:
            history.append({"round": k, "text": None, "calibration_correlation": None, "kept": False,
                            "failure": r.failure.kind if r.failure else "unparseable", "raw": r.text})
            continue
        sc, sims = await _calibration_fit(simulator, proposal, cal)
        kept = sims is not None and not math.isnan(sc) and (math.isnan(score_now) or sc > score_now)
        history.append({"round": k, "text": proposal, "calibration_correlation": None if math.isnan(sc) else sc,
                        "kept": kept, "shown_records": idx})
        if kept:
            text, score_now, sims_now, template, raw = proposal, sc, sims, REVISE_TEMPLATE.id, r.text
    return Explanation(text, f"{explanation.explainer}+revise", template, explanation.model, raw,
                       failure=explanation.failure,
                       selection_score=None if math.isnan(score_now) else score_now,
                       candidates=explanation.candidates, revisions=history)


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
