"""Tiny offline models and texts for tests (importable from any test folder)."""
from __future__ import annotations

TEXTS = [
    "The cat sat on the mat. It was a sunny Monday and the cat was happy.",
    "On Tuesday 12 dogs ran to the park. They played until 5 pm.",
    "Markets rose 3 percent on Wednesday after the bank cut rates.",
    "A fire near the town forced hundreds of people to leave their homes. Firefighters worked all night.",
    "The minister said the talks would resume on Friday in Sydney.",
    "Children walked to school while their parents drove to work.",
] * 3


def build_tokenizer(tmp):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(TEXTS * 5, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.save_pretrained(tmp)
    return tok




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
