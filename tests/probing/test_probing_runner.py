import numpy as np
import pytest

from tiny_models import TEXTS, label_file
from tl_concepts.probing import ProbeOptions, ProbingInputError
from tl_concepts.probing.labels import load_labelled
from tl_concepts.probing.runner import (ProbeConfig, RankConfig, probe_summary_table, rank_summary_table,
                                        run_probes, run_rankings)

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def store(tiny_bridge, tmp_path_factory):
    from tl_concepts.capture import capture

    return capture(tiny_bridge, TEXTS * 3, [HOOK, "blocks.1.mlp.hook_post"], tmp_path_factory.mktemp("p") / "run",
                   context_tokens=32, progress=False)


def test_probe_and_rank_runners_on_a_capture(store, tmp_path):
    src = label_file(store, tmp_path / "labels.tsv")
    cfg = ProbeConfig(store=str(store.path), hook=HOOK, labels=src, min_size=5, out=str(tmp_path / "out"),
                      options=ProbeOptions(c_grid=(1.0,)))
    ds = run_probes(cfg, progress=False)
    assert set(ds["label"]) == {"num", "cap", "the", "*all*"}
    assert set(ds["task"]) == {"binary", "multiclass"}
    for r in ds:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert r["selectivity"] == pytest.approx(r["test_accuracy"] - r["control_accuracy"])
    # 'the' is one word type: a probe on it is pure memorisation -> the control task (one type,
    # one random label) can reach the same accuracy or not, but the accuracy must be high
    the = next(r for r in ds if r["label"] == "the")
    assert the["test_accuracy"] >= 0.9
    assert (tmp_path / "out" / "probes.parquet").exists()
    table = probe_summary_table(ds)
    assert "selectivity" in table and "mean" in table.splitlines()[-1]

    out = run_rankings(RankConfig(store=str(store.path), hook="blocks.1.mlp.hook_post", labels=src, min_size=5,
                                  methods=("probeless", "average_precision"), top_n=5, out=str(tmp_path / "out")),
                       progress=False)
    rk = out.rankings
    assert len(rk) == 4 * 2 * 5
    d = store.d("blocks.1.mlp.hook_post")
    assert all(0 <= n < d for n in rk["neuron"])
    # ranks are ordered by score within each (label, method)
    for lab in ("num", "*all*"):
        sc = [r["score"] for r in rk if r["label"] == lab and r["method"] == "probeless"]
        assert sc == sorted(sc, reverse=True)
    assert "probeless" in rank_summary_table(out)
    assert out.alignment is None


def test_rankings_with_concepts_give_alignment(store, tmp_path):
    from tl_concepts.concepts import ConceptsConfig, discover_concepts

    discover_concepts(ConceptsConfig(store=str(store.path), hook=HOOK, k=6, out=str(tmp_path / "cs"),
                                     agreement_sample=0), progress=False)
    out = run_rankings(RankConfig(store=str(store.path), hook=HOOK, labels=f"concepts:{tmp_path / 'cs'}",
                                  min_size=3, top_n=3, align_n=5), progress=False)
    assert out.alignment is not None and len(out.alignment) >= 1
    for r in out.alignment:
        assert 1 <= len(r["children"]) <= 2 and all(0 <= o <= 1 for o in r["overlaps"])
        assert r["mean"] == pytest.approx(np.mean(r["overlaps"]))
    assert "alignment" in rank_summary_table(out)


def test_label_source_errors(store, tmp_path):
    with pytest.raises(ProbingInputError, match="unknown label source"):
        load_labelled(store, HOOK, "nope.tsv")
    p = tmp_path / "bad.tsv"
    p.write_text("word_id\tlabel\n999999\tx\n")
    with pytest.raises(ProbingInputError, match="not words of this store"):
        load_labelled(store, HOOK, str(p))
    with pytest.raises(ProbingInputError, match="no label"):
        run_probes(ProbeConfig(store=str(store.path), hook=HOOK, labels=label_file(store, tmp_path / "l.tsv"),
                               min_size=10_000), progress=False)


def test_cli_probe_and_rank(store, tmp_path, capsys):
    from tl_concepts.cli import main

    src = label_file(store, tmp_path / "labels.tsv")
    assert main(["probe", "--store", str(store.path), "--hook", HOOK, "--labels", src, "--min-size", "5",
                 "--c-grid", "1", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "selectivity" in text and (tmp_path / "o" / "probes.parquet").exists()
    assert main(["rank", "--store", str(store.path), "--hook", HOOK, "--labels", src, "--min-size", "5",
                 "--method", "probeless", "probe_weights", "--top-n", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "probe_weights" in text and "top 5 neurons" in text
