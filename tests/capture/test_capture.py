"""Capture from a live model: values equal run_with_cache, hooks untouched, early stop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import ActivationStore, capture
from tl_concepts.errors import StaleResultError, StoreError

HOOKS = ["blocks.1.mlp.hook_post", "blocks.0.hook_resid_post"]


def _reference(model, store: ActivationStore, hook: str) -> np.ndarray:
    """Activations of every context computed with run_with_cache on the same inputs."""
    prefix = store.manifest["tokenizer"]["prefix_ids"]
    suffix = store.manifest["tokenizer"]["suffix_ids"]
    tok = store.tokens()
    rows = []
    for c in range(store.n_windows):
        ids = prefix + tok["token_id"][store.context_rows(c)].tolist() + suffix
        _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=[hook])
        rows.append(cache[hook][0, len(prefix): len(ids) - len(suffix)].float().numpy())
    return np.concatenate(rows)


def test_capture_equals_run_with_cache(tiny_bridge, tmp_path):
    store = capture(tiny_bridge, TEXTS, HOOKS, tmp_path / "run", context_tokens=24, batch_size=5,
                    shard_tokens=100, progress=False)
    assert store.complete
    assert len(store.manifest["shards"]) > 1  # several shards were written
    for hook in HOOKS:
        got = store.activations(hook)
        want = _reference(tiny_bridge, store, hook)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert store.d("blocks.1.mlp.hook_post") == 128 and store.d("blocks.0.hook_resid_post") == 32


def test_every_token_knows_doc_sentence_word(tiny_bridge, tmp_path):
    store = capture(tiny_bridge, TEXTS[:4], HOOKS[:1], tmp_path / "run", context_tokens=16, progress=False)
    tok = store.tokens()
    words = store.words()
    assert (tok["word_id"] >= 0).all()
    # the decoded tokens of a word concatenate to the word itself
    text = {}
    for tid, w in zip(tok["token_id"], tok["word_id"]):
        text[w] = text.get(w, "") + store._token_text[int(tid)]
    for w, t in text.items():
        assert t.strip() == words["text"][w]
    assert (words["sentence"][tok["word_id"]] == tok["sentence"]).all()
    assert (words["doc"][tok["word_id"]] == tok["doc"]).all()
    # context limit respected, and nothing cut: all words of the corpus are present
    assert max(np.diff(store._windows["window_start"])) <= 16
    assert set(text) == set(range(len(words["word_id"])))


def test_users_hooks_are_left_as_they_were(tiny_bridge, tmp_path):
    calls = []
    hp = tiny_bridge.get_hook_point("blocks.0.hook_resid_post")
    hp.add_hook(lambda t, hook: calls.append(1), is_permanent=False)
    before = len(hp.fwd_hooks)
    try:
        capture(tiny_bridge, TEXTS[:2], ["blocks.1.mlp.hook_post"], tmp_path / "a", progress=False)
        assert len(hp.fwd_hooks) == before
        n = len(calls)
        assert n > 0  # the user's hook still fires during the capture
        # after an error inside the pass, our temporary hooks are gone and the user's stays
        with pytest.raises(ValueError, match="not per-token"):
            capture(tiny_bridge, TEXTS[:2], ["blocks.1.attn.hook_pattern"], tmp_path / "b", progress=False)
        assert len(hp.fwd_hooks) == before
        n = len(calls)
        for name in ("blocks.1.mlp.hook_post", "blocks.1.attn.hook_pattern"):
            assert not tiny_bridge.get_hook_point(name).fwd_hooks
        tiny_bridge(torch.tensor([[1, 2, 3]]))
        assert len(calls) == n + 1
    finally:
        tiny_bridge.reset_hooks(including_permanent=False)


def test_stops_after_deepest_requested_hook(tiny_bridge, tmp_path):
    later = []
    hp = tiny_bridge.get_hook_point("blocks.2.hook_resid_post")
    hp.add_hook(lambda t, hook: later.append(1))
    try:
        capture(tiny_bridge, TEXTS[:3], ["blocks.0.mlp.hook_post"], tmp_path / "r", progress=False)
        assert later == []  # block 2 never ran
    finally:
        tiny_bridge.reset_hooks()


def test_bad_input_errors(tiny_bridge, tmp_path):
    with pytest.raises(KeyError, match="did you mean blocks.1.mlp.hook_post"):
        capture(tiny_bridge, TEXTS, ["blocks.1.mlp.hook_pots"], tmp_path / "x", progress=False)
    with pytest.raises(TypeError, match="not a TransformerLens model"):
        capture(torch.nn.Linear(2, 2), TEXTS, ["blocks.0.mlp.hook_post"], tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="empty"):
        capture(tiny_bridge, ["   ", ""], ["blocks.0.mlp.hook_post"], tmp_path / "x", progress=False)
    capture(tiny_bridge, TEXTS[:2], ["blocks.0.mlp.hook_post"], tmp_path / "x", progress=False)
    with pytest.raises(StaleResultError, match="other inputs: corpus .*2 docs -> .*3 docs"):
        capture(tiny_bridge, TEXTS[:3], ["blocks.0.mlp.hook_post"], tmp_path / "x", progress=False)
    s = capture(tiny_bridge, TEXTS[:3], ["blocks.0.mlp.hook_post"], tmp_path / "x", overwrite=True,
                progress=False)
    assert s.manifest["corpus"]["n_docs"] == 3
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a tl-concepts store"):
        capture(tiny_bridge, TEXTS, ["blocks.0.mlp.hook_post"], tmp_path / "junk", progress=False)
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "junk").iterdir()) == ["notes.txt"]  # no lock file left


def test_rerun_of_finished_capture_does_nothing(tiny_bridge, tmp_path, monkeypatch):
    s1 = capture(tiny_bridge, TEXTS, HOOKS[:1], tmp_path / "r", progress=False)
    import tl_concepts.capture.runner as runner

    monkeypatch.setattr(runner, "_run_pass", lambda *a, **k: pytest.fail("a finished run was recomputed"))
    monkeypatch.setattr(runner, "_mine", lambda *a, **k: pytest.fail("a finished run was mined again"))
    stamp = (tmp_path / "r" / "manifest.json").stat().st_mtime_ns
    s2 = capture(tiny_bridge, TEXTS, HOOKS[:1], tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "manifest.json").stat().st_mtime_ns == stamp  # nothing rewritten
    np.testing.assert_array_equal(s1.activations(HOOKS[0]), s2.activations(HOOKS[0]))


def test_float16_storage(tiny_bridge, tmp_path):
    s32 = capture(tiny_bridge, TEXTS[:4], HOOKS[:1], tmp_path / "a", progress=False)
    s16 = capture(tiny_bridge, TEXTS[:4], HOOKS[:1], tmp_path / "b", dtype="float16", progress=False)
    assert s16._shard(0)[f"act.{HOOKS[0]}"].dtype == np.float16
    np.testing.assert_allclose(s16.activations(HOOKS[0]), s32.activations(HOOKS[0]), atol=2e-3, rtol=2e-3)
