"""The descriptor stage on the embedded models: MiniLM sentence embeddings, SmolLM2 answers."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.openai_server import OpenAIStandin, Reply
from tests.helpers.tiny_models import TEXTS
from tl_concepts.descriptors import build_vocabulary, generate_descriptors
from tl_concepts.llm.ledger import Ledger, MeteredLLM

pytestmark = pytest.mark.slow


def test_minilm_embeddings_cluster_synonyms(minilm_embedder):
    texts = ["stock market", "stock markets", "rainy weather", "heavy rain", "football"]
    e = minilm_embedder(texts)
    assert e.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > 0.8 and sim[0, 1] > sim[0, 2] + 0.3
    assert sim[2, 3] > sim[2, 4]
    v = build_vocabulary([["stock market"], ["stock markets"], ["stock market", "rainy weather"],
                          ["football"]], minilm_embedder, distance_threshold=0.3)
    assert v.cluster_of["stock market"] == v.cluster_of["stock markets"]
    assert v.names[v.cluster_of["stock markets"]] == "stock market"
    assert len({v.cluster_of[t] for t in ("stock market", "rainy weather", "football")}) == 3


def test_in_process_smollm_answers_are_records(smollm2):
    llm = MeteredLLM(smollm2, Ledger())  # what get_llm("in-process", cache=False) builds
    recs = generate_descriptors({0: "Heavy rain flooded the streets of Sydney on Monday."}, llm, progress=False)
    r = recs[0]
    assert r.backend == "in-process" and r.template_version == "v2"
    assert r.status in ("ok", "unparseable", "refusal", "truncated")
    if r.ok:
        assert 1 <= len(r.descriptors) <= 6 and all(d == d.lower() and d.strip() for d in r.descriptors)
    else:
        assert r.descriptors == [] and r.raw is not None


def test_cli_descriptors_with_minilm(tiny_bridge, tmp_path, capsys, monkeypatch):
    """The CLI loads the embedded MiniLM itself (its default embedder)."""
    import json

    from tl_concepts.capture import capture
    from tl_concepts.cli import main

    store = capture(tiny_bridge, TEXTS, ["blocks.0.mlp.hook_post"], tmp_path / "run", context_tokens=32,
                    progress=False)

    def respond(request):
        s = request["json"]["messages"][-1]["content"].lower()
        return Reply.chat(json.dumps(["weather" if "sunny" in s or "rain" in s else "news report", "events"]))

    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("TL_CONCEPTS_LLM_CACHE", str(tmp_path / "llm-cache.sqlite"))
        rc = main(["descriptors", "--store", str(store.path), "--hook", "blocks.0.mlp.hook_post", "--out", str(tmp_path / "d"),
                   "--llm", "openai:standin-model", "--base-url", srv.base_url, "--top-k", "3",
                   "--min-support", "1", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "vocabulary entries: 3" in out and "Jaccard" in out
    assert (tmp_path / "d" / "mapping.parquet").exists()


def test_small_preset_with_the_embedded_models(tiny_bridge, tmp_path, smollm2, minilm_embedder):
    """The main job's settings, end to end on SmolLM2 + MiniLM: a typed result, never a crash."""
    from tl_concepts.capture import capture
    from tl_concepts.descriptors import MAPPING_COLUMNS, Descriptors, DescriptorsConfig, run_descriptors

    store = capture(tiny_bridge, TEXTS * 4, ["blocks.0.mlp.hook_post"], tmp_path / "run", context_tokens=32,
                    progress=False)
    llm = MeteredLLM(smollm2, Ledger())
    cfg = DescriptorsConfig.small(str(store.path), "blocks.0.mlp.hook_post", str(tmp_path / "d"))
    res = run_descriptors(cfg, llm=llm, embed=minilm_embedder, progress=False)
    n = min(32, len(store.sentence_texts()))
    assert res.metrics["sentences"] == n == len(res.sentences)
    assert set(res.sentences["status"]) <= {"ok", "unparseable", "refusal", "truncated"}
    assert res.metrics["ok"] == sum(s == "ok" for s in res.sentences["status"])
    assert list(res.to_pandas().columns) == [c for c, _, _ in MAPPING_COLUMNS]
    assert res.empty == bool(res.message)
    assert Descriptors.load(tmp_path / "d").rows() == res.rows()
