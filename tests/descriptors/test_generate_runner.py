"""Descriptor generation through the real LLM layer (stand-in OpenAI server), resumption,
and the whole stage on a tiny capture."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.standins.openai_server import OpenAIStandin, Reply  # noqa: E402
from tiny_models import TEXTS, hash_embed  # noqa: E402
from tl_concepts.descriptors import (CorpusTooSmallError, DescriptorsConfig, generate_descriptors,  # noqa: E402
                                     read_records, run_descriptors, summary_table)
from tl_concepts.llm import get_llm  # noqa: E402
from tl_concepts.llm.ledger import Ledger  # noqa: E402

HOOK = "blocks.1.mlp.hook_post"
TOPICS = {"cat": "animals", "dog": "animals", "market": "finance", "bank": "finance", "fire": "disaster",
          "minister": "politics", "rain": "weather", "sunny": "weather"}


def sentence_of(request) -> str:
    return json.loads(request["json"]["messages"][-1]["content"].split("Sentence: ", 1)[1])


def respond(request):
    s = sentence_of(request).lower()
    if "12 dogs" in s:
        return Reply.chat("These dogs are running to the park on a Tuesday afternoon")  # unparseable
    tags = sorted({t for k, t in TOPICS.items() if k in s}) or ["other"]
    return Reply.chat(json.dumps(tags + ["news"]))


def llm_for(srv, **kw):
    return get_llm("openai:standin-model", base_url=srv.base_url, api_key="sk-test", cache=False, ledger=Ledger(),
                   **kw)


def test_generation_records_failures_and_resumes(tmp_path):
    sentences = {10: "The cat sat on the mat.", 11: "On Tuesday 12 dogs ran to the park.",
                 12: "Markets rose 3 percent.", 13: "Rain again."}
    path = tmp_path / "d.jsonl"
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        srv.push(Reply.error(500, "boom"))  # the first request fails (no retries below)
        recs = generate_descriptors(sentences, llm_for(srv, retry=0), path, batch_size=1, progress=False)
        assert [r.sentence for r in recs] == [10, 11, 12, 13]
        by = {r.sentence: r for r in recs}
        assert by[10].status == "retries_exhausted" and by[10].descriptors == []
        assert by[11].status == "unparseable" and by[11].descriptors == [] and "Tuesday" in by[11].raw
        assert by[12].ok and by[12].descriptors == ["finance", "news"]
        assert by[12].model == "standin-model" and by[12].backend == "openai"
        assert (by[12].template, by[12].template_version) == ("descriptors", "v1")
        assert len(srv.posts("/chat/completions")) == 4
        # a torn last line (crash mid-write) is ignored
        with path.open("a") as f:
            f.write('{"sentence": 13, "sta')
        # rerun: only the transport failure is asked again
        recs2 = generate_descriptors(sentences, llm_for(srv), path, progress=False)
        assert len(srv.posts("/chat/completions")) == 5
        assert sentence_of(srv.posts("/chat/completions")[-1]) == sentences[10]
        assert {r.sentence: r.status for r in recs2} == {10: "ok", 11: "unparseable", 12: "ok", 13: "ok"}
        assert read_records(path)[10].descriptors == ["animals", "news"]


@pytest.fixture(scope="module")
def store(tiny_bridge, tmp_path_factory):
    from tl_concepts.capture import capture

    return capture(tiny_bridge, TEXTS * 2, [HOOK], tmp_path_factory.mktemp("d") / "run", context_tokens=32,
                   progress=False)


def test_run_descriptors_end_to_end(store, tmp_path):
    n_sent = len(store.sentence_texts())
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps({"0": ["finance"], "1": ["weather", "Animals"], "2": ["not a descriptor"]}))
    cfg = DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "out"), top_k=5,
                            min_support=2, composition_threshold=0.4, gold=str(gold), batch_size=8)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        res = run_descriptors(cfg, llm=llm_for(srv), embed=hash_embed, progress=False)
        assert len(srv.posts("/chat/completions")) == n_sent
        m = res.metrics
        assert m["sentences"] == n_sent and m["ok"] + sum(m["failed"].values()) == n_sent
        assert m["failed"].get("unparseable", 0) >= 1
        assert m["neurons"] == store.d(HOOK)
        assert 0.0 <= m["precision_at_k"] <= 1.0 and 0.0 <= m["recall_at_k"] <= 1.0
        assert np.isnan(m["jaccard"]) or 0.0 <= m["jaccard"] <= 1.0
        reps = set(res.vocabulary["representative"])
        assert {"animals", "finance", "news"} <= reps
        # mapping rows satisfy the thresholds they were made with
        for r in res.mapping:
            assert r["composition"] >= 0.4 and r["lift"] >= 2.0 and r["support"] >= 2
            assert r["half"] in ("calibration", "validation")
        for name in ("sentences", "vocabulary", "mapping"):
            assert (tmp_path / "out" / f"{name}.parquet").exists()
        assert json.loads((tmp_path / "out" / "metrics.json").read_text())["ok"] == m["ok"]
        assert "Jaccard" in summary_table(res)
        # rerun resumes: no new LLM request, same numbers
        res2 = run_descriptors(cfg, llm=llm_for(srv), embed=hash_embed, progress=False)
        assert len(srv.posts("/chat/completions")) == n_sent
        assert res2.metrics == res.metrics


def test_corpus_too_small_for_the_split(store, tmp_path):
    cfg = DescriptorsConfig(store=str(store.path), hook=HOOK, out=str(tmp_path / "o"), top_k=1000)
    with pytest.raises(CorpusTooSmallError, match="2 x top_k=1000"):
        run_descriptors(cfg, llm=object(), embed=hash_embed, progress=False)
