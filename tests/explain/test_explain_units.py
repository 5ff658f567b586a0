import numpy as np
import pytest

from tl_concepts.capture import ExemplarConfig
from tl_concepts.explain.units import n_activating, project, records_for_direction, records_from_array


def _contexts(n, length=6):
    return [[f"t{i}_{j}" for j in range(length)] for i in range(n)]


def test_splits_are_disjoint_and_top_is_dealt_round_robin():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(60, 6))
    ex = ExemplarConfig(n_train_top=4, n_calibration_top=4, n_test_top=4, n_train_random=3,
                        n_calibration_random=3, n_test_random=3, n_quantile_bins=3, n_per_quantile=2,
                        n_negative=2, seed=1)
    u = records_from_array(acts, _contexts(60), hook="h", unit=3, exemplars=ex)
    docs = [[r.doc for r in getattr(u, k)] for k in
            ("train_top", "calibration_top", "test_top", "train_random", "calibration_random", "test_random")]
    docs += [[r.doc for r in rs] for rs in u.quantile.values()] + [[r.doc for r in u.negative]]
    flat = [d for ds in docs for d in ds]
    assert len(flat) == len(set(flat)) == 21 + 6 + 2  # no context twice, quantile and negative included
    assert [len(d) for d in docs[:6]] == [4, 4, 4, 3, 3, 3]
    # the same rule as a capture: identical ids from select_exemplars on the per-context max/min
    from tl_concepts.capture.exemplars import select_exemplars
    sel = select_exemplars(acts.max(axis=1)[:, None], acts.min(axis=1)[:, None], ex)
    assert docs[0] == sel["train_top"][0].tolist() and docs[5] == sel["test_random"][0].tolist()
    order = list(np.argsort(-acts.max(axis=1)))
    assert docs[0][0] == order[0] and docs[1][0] == order[1] and docs[2][0] == order[2]
    assert u.max_activation == pytest.approx(acts.max()) and u.n_contexts == 60
    assert u.unit == 3 and u.train_top[0].tokens == _contexts(60)[order[0]]


def test_contexts_without_positive_activation_are_not_top():
    acts = np.zeros((20, 4))
    acts[2, 1] = 1.0
    u = records_from_array(acts, _contexts(20, 4), hook="h", unit=0)
    assert n_activating(u) == 1


def test_non_finite_activations_are_refused():
    acts = np.zeros((5, 3))
    acts[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        records_from_array(acts, _contexts(5, 3), hook="h", unit=0)


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
                              exemplars=ExemplarConfig(n_train_top=2, n_calibration_top=0, n_test_top=0,
                                                       n_calibration_random=0, n_test_random=0))
    assert [r.tokens for r in u.train_top] == [["d", "e"], ["f", "g", "h"]]
    assert u.train_top[0].activations == [0.0, 3.0] and u.train_top[1].activations == [0.0, 0.5, 0.0]
    assert u.train_top[0].start == 3 and u.unit == -1
    with pytest.raises(ValueError, match="activation rows"):
        records_for_direction(_Store(acts[:5], ctx), "h", np.ones(2))


def test_records_from_live_model_go_through_capture(tiny_bridge, tmp_path):
    from tl_concepts.capture import capture
    from tl_concepts.explain.units import unit_records_from_model

    texts = [f"the cat sat on mat number {i} and the dog ran" for i in range(12)]
    hook = "blocks.1.mlp.hook_post"
    ex = ExemplarConfig(n_train_top=2, n_calibration_top=2, n_test_top=2, n_calibration_random=1, n_test_random=2)
    units = unit_records_from_model(tiny_bridge, texts, hook, units=[0, 5], context_tokens=8, exemplars=ex)
    assert [u.unit for u in units] == [0, 5]
    # exactly the records of a capture store of the same texts: same tokens, values and splits
    store = capture(tiny_bridge, texts, [hook], tmp_path / "s", context_tokens=8, exemplars=ex, progress=False)
    ref = store.unit_records(hook, 5)
    assert [r.tokens for r in units[1].test_top] == [r.tokens for r in ref.test_top]
    assert [r.activations for r in units[1].train_top] == [r.activations for r in ref.train_top]
    assert units[1].max_activation == pytest.approx(ref.max_activation)
    vec = np.zeros(store.d(hook))
    vec[5] = 1.0
    (u_dir,) = unit_records_from_model(tiny_bridge, texts, hook, direction=vec, context_tokens=8, exemplars=ex)
    assert len(u_dir.train_top) == len(units[1].train_top) == 2
    for a, b in zip(u_dir.train_top, units[1].train_top):
        np.testing.assert_allclose(a.activations, b.activations, rtol=1e-6)
