"""The LLM stages on Ray (issue 14 item 1): explanations, concept labels and descriptors run as
Ray tasks give the results of a local run on the same inputs, in the same files with the same
keys, so either executor resumes the other without asking again for finished items; a bad key
stops a Ray run as it stops a local one; the LLM usage of the workers adds up in the caller's
ledger; N workers together stay under one endpoint's requests-per-minute budget.

One local two-CPU Ray cluster for the module."""
from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import explain_fakes
from tests.helpers.concepts_fakes import flat_set
from tests.helpers.explain_fakes import RuleLLM, planted_unit
from tests.helpers.openai_server import OpenAIStandin, Reply
from tl_concepts.concepts.labelling import LabelOptions, LabelStore, label_concepts
from tl_concepts.descriptors.generate import generate_descriptors, read_records
from tl_concepts.errors import LLMError
from tl_concepts.explain.runner import ExplainConfig, run_explain
from tl_concepts.llm import get_llm
from tl_concepts.llm.ledger import Ledger
from tl_concepts.llm.limits import Limiter



@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    from ray import cloudpickle

    # test modules are not importable in the workers: send them by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(explain_fakes)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------ explanations
UNITS = [planted_unit("weekday", unit=i, seed=i + 1) for i in range(4)]


def _cfg(out, executor="local", **kw):
    return ExplainConfig(out_dir=str(out), n_bootstrap=20, progress=False, executor=executor, **kw)


def _units(out):
    """Unit files without their timing (the only field a rerun may change)."""
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "seconds"}
            for p in sorted((out / "units").glob("*.json"))}


def _calls(out):
    return [json.loads(x) for x in (out / "ledger.jsonl").read_text().splitlines()]


def test_explain_on_ray_equals_local_and_resumes_either_way(ray_cluster, tmp_path):
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    run_explain(UNITS, RuleLLM(), _cfg(local))
    res = run_explain(UNITS, RuleLLM(), _cfg(ray_out, "ray"))
    assert [r.status for r in res] == ["ok"] * 4
    assert _units(ray_out) == _units(local)
    # the stage's call log and usage summary add up to the local run's
    assert len(_calls(ray_out)) == len(_calls(local)) > 0
    assert (json.loads((ray_out / "ledger_summary.json").read_text())
            == json.loads((local / "ledger_summary.json").read_text()))

    # interrupted locally (two units done), resumed on Ray: only the other two are asked
    mixed = tmp_path / "mixed"
    run_explain(UNITS[:2], RuleLLM(), _cfg(mixed))
    n_before = len(_calls(mixed))
    run_explain(UNITS, RuleLLM(), _cfg(mixed, "ray"))
    new_units = {c["unit"].split("#")[0] for c in _calls(mixed)[n_before:]}
    assert new_units == {"blocks.0.mlp.hook_post.2", "blocks.0.mlp.hook_post.3"}
    assert _units(mixed) == _units(local)

    # and the other way round: two units on Ray, the rest locally (no call for finished units)
    back = tmp_path / "back"
    run_explain(UNITS[2:], RuleLLM(), _cfg(back, "ray"))
    llm = RuleLLM()
    run_explain(UNITS, llm, _cfg(back))
    assert _units(back) == _units(local)
    per_unit_chats = sum(1 for c in _calls(local) if c["op"] == "chat") // 4
    assert llm.calls["chat"] == 2 * per_unit_chats


def test_explain_bad_key_on_ray_stops_like_locally(ray_cluster, tmp_path):
    with OpenAIStandin(api_key="sk-right") as srv:
        srv.responder = lambda req: Reply.chat("days of the week")
        errors = {}
        for executor in ("local", "ray"):
            llm = get_llm("openai:standin-model", base_url=srv.base_url, api_key="sk-wrong", cache=False,
                          ledger=Ledger())
            with pytest.raises(LLMError) as e:
                run_explain(UNITS[:2], llm, _cfg(tmp_path / executor, executor))
            errors[executor] = (type(e.value), e.value.kind)
            assert "sk-wrong" not in str(e.value)
            assert llm.ledger.usage()["failures"].get("fatal:auth", 0) >= 1  # the refused call is counted
            assert not list((tmp_path / executor / "units").glob("*.json"))
    assert errors["ray"] == errors["local"] and errors["local"][1] == "auth"


# ------------------------------------------------------------------ concept labels
GROUPS = {3: [(0, "December"), (1, "days"), (2, "hours")], 7: [(3, "red"), (4, "blue")],
          9: [(5, "cat"), (6, "dog"), (7, "horse")], 12: [(9, "Paris"), (10, "Rome")],
          15: [(11, "run"), (12, "walk")], 18: [(13, "happy"), (14, "sad")]}
LABELS = {"December": "time units", "red": "colours", "cat": "animals", "Paris": "cities", "run": "motion verbs",
          "happy": "emotions"}


def label_reply(request):
    last = request["json"]["messages"][-1]["content"] or ""
    words = [w for w in LABELS if w in last]
    tokens = sum(len(m["content"] or "") for m in request["json"]["messages"])
    answer = LABELS[words[0]] if len(words) == 1 else "other"
    return Reply.chat(answer, prompt_tokens=tokens, completion_tokens=2)


def _llm(srv, ledger, key="sk-test", **kw):
    return get_llm("openai:gpt-4o-mini", base_url=srv.base_url, api_key=key, ledger=ledger, cache=False, **kw)


def _label_rows(labels):
    return [(lab.concept_id, lab.label, lab.status, lab.key, lab.usage) for lab in labels]


def test_labels_on_ray_equal_local_and_resume_either_way(ray_cluster, tmp_path):
    opts = LabelOptions(template="label-general", requests_per_batch=2)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = label_reply
        led_local, led_ray = Ledger(), Ledger()
        local = label_concepts(flat_set(GROUPS), _llm(srv, led_local), tmp_path / "local.jsonl", opts, progress=False)
        n_local = len(srv.posts("/chat/completions"))
        on_ray = label_concepts(flat_set(GROUPS), _llm(srv, led_ray), tmp_path / "ray.jsonl", opts, progress=False,
                                executor="ray")
        assert len(srv.posts("/chat/completions")) == 2 * n_local == 12
        assert _label_rows(on_ray) == _label_rows(local)
        assert sum(lab.accepted for lab in local) >= 4
        assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
        # the workers' calls are in the caller's ledger: the same totals as the local run
        keys = ("calls", "requests", "prompt_tokens", "completion_tokens", "failures")
        assert {k: led_ray.usage()[k] for k in keys} == {k: led_local.usage()[k] for k in keys}
        assert led_ray.usage()["requests"] == 6

        # interrupted locally after three concepts, resumed on Ray (and the other way round)
        for first, second, name in (("local", "ray", "a.jsonl"), ("ray", "local", "b.jsonl")):
            label_concepts(flat_set(GROUPS), _llm(srv, Ledger()), tmp_path / name, opts, ids=[3, 7, 9], progress=False,
                           executor=first)
            before = len(srv.posts("/chat/completions"))
            resumed = label_concepts(flat_set(GROUPS), _llm(srv, Ledger()), tmp_path / name, opts, progress=False,
                                     executor=second)
            assert len(srv.posts("/chat/completions")) - before == 3
            assert [(r[0], r[1], r[2], r[3]) for r in _label_rows(resumed)] == \
                [(r[0], r[1], r[2], r[3]) for r in _label_rows(local)]
            assert len(LabelStore(tmp_path / name).records) == 6


def test_labels_bad_key_on_ray_stops_like_locally(ray_cluster, tmp_path):
    with OpenAIStandin(api_key="sk-right") as srv:
        srv.responder = label_reply
        kinds = []
        for executor in ("local", "ray"):
            led = Ledger()
            with pytest.raises(LLMError) as e:
                label_concepts(flat_set(GROUPS), _llm(srv, led, key="sk-wrong"), tmp_path / f"{executor}.jsonl",
                               LabelOptions(template="label-general"), progress=False, executor=executor)
            kinds.append(e.value.kind)
            assert "sk-wrong" not in str(e.value)
            assert led.usage()["failures"].get("fatal:auth", 0) >= 1  # the refused call is counted
            assert not LabelStore(tmp_path / f"{executor}.jsonl").records
        assert kinds == ["auth", "auth"]


# ------------------------------------------------------------------ descriptors
SENTENCES = {10: "The cat sat on the mat.", 11: "Markets rose 3 percent.", 12: "Rain again.",
             13: "The dog barked at the market.", 14: "Sunny and warm.", 15: "The cat sat on the mat."}
TOPICS = {"cat": "animals", "dog": "animals", "market": "finance", "rain": "weather", "sunny": "weather"}


def descriptor_reply(request):
    s = json.loads(request["json"]["messages"][-1]["content"].split("Sentence: ", 1)[1]).lower()
    return Reply.chat(json.dumps(sorted({t for k, t in TOPICS.items() if k in s}) or ["other"]),
                      prompt_tokens=len(s), completion_tokens=4)


def _desc_rows(recs):
    return [(r.sentence, r.status, r.descriptors, r.key, r.usage) for r in recs]


def test_descriptors_on_ray_equal_local_and_resume_either_way(ray_cluster, tmp_path):
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = descriptor_reply
        led_local, led_ray = Ledger(), Ledger()
        local = generate_descriptors(SENTENCES, _llm(srv, led_local), tmp_path / "local.jsonl", progress=False)
        ray_recs = generate_descriptors(SENTENCES, _llm(srv, led_ray), tmp_path / "ray.jsonl", progress=False,
                                        executor="ray", batch_size=2)
        assert len(srv.posts("/chat/completions")) == 10  # five distinct sentences, twice
        assert _desc_rows(ray_recs) == _desc_rows(local)
        assert local[0].descriptors == ["animals"] and local[1].descriptors == ["finance"]
        assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
        keys = ("calls", "requests", "prompt_tokens", "completion_tokens")
        assert {k: led_ray.usage()[k] for k in keys} == {k: led_local.usage()[k] for k in keys}

        part = {s: t for s, t in SENTENCES.items() if s in (10, 11)}
        for first, second, name in (("local", "ray", "a.jsonl"), ("ray", "local", "b.jsonl")):
            generate_descriptors(part, _llm(srv, Ledger()), tmp_path / name, progress=False, executor=first)
            before = len(srv.posts("/chat/completions"))
            resumed = generate_descriptors(SENTENCES, _llm(srv, Ledger()), tmp_path / name, progress=False,
                                           executor=second)
            assert len(srv.posts("/chat/completions")) - before == 3
            assert [r[:4] for r in _desc_rows(resumed)] == [r[:4] for r in _desc_rows(local)]
            assert set(read_records(tmp_path / name)) == {10, 11, 12, 13, 14}


def test_descriptors_bad_key_on_ray_stops_like_locally(ray_cluster, tmp_path):
    with OpenAIStandin(api_key="sk-right") as srv:
        srv.responder = descriptor_reply
        for executor in ("local", "ray"):
            led = Ledger()
            with pytest.raises(LLMError) as e:
                generate_descriptors(SENTENCES, _llm(srv, led, key="sk-wrong"), tmp_path / "d.jsonl",
                                     progress=False, executor=executor)
            assert e.value.kind == "auth" and "sk-wrong" not in str(e.value)
            assert led.usage()["failures"].get("fatal:auth", 0) >= 1  # the refused call is counted
            assert not read_records(tmp_path / "d.jsonl")


def test_ray_workers_share_one_requests_per_minute_budget(ray_cluster, tmp_path):
    """240 requests/minute with a one-request burst: 10 requests take >= 9/4 s in all, whatever
    the number of workers (two workers each with its own budget would take about half)."""
    sentences = {i: f"Sentence number {i} about rain." for i in range(10)}
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = descriptor_reply
        llm = _llm(srv, Ledger(), limiter=Limiter(4, requests_per_minute=240, burst_seconds=0.25))
        recs = generate_descriptors(sentences, llm, tmp_path / "d.jsonl", progress=False, executor="ray")
        times = sorted(r["time"] for r in srv.posts("/chat/completions"))
    assert all(r.ok for r in recs) and len(times) == 10
    assert times[-1] - times[0] >= 9 / 4 - 0.2


# ------------------------------------------------------------------ real interruptions
CRASH_SCRIPT = """
import sys
from tests.helpers.explain_fakes import RuleLLM, planted_unit
from tl_concepts.explain.runner import ExplainConfig, run_explain
units = [planted_unit("weekday", unit=i, seed=i + 1) for i in range(4)]
run_explain(units, RuleLLM(), ExplainConfig(out_dir=sys.argv[1], n_bootstrap=20, progress=False))
"""


def test_explain_killed_locally_resumes_on_ray(ray_cluster, tmp_path):
    """kill -9 after the second unit file of a local run; the Ray rerun asks only for the other
    two units and ends with the files of an uninterrupted run."""
    from tests.helpers.scripts import run_python

    out = tmp_path / "killed"
    crashed = run_python(CRASH_SCRIPT, str(out), crash_at="explain.unit:2")
    assert crashed.returncode == 137, crashed.stderr
    assert len(list((out / "units").glob("*.json"))) == 2
    saved = {p.stem for p in (out / "units").glob("*.json")}
    n_before = len(_calls(out))  # includes the calls of the units in flight when killed
    run_explain(UNITS, RuleLLM(), _cfg(out, "ray"))
    clean = tmp_path / "clean"
    run_explain(UNITS, RuleLLM(), _cfg(clean))
    assert _units(out) == _units(clean)
    # the rerun made exactly the calls of the two unfinished units, none for the saved ones
    rerun = _calls(out)[n_before:]
    assert {c["unit"].split("#")[0] for c in rerun}.isdisjoint(saved)
    assert len(rerun) == sum(1 for c in _calls(clean) if c["unit"].split("#")[0] not in saved)


def _revoke_after(srv, n, reply):
    """A responder that answers ``n`` requests, then revokes the key (the next ones get 401)."""
    def respond(request):
        if len(srv.posts("/chat/completions")) >= n:
            srv.api_key = "sk-revoked"
        return reply(request)
    return respond


def test_labels_stopped_on_ray_keep_what_finished_and_resume_locally(ray_cluster, tmp_path):
    opts = LabelOptions(template="label-general", requests_per_batch=2)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = label_reply
        clean = label_concepts(flat_set(GROUPS), _llm(srv, Ledger()), tmp_path / "clean.jsonl", opts, progress=False)
        srv.requests.clear()
        srv.responder = _revoke_after(srv, 3, label_reply)
        with pytest.raises(LLMError):
            label_concepts(flat_set(GROUPS), _llm(srv, Ledger()), tmp_path / "a.jsonl", opts, progress=False,
                           executor="ray")
        saved = LabelStore(tmp_path / "a.jsonl").records
        assert 1 <= len(saved) <= 4 and all(lab.accepted for lab in saved.values())
        srv.api_key, srv.responder = "sk-test", label_reply
        before = len(srv.posts("/chat/completions"))
        resumed = label_concepts(flat_set(GROUPS), _llm(srv, Ledger()), tmp_path / "a.jsonl", opts, progress=False)
        assert len(srv.posts("/chat/completions")) - before == 6 - len(saved)
    assert [r[:4] for r in _label_rows(resumed)] == [r[:4] for r in _label_rows(clean)]


def test_descriptors_stopped_on_ray_keep_what_finished_and_resume_locally(ray_cluster, tmp_path):
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = descriptor_reply
        clean = generate_descriptors(SENTENCES, _llm(srv, Ledger()), tmp_path / "clean.jsonl", progress=False)
        srv.requests.clear()
        srv.responder = _revoke_after(srv, 2, descriptor_reply)
        with pytest.raises(LLMError):
            generate_descriptors(SENTENCES, _llm(srv, Ledger()), tmp_path / "a.jsonl", progress=False,
                                 executor="ray", batch_size=1)
        saved = read_records(tmp_path / "a.jsonl")
        assert 1 <= len(saved) <= 4 and all(r.ok for r in saved.values())
        srv.api_key, srv.responder = "sk-test", descriptor_reply
        before = len(srv.posts("/chat/completions"))
        resumed = generate_descriptors(SENTENCES, _llm(srv, Ledger()), tmp_path / "a.jsonl", progress=False)
        assert len(srv.posts("/chat/completions")) - before == 5 - len(saved)
    assert [r[:4] for r in _desc_rows(resumed)] == [r[:4] for r in _desc_rows(clean)]


def test_explain_on_ray_against_the_openai_standin_adds_up_in_the_callers_ledger(ray_cluster, tmp_path):
    """The real client rebuilt in each worker: the same explanations and scores, and the same
    calls per stage in the caller's ledger as a local run. (Requests may differ: each worker's
    client finds out once how the endpoint gives prompt log-probabilities.)"""
    units = UNITS[:3]
    calls = {}
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.chat_text = "days of the week."
        for executor in ("local", "ray"):
            led = Ledger()
            llm = get_llm("openai:standin-model", base_url=srv.base_url, api_key="sk-test", cache=False, ledger=led)
            res = run_explain(units, llm, _cfg(tmp_path / executor, executor))
            assert [r.status for r in res] == ["ok"] * 3
            calls[executor] = {r.stage: (r.calls, r.failures) for r in led.rows()}
    strip = {k: {n: {f: v for f, v in d.items() if f != "llm_usage"} for n, d in u.items()}
             for k, u in (("local", _units(tmp_path / "local")), ("ray", _units(tmp_path / "ray")))}
    assert strip["ray"] == strip["local"]
    assert calls["ray"] == calls["local"] and sum(c for c, _ in calls["local"].values()) > 0
    assert "sk-test" not in (tmp_path / "ray" / "ledger.jsonl").read_text()


def _identity(item, llm):
    return llm.cache_identity()


def test_in_process_model_on_ray_workers(ray_cluster, tmp_path):
    """Each worker loads its own copy of an in-process model: same identity (so the same keys),
    and a per-unit failure (here the tiny model's 256-token context is too short for the
    explanation prompt) is recorded on Ray exactly as locally."""
    from tests.helpers.tiny_models import make_tiny_model, make_tiny_tokenizer
    from tl_concepts.executor import map_items
    from tl_concepts.llm.workers import llm_recipe

    tok = make_tiny_tokenizer()
    folder = tmp_path / "tiny-llama"
    make_tiny_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    llm = get_llm(f"in-process:{folder}", cache=False, ledger=Ledger())
    got = map_items(_identity, [0, 1], setup=llm_recipe(llm), executor="ray", num_workers=2)
    assert got == [llm.cache_identity()] * 2
    unit = [planted_unit("weekday", unit=0, seed=1, n_top=3, n_random=3)]
    kw = dict(detection=False, fuzzing=False, baseline=False, explain_max_tokens=8)
    local = run_explain(unit, llm, _cfg(tmp_path / "local", **kw))
    run_explain(unit, llm, _cfg(tmp_path / "ray", "ray", **kw))
    assert local[0].status == "explanation_failed"
    assert local[0].raw["llm"]["explanation"]["failure"]["kind"] == "context_overflow"
    assert _units(tmp_path / "ray") == _units(tmp_path / "local")
