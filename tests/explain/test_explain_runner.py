import json
import time

import pytest

from explain_fakes import RuleLLM, planted_unit
from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.explain.runner import ExplainConfig, load_results, run_explain, summary_table


def _cfg(tmp_path, **kw):
    return ExplainConfig(out_dir=str(tmp_path / "run"), n_bootstrap=50, progress=False, **kw)


def test_run_writes_scores_and_resumes(tmp_path):
    units = [planted_unit("weekday", unit=0, seed=1), planted_unit("digit", unit=1, seed=2)]
    llm = RuleLLM(["days of the week", "digits"])
    res = run_explain(units, llm, _cfg(tmp_path))
    assert [r.status for r in res] == ["ok", "ok"]
    r0 = res[0]
    assert r0.id == "blocks.0.mlp.hook_post.0" and res["blocks.0.mlp.hook_post.0"] is r0
    assert r0.explanation == "days of the week"
    c = r0.correlation
    assert c.value > 0.7 and c.low <= c.value <= c.high
    assert r0.correlation_random is not None and r0.raw["llm"]["calibration"]["slope"] > 0
    assert r0.baseline_explanation.startswith("the tokens")
    assert r0.baseline_correlation.value > 0.5
    assert r0.lookup_table_correlation.value > 0.5
    assert r0.detection["auroc"] == 1.0
    sims = r0.records
    assert len(sims) == len(units[0].test_top) + len(units[0].test_random)
    assert all(len(s.true) == len(s.simulated) == len(s.tokens) for s in sims)
    assert r0.llm_usage["explainer"]["explain"]["calls"] == 1
    row = res.to_pandas().iloc[0]
    assert row["unit_id"] == r0.id and row["correlation"] == pytest.approx(c.value)
    assert row["correlation_low"] == pytest.approx(c.low) and row["explanation"] == "days of the week"
    assert "days of the week" in r0._repr_html_() and "<span" in r0._repr_html_()
    ledger = [json.loads(x) for x in (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()]
    assert {x["stage"] for x in ledger} >= {"explain", "simulate", "detection", "fuzzing"}
    assert not any("prompt" in k and k != "prompt_tokens" for x in ledger for k in x)
    summary = json.loads((tmp_path / "run" / "ledger_summary.json").read_text())
    assert summary["explain"]["calls"] == 2
    assert sum(u["calls"] for u in summary.values()) == llm.calls["chat"] + llm.calls["distributions"]
    assert {x["unit"] for x in ledger} == {"blocks.0.mlp.hook_post.0", "blocks.0.mlp.hook_post.1"}
    calls = dict(llm.calls)
    # rerun: nothing left to do, no LLM call
    again = run_explain(units, llm, _cfg(tmp_path))
    assert llm.calls == calls and [r.id for r in again] == [r.id for r in res]
    table = summary_table(str(tmp_path / "run"))
    assert "days of the week" in table and "LLM +" in table and "status: ok=2" in table


def test_resume_after_partial_run(tmp_path):
    units = [planted_unit("weekday", unit=i, seed=i) for i in range(3)]
    run_explain(units[:1], RuleLLM(), _cfg(tmp_path))
    llm = RuleLLM()
    res = run_explain(units, llm, _cfg(tmp_path))
    assert len(res) == 3 and llm.calls["chat"] == 2  # one explanation per new unit


def test_too_few_activating_is_reported(tmp_path):
    dead = UnitRecords("blocks.0.mlp.hook_post", 9,
                       train_top=[ActivationRecord(["a"], [0.0])], test_top=[ActivationRecord(["b"], [0.0])])
    res = run_explain([dead, planted_unit()], RuleLLM(), _cfg(tmp_path))
    assert res[0].status == "too_few_activating" and "min_activating" in res[0].message
    assert "too_few_activating=1" in summary_table(res)


def test_failed_simulation_is_recorded_not_zeroed(tmp_path):
    res = run_explain([planted_unit()], RuleLLM(fail_distributions=True), _cfg(tmp_path, detection=False,
                                                                               fuzzing=False))
    llm_part = res[0].raw["llm"]
    assert res[0].status == "simulation_failed" and llm_part["status"] == "simulation_failed"
    assert "scores" not in llm_part and "simulations" not in llm_part and res[0].correlation is None
    assert res[0].failure_kinds[0] == "error"
    # the LLM-free table baseline still scores
    assert res[0].lookup_table_correlation.value > 0.5


def test_best_of_n_in_runner(tmp_path):
    res = run_explain([planted_unit("digit", seed=4)], RuleLLM(["days of the week", "digits"]),
                      _cfg(tmp_path, n_explanations=2, detection=False, fuzzing=False))
    e = res[0].raw["llm"]["explanation"]
    assert e["text"] == "digits" and e["explainer"] == "best-of-2:llm" and len(e["candidates"]) == 2


def test_units_overlap_and_the_llm_layer_caps_concurrency(tmp_path):
    units = [planted_unit("weekday", unit=i, seed=i, n_top=2, n_random=2) for i in range(6)]
    llm = RuleLLM(latency=0.02)
    t0 = time.perf_counter()
    run_explain(units, llm, _cfg(tmp_path, baseline=False, detection=False, fuzzing=False))
    wall = time.perf_counter() - t0
    n_calls = llm.calls["chat"] + llm.calls["distributions"]
    assert llm.max_in_flight > 1  # units run concurrently: no cap of the stage's own
    assert wall < 0.02 * n_calls / 2  # well below serial time (0.02 * n_calls)


def test_parse_units():
    from tl_concepts.explain.runner import parse_units

    assert parse_units("0:3,7") == [0, 1, 2, 7]
    assert parse_units(":2") == [0, 1]
    with pytest.raises(ValueError, match="START:STOP"):
        parse_units("a:b")
    with pytest.raises(ValueError, match="no units"):
        parse_units(" , ")


def test_explain_live_model(tiny_bridge, tmp_path):
    from tl_concepts.capture import ExemplarConfig
    from tl_concepts.explain.runner import explain_model

    texts = [f"the cat sat on mat number {i} and the dog ran home" for i in range(30)]
    res = explain_model(tiny_bridge, texts, "blocks.0.mlp.hook_post", [0, 1], RuleLLM(["digits"]),
                        _cfg(tmp_path, min_activating=1, detection=False, fuzzing=False),
                        ctx_len=8, exemplars=ExemplarConfig(n_train_top=3, n_calibration_top=3, n_test_top=3,
                                                            n_calibration_random=2, n_test_random=2))
    assert [r.unit for r in res] == [0, 1]
    assert all(r.status in ("ok", "too_few_activating") for r in res)
    ok = [r for r in res if r.status == "ok"]
    assert ok and all(r.raw["llm"]["scores"]["all"]["n_tokens"] > 0 for r in ok)
    assert all(r.raw["splits"]["test_top"] == 3 and r.raw["splits"]["test_random"] == 2 for r in ok)


def test_overlapping_splits_are_refused(tmp_path):
    u = planted_unit("weekday", seed=1)
    u.test_random = u.test_random + [u.train_top[0]]
    res = run_explain([u], RuleLLM(), _cfg(tmp_path))
    assert res[0].status == "overlapping_splits" and "train/test" in res[0].message
    assert "llm" not in res[0].raw
