"""Concepts from a real capture store (tiny GPT-2 built from a config, TransformerBridge)."""

from tl_concepts.concepts import ConceptsConfig, discover_concepts, from_store, write_tcn, read_tcn
from tl_concepts.concepts.filters import FilterConfig

TEXTS = [
    "The cat sat on the mat. It was a sunny Monday and the cat was happy.",
    "On Tuesday 12 dogs ran to the park. They played until 5 pm.",
    "Markets rose 3 percent on Wednesday after the bank cut rates.",
    "The minister said the talks would resume on Friday in Sydney.",
] * 3


def test_discover_from_capture_store(tiny_bridge, tmp_path, capsys):
    from tl_concepts.capture import capture

    store = capture(tiny_bridge, TEXTS, ["blocks.1.hook_resid_post", "blocks.1.mlp.hook_post"], tmp_path / "run",
                    context_tokens=24, progress=False)
    inp = from_store(store, layer=1, agg="last")
    words = store.words()
    assert inp.hook == "blocks.1.hook_resid_post" and inp.layer == 1
    assert inp.n_points == len(words["word_id"]) and inp.dim == 32 and inp.n_uncaptured == 0
    cfg = ConceptsConfig(store=str(tmp_path / "run"), layer=1, k=5, agg="last",
                         filters=FilterConfig(min_count=3, max_per_type=3))
    cs = discover_concepts(cfg, progress=False)
    assert (tmp_path / "run" / "concepts" / "layer1" / "meta.json").exists()
    assert cs.k == 5 and cs.meta["mode"] == "exact"
    counts = {}
    for w in cs.points["text"]:
        counts[w] = counts.get(w, 0) + 1
    assert set(counts.values()) == {3}
    # members point back to the right word of the right sentence
    sents = store.sentence_texts()
    for i in range(cs.n_points):
        assert sents[cs.points["sentence"][i]].split()[cs.points["index"][i]] == cs.points["text"][i]
    back = read_tcn(tmp_path, layer=1) if write_tcn(cs, tmp_path) else None
    assert back.concept_ids() == cs.concept_ids()
    mlp = from_store(store, "blocks.1.mlp.hook_post", agg="mean")
    assert mlp.dim == 128
    # the CLI subcommand on the same store (no LLM): discovery + alignment summary
    from tl_concepts.cli import main

    assert main(["concepts", "--store", str(tmp_path / "run"), "--layer", "1", "-k", "4", "--agg", "last", "--min-count", "2",
                 "--max-per-type", "2", "--out", str(tmp_path / "cli"), "--no-progress",
                 "--export-tcn", str(tmp_path / "tcn-cli")]) == 0
    assert (tmp_path / "cli" / "meta.json").exists() and (tmp_path / "cli" / "evaluation.json").exists()
    assert read_tcn(tmp_path / "tcn-cli", layer=1, k=4).k == 4
    capsys.readouterr()
    assert main(["concepts", "--store", str(tmp_path / "run"), "--layer", "1", "-k", "999", "--no-progress",
                 "--out", str(tmp_path / "cli2")]) == 2
    assert "K=999" in capsys.readouterr().err

