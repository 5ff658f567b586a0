"""Descriptor generation through the real LLM layer (stand-in OpenAI server): keyed, healing
resumption, truncation, fatal errors, and the whole stage on a tiny capture."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from tests.helpers.hub_data import descriptor_reply
from tests.helpers.openai_server import OpenAIStandin, Reply
from tests.helpers.scripts import run_descriptors_child
from tests.helpers.tiny_models import TEXTS, hash_embed
from tests.helpers.usage import standin_llm
from tl_concepts.descriptors import (MAPPING_COLUMNS, CorpusTooSmallError, Descriptors, DescriptorsConfig,
                                     generate_descriptors, read_records, run_descriptors, summary_table)
from tl_concepts.errors import ConfigError, InputError, LLMError, StoreError
from tl_concepts.llm import get_llm
from tl_concepts.llm.ledger import Ledger

HOOK = "blocks.1.mlp.hook_post"


def sentence_of(request) -> str:
    return json.loads(request["json"]["messages"][-1]["content"].split("Sentence: ", 1)[1])


def respond(request):
    if "12 dogs" in sentence_of(request).lower():
        return Reply.chat("These dogs are running to the park on a Tuesday afternoon")  # unparseable
    return descriptor_reply(request)


def llm_for(srv, model="standin-model", **kw):
    return standin_llm(srv, model=model, **kw)


SENTENCES = {10: "The cat sat on the mat.", 11: "On Tuesday 12 dogs ran to the park.",
             12: "Markets rose 3 percent.", 13: "Rain again."}


def test_generation_records_failures_and_heals(tmp_path):
    path = tmp_path / "d.jsonl"
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        srv.push(Reply.error(500, "boom"))  # the first request fails (no retries below)
        recs = generate_descriptors(SENTENCES, llm_for(srv, retry=0), path, batch_size=1, progress=False)
        assert [r.sentence for r in recs] == [10, 11, 12, 13]
        by = {r.sentence: r for r in recs}
        assert by[10].status == "retries_exhausted" and by[10].descriptors == []
        assert by[11].status == "unparseable" and by[11].descriptors == [] and "Tuesday" in by[11].raw
        assert by[12].ok and by[12].descriptors == ["finance", "news"]
        assert by[12].model == "standin-model" and by[12].backend == "openai"
        assert (by[12].template, by[12].template_version) == ("descriptors", "v2")
        assert len({r.key for r in recs}) == 4 and all(len(r.key) == 16 for r in recs)
        assert len(srv.posts("/chat/completions")) == 4
        # a torn last line (crash mid-write) is ignored
        with path.open("a") as f:
            f.write('{"sentence": 13, "sta')
        # rerun: only the transient failure is asked again; the unparseable answer is kept
        recs2 = generate_descriptors(SENTENCES, llm_for(srv), path, progress=False)
        assert len(srv.posts("/chat/completions")) == 5
        assert sentence_of(srv.posts("/chat/completions")[-1]) == SENTENCES[10]
        assert {r.sentence: r.status for r in recs2} == {10: "ok", 11: "unparseable", 12: "ok", 13: "ok"}
        assert read_records(path)[10].descriptors == ["animals", "news"]
        # nothing left to heal: no request
        generate_descriptors(SENTENCES, llm_for(srv), path, progress=False)
        assert len(srv.posts("/chat/completions")) == 5
        # retry_failed asks the permanent failure again (and only it)
        generate_descriptors(SENTENCES, llm_for(srv), path, retry_failed=True, progress=False)
        assert len(srv.posts("/chat/completions")) == 6
        assert sentence_of(srv.posts("/chat/completions")[-1]) == SENTENCES[11]


def test_changed_inputs_are_asked_again(tmp_path):
    path = tmp_path / "d.jsonl"
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        first = generate_descriptors(SENTENCES, llm_for(srv), path, progress=False)
        assert len(srv.posts("/chat/completions")) == 4
        # same ids, one text changed: only that sentence is asked, and it gets the new answer
        changed = {**SENTENCES, 12: "The minister spoke."}
        recs = generate_descriptors(changed, llm_for(srv), path, progress=False)
        assert len(srv.posts("/chat/completions")) == 5
        assert {r.sentence: r.descriptors for r in recs}[12] == ["politics", "news"]
        # another model (LLM identity) or another temperature: every sentence is asked again
        generate_descriptors(SENTENCES, llm_for(srv, model="other-model"), path, progress=False)
        assert len(srv.posts("/chat/completions")) == 9
        generate_descriptors(SENTENCES, llm_for(srv), path, temperature=0.5, progress=False)
        assert len(srv.posts("/chat/completions")) == 13
        # back to the first inputs: all answers reused, identical to the first run
        again = generate_descriptors(SENTENCES, llm_for(srv), path, progress=False)
        assert len(srv.posts("/chat/completions")) == 13
        assert again == first


def test_truncated_answers_are_failures(tmp_path):
    path = tmp_path / "d.jsonl"
    cut = {0: "War and finance news."}
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = lambda req: Reply.chat('["war", "fin', finish_reason="length")
        (r,) = generate_descriptors(cut, llm_for(srv), path, progress=False)
        assert r.status == "truncated" and r.descriptors == [] and not r.ok
        # permanent: a plain rerun keeps it, --retry-failed asks again
        generate_descriptors(cut, llm_for(srv), path, progress=False)
        assert len(srv.posts("/chat/completions")) == 1
        srv.responder = lambda req: Reply.chat('["war", "finance"]')
        (r2,) = generate_descriptors(cut, llm_for(srv), path, retry_failed=True, progress=False)
        assert len(srv.posts("/chat/completions")) == 2 and r2.descriptors == ["war", "finance"]


def test_fatal_llm_error_stops_the_stage(store, tmp_path):
    cfg = DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o"), top_k=2, requests_per_batch=4)
    with OpenAIStandin(api_key="sk-right") as srv:
        srv.responder = respond
        llm = get_llm("openai:standin-model", base_url=srv.base_url, api_key="sk-wrong", cache=False,
                      ledger=Ledger())
        with pytest.raises(LLMError) as e:
            run_descriptors(cfg, llm=llm, embed=hash_embed, progress=False)
        assert e.value.kind == "auth" and "sk-wrong" not in str(e.value)
    assert not (tmp_path / "o" / "mapping.parquet").exists()


def test_sync_entry_point_inside_a_running_loop(tmp_path):
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond

        async def notebook_cell():
            return generate_descriptors(SENTENCES, llm_for(srv), tmp_path / "d.jsonl", progress=False)

        recs = asyncio.run(notebook_cell())
    assert [r.status for r in recs] == ["ok", "unparseable", "ok", "ok"]


@pytest.fixture(scope="module")
def store(tiny_bridge, tmp_path_factory):
    from tl_concepts.capture import capture

    return capture(tiny_bridge, TEXTS * 2, [HOOK], tmp_path_factory.mktemp("d") / "run", context_tokens=32,
                   progress=False)


def distinct(store) -> int:
    return len(set(store.sentence_texts()))


def test_run_descriptors_end_to_end(store, tmp_path):
    n_sent = len(store.sentence_texts())
    assert distinct(store) < n_sent  # the corpus repeats: one request per distinct sentence
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps({"0": ["finance"], "1": ["weather", "Animals"], "2": ["not a descriptor"]}))
    cfg = DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "out"), top_k=5,
                            min_support=2, composition_threshold=0.4, gold=str(gold), requests_per_batch=8)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        res = run_descriptors(cfg, llm=llm_for(srv), embed=hash_embed, progress=False)
        assert isinstance(res, Descriptors) and not res.empty and res.message == ""
        assert len(srv.posts("/chat/completions")) == distinct(store)
        m = res.metrics
        assert m["sentences"] == n_sent and m["ok"] + sum(m["failed"].values()) == n_sent
        assert m["failed"].get("unparseable", 0) >= 1
        assert m["neurons"] == store.d(HOOK)
        assert 0.0 <= m["precision_at_k"] <= 1.0 and 0.0 <= m["recall_at_k"] <= 1.0
        assert np.isnan(m["jaccard"]) or 0.0 <= m["jaccard"] <= 1.0
        reps = set(res.vocabulary["representative"])
        assert {"animals", "finance", "news"} <= reps
        # mapping rows satisfy the thresholds they were made with, and carry the one unit id
        rows = res.rows()
        assert rows and list(rows[0]) == [c for c, _, _ in MAPPING_COLUMNS]
        for r in rows:
            assert r["composition"] >= 0.4 and r["lift"] >= 2.0 and r["support"] >= 2
            assert r["half"] in ("calibration", "validation")
            assert r["unit"] == f"{HOOK}.{r['neuron']}" and r["hook"] == HOOK
        assert m["neurons_mapped"] == len({r["neuron"] for r in rows if r["half"] == "calibration"})
        df = res.to_pandas()
        assert len(df) == len(rows) and list(df.columns) == [c for c, _, _ in MAPPING_COLUMNS]
        for name in ("sentences", "vocabulary", "mapping"):
            assert (tmp_path / "out" / f"{name}.parquet").exists()
        assert json.loads((tmp_path / "out" / "metrics.json").read_text())["ok"] == m["ok"]
        prov = json.loads((tmp_path / "out" / "descriptors.json").read_text())["provenance"]
        assert prov["llm"]["model"] == "standin-model" and prov["template_version"] == "v2"
        assert "Jaccard" in summary_table(res)
        assert repr(res).startswith(f"Descriptors({HOOK}: {m['neurons_mapped']} of {m['neurons']} neurons")
        loaded = Descriptors.load(tmp_path / "out")
        assert loaded.rows() == rows and loaded.hook == HOOK and loaded.provenance == prov
        assert loaded.sentences.to_list() == res.sentences.to_list()
        # rerun resumes: no new LLM request, same numbers
        res2 = run_descriptors(cfg, llm=llm_for(srv), embed=hash_embed, progress=False)
        assert len(srv.posts("/chat/completions")) == distinct(store)
        assert res2.rows() == rows
        assert json.dumps(res2.metrics) == json.dumps(res.metrics)  # NaN-safe equality


def test_nothing_maps_gives_an_empty_typed_result(store, tmp_path):
    # every sentence gets its own descriptor: no vocabulary entry is shared, nothing maps
    def unique(request):
        return Reply.chat(json.dumps([f"topic {abs(hash(sentence_of(request))) % 10**8}"]))

    cfg = DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o"), top_k=2, min_support=1,
                            min_entry_sentences=1)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = unique
        res = run_descriptors(cfg, llm=llm_for(srv), embed=hash_embed, progress=False)
    assert res.empty and res.rows() == [] and "no neuron received a descriptor" in res.message
    df = res.to_pandas()
    assert len(df) == 0 and list(df.columns) == [c for c, _, _ in MAPPING_COLUMNS]
    assert res.to_dataset().features["neuron"].dtype == "int64"
    assert res.metrics["neurons_mapped"] == 0 and res.metrics["message"] == res.message
    assert res.message in repr(res) and res.message in summary_table(res)
    back = Descriptors.load(tmp_path / "o")
    assert back.empty and back.message == res.message and len(back.sentences) == len(res.sentences)

    # every answer fails: still a typed, empty result naming the failures
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = lambda req: Reply.chat("I like turtles because they are slow and very old animals")
        res = run_descriptors(DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o2"), top_k=2),
                              llm=llm_for(srv), embed=hash_embed, progress=False)
    assert res.empty and "no sentence got descriptors" in res.message and "unparseable" in res.message
    assert len(res.vocabulary) == 0 and res.to_pandas().shape == (0, len(MAPPING_COLUMNS))


def test_html_is_escaped(store, tmp_path):
    def evil(request):
        s = sentence_of(request).lower()
        return Reply.chat(json.dumps(["<b>bold</b>" if "rain" in s or "sunny" in s else "calm", "news"]))

    cfg = DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o"), top_k=2, min_support=1,
                            composition_threshold=0.5, min_lift=1.0)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = evil
        res = run_descriptors(cfg, llm=llm_for(srv), embed=hash_embed, progress=False)
    assert any("<b>" in d for d in res.to_pandas()["descriptor"])
    page = res._repr_html_()
    assert "&lt;b&gt;" in page and "<b>bold" not in page


def test_bad_input_fails_before_any_request(store, tmp_path):
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        with pytest.raises(InputError, match="was not captured"):
            run_descriptors(DescriptorsConfig(store=str(store.path), hook="blocks.9.mlp.hook_post",
                                              out=str(tmp_path / "o")), llm=llm_for(srv), progress=False)
        with pytest.raises(ConfigError, match="unknown descriptor template"):
            run_descriptors(DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o"),
                                              template="nope"), llm=llm_for(srv), progress=False)
        with pytest.raises(CorpusTooSmallError, match="2 x top_k=1000"):
            run_descriptors(DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o"),
                                              top_k=1000), llm=llm_for(srv), progress=False)
        bad_gold = tmp_path / "gold.json"
        bad_gold.write_text('{"0": "finance"}')
        with pytest.raises(InputError, match="must be JSON"):
            run_descriptors(DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o"), top_k=2,
                                              gold=str(bad_gold)), llm=llm_for(srv), progress=False)
        with pytest.raises(StoreError, match="there is no capture at"):
            run_descriptors(DescriptorsConfig(store=str(tmp_path / "none"), hook=HOOK, out=str(tmp_path / "o")),
                            llm=llm_for(srv), progress=False)
        assert srv.posts("/chat/completions") == []
    assert issubclass(CorpusTooSmallError, InputError)


def test_kill_mid_descriptors_then_rerun_equals_an_uninterrupted_run(store, tmp_path):
    n_sent = distinct(store)
    assert n_sent > 8  # at least three batches of 4
    cfg = dict(store=str(store.path), hook=HOOK, top_k=3, min_support=2, requests_per_batch=4)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        p = run_descriptors_child(srv.base_url, str(store.path), HOOK, str(tmp_path / "crashed"),
                                  llm="openai:standin-model", crash_at="descriptors.batch:2")
        assert p.returncode == 137, p.stderr[-2000:]
        assert "finished" not in p.stdout and "descriptors.batch" in p.stderr
        assert len(srv.posts("/chat/completions")) == 8  # two batches asked, both saved
        assert not (tmp_path / "crashed" / "mapping.parquet").exists()
        resumed = run_descriptors(DescriptorsConfig(out=str(tmp_path / "crashed"), **cfg), llm=llm_for(srv),
                                  embed=hash_embed, progress=False)
        assert len(srv.posts("/chat/completions")) == n_sent  # nothing asked twice
        fresh = run_descriptors(DescriptorsConfig(out=str(tmp_path / "fresh"), **cfg), llm=llm_for(srv),
                                embed=hash_embed, progress=False)
    assert resumed.rows() == fresh.rows()
    assert resumed.sentences.to_list() == fresh.sentences.to_list()
    from tl_concepts.atomic import folder_lock
    from tl_concepts.errors import FolderLockedError

    with folder_lock(tmp_path / "fresh"), pytest.raises(FolderLockedError):
        run_descriptors(DescriptorsConfig(out=str(tmp_path / "fresh"), **cfg), llm=object(), embed=hash_embed,
                        progress=False)
    assert resumed.vocabulary.to_list() == fresh.vocabulary.to_list()
    assert json.dumps(resumed.metrics) == json.dumps(fresh.metrics)


def test_stage_runs_inside_a_notebook_loop_and_awaited(store, tmp_path):
    from tl_concepts.descriptors import arun_descriptors

    cfg = DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o"), top_k=3, min_support=2)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond

        async def cell():
            sync = run_descriptors(cfg, llm=llm_for(srv), embed=hash_embed, progress=False)  # blocking call
            awaited = await arun_descriptors(cfg, llm=llm_for(srv), embed=hash_embed, progress=False)
            return sync, awaited

        sync, awaited = asyncio.run(cell())
        assert len(srv.posts("/chat/completions")) == distinct(store)  # the second call resumed
    assert sync.rows() == awaited.rows() and not sync.empty
