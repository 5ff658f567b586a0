"""Exemplar selection: exact top-k, disjoint splits, random and quantile draws, negatives."""
from __future__ import annotations

import numpy as np

from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import ExemplarConfig, capture, select_exemplars

SPLIT_NAMES = ("train_top", "calibration_top", "test_top", "train_random", "calibration_random",
               "test_random")


def test_top_k_is_exact_and_splits_are_disjoint():
    rng = np.random.default_rng(1)
    mx = rng.normal(size=(200, 7)).astype(np.float32)
    cfg = ExemplarConfig(n_negative=3)
    sel = select_exemplars(mx, mx - 1, cfg)
    for u in range(7):
        top = np.concatenate([sel[n][u] for n in SPLIT_NAMES[:3]])
        want = np.argsort(-mx[:, u])[:20]
        assert set(top) == set(want)
        # each split gets high and lower top contexts: the best goes to train, 2nd/3rd spread
        assert sel["train_top"][u][0] == want[0]
        used = np.concatenate([sel[n][u] for n in SPLIT_NAMES] + [sel["quantile"][u].ravel(), sel["negative"][u]])
        used = used[used >= 0]
        assert len(used) == len(set(used.tolist()))  # no context twice for one unit
        assert len(used) == 20 + 15 + 10 + 3
        assert (mx[sel["test_random"][u], u] <= mx[want[-1], u]).all()


def test_quantile_bins_cover_the_range():
    mx = np.arange(100, dtype=np.float32)[:, None]
    cfg = ExemplarConfig(n_train_top=0, n_calibration_top=0, n_test_top=0, n_calibration_random=0,
                         n_test_random=0, n_quantile_bins=4, n_per_quantile=3)
    q = select_exemplars(mx, None, cfg)["quantile"][0]
    for b in range(4):
        assert ((q[b] >= 25 * b) & (q[b] < 25 * (b + 1))).all()


def test_too_few_contexts_are_marked_missing():
    sel = select_exemplars(np.ones((6, 2), np.float32), None, ExemplarConfig())
    assert (sel["test_random"] == -1).all()
    got = np.concatenate([sel[n][0] for n in SPLIT_NAMES[:3]])
    assert sorted(got[got >= 0].tolist()) == list(range(6))


def test_unit_records_from_store(tiny_bridge, tmp_path):
    hook = "blocks.1.mlp.hook_post"
    store = capture(tiny_bridge, TEXTS * 3, [hook], tmp_path / "r", context_tokens=16, progress=False,
                    exemplars=ExemplarConfig(n_negative=2))
    acts = store.activations(hook)
    ctx = store.tokens()["context"]
    unit = 5
    per_ctx = np.array([acts[ctx == c, unit].max() for c in range(store.n_windows)])
    ur = store.unit_records(hook, unit)
    assert ur.train_top[0].max_activation == per_ctx.max()
    assert abs(ur.max_activation - per_ctx.max()) < 1e-6
    top_vals = sorted([r.max_activation for r in ur.train_top + ur.calibration_top + ur.test_top], reverse=True)
    np.testing.assert_allclose(top_vals, np.sort(per_ctx)[::-1][:20], rtol=1e-6)
    starts = [r.start for r in ur.all_records()]
    assert len(starts) == len(set(starts))
    assert len(ur.negative) == 2
    r = ur.test_random[0]
    assert len(r.tokens) == len(r.activations) > 0


def test_bills_preset_is_disjoint_with_top_and_random_one_to_one():
    cfg = ExemplarConfig.bills()
    assert cfg == ExemplarConfig.preset("bills")
    assert (cfg.n_train_top, cfg.n_train_random) == (5, 0)  # the explainer sees top records only
    assert cfg.n_calibration_top == cfg.n_calibration_random == 5
    assert cfg.n_test_top == cfg.n_test_random == 5
    assert ExemplarConfig.bills(n_negative=2).n_negative == 2
    rng = np.random.default_rng(4)
    mx = rng.normal(size=(300, 6))
    sel = select_exemplars(mx, mx - 1, ExemplarConfig.bills(n_negative=2))
    for u in range(6):
        got = {n: sel[n][u] for n in SPLIT_NAMES}
        assert all((got[n] >= 0).all() for n in SPLIT_NAMES)
        assert len(got["train_random"]) == 0
        assert len(got["calibration_top"]) == len(got["calibration_random"]) == 5
        assert len(got["test_top"]) == len(got["test_random"]) == 5
        used = np.concatenate(list(got.values()) + [sel["quantile"][u].ravel(), sel["negative"][u]])
        assert len(used) == len(set(used.tolist()))
        # top records are the 15 best, interleaved by rank like neuron-explainer's strided splits
        order = np.argsort(-mx[:, u])
        assert got["train_top"].tolist() == order[0:15:3].tolist()
        assert got["calibration_top"].tolist() == order[1:15:3].tolist()
        assert got["test_top"].tolist() == order[2:15:3].tolist()


def test_unknown_preset_and_bad_counts():
    import pytest

    from tl_concepts.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown exemplar split 'paper'.*'default' or 'bills'"):
        ExemplarConfig.preset("paper")
    with pytest.raises(ConfigError, match="n_test_top must be a whole number >= 0"):
        ExemplarConfig(n_test_top=-1)


def test_bills_preset_through_capture(tiny_bridge, tmp_path):
    hook = "blocks.1.mlp.hook_post"
    store = capture(tiny_bridge, TEXTS * 4, [hook], tmp_path / "r", context_tokens=8, exemplars="bills",
                    progress=False)
    ur = store.unit_records(hook, 3)
    assert len(ur.train_top) == 5 and ur.train_random == []
    assert len(ur.calibration_top) == len(ur.calibration_random) == 5
    assert len(ur.test_top) == len(ur.test_random) == 5
    assert store.manifest["exemplars"] == ExemplarConfig.bills().to_dict()
