import asyncio

import numpy as np
import pytest

from tests.helpers.explain_fakes import RuleLLM, planted_unit
from tl_concepts.explain.calibration import CalibratedSimulator
from tl_concepts.explain.scoring import score
from tl_concepts.explain.simulators import (
    ALL_CANDIDATES,
    AllAtOnceSimulator,
    JsonSimulator,
    parse_json_activations,
    ten_overlaps_one,
)


def test_slots_align_with_tokens():
    llm = RuleLLM()
    toks = ["We", " met", " on", " Monday", "\n", " and", " Friday", "."]
    sim = AllAtOnceSimulator(llm).simulate("days of the week", toks)
    assert sim.ok and sim.method == "logits"
    # the fake read exactly the record's tokens at the requested offsets
    assert llm.seen_tokens == ["We", " met", " on", " Monday", "\\n", " and", " Friday", "."]
    # expected value: hit -> (0.9*10 + 0.01*(0+...+9)) / (0.9 + 0.1)
    hit = (0.9 * 10 + 0.01 * 45) / 1.0
    miss = (0.9 * 0 + 0.01 * 55) / 1.0
    assert sim.activations == pytest.approx([miss, miss, miss, hit, miss, miss, hit, miss])


def test_failed_simulation_is_a_failure_not_zeros():
    sim = AllAtOnceSimulator(RuleLLM(fail_distributions=True)).simulate("digits", ["1", "2"])
    assert not sim.ok and sim.activations is None and sim.failure.kind == "error"


def test_json_fallback_without_logprobs_is_marked():
    llm = RuleLLM(logprobs=False)
    sim = AllAtOnceSimulator(llm).simulate("digits", ["a", " 7", " b"])
    assert sim.ok and sim.method == "json" and sim.activations == [0.0, 10.0, 0.0]
    no_fb = AllAtOnceSimulator(llm, fallback_json=False).simulate("digits", ["a"])
    assert not no_fb.ok and no_fb.failure.kind == "no_logprobs"


def test_json_parser_rejects_wrong_counts():
    assert parse_json_activations('{"activations": [1, 2]}', 3) is None
    assert parse_json_activations('Sure! {"activations": [1, "x", 2]}', 3) is None
    assert parse_json_activations('Sure! {"activations": [1, 11, -2]}', 3) == [1.0, 10.0, 0.0]
    assert parse_json_activations("[0, 4]", 2) == [0.0, 4.0]


def test_json_simulator_unparseable_is_failure():
    class Bad(RuleLLM):
        async def achat(self, messages, **kw):
            r = await super().achat(messages, **kw)
            r.text = "I think Monday"
            return r

    s = JsonSimulator(Bad()).simulate("days", ["a", "b"])
    assert not s.ok and s.failure.kind == "unparseable" and s.failure.raw == "I think Monday"


class _Tok:
    def encode(self, s, add_special_tokens=False):
        return [ord(c) for c in s]  # one id per character: "10" is "1" then "0"


def test_ten_split_into_digits_is_not_counted_twice():
    class WithTok(RuleLLM):
        tokenizer = _Tok()

        async def anext_token_distributions(self, prompt, positions, candidates, *, stage="default"):
            from tl_concepts.llm.base import Distributions
            # P("1") = 0.5 of which 0.4 is "10"; P("0") = 0.5
            return Distributions([{"0": 0.5, "1": 0.5, "10": 0.4}] * len(positions), method="logits")

    assert not ten_overlaps_one(RuleLLM())
    assert ten_overlaps_one(WithTok())
    s = AllAtOnceSimulator(WithTok()).simulate("digits", ["x"])
    # disjoint: "0" 0.5, "1" 0.1, "10" 0.4 -> (0.1 + 4.0) / 1.0
    assert s.activations == pytest.approx([4.1])
    plain = AllAtOnceSimulator(RuleLLM(["x"]))
    assert plain.candidates == ALL_CANDIDATES and not plain.overlap


def test_batched_backend_uses_one_call_per_batch():
    class Batched(RuleLLM):
        batches = 0

        async def anext_token_distributions_batch(self, prompts, positions, candidates, *, stage="default"):
            type(self).batches += 1
            return [await self.anext_token_distributions(p, q, candidates, stage=stage)
                    for p, q in zip(prompts, positions)]

    llm = Batched()
    recs = [["a", " Monday"]] * 20
    sims = AllAtOnceSimulator(llm, batch_size=8).simulate_many("days of the week", recs)
    assert Batched.batches == 3 and len(sims) == 20 and all(s.ok for s in sims)


def test_correct_explanation_beats_mismatched_on_planted_units():
    for cls, right, wrong in [("weekday", "days of the week", "digits"),
                              ("digit", "digits", "past-tense verbs"),
                              ("past", "past-tense verbs", "days of the week")]:
        unit = planted_unit(cls, seed=3)
        test = unit.test_top + unit.test_random
        sim = AllAtOnceSimulator(RuleLLM())
        good = score(test, [s.activations for s in sim.simulate_many(right, [r.tokens for r in test])], n_bootstrap=0)
        bad = score(test, [s.activations for s in sim.simulate_many(wrong, [r.tokens for r in test])], n_bootstrap=0)
        assert good.correlation.value > 0.7, cls
        assert np.isnan(bad.correlation.value) or bad.correlation.value < 0.1, cls


def test_calibrated_simulator_maps_to_true_units():
    unit = planted_unit("digit", seed=4)
    base = AllAtOnceSimulator(RuleLLM())
    cal = CalibratedSimulator(base)
    with pytest.raises(RuntimeError, match="afit"):
        cal.simulate("digits", ["1"])
    asyncio.run(cal.afit("digits", unit.calibration_top + unit.calibration_random))
    assert cal.calibration.slope > 0
    test = unit.test_top + unit.test_random
    sims = cal.simulate_many("digits", [r.tokens for r in test])
    assert all(s.method == "calibrated:logits" for s in sims)
    raw = base.simulate_many("digits", [r.tokens for r in test])
    r2_cal = score(test, [s.activations for s in sims], n_bootstrap=0).rsquared.value
    r2_raw = score(test, [s.activations for s in raw], n_bootstrap=0).rsquared.value
    assert r2_cal > 0.5 and r2_cal > r2_raw
