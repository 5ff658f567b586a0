"""TransformerLens 3.x path: HookedTransformer / HookedEncoder, where that version is installed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import capture

pytestmark = pytest.mark.tl3  # 4.x has only TransformerBridge: skipped there (tests/conftest.py)


def test_hooked_transformer_capture_equals_run_with_cache(tiny_bridge, tmp_path):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=64,
                                  d_vocab=len(tiny_bridge.tokenizer), act_fn="gelu", seed=0)
    model = HookedTransformer(cfg, tokenizer=tiny_bridge.tokenizer)
    hook = "blocks.1.mlp.hook_post"
    store = capture(model, TEXTS[:4], [hook], tmp_path / "ht", context_tokens=16, progress=False)
    prefix = store.manifest["tokenizer"]["prefix_ids"]
    tok = store.tokens()
    rows = store.context_rows(0)
    ids = prefix + tok["token_id"][rows].tolist()
    _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=[hook])
    np.testing.assert_allclose(store.activations(hook)[rows], cache[hook][0, len(prefix):].numpy(), atol=1e-5)


def test_hooked_encoder_capture_equals_run_with_cache(tiny_bridge, tmp_path):
    from transformer_lens import HookedEncoder, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=64,
                                  d_vocab=len(tiny_bridge.tokenizer), act_fn="gelu", seed=0)
    model = HookedEncoder(cfg, tokenizer=tiny_bridge.tokenizer)
    # HookedEncoder leaves some weights uninitialised (torch.empty, NaN possible): seed them all.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith(".w") and p.dim() == 1
                    else torch.randn(p.shape, generator=gen) * 0.05)
    model.eval()
    hook = "blocks.0.mlp.hook_post"
    store = capture(model, TEXTS[:4], [hook], tmp_path / "he", context_tokens=16, batch_size=3,
                    progress=False)
    prefix = store.manifest["tokenizer"]["prefix_ids"]
    suffix = store.manifest["tokenizer"]["suffix_ids"]
    tok = store.tokens()
    acts = store.activations(hook)
    for c in range(store.n_windows):  # bidirectional: padding must not leak into real tokens
        rows = store.context_rows(c)
        ids = prefix + tok["token_id"][rows].tolist() + suffix
        _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=[hook])
        want = cache[hook][0, len(prefix): len(ids) - len(suffix)].numpy()
        np.testing.assert_allclose(acts[rows], want, atol=1e-5)
