"""Shared fixtures: tiny TransformerLens models built from configs (no downloads)."""
from __future__ import annotations

import os

import pytest

from tiny_models import build_tokenizer  # noqa: E402

# Keep every cache of the test run inside the run (tokenized corpora, dequantized models
# are reused from the user cache when already there).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A GPT-2-architecture model folder with random weights and a small BPE tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("tiny-gpt2")
    tok = build_tokenizer(d)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=3, n_head=4,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_bridge(tiny_gpt2_dir):
    """A TransformerBridge over the tiny GPT-2 (TransformerLens 4.x path)."""
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(str(tiny_gpt2_dir))
    model.eval()
    return model
