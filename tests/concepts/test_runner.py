import numpy as np
import pytest
from tests.helpers.concepts_fakes import CATEGORIES, FakeLLM, make_input
from sklearn.metrics import adjusted_rand_score

from tl_concepts.concepts import (ConceptInput, ConceptInputError, ConceptsConfig, TooFewPointsError,
                                  discover_concepts, evaluate, label, summary)
from tl_concepts.concepts.filters import FilterConfig


def truth_of(cs):
    cat_of = {w: c for c, (ws, _) in CATEGORIES.items() for w in ws}
    return [cat_of[w] for w in cs.points["text"]]


def test_discover_exact_end_to_end(synth, tmp_path):
    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=10, max_per_type=10), out=str(tmp_path))
    cs = discover_concepts(cfg, synth, progress=False)
    assert cs.n_points == 160 and cs.meta["mode"] == "exact"
    assert [s["n_points"] for s in cs.meta["filters"]["steps"]] == [192, 192, 160]
    assert adjusted_rand_score(truth_of(cs), cs.tree.labels(4)) == 1.0
    for c in cs.concepts():  # concepts know their place in the tree
        assert c.parent is not None and len(c.children) == 2 and c.layer == 3
    assert (tmp_path / "tree.npz").exists()


def test_discover_micro_reports_agreement(tmp_path):
    inp = make_input(n_per_type=40)
    cfg = ConceptsConfig(k=4, mode="micro", n_micro=48, agreement_sample=300,
                         filters=FilterConfig(min_count=1, max_per_type=None), out=str(tmp_path))
    cs = discover_concepts(cfg, inp, progress=False)
    assert cs.meta["mode"] == "micro" and cs.tree.n_leaves == 48
    assert adjusted_rand_score(truth_of(cs), cs.tree.labels(4)) == 1.0
    agr = cs.meta["agreement"]
    assert agr["n_sample"] == 300 and agr["k"] == 4 and agr["ari"] == 1.0
    assert "ARI 1.000" in summary(cs)


def test_default_k(synth, tmp_path):
    cfg = ConceptsConfig(filters=FilterConfig(min_count=1, max_per_type=None), out=str(tmp_path))
    cs = discover_concepts(cfg, synth, progress=False)
    assert cs.k == 192 // 40 == len(cs.concepts())


def test_k_larger_than_points(synth, tmp_path):
    cfg = ConceptsConfig(k=500, filters=FilterConfig(min_count=1, max_per_type=2), out=str(tmp_path))
    with pytest.raises(ValueError, match=r"K=500 .* only 32 word occurrences remain"):
        discover_concepts(cfg, synth, progress=False)


def test_too_few_after_filter(synth, tmp_path):
    with pytest.raises(TooFewPointsError, match="min_count"):
        discover_concepts(ConceptsConfig(k=2, filters=FilterConfig(min_count=50), out=str(tmp_path)), synth,
                          progress=False)


def test_discover_layers_checks_widths(tmp_path):
    from tl_concepts.concepts import discover_layers

    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=3), out=str(tmp_path))
    a, b = make_input(n_per_type=3, dim=16), make_input(n_per_type=3, dim=16, seed=1)
    b.layer = 4
    got = discover_layers(cfg, [3, 4], {3: a, 4: b}, progress=False)
    assert sorted(got) == [3, 4] and (tmp_path / "layer4" / "meta.json").exists() and got[4].k == 4
    with pytest.raises(ConceptInputError, match="mismatched dimensions"):
        discover_layers(cfg, [3, 4], {3: a, 4: make_input(n_per_type=3, dim=24)}, progress=False)
    assert not (tmp_path / "layer5").exists()


def test_nan_activations_are_refused(synth):
    x = synth.representations.copy()
    x[0, 0] = np.nan
    with pytest.raises(ConceptInputError, match="NaN"):
        ConceptInput(x, synth.words, synth.sentences)


def test_label_evaluate_summary(synth, tmp_path):
    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=3), out=str(tmp_path))
    cs = discover_concepts(cfg, synth, progress=False)
    labels = label(cs, cfg, FakeLLM(lambda m: "Label: things"), progress=False)
    assert (tmp_path / "labels-label-general.jsonl").exists() and len(labels) == 4
    judge = FakeLLM(lambda m: '{"acceptable": "yes", "precise": "no"}')
    rep = evaluate(cs, cfg, labels=labels, judge=judge, gold={"x": {"cat"}})
    assert rep.judge.n_acceptable == 4 and rep.judge.n_precise == 0
    text = summary(cs, labels, rep)
    assert "4 concepts over 48 word occurrences" in text and "labels: 4 accepted of 4 concepts" in text
    assert "pos (theta=0.9): 4/4 concepts aligned" in text and "judge: 4/4 acceptable (100.0%)" in text
