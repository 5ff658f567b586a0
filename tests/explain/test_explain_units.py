import numpy as np
import pytest

from tl_concepts.explain.units import n_activating, project, records_for_direction, records_from_array


def _contexts(n, length=6):
    return [[f"t{i}_{j}" for j in range(length)] for i in range(n)]


def test_splits_are_disjoint_and_top_is_dealt_round_robin():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(60, 6))
    u = records_from_array(acts, _contexts(60), hook="h", unit=3, n_top=12, n_random=9, seed=1)
    docs = [[r.doc for r in getattr(u, k)] for k in
            ("train_top", "calibration_top", "test_top", "train_random", "calibration_random", "test_random")]
    flat = [d for ds in docs for d in ds]
    assert len(flat) == len(set(flat)) == 21
    assert [len(d) for d in docs] == [4, 4, 4, 3, 3, 3]
    order = list(np.argsort(-acts.max(axis=1)))
    assert docs[0][0] == order[0] and docs[1][0] == order[1] and docs[2][0] == order[2]
    assert u.max_activation == pytest.approx(acts.max()) and u.n_contexts == 60
    assert u.unit == 3 and u.train_top[0].tokens == _contexts(60)[order[0]]


def test_contexts_without_positive_activation_are_not_top():
    acts = np.zeros((20, 4))
    acts[2, 1] = 1.0
    u = records_from_array(acts, _contexts(20, 4), hook="h", unit=0, n_top=9, n_random=3)
    assert n_activating(u) == 1


def test_project_vector_and_encoder():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert project(a, [1.0, 1.0]).tolist() == [1.0, 2.0]
    assert project(a, lambda x: np.maximum(x[:, 1] - 1, 0)).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="3 dims"):
        project(a, [1.0, 2.0, 3.0])


class _Store:
    def __init__(self, acts, contexts):
        self._a, self._c = acts, contexts

    def activations(self, hook):
        return self._a

    def contexts(self):
        return self._c


def test_records_for_direction_from_store_layout():
    ctx = [["a", "b", "c"], ["d", "e"], ["f", "g", "h"]]  # variable lengths laid end to end
    acts = np.zeros((8, 2))
    acts[4, 0] = 3.0  # token "e" of context 1
    acts[6, 1] = 1.0  # token "g" of context 2
    u = records_for_direction(_Store(acts, ctx), "blocks.0.hook_resid_post", np.array([1.0, 0.5]),
                              n_top=3, n_random=0, split=(1, 0, 0))
    assert [r.tokens for r in u.train_top] == [["d", "e"], ["f", "g", "h"]]
    assert u.train_top[0].activations == [0.0, 3.0] and u.train_top[1].activations == [0.0, 0.5, 0.0]
    assert u.train_top[0].start == 3 and u.unit == -1
    with pytest.raises(ValueError, match="activation rows"):
        records_for_direction(_Store(acts[:5], ctx), "h", np.ones(2))
