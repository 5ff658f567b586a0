import numpy as np
import pytest
from scipy.cluster.hierarchy import cut_tree, linkage
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from tl_concepts.concepts.tree import ConceptTree, cut_labels
from tl_concepts.concepts.ward import (TWO_LEVEL_MIN_MICRO, agreement_with_exact, choose_mode, default_n_micro,
                                       exact_memory_bytes, heldout_agreement, micro_clusters, ward, ward_weighted)


def same_partition(a, b) -> bool:
    return adjusted_rand_score(a, b) == 1.0 and len(set(a)) == len(set(b))


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).normal(size=(240, 10))


@pytest.mark.parametrize("k", [1, 2, 5, 17, 60, 240])
def test_exact_cut_equals_reference_clustering_at_k(data, k):
    res = ward(data, mode="exact")
    labels = ConceptTree(res.linkage, res.leaf_of_point).labels(k)
    ref = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(data)
    assert same_partition(labels, ref)
    assert same_partition(labels, cut_tree(linkage(data, "ward"), k).ravel())


def test_weighted_ward_with_unit_weights_is_scipy_ward(data):
    z = ward_weighted(data, np.ones(len(data)))
    ref = linkage(data, "ward")
    np.testing.assert_allclose(z, ref, rtol=1e-9, atol=1e-9)


def test_weighted_ward_equals_ward_on_duplicated_points():
    rng = np.random.default_rng(2)
    cent = rng.normal(size=(30, 4))
    w = rng.integers(1, 5, size=30)
    expanded = np.repeat(cent, w, axis=0)
    owner = np.repeat(np.arange(30), w)
    z_w = ward_weighted(cent, w.astype(float))
    z_full = linkage(expanded, "ward")
    # duplicated points merge first at distance 0; after that the trees agree at every cut
    for k in (2, 5, 12, 30):
        lab_w = ConceptTree(z_w, owner).labels(k)
        lab_full = ConceptTree(z_full).labels(k)
        assert same_partition(lab_w, lab_full)
    np.testing.assert_allclose(z_w[:, 2], z_full[-29:, 2], rtol=1e-9)


def test_micro_mode_recovers_well_separated_clusters():
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=8.0, size=(6, 12))
    truth = rng.integers(0, 6, size=1500)
    x = centres[truth] + rng.normal(size=(1500, 12))
    mi = ward(x, mode="micro", k=6, n_micro=120)
    assert mi.mode == "micro" and mi.n_leaves == 120
    assert adjusted_rand_score(truth, cut_labels(mi.linkage, mi.leaf_of_point, 6)) > 0.99


def test_agreement_with_exact_is_measured():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(900, 8))
    agr = agreement_with_exact(x, 20, n_micro_ratio=0.25, sample=600)
    assert agr.n_sample == 600 and agr.k == 20 and agr.n_micro <= 150
    assert 0.2 < agr.ari < 1.0  # unstructured data: the approximation is visible but far from random


def test_mode_choice_follows_memory():
    assert exact_memory_bytes(50_000) == 8 * 50_000 * 49_999
    assert choose_mode(1000, 64, available=2**30)[0] == "exact"
    mode, reason = choose_mode(50_000, 768, available=24 * 2**30, memory_fraction=0.5)
    assert mode == "micro" and "GiB" in reason
    assert default_n_micro(500, 200, available=2**30) == 500  # never more than n
    assert default_n_micro(10**6, 10, available=8 * 2**30) == 10_000
    assert default_n_micro(10**6, 10, available=8 * 2**30, cap=20_000) == 20_000  # float32 matrix
    assert default_n_micro(10**6, 10, available=2**30) == int(np.sqrt(2**29 / 16))
    assert default_n_micro(40_000, 10, available=8 * 2**30) == 10_000  # n // 4


def test_k_beyond_leaves_is_refused(data):
    tree = ConceptTree(linkage(data[:10], "ward"))
    with pytest.raises(ValueError, match="K=11"):
        tree.cut(11)
    mi = ward(data, mode="micro", k=2, n_micro=20)
    with pytest.raises(ValueError, match="raise n_micro"):
        ConceptTree(mi.linkage, mi.leaf_of_point).cut(25)


def test_two_level_micro_clusters_are_exact_means_and_recover_clusters():
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=10.0, size=(8, 6))
    truth = rng.integers(0, 8, size=12_000)
    x = (centres[truth] + rng.normal(size=(12_000, 6))).astype(np.float32)
    m = TWO_LEVEL_MIN_MICRO + 500
    assign, cent, sizes = micro_clusters(x, m)
    assert abs(len(sizes) - m) <= 0.05 * m and sizes.sum() == len(x) and sizes.min() >= 1
    for c in (0, len(sizes) // 2, len(sizes) - 1):
        np.testing.assert_allclose(cent[c], x[assign == c].astype(np.float64).mean(0), rtol=1e-6, atol=1e-6)
    # no micro-cluster straddles two well-separated clusters
    assert all(len(set(truth[assign == c])) == 1 for c in range(len(sizes)))
    mi = ward(x, mode="micro", k=8, n_micro=m)
    assert adjusted_rand_score(truth, cut_labels(mi.linkage, mi.leaf_of_point, 8)) == 1.0


def test_float32_weighted_ward_gives_the_float64_tree():
    rng = np.random.default_rng(6)
    cent = rng.normal(size=(400, 16))
    w = rng.integers(1, 30, size=400).astype(float)
    z64 = ward_weighted(cent, w, dtype=np.float64)
    z32 = ward_weighted(cent, w, dtype=np.float32)
    np.testing.assert_allclose(z32[:, 2], z64[:, 2], rtol=1e-4)
    for k in (2, 10, 50, 200):
        assert same_partition(ConceptTree(z32).labels(k), ConceptTree(z64).labels(k))


def test_heldout_agreement_scores_a_partition_against_exact_ward_on_subsamples():
    rng = np.random.default_rng(7)
    centres = rng.normal(scale=6.0, size=(12, 8))
    truth = rng.integers(0, 12, size=3000)
    x = centres[truth] + rng.normal(size=(3000, 8))
    good = heldout_agreement(x, truth, 12, sample=800, repeats=2)
    assert len(good.aris) == 2 and good.n_sample == 800 and good.k == 12 and good.ari > 0.98
    bad = heldout_agreement(x, rng.integers(0, 12, size=3000), 12, sample=800, repeats=2)
    assert abs(bad.ari) < 0.05
    # subsamples come from outside the excluded rows when enough remain
    excl = np.arange(2000)
    h = heldout_agreement(x, np.where(np.arange(3000) < 2000, 0, truth), 12, sample=800, exclude=excl)
    assert h.ari > 0.98
    with pytest.raises(ValueError, match="one concept per row"):
        heldout_agreement(x, truth[:10], 12)
