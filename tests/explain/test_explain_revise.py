"""Revision: shown the calibration records it simulated worst, kept only when the
calibration correlation improves, never shown the test records."""
import asyncio

import pytest

from tl_concepts.capture.records import ActivationRecord
from tl_concepts.explain.explainers import LLMExplainer, revise
from tl_concepts.explain.prompts import REVISE_TEMPLATE, display_max, format_record
from tl_concepts.explain.simulators import AllAtOnceSimulator

from tests.helpers.explain_fakes import RuleLLM, planted_unit


class Recording(RuleLLM):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.texts = []

    async def achat(self, messages, **kw):
        self.texts.append("\n".join(m.content for m in messages))
        return await super().achat(messages, **kw)

    async def anext_token_distributions(self, prompt, positions, candidates, **kw):
        self.texts.append(prompt)
        return await super().anext_token_distributions(prompt, positions, candidates, **kw)


def _unit_with_marked_test():
    unit = planted_unit("weekday", seed=3)
    unit.test_top = [ActivationRecord([f" ZZTEST{i}"] + r.tokens[1:], r.activations, doc=r.doc, start=r.start)
                     for i, r in enumerate(unit.test_top)]
    unit.test_random = [ActivationRecord([f" ZZRAND{i}"] + r.tokens[1:], r.activations, doc=r.doc, start=r.start)
                        for i, r in enumerate(unit.test_random)]
    return unit


def test_a_better_revision_is_kept_and_test_records_are_never_seen():
    unit = _unit_with_marked_test()
    llm = Recording(["digits", "days of the week"])  # first answer wrong, the revision right
    explainer = LLMExplainer(llm, few_shot=())
    sim = AllAtOnceSimulator(llm, few_shot=())
    first = asyncio.run(explainer.aexplain(unit))[0]
    assert first.text == "digits"
    out = asyncio.run(revise(explainer, sim, unit, first, rounds=1))
    assert out.text == "days of the week" and out.template == REVISE_TEMPLATE.id
    assert out.explainer == "llm+revise"
    r0, r1 = out.revisions
    assert r0["round"] == 0 and r0["text"] == "digits"
    assert r1["kept"] and r1["calibration_correlation"] > 0.9 and out.selection_score == r1["calibration_correlation"]
    assert (r0["calibration_correlation"] or 0.0) < r1["calibration_correlation"]
    revision_prompt = next(t for t in llm.texts if "An earlier explanation" in t)
    assert "the main thing this neuron does is find digits." in revision_prompt
    cal = unit.calibration_top + unit.calibration_random
    m = display_max((unit.train_top + unit.train_random)[:10])
    assert len(r1["shown_records"]) == 3
    for i in r1["shown_records"]:  # each shown calibration record, with its true 0..10 values
        assert format_record(cal[i], m) in revision_prompt
    assert not any("ZZTEST" in t or "ZZRAND" in t for t in llm.texts)


def test_a_worse_revision_is_not_kept():
    unit = _unit_with_marked_test()
    llm = Recording(["days of the week", "digits", "past-tense verbs"])
    explainer = LLMExplainer(llm, few_shot=())
    sim = AllAtOnceSimulator(llm, few_shot=())
    first = asyncio.run(explainer.aexplain(unit))[0]
    out = asyncio.run(revise(explainer, sim, unit, first, rounds=2))
    assert out.text == "days of the week" and out.template == first.template
    assert [r["kept"] for r in out.revisions] == [True, False, False]
    assert [r["text"] for r in out.revisions[1:]] == ["digits", "past-tense verbs"]
    assert out.selection_score == pytest.approx(out.revisions[0]["calibration_correlation"])
    assert asyncio.run(revise(explainer, sim, unit, first, rounds=0)) is first
