"""Embedded offline models and TransformerLens version adapters.

Example:
    >>> from tl_concepts import models
    >>> model = models.load("minilm")          # doctest: +SKIP  (all-MiniLM-L6-v2, offline)
"""
from __future__ import annotations

from typing import Any

EMBEDDED = ("minilm", "smollm2-135m")


def load(name: str, device: str = "cpu", **kwargs: Any) -> Any:
    """Load a model as a TransformerLens object.

    ``"minilm"`` and ``"smollm2-135m"`` load from installed packages with no network.
    Any other Hugging Face name or local folder goes through TransformerLens's own loader
    (``HookedTransformer.from_pretrained`` on 3.x for names it knows, else
    ``TransformerBridge.boot_transformers``).
    """
    from tl_concepts.models import embedded

    if name == "minilm":
        path, label = str(embedded.minilm_hf_dir()), "sentence-transformers/all-MiniLM-L6-v2"
    elif name in ("smollm2-135m", "smollm2"):
        path, label = str(embedded.smollm2_hf_dir()), "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)"
    else:
        path, label = name, name
        try:  # TransformerLens 3.x
            from transformer_lens import HookedTransformer
            from transformer_lens.loading_from_pretrained import get_official_model_name

            get_official_model_name(name)
            model = HookedTransformer.from_pretrained(name, device=device, **kwargs)
            model.cfg.model_name = label
            return model
        except Exception:
            pass
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(path, device=device, **kwargs)
    model.eval()
    try:
        model.cfg.model_name = label
    except Exception:
        pass
    return model


__all__ = ["EMBEDDED", "load"]
