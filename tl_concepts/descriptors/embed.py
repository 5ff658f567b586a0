"""Sentence embeddings of descriptors with the embedded all-MiniLM-L6-v2.

Mean pooling over the attention mask and L2 normalisation: what sentence-transformers
does for this model, done here with ``transformers`` alone.

Example:
    >>> emb = MiniLMEmbedder()                                   # doctest: +SKIP
    >>> v = emb(["stock market", "shares"])                      # doctest: +SKIP
    >>> v.shape, float(v[0] @ v[1]) > 0.5                        # doctest: +SKIP
    ((2, 384), True)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

Embedder = Callable[[Sequence[str]], np.ndarray]
"""Anything that maps texts to an [n, dim] array of unit vectors."""


class MiniLMEmbedder:
    """Unit-norm sentence embeddings from a BERT-style folder (default: the embedded MiniLM)."""

    def __init__(self, path: str | Path | None = None, *, batch_size: int = 64, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            from tl_concepts.models.embedded import minilm_hf_dir

            path = minilm_hf_dir()
        self.path = str(path)
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(device).eval()

    @property
    def name(self) -> str:
        """Model folder name (recorded with the vocabulary)."""
        return Path(self.path).name if Path(self.path).name != "model" else Path(self.path).parent.name

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                 max_length=128, return_tensors="pt").to(self.device)
            with torch.no_grad():
                h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(v, dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        return np.concatenate(out).astype(np.float32)
