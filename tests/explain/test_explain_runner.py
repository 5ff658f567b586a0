import json

import pytest

from tests.helpers.explain_fakes import RuleLLM, planted_unit
from tests.helpers.scripts import run_python
from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.explain.runner import ExplainConfig, run_explain, summary_table


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
    run_explain(units, llm, _cfg(tmp_path, baseline=False, detection=False, fuzzing=False))
    # units run concurrently, with no cap of the stage's own (the LLM layer's limiter is the one cap)
    assert llm.max_in_flight >= len(units)


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


def test_verdicts_and_score_names_in_results_and_summary(tmp_path):
    units = [planted_unit("weekday", unit=0, seed=1), planted_unit("digit", unit=1, seed=2)]
    res = run_explain(units, RuleLLM(["days of the week", "past-tense verbs"]), _cfg(tmp_path))
    good, wrong = res
    assert good.verdict["label"] in ("above chance", "beats baseline") and good.verdict["beats_chance"]
    assert wrong.verdict["label"] == "not above chance" and not wrong.verdict["beats_baseline"]
    assert good.verdict["delta_vs_baseline"]["low"] <= good.verdict["delta_vs_baseline"]["high"]
    scores = good.raw["llm"]["scores"]["all"]
    assert {"correlation", "rsquared", "absolute_dev_explained", "rsquared_centred",
            "absolute_dev_explained_centred"} <= set(scores)
    table = summary_table(res)
    assert "LLM better on" not in table  # no point-estimate wins
    assert res.verdict_counts() in table and "of 2 explanations beat the baseline at 95%" in table


class _CountingLLM(RuleLLM):
    """A RuleLLM whose identity (model name) can be chosen, as a different LLM would be."""

    def __init__(self, model: str = "rule-fake-1", **kw):
        super().__init__(["days of the week"], **kw)
        self.model = model


def test_results_from_other_inputs_are_never_served(tmp_path):
    a = planted_unit("weekday", unit=0, seed=1)
    b = planted_unit("weekday", unit=0, seed=7)  # same unit id, other records (another store)
    llm = _CountingLLM()
    first = run_explain([a], llm, _cfg(tmp_path))
    n = llm.calls["chat"]
    run_explain([a], llm, _cfg(tmp_path))
    assert llm.calls["chat"] == n  # same inputs: reused
    second = run_explain([b], llm, _cfg(tmp_path))
    assert llm.calls["chat"] > n  # other records: recomputed, never A's result for B
    assert second[0].raw["input_key"] != first[0].raw["input_key"]
    assert second[0].provenance["records"] != first[0].provenance["records"]
    other = _CountingLLM("another-model")
    third = run_explain([b], other, _cfg(tmp_path))
    assert other.calls["chat"] >= 1 and third[0].provenance["explainer"]["model"] == "another-model"
    m = llm.calls["chat"]
    run_explain([b], llm, _cfg(tmp_path, seed=3))  # another scoring setting: recomputed
    assert llm.calls["chat"] > m


def test_transient_failures_heal_permanent_ones_wait_for_retry_failed(tmp_path):
    from tl_concepts.llm.base import ChatResult, Failure

    class Flaky(RuleLLM):
        def __init__(self, kind):
            super().__init__(["days of the week"])
            self.kind, self.broken = kind, True

        async def achat(self, messages, **kw):
            if self.broken:
                self.calls["chat"] += 1
                return ChatResult(None, failure=Failure(self.kind, "fake outage"))
            return await super().achat(messages, **kw)

    u = planted_unit("weekday", unit=0, seed=1)
    down = Flaky("retries_exhausted")
    r1 = run_explain([u], down, _cfg(tmp_path / "t", detection=False, fuzzing=False))
    assert r1[0].status == "explanation_failed" and r1[0].failure_kinds == ["retries_exhausted"]
    down.broken = False  # the server recovered: the rerun asks again
    r2 = run_explain([u], down, _cfg(tmp_path / "t", detection=False, fuzzing=False))
    assert r2[0].status == "ok"
    bad = Flaky("unparseable")
    run_explain([u], bad, _cfg(tmp_path / "p", detection=False, fuzzing=False))
    bad.broken = False
    n = bad.calls["chat"]
    r3 = run_explain([u], bad, _cfg(tmp_path / "p", detection=False, fuzzing=False))
    assert r3[0].status == "explanation_failed" and bad.calls["chat"] == n  # permanent: kept
    r4 = run_explain([u], bad, _cfg(tmp_path / "p", detection=False, fuzzing=False), retry_failed=True)
    assert r4[0].status == "ok"


def test_fatal_llm_error_stops_the_run_and_records_no_unit(tmp_path):
    from tl_concepts.errors import LLMAuthError

    class Revoked(RuleLLM):
        async def achat(self, messages, **kw):
            raise LLMAuthError("the endpoint refused the API key (401); check OPENAI_API_KEY")

    units = [planted_unit("weekday", unit=i, seed=i) for i in range(3)]
    with pytest.raises(LLMAuthError, match="401"):
        run_explain(units, Revoked(), _cfg(tmp_path))
    assert not list((tmp_path / "run" / "units").glob("*.json"))


def test_kill_mid_explain_then_rerun_equals_uninterrupted(tmp_path):
    import textwrap

    script = textwrap.dedent("""
        import sys
        from tests.helpers.explain_fakes import RuleLLM, planted_unit
        from tl_concepts.explain.runner import ExplainConfig, run_explain
        units = [planted_unit("weekday", unit=i, seed=i) for i in range(3)]
        cfg = ExplainConfig(out_dir=sys.argv[1], n_bootstrap=30, progress=False, max_units_in_flight=1)
        run_explain(units, RuleLLM(), cfg)
    """)
    p = run_python(script, str(tmp_path / "x"), crash_at="explain.unit:2")
    assert p.returncode == 137, p.stderr[-2000:]
    assert len(list((tmp_path / "x" / "units").glob("*.json"))) == 2
    for out in ("x", "y"):
        p = run_python(script, str(tmp_path / out))
        assert p.returncode == 0, p.stderr[-2000:]

    def strip(d):
        return {k: v for k, v in d.items() if k not in ("seconds", "llm_usage")}

    for f in sorted((tmp_path / "y" / "units").glob("*.json")):
        assert strip(json.loads((tmp_path / "x" / "units" / f.name).read_text())) == strip(json.loads(f.read_text()))
