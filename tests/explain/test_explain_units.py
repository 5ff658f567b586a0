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


def test_records_from_live_model_neurons_and_direction(tiny_bridge):
    from tl_concepts.explain.units import model_activations, unit_records_from_model

    texts = [f"the cat sat on mat number {i} and the dog ran" for i in range(12)]
    hook = "blocks.1.mlp.hook_post"
    acts, toks = model_activations(tiny_bridge, texts, hook, ctx_len=8)
    assert acts.shape[:2] == (12, 8) and all(1 <= len(t) <= 8 for t in toks)
    # the activations are those of a direct run of the model on the same tokens
    ids = tiny_bridge.to_tokens(texts[3])[:, :8]
    _, cache = tiny_bridge.run_with_cache(ids, names_filter=lambda n: n == hook)
    np.testing.assert_allclose(acts[3, : ids.shape[1]], cache[hook][0].detach().numpy(), atol=1e-5)
    units = unit_records_from_model(tiny_bridge, texts, hook, units=[0, 5], ctx_len=8, n_top=6, n_random=3)
    assert [u.unit for u in units] == [0, 5]
    real_max = max(float(acts[i, : len(t), 5].max()) for i, t in enumerate(toks))
    assert units[1].max_activation == pytest.approx(max(real_max, 0.0), rel=1e-5)
    d = acts.shape[-1]
    vec = np.zeros(d)
    vec[5] = 1.0
    (u_dir,) = unit_records_from_model(tiny_bridge, texts, hook, direction=vec, ctx_len=8, n_top=6, n_random=3)
    assert [r.activations for r in u_dir.train_top] == [r.activations for r in units[1].train_top]
