"""Word-level representations from subword tokens (first / last / mean)."""
from __future__ import annotations

import numpy as np

from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import capture


def test_word_aggregation_matches_hand_computation(tiny_bridge, tmp_path):
    hook = "blocks.0.hook_resid_post"
    store = capture(tiny_bridge, TEXTS[:3], [hook], tmp_path / "r", progress=False)
    acts = store.activations(hook)
    wid = store.tokens()["word_id"]
    multi = [w for w in np.unique(wid) if (wid == w).sum() > 1]
    assert multi, "the tiny tokenizer should split some words"
    for agg in ("first", "last", "mean"):
        reps = store.word_representations(hook, agg)
        assert reps.shape == (len(store.words()["word_id"]), 32)
        for w in multi[:5]:
            rows = acts[wid == w]
            want = {"first": rows[0], "last": rows[-1], "mean": rows.mean(0)}[agg]
            np.testing.assert_allclose(reps[w], want, rtol=1e-5, atol=1e-6)
    assert not np.isnan(store.word_representations(hook)).any()
