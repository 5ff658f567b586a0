"""Bills et al. exactly: the display scale, the score definitions, NaN/inf handling,
detection metrics only with enough items. Expected numbers are computed independently
(numpy formulas written out here, or by hand)."""
import asyncio

import numpy as np
import pytest

from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.errors import InputError
from tl_concepts.explain.detection import MIN_PER_CLASS, DetectionScorer
from tl_concepts.explain.explainers import LLMExplainer, TokenLookupExplainer
from tl_concepts.explain.prompts import display_max, explanation_messages, normalize_activations
from tl_concepts.explain.scoring import SimulationScores, score

from tests.helpers.explain_fakes import RuleLLM, planted_unit


def test_display_scale_is_floor_of_relu_over_max_like_neuron_explainer():
    rng = np.random.default_rng(0)
    acts = rng.normal(0.3, 1.0, size=4000)
    m = float(acts.max())
    expected = np.minimum(10, np.floor(10 * np.maximum(acts, 0.0) / m)).astype(int).tolist()
    got = normalize_activations(acts.tolist(), m)
    assert got == expected
    # the old rounding differed on a good share of the non-zero tokens; floor never rounds up
    rounded = np.clip(np.round(10 * acts / m), 0, 10).astype(int)
    assert (rounded != np.array(got)).mean() > 0.2
    assert all(g <= r for g, r in zip(got, rounded))
    assert got.count(10) == 1  # only the max itself reaches 10


def test_display_max_ignores_nan_and_negative_but_normalisation_refuses_nan():
    recs = [ActivationRecord(["a", "b"], [float("nan"), 1.5]), ActivationRecord(["c"], [-4.0])]
    assert display_max(recs) == 1.5
    assert display_max([[-1.0, -2.0]]) == 0.0
    assert normalize_activations([0.5, 1.0], float("nan")) == [0, 0]
    with pytest.raises(ValueError, match="NaN/inf"):
        normalize_activations([0.5, float("nan")], 1.0)


def test_explainer_normalises_by_finite_max_of_shown_records_not_a_nan_unit_max():
    unit = planted_unit("weekday", seed=1)
    unit.max_activation = float("nan")  # e.g. a NaN elsewhere in the corpus
    seen = []

    class Recording(RuleLLM):
        async def achat(self, messages, **kw):
            seen.append(messages[-1].content)
            return await super().achat(messages, **kw)

    assert LLMExplainer(Recording(), few_shot=()).explain(unit).ok
    recs = (unit.train_top + unit.train_random)[:10]
    m = max(max(r.activations) for r in recs)
    assert seen == [explanation_messages(recs, m, few_shot=())[-1].content]
    assert "\t10\n" in seen[0]  # the strongest token is shown as 10, not every record as zeros
    assert TokenLookupExplainer().explain(unit).ok


def test_nan_in_a_training_record_is_an_error_naming_the_unit():
    unit = planted_unit("weekday", seed=1)
    unit.train_top[2].activations[3] = float("nan")
    with pytest.raises(InputError, match=r"blocks\.0\.mlp\.hook_post\.0.*training record 2"):
        LLMExplainer(RuleLLM()).explain(unit)
    with pytest.raises(InputError, match="NaN/inf"):
        TokenLookupExplainer().explain(unit)


def test_score_names_match_neuron_explainer_definitions():
    rng = np.random.default_rng(3)
    t = [np.maximum(rng.normal(size=9), 0) for _ in range(6)]
    s = [x * 0.8 + rng.normal(scale=0.3, size=x.size) for x in t]
    out = score(t, s, n_bootstrap=0)
    ta, sa = np.concatenate(t), np.concatenate(s)
    assert out.correlation.value == pytest.approx(np.corrcoef(ta, sa)[0, 1], abs=1e-12)
    # neuron-explainer: 1 - mean(square(real - pred)) / mean(square(real))
    assert out.rsquared.value == pytest.approx(1 - np.mean((ta - sa) ** 2) / np.mean(ta ** 2), abs=1e-12)
    # neuron-explainer: 1 - mean(abs(real - pred)) / mean(abs(real))
    assert out.absolute_dev_explained.value == pytest.approx(
        1 - np.mean(np.abs(ta - sa)) / np.mean(np.abs(ta)), abs=1e-12)
    assert out.rsquared_centred.value == pytest.approx(
        1 - np.sum((ta - sa) ** 2) / np.sum((ta - ta.mean()) ** 2), abs=1e-12)
    assert out.absolute_dev_explained_centred.value == pytest.approx(
        1 - np.sum(np.abs(ta - sa)) / np.sum(np.abs(ta - ta.mean())), abs=1e-12)
    assert out.rsquared.value != pytest.approx(out.rsquared_centred.value)
    back = SimulationScores.from_dict(out.to_dict())
    assert back.rsquared.value == out.rsquared.value and set(out.to_dict()) >= {
        "correlation", "rsquared", "absolute_dev_explained", "rsquared_centred", "absolute_dev_explained_centred"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_score_refuses_nonfinite_true_activations(bad):
    with pytest.raises(InputError, match="record 1: true activations contain NaN/inf"):
        score([[0.0, 1.0], [bad, 0.0]], [[0.0, 1.0], [1.0, 0.0]], n_bootstrap=0)


def _unit_with(n_pos: int, n_neg: int) -> UnitRecords:
    pos = [ActivationRecord([" on", " Monday"], [0.0, 5.0], doc=i, start=2 * i) for i in range(n_pos)]
    neg = [ActivationRecord([" the", " cat"], [0.0, 0.0], doc=100 + i, start=200 + 2 * i) for i in range(n_neg)]
    return UnitRecords("h", 0, test_top=pos, test_random=neg, max_activation=5.0)


def test_detection_metrics_only_with_enough_positives_and_negatives():
    llm = RuleLLM()
    small = asyncio.run(DetectionScorer(llm).ascore("days of the week", _unit_with(MIN_PER_CLASS - 1, 8)))
    assert small.status == "n too small" and small.n_positive == 4 and small.n_negative == 8
    assert small.to_dict()["auroc"] is None and small.to_dict()["balanced_accuracy"] is None
    ok = asyncio.run(DetectionScorer(llm).ascore("days of the week", _unit_with(MIN_PER_CLASS, MIN_PER_CLASS)))
    assert ok.status == "ok" and ok.auroc == 1.0 and ok.balanced_accuracy == 1.0
