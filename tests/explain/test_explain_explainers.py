import asyncio
import math

import pytest

from tests.helpers.explain_fakes import CLASSES, RuleLLM, planted_unit
from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.explain.detection import DetectionScorer, FuzzingScorer
from tl_concepts.explain.explainers import LLMExplainer, TokenLookupExplainer, best_of_n
from tl_concepts.explain.scoring import score
from tl_concepts.explain.simulators import AllAtOnceSimulator


@pytest.mark.parametrize("cls", ["weekday", "digit", "past"])
def test_lookup_baseline_recovers_planted_class_exactly(cls):
    unit = planted_unit(cls, seed=7, noise=0.3)
    fired = {t.strip() for r in unit.train_top + unit.train_random
             for t, a in zip(r.tokens, r.activations) if a >= 5}
    assert fired and fired <= set(CLASSES[cls])
    lookup = TokenLookupExplainer(top_k=20)
    assert set(lookup.top_tokens(unit)) == fired
    e = lookup.explain(unit)
    assert e.ok and e.text.startswith("the tokens ") and e.explainer == "token-lookup"
    # its table simulator is near perfect on the held-out test split
    test = unit.test_top + unit.test_random
    sims = lookup.simulator(unit).simulate_many("", [r.tokens for r in test])
    unseen = {t.strip() for r in test for t, a in zip(r.tokens, r.activations) if a >= 5} - fired
    corr = score(test, [s.activations for s in sims], n_bootstrap=0).correlation.value
    assert corr > (0.6 if unseen else 0.9)


def test_lookup_baseline_reports_units_without_a_driving_token():
    u = UnitRecords("h", 1, train_top=[ActivationRecord(["a", "b"], [0.0, 0.0])], max_activation=0.0)
    e = TokenLookupExplainer().explain(u)
    assert not e.ok and "no token" in e.failure.message


def test_llm_explainer_uses_only_training_records_and_parses():
    seen = []

    class Spy(RuleLLM):
        async def achat(self, messages, **kw):
            seen.append(messages[-1].content)
            return await super().achat(messages, **kw)

    unit = planted_unit("weekday", seed=1)
    for r in unit.test_top + unit.calibration_top:
        r.tokens[0] = "HELDOUT"
    e = LLMExplainer(Spy(["days of the week"])).explain(unit)
    assert e.ok and e.text == "days of the week" and e.template == "explain/token-activation@2"
    assert "HELDOUT" not in seen[0]
    assert seen[0].endswith("the main thing this neuron does is find")


def test_llm_explainer_failure_is_kept():
    class Down(RuleLLM):
        async def achat(self, messages, **kw):
            from tl_concepts.llm.base import ChatResult, Failure
            return ChatResult(None, failure=Failure("retries_exhausted", "503"))

    e = LLMExplainer(Down()).explain(planted_unit())
    assert not e.ok and e.failure.kind == "retries_exhausted"


def test_best_of_n_selects_on_calibration_never_test():
    # Calibration split fires on weekdays, test split fires on digits: a selector that
    # peeked at test would choose "digits".
    unit = planted_unit("weekday", seed=2)
    digits = planted_unit("digit", seed=2)
    unit.test_top, unit.test_random = digits.test_top, digits.test_random
    llm = RuleLLM(["digits", "days of the week", "past-tense verbs"])
    best = asyncio.run(best_of_n(LLMExplainer(llm, temperature=1.0), AllAtOnceSimulator(llm), unit, 3))
    assert best.text == "days of the week"
    assert best.explainer == "best-of-3:llm"
    assert len(best.candidates) == 3 and best.selection_score > 0.7
    by_text = {c["text"]: c["calibration_correlation"] for c in best.candidates}
    assert by_text["days of the week"] == pytest.approx(best.selection_score)


def test_detection_and_fuzzing_tell_right_from_wrong_explanation():
    unit = planted_unit("weekday", seed=5, n_top=8, n_random=10)
    llm = RuleLLM()
    det_good = asyncio.run(DetectionScorer(llm).ascore("days of the week", unit))
    det_bad = asyncio.run(DetectionScorer(llm).ascore("digits", unit))
    assert det_good.n_positive > 0 and det_good.n_negative > 0
    assert det_good.balanced_accuracy == 1.0 and det_good.auroc == 1.0
    assert det_bad.balanced_accuracy == 0.5 and det_bad.auroc == 0.5
    fz_good = asyncio.run(FuzzingScorer(llm).ascore("days of the week", unit))
    fz_bad = asyncio.run(FuzzingScorer(llm).ascore("digits", unit))
    assert fz_good.n_positive == fz_good.n_negative > 0
    assert fz_good.auroc == 1.0 and fz_bad.auroc == 0.5
    assert fz_good.method == "logits" and fz_good.template == "score/fuzzing@1"


def test_detection_counts_failures_instead_of_scoring_them():
    unit = planted_unit("weekday", seed=5)
    s = asyncio.run(DetectionScorer(RuleLLM(fail_distributions=True)).ascore("days of the week", unit))
    assert s.n_failed == len(unit.test_top) + len(unit.test_random)
    assert s.n_positive == 0 and math.isnan(s.auroc)


def test_a_cut_answer_keeps_only_a_whole_first_sentence():
    import asyncio

    from tl_concepts.explain.explainers import LLMExplainer
    from tl_concepts.llm.base import LLM, ChatResult, Failure

    class Cut(LLM):
        def __init__(self, raw):
            self.raw = raw

        async def achat(self, messages, **kw):
            return ChatResult(None, failure=Failure("truncated", "cut at max_tokens", raw=self.raw))

        async def anext_token_distributions(self, *a, **kw):
            raise AssertionError

    unit = planted_unit("weekday", seed=1)
    ok = asyncio.run(LLMExplainer(Cut("days of the week. It also fires on dat")).aexplain(unit))[0]
    assert ok.ok and ok.text == "days of the week"
    line = asyncio.run(LLMExplainer(Cut("month names\nand then som")).aexplain(unit))[0]
    assert line.ok and line.text == "month names"
    cut = asyncio.run(LLMExplainer(Cut("days of the we")).aexplain(unit))[0]
    assert not cut.ok and cut.failure.kind == "truncated" and cut.raw == "days of the we"
