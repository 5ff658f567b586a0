import numpy as np
import pytest

from tl_concepts.probing import ProbeOptions, ProbingInputError, control_labels, split_indices, train_probe


def test_split_is_60_20_20_stratified_and_seeded():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    tr, dv, te = split_indices(y, seed=3)
    assert (len(tr), len(dv), len(te)) == (60, 20, 20)
    assert len(set(tr) | set(dv) | set(te)) == 100
    for c, n in ((0, 50), (1, 30), (2, 20)):
        assert (y[te] == c).sum() == round(0.2 * n)
    again = split_indices(y, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((tr, dv, te), again))
    assert not np.array_equal(tr, split_indices(y, seed=4)[0])
    # a two-member class still gets a train and a test row
    tr, dv, te = split_indices(np.array([0, 0, 1, 1, 1, 1, 1]))
    assert set(np.array([0, 0, 1, 1, 1, 1, 1])[te]) == {0, 1}


def test_binary_and_multiclass_accuracy_on_separable_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 10)).astype(np.float32)
    x[np.arange(300), y] += 4
    r = train_probe(x, [f"k{v}" for v in y], name="three")
    assert r.task == "multiclass" and r.classes == ["k0", "k1", "k2"]
    assert r.test_accuracy > 0.9 and r.majority_accuracy < 0.5
    rb = train_probe(x, (y == 0).tolist(), name="bin")
    assert rb.task == "binary" and rb.test_accuracy > 0.9
    # random labels: test accuracy near chance
    rr = train_probe(x, rng.integers(0, 2, 300).tolist())
    assert rr.test_accuracy < 0.7


def test_memorisable_task_has_high_control_accuracy_and_low_selectivity():
    rng = np.random.default_rng(0)
    n_types, d = 40, 32
    type_vec = rng.normal(size=(n_types, d))
    type_cls = rng.integers(0, 2, n_types)
    t = rng.integers(0, n_types, 800)  # every type occurs ~20 times: the probe can memorise types
    x = (type_vec[t] + 0.05 * rng.normal(size=(800, d))).astype(np.float32)
    r = train_probe(x, type_cls[t].tolist(), types=[f"w{i}" for i in t], options=ProbeOptions(c_grid=(1.0, 10.0)))
    assert r.test_accuracy > 0.95
    assert r.control_accuracy > 0.9
    assert r.selectivity < 0.1


def test_feature_task_with_unique_types_is_selective():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    x[:, 0] += 3 * y
    r = train_probe(x, y.tolist(), types=[f"w{i}" for i in range(400)])
    assert r.test_accuracy > 0.9
    assert r.control_accuracy < 0.7
    assert r.selectivity > 0.25


def test_control_labels_follow_label_distribution():
    y = np.array([0] * 900 + [1] * 100)
    c = control_labels([str(i) for i in range(1000)], y, n_classes=2, seed=0)
    assert 0.05 < c.mean() < 0.15


def test_bad_inputs():
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(ProbingInputError, match="fewer than 2 members: 'c'"):
        train_probe(x, ["a", "a", "b", "b", "c"])
    with pytest.raises(ProbingInputError, match="misaligned"):
        train_probe(x, ["a", "b"])
    with pytest.raises(ProbingInputError, match="two classes"):
        train_probe(x, ["a"] * 5)
