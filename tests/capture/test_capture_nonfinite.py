"""Non-finite activations: an error at capture time naming hook, units and context, or an
explicit policy that zeroes and counts them; exemplar draws never let NaN reuse a context."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import ExemplarConfig, capture, select_exemplars
from tl_concepts.errors import InputError

HOOK = "blocks.0.hook_resid_post"
SPLITS = ("train_top", "calibration_top", "test_top", "train_random", "calibration_random", "test_random")


@pytest.fixture
def plant_nan(tiny_bridge):
    """A user hook that writes NaN into unit 7 (and inf into unit 9) at padded position 2 of
    the windows in the batch listed by ``rows`` (all by default)."""
    hp = tiny_bridge.get_hook_point(HOOK)

    def plant(rows=None):
        def fn(t, hook):
            sel = slice(None) if rows is None else rows
            t[sel, 2, 7] = float("nan")
            t[sel, 2, 9] = float("inf")
            return t
        hp.add_hook(fn)

    yield plant
    tiny_bridge.reset_hooks(including_permanent=False)


def test_nan_is_an_error_naming_hook_unit_and_context(tiny_bridge, plant_nan, tmp_path):
    plant_nan()
    with pytest.raises(InputError) as e:
        capture(tiny_bridge, TEXTS, [HOOK], tmp_path / "s", progress=False)
    msg = str(e.value)
    assert f"non-finite activation (nan/inf) at hook {HOOK}, unit(s) 7, 9, in context 0 (document 0, token" in msg
    assert "nonfinite='zero'" in msg
    assert not (tmp_path / "s").exists()  # refused: nothing left behind


def test_zero_policy_stores_zeros_and_counts_them(tiny_bridge, plant_nan, tmp_path):
    clean = capture(tiny_bridge, TEXTS, [HOOK], tmp_path / "clean", batch_size=4, progress=False)
    plant_nan()
    store = capture(tiny_bridge, TEXTS, [HOOK], tmp_path / "s", batch_size=4, nonfinite="zero", progress=False)
    acts, want = store.activations(HOOK), clean.activations(HOOK)
    assert np.isfinite(acts).all()
    n_pre = len(store.manifest["tokenizer"]["prefix_ids"])
    lens = np.diff(store.tokens()["context"].searchsorted(np.arange(store.n_windows + 1)))
    hit = [c for c in range(store.n_windows) if n_pre <= 2 < n_pre + lens[c]]  # windows with padded position 2
    rows = [store.context_rows(c).start + 2 - n_pre for c in hit]
    assert (acts[rows, 7] == 0).all() and (acts[rows, 9] == 0).all()
    assert store.manifest["hooks"][HOOK]["nonfinite_zeroed"] == 2 * len(hit)
    assert store.manifest["settings"]["nonfinite"] == "zero"
    other = np.ones(acts.shape, bool)
    other[rows, 7] = other[rows, 9] = False
    np.testing.assert_allclose(acts[other], want[other], atol=1e-6)
    ur = store.unit_records(HOOK, 7)
    assert np.isfinite(ur.max_activation)


def test_nan_never_sorts_past_used_contexts():
    rng = np.random.default_rng(0)
    n, d = 40, 3
    mx = rng.normal(size=(n, d))
    mn = mx - 1.0
    mx[[5, 17, 30], 0] = np.nan
    mx[11, 1] = np.inf
    mn[[2, 8], 2] = np.nan
    cfg = ExemplarConfig(n_train_top=4, n_calibration_top=2, n_test_top=2, n_calibration_random=4,
                         n_test_random=4, n_quantile_bins=4, n_per_quantile=5, n_negative=10)
    sel = select_exemplars(mx, mn, cfg)
    bad = {0: {5, 17, 30}, 1: {11}, 2: {2, 8}}
    for u in range(d):
        picks = np.concatenate([sel[s][u] for s in SPLITS] + [sel["quantile"][u].ravel(), sel["negative"][u]])
        picks = picks[picks >= 0].tolist()
        assert len(picks) == len(set(picks)), f"unit {u} reuses a context"
        assert not bad[u] & set(picks), f"unit {u} drew a non-finite context"
        assert len(picks) == n - len(bad[u])  # every other context is drawn exactly once
        top = np.concatenate([sel[s][u] for s in SPLITS[:3]])
        finite = np.where(np.isfinite(mx[:, u]), mx[:, u], -np.inf)
        assert set(top.tolist()) == set(np.argsort(-finite, kind="stable")[:8].tolist())
