import numpy as np
import pytest

from tl_concepts.probing import ProbingInputError
from tl_concepts.probing.overlap import concept_alignment, top_n_overlap, tree_members
from tl_concepts.probing.rankers import RANKERS, average_precision, probe_weights, probeless, rank_neurons


def planted(n=400, d=30, neuron=17, seed=0, n_classes=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, neuron] = (y == n_classes - 1) + 0.1 * rng.normal(size=n)
    return x, y


@pytest.mark.parametrize("method", sorted(RANKERS))
def test_planted_neuron_ranks_first(method):
    x, y = planted()
    r = rank_neurons(x, y.tolist(), method)
    assert r.order[0] == 17
    assert r.top(1, "1")[0] == 17
    assert sorted(r.order.tolist()) == list(range(30))


@pytest.mark.parametrize("method", sorted(RANKERS))
def test_planted_neuron_ranks_first_multiclass(method):
    x, y = planted(n=600, n_classes=3, neuron=4)
    r = rank_neurons(x, [f"c{v}" for v in y], method)
    assert r.per_class["c2"][0] == 4
    assert r.order[0] == 4


def test_probeless_matches_hand_computation():
    x = np.array([[1, 0, 5], [3, 0, 5], [2, 4, 5], [6, 2, 5], [0, 1, 5]], np.float32)
    labels = ["a", "a", "b", "b", "c"]
    with pytest.raises(ProbingInputError, match="fewer than 2 members"):
        probeless(x, labels)
    labels = ["a", "a", "b", "b", "b"]
    # q(a) = (2, 0, 5); q(b) = (8/3, 7/3, 5)
    r = probeless(x, labels)
    np.testing.assert_allclose(r.scores, [2 / 3, 7 / 3, 0], rtol=1e-6)
    np.testing.assert_allclose(r.per_class_scores["a"], [2 / 3, 7 / 3, 0], rtol=1e-6)
    assert r.order.tolist() == [1, 0, 2]
    assert r.constant.tolist() == [2]
    # three classes: per class the sum over the other classes, overall over pairs
    x3 = np.array([[0.0], [0.0], [1.0], [1.0], [4.0], [4.0]], np.float32)
    r3 = probeless(x3, [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose([r3.per_class_scores[c][0] for c in "012"], [1 + 4, 1 + 3, 4 + 3])
    np.testing.assert_allclose(r3.scores, [1 + 4 + 3])


def test_constant_neurons_go_last_for_every_method():
    x, y = planted(d=8, neuron=2)
    x[:, 0] = 3.0
    x[:, 5] = 0.0
    for m in RANKERS:
        r = rank_neurons(x, y.tolist(), m)
        assert set(r.order[-2:].tolist()) == {0, 5}, m
        assert r.constant.tolist() == [0, 5]


def test_probe_weight_mass_selection():
    x, y = planted(d=20, neuron=3)
    x[:, 9] = (y == 1) + 0.3 * np.random.default_rng(1).normal(size=len(y))
    r = probe_weights(x, y.tolist(), mass=0.5)
    sel = r.selected["1"]
    share = r.per_class_scores["1"]
    assert 3 in sel[:2]
    assert share[sel].sum() >= 0.5 - 1e-9
    assert share[sel[:-1]].sum() < 0.5  # minimal prefix
    np.testing.assert_allclose(share.sum(), 1.0)


def test_average_precision_values():
    x = np.array([[3.0], [2.0], [1.0], [0.0]], np.float32)
    r = average_precision(x, [1, 0, 1, 0])
    # positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    np.testing.assert_allclose(r.scores, [(1 + 2 / 3) / 2])
    r2 = average_precision(-x, [1, 0, 1, 0], both_signs=True)
    np.testing.assert_allclose(r2.scores, [(1 + 2 / 3) / 2])


def test_misaligned_labels_are_refused():
    x, y = planted()
    with pytest.raises(ProbingInputError, match="misaligned"):
        probeless(x, y[:-1].tolist())
    x[3, 1] = np.nan
    with pytest.raises(ProbingInputError, match="NaN"):
        probeless(x, y.tolist())


def test_top_n_overlap_and_alignment_on_planted_tree():
    assert top_n_overlap([0, 1, 2, 3], [2, 0, 7, 8], 2) == 0.5
    rng = np.random.default_rng(0)
    n, d = 300, 40
    x = rng.normal(size=(n, d)).astype(np.float32)
    sub_a, sub_b = np.arange(0, 50), np.arange(50, 100)
    # the super-concept (rows 0..99) is carried by neurons 0-3; each child adds its own neurons
    x[:100, :4] += 3
    x[sub_a, 10:12] += 5
    x[sub_b, 20:22] += 5
    members = {9: np.arange(100), 1: sub_a, 2: sub_b}
    al = concept_alignment(x, 9, members=members, children={9: [1, 2]}, n=6)
    assert al.children == [1, 2]
    assert set(al.top[:4]) == {0, 1, 2, 3}
    for o in al.overlaps:
        assert 4 / 6 - 1e-9 <= o <= 1.0
    with pytest.raises(ValueError, match="no sub-concepts"):
        concept_alignment(x, 1, members=members, children={9: [1, 2]})


def test_alignment_on_concept_set_tree():
    from scipy.cluster.hierarchy import linkage

    from tl_concepts.concepts import ConceptSet, ConceptTree

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.1, (20, 6)), rng.normal(0, 0.1, (20, 6)) + [0, 0, 2, 0, 0, 0],
                   rng.normal(0, 0.1, (20, 6)) + [8, 0, 0, 0, 0, 0]]).astype(np.float32)
    x[40:, 0] += 0  # third group far away on neuron 0
    pts = {"word_id": list(range(60)), "sentence": [0] * 60, "index": list(range(60)), "text": ["w"] * 60}
    cs = ConceptSet(pts, k=3, tree=ConceptTree(linkage(x, "ward")))
    members, children = tree_members(cs)
    node = 0
    while len(members[node]) < 40:  # walk up from leaf 0 to the merge of the first two groups
        node = cs.tree.parent_of(node)
    assert members[node].tolist() == list(range(40))
    al = concept_alignment(x, node, members=members, children=children, n=1)
    assert len(al.children) == 2
    assert al.top == [0]  # neuron 0 separates groups 1-2 from group 3
    root = cs.tree.n_nodes - 1
    with pytest.raises(ValueError, match="every row"):
        concept_alignment(x, root, members=members, children=children)
