"""tl_concepts.usage: the explain stage's stored per-unit usage, summed in the ledger's shape,
is the same after a rerun that reuses every unit (issue 11 item 5)."""
from __future__ import annotations

from tests.helpers.explain_fakes import RuleLLM, planted_unit
from tl_concepts.explain.results import ExplanationResults
from tl_concepts.explain.runner import ExplainConfig, run_explain
from tl_concepts.llm.ledger import Ledger, MeteredLLM
from tl_concepts.usage import explanation_unit_usage, explanations_usage, stage_usage


def test_explanations_usage_survives_a_rerun(tmp_path):
    units = [planted_unit("weekday", unit=0, seed=1), planted_unit("digit", unit=1, seed=2)]
    cfg = ExplainConfig(out_dir=str(tmp_path / "run"), n_bootstrap=30, progress=False)
    led = Ledger()
    res = run_explain(units, MeteredLLM(RuleLLM(["days of the week", "digits"]), led), cfg)
    u = explanations_usage(res)
    total = led.usage()
    assert u["calls"] == total["calls"] > 2
    for k in ("requests", "cache_hits", "prompt_tokens", "completion_tokens"):
        assert u[k] == total[k], k
    assert u["retries"] == 0  # not stored per unit (documented as approximate)
    led2 = Ledger()
    again = run_explain(units, MeteredLLM(RuleLLM(["days of the week", "digits"]), led2), cfg)
    assert led2.usage()["calls"] == 0
    assert explanations_usage(again) == u
    assert explanations_usage(ExplanationResults.load(tmp_path / "run")) == u
    assert explanations_usage(res.to_dicts()) == u


def test_explanation_unit_usage_shape():
    stored = {"explainer": {"explain": {"requests": 2, "calls": 2, "prompt_tokens": 1000, "completion_tokens": 100,
                                        "cached": 1, "failures": 1}},
              "simulator": {"simulate": {"requests": 3, "calls": 3, "prompt_tokens": 300, "completion_tokens": 0,
                                         "cached": 0, "failures": 0}}}
    prov = {"explainer": {"backend": "openai", "model": "gpt-4o"}, "simulator": {"backend": "openai", "model": "mystery"}}
    u = explanation_unit_usage(stored, prov)
    assert (u["calls"], u["requests"], u["cache_hits"], u["prompt_tokens"], u["completion_tokens"]) == (5, 5, 1, 1300, 100)
    assert u["failures"] == {"unrecorded_kind": 1}
    assert u["cost_usd"] is None  # the simulator's model has no price
    prov["simulator"] = {"backend": "in-process", "model": "smollm2"}
    assert abs(explanation_unit_usage(stored, prov)["cost_usd"] - (1000 * 2.5 + 100 * 10.0) / 1e6) < 1e-12
    assert explanations_usage([]) == stage_usage([])
