"""Cheaper scorers beside simulation: detection and fuzzing (one short prompt per item).

* **Detection**: given the explanation, does a context make the unit fire? Items are the
  test records (top + random); the label is 1 when the record's largest activation is at
  least ``threshold * max_activation`` of the unit, else 0.
* **Fuzzing**: for each activating test record, two items: the tokens that really fire
  (activation >= threshold * max) marked ``<<like this>>`` (label 1), and the same number
  of non-firing tokens picked at random marked instead (label 0). Does the explanation
  tell the right highlights from wrong ones?

The model's answer is read as P("1") / (P("1") + P("0")) from the next-token distribution
after ``Answer: `` (``method`` from the backend); endpoints without logprobs fall back to
a chat answer parsed as 1/0 (``method="chat"``, so AUROC is then coarse). Reported:
balanced accuracy (threshold 0.5) and AUROC, only with at least 5 answered positives and 5
negatives (else ``status="n too small"`` and no metric values). Items whose call failed are counted in
``n_failed`` and left out, never scored as 0.

Example:
    >>> s = await DetectionScorer(llm).ascore("days of the week", unit)   # doctest: +SKIP
    >>> s.balanced_accuracy, s.auroc                                       # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import random
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.llm.base import LLM, Message
from tl_concepts.explain.prompts import DETECTION_TEMPLATE, FUZZING_TEMPLATE, detection_prompt, fuzzing_prompt
from tl_concepts.explain.scoring import auroc, balanced_accuracy


MIN_PER_CLASS = 5
"""Metrics are reported only with at least this many answered positives and negatives."""


@dataclass
class ClassificationScore:
    """Result of a detection or fuzzing run.

    With fewer than :data:`MIN_PER_CLASS` answered positives or negatives the metrics are
    not reported: ``status`` is ``"n too small"`` and both metrics are nan (None in
    :meth:`to_dict`).
    """

    balanced_accuracy: float
    """Mean of TPR and TNR with the answer thresholded at 0.5 (nan when not reported)."""
    auroc: float
    """Area under the ROC curve of P(yes) (nan when not reported)."""
    n_positive: int
    """Items labelled 1 that were answered."""
    n_negative: int
    """Items labelled 0 that were answered."""
    n_failed: int
    """Items whose LLM call failed (left out)."""
    method: str
    """How answers were read (``logits``, ``prompt_logprobs``, ``chat``, ...)."""
    template: str
    """Prompt template id."""
    status: str = "ok"
    """``ok``, or ``n too small`` (fewer than :data:`MIN_PER_CLASS` positives or negatives)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("balanced_accuracy", "auroc"):
            if d[k] != d[k]:
                d[k] = None
        return d


_DIGIT = re.compile(r"[01]")


async def _p_yes(llm: LLM, prompt: str, stage: str) -> tuple[float | None, str]:
    d = await llm.anext_token_distributions(prompt, [len(prompt)], ["0", "1"], stage=stage)
    if d.ok and d.probs:
        p0, p1 = d.probs[0].get("0", 0.0), d.probs[0].get("1", 0.0)
        if p0 + p1 > 0:
            return p1 / (p0 + p1), d.method or "distributions"
        return None, d.method or "distributions"
    if d.failure is not None and d.failure.kind == "no_logprobs":
        r = await llm.achat([Message("user", prompt)], temperature=0.0, max_tokens=4, stage=stage)
        m = _DIGIT.search(r.text or "") if r.ok else None
        return (float(m.group(0)) if m else None), "chat"
    return None, d.method or "distributions"


def _active(values: Sequence[float], max_activation: float, threshold: float) -> list[bool]:
    cut = threshold * max_activation
    return [max_activation > 0 and v >= cut for v in values]


def _record_max(unit: UnitRecords, records: Sequence[ActivationRecord]) -> float:
    m = unit.max_activation
    return float(m if m and m > 0 else max((r.max_activation for r in records), default=0.0))


async def _run(llm: LLM, items: list[tuple[str, int]], stage: str, template: str) -> ClassificationScore:
    answers = await asyncio.gather(*(_p_yes(llm, p, stage) for p, _ in items))
    labels, probs, methods = [], [], set()
    failed = 0
    for (_, y), (p, method) in zip(items, answers):
        methods.add(method)
        if p is None:
            failed += 1
            continue
        labels.append(y)
        probs.append(p)
    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    enough = n_pos >= MIN_PER_CLASS and n_neg >= MIN_PER_CLASS
    nan = float("nan")
    return ClassificationScore(
        balanced_accuracy=balanced_accuracy(labels, [p >= 0.5 for p in probs]) if enough else nan,
        auroc=auroc(labels, probs) if enough else nan,
        n_positive=n_pos, n_negative=n_neg, n_failed=failed,
        method="+".join(sorted(methods)), template=template, status="ok" if enough else "n too small")


class DetectionScorer:
    """Does the explanation tell activating from non-activating contexts?

    Args:
        llm: backend (next-token distributions, chat as fallback).
        threshold: a record is activating when its max >= ``threshold * max_activation``.
    """

    def __init__(self, llm: LLM, *, threshold: float = 0.2, stage: str = "detection") -> None:
        self.llm, self.threshold, self.stage = llm, threshold, stage

    def items(self, explanation: str, unit: UnitRecords) -> list[tuple[str, int]]:
        """(prompt, label) per test record."""
        recs = list(unit.test_top) + list(unit.test_random)
        m = _record_max(unit, recs)
        return [(detection_prompt(explanation, r.tokens),
                 int(any(_active(r.activations, m, self.threshold)))) for r in recs]

    async def ascore(self, explanation: str, unit: UnitRecords) -> ClassificationScore:
        """Score on the unit's test split."""
        return await _run(self.llm, self.items(explanation, unit), self.stage, DETECTION_TEMPLATE.id)


class FuzzingScorer:
    """Does the explanation tell the right highlighted tokens from wrong ones?

    Args:
        llm: backend.
        threshold: a token fires when its activation >= ``threshold * max_activation``.
        seed: picks the wrong highlights.
    """

    def __init__(self, llm: LLM, *, threshold: float = 0.2, seed: int = 0, stage: str = "fuzzing") -> None:
        self.llm, self.threshold, self.seed, self.stage = llm, threshold, seed, stage

    def items(self, explanation: str, unit: UnitRecords) -> list[tuple[str, int]]:
        """(prompt, label): a correctly and a wrongly highlighted copy of each activating
        test record that has enough non-firing tokens."""
        rng = random.Random(self.seed)
        recs = list(unit.test_top) + list(unit.test_random)
        m = _record_max(unit, recs)
        out = []
        for r in recs:
            act = _active(r.activations, m, self.threshold)
            on = [i for i, a in enumerate(act) if a]
            off = [i for i, a in enumerate(act) if not a]
            if not on or len(off) < len(on):
                continue
            wrong = set(rng.sample(off, len(on)))
            out.append((fuzzing_prompt(explanation, r.tokens, act), 1))
            out.append((fuzzing_prompt(explanation, r.tokens, [i in wrong for i in range(len(act))]), 0))
        return out

    async def ascore(self, explanation: str, unit: UnitRecords) -> ClassificationScore:
        """Score on the unit's test split."""
        return await _run(self.llm, self.items(explanation, unit), self.stage, FUZZING_TEMPLATE.id)
