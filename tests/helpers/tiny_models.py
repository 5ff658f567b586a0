"""Tiny offline models, tokenizers and texts for tests (no downloads, no network).

Two tiny tokenizers, each trained in memory on its own texts:

* :func:`build_tokenizer` -- a GPT-2-style tokenizer over :data:`TEXTS`, saved into a folder:
  the tokenizer of the tiny GPT-2 that the capture / explain / probing tests run on
  (``tiny_gpt2_dir`` / ``tiny_bridge`` in ``tests/conftest.py``);
* :func:`make_tiny_tokenizer` -- a tokenizer over :data:`CORPUS` (prompt-like texts with
  digits and tabs) for the tiny causal LMs of the LLM-backend tests (:func:`make_tiny_model`).
"""
from __future__ import annotations

TEXTS = [
    "The cat sat on the mat. It was a sunny Monday and the cat was happy.",
    "On Tuesday 12 dogs ran to the park. They played until 5 pm.",
    "Markets rose 3 percent on Wednesday after the bank cut rates.",
    "A fire near the town forced hundreds of people to leave their homes. Firefighters worked all night.",
    "The minister said the talks would resume on Friday in Sydney.",
    "Children walked to school while their parents drove to work.",
] * 3
"""The corpus the tiny GPT-2 is captured on (news-like sentences with days and numbers)."""

CORPUS = [
    "the cat sat on the mat", "a dog ran in the park\t7\n", "numbers 0 1 2 3 4 5 6 7 8 9 10",
    "Activations:\ncat\t3\ndog\t5\n", "The quick brown fox jumps over the lazy dog.",
]
"""The texts the tiny causal LMs' tokenizer is trained on (simulation-prompt-like)."""


def _byte_level_bpe(texts, vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer)
    return tk


def build_tokenizer(folder):
    """The tiny GPT-2's tokenizer (400 tokens over :data:`TEXTS`), saved into ``folder``."""
    from transformers import PreTrainedTokenizerFast

    tk = _byte_level_bpe(TEXTS * 5, 400, ["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.save_pretrained(folder)
    return tok


def make_tiny_tokenizer(bos: bool = False):
    """The tiny causal LMs' tokenizer (330 tokens over :data:`CORPUS`); ``bos=True`` prepends ``<s>``."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tk = _byte_level_bpe(CORPUS * 20, 330, ["<|end|>", "<s>"])
    kw = {}
    if bos:
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
        kw["bos_token"] = "<s>"
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|end|>",
                                   pad_token="<|end|>", **kw)


def make_tiny_model(tok, arch: str = "llama", max_positions: int = 256, seed: int = 0):
    """A tiny random causal LM (``"llama"`` or ``"gpt2"``) over ``tok``'s vocabulary, in eval mode."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=max_positions, tie_word_embeddings=False,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                          bos_token_id=None)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4,
                         n_positions=max_positions, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        model = GPT2LMHeadModel(cfg)
    return model.eval()


def label_file(store, path):
    """Write word_id -> label (num / cap / the) for a capture's words, as run_probes reads it."""
    import csv

    words = store.words()
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["word_id", "label"])
        for wid, text in zip(words["word_id"], words["text"]):
            t = text.strip(".,")
            lab = "num" if t.isdigit() else "cap" if t[:1].isupper() else "the" if t.lower() == "the" else ""
            if lab:
                w.writerow([int(wid), lab])
    return str(path)


def hash_embed(texts):
    """Deterministic stand-in for MiniLM: near-identical vectors for texts sharing a first word."""
    import hashlib

    import numpy as np

    out = []
    for t in texts:
        rng = np.random.default_rng(int(hashlib.sha1(t.split()[0].encode()).hexdigest()[:8], 16))
        v = rng.normal(size=32)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, np.float32)
