"""Shared fixtures: one per model the tests run on, built once per session.

Tiny models (built from configs, no downloads): ``tiny_gpt2_dir`` / ``tiny_bridge`` (the
GPT-2 that captures run on), ``tiny_tok`` / ``tiny_llama_dir`` (the tokenizer and a saved
tiny Llama of the LLM-backend tests; :func:`tests.helpers.tiny_models.make_tiny_model` builds
fresh ones where a test needs other settings).

Embedded models (installed by ``scripts/setup.sh``; missing weights are an error, not a skip):
``smollm2`` (SmolLM2-135M-Instruct as the in-process LLM backend), ``smollm2_tl`` and
``minilm_tl`` (the TransformerLens models ``tl_concepts.models.load`` gives), and
``minilm_embedder`` (all-MiniLM-L6-v2 as the descriptor stage's sentence embedder).

Markers of tests that need something CI installs only in some environments (see pyproject):
``tl3`` (TransformerLens 3.x) and ``llamacpp`` (the optional ``server`` extra).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import pytest

from tests.helpers.tiny_models import build_tokenizer, make_tiny_model, make_tiny_tokenizer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TL_MAJOR = int(importlib.metadata.version("transformer-lens").split(".")[0])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip, with the reason, the tests whose marker names a part this environment does not have."""
    if item.get_closest_marker("tl3") and TL_MAJOR >= 4:
        pytest.skip(f"needs TransformerLens 3.x (HookedTransformer / HookedEncoder); this is "
                    f"{importlib.metadata.version('transformer-lens')}. CI runs the tl3 tests in .venv-tl3")
    if item.get_closest_marker("llamacpp") and importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python[server] (the optional 'server' extra, about 13 minutes to compile), "
                    "which scripts/setup.sh and CI do not install: pip install -e '.[server]'")


# ------------------------------------------------------------------------------ tiny models


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A GPT-2-architecture model folder (3 layers, d_model 32) with random weights and a small BPE tokenizer."""
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


@pytest.fixture(scope="session")
def tiny_tok():
    """The tiny causal LMs' tokenizer (:func:`make_tiny_tokenizer`)."""
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tok):
    """A local Hugging Face folder ``tiny-llama``: ``make_tiny_model(tiny_tok)`` (seed 0) and ``tiny_tok``."""
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    make_tiny_model(tiny_tok).save_pretrained(folder)
    tiny_tok.save_pretrained(folder)
    return folder


# -------------------------------------------------------------------------- embedded models


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct as the bare in-process LLM backend, weights loaded.

    ``MeteredLLM(smollm2, Ledger())`` is what ``get_llm("in-process", cache=False)`` returns."""
    from tl_concepts.llm import InProcessBackend

    llm = InProcessBackend()
    llm.hf_model  # load once for the session
    return llm


@pytest.fixture(scope="session")
def smollm2_tl():
    """The embedded SmolLM2-135M as a TransformerLens model (``models.load("smollm2-135m")``)."""
    from tl_concepts import models

    return models.load("smollm2-135m")


@pytest.fixture(scope="session")
def minilm_tl():
    """The embedded all-MiniLM-L6-v2 as a TransformerLens model (``models.load("minilm")``)."""
    from tl_concepts import models

    return models.load("minilm")


@pytest.fixture(scope="session")
def minilm_embedder():
    """The embedded all-MiniLM-L6-v2 as the descriptor stage's sentence embedder."""
    from tl_concepts.descriptors import MiniLMEmbedder

    return MiniLMEmbedder()
