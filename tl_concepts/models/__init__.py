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
    ``TransformerBridge.boot_transformers``). Weights the checkpoint lacks (e.g. MiniLM's
    unused MLM head) are initialised from a fixed seed, so two loads are identical and a
    capture's model fingerprint is stable; the caller's random state is left as it was.
    When every loader fails, :class:`~tl_concepts.errors.InputError` lists each attempt.
    """
    import torch

    from tl_concepts.errors import InputError
    from tl_concepts.models import embedded

    attempts: list[str] = []
    if name == "minilm":
        path, label = str(embedded.minilm_hf_dir()), "sentence-transformers/all-MiniLM-L6-v2"
    elif name in ("smollm2-135m", "smollm2"):
        path, label = str(embedded.smollm2_hf_dir()), "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)"
    else:
        path, label = name, name
        try:  # TransformerLens 3.x, for the names it knows
            from transformer_lens import HookedTransformer
            from transformer_lens.loading_from_pretrained import get_official_model_name
        except ImportError:
            attempts.append("HookedTransformer: not in this TransformerLens version")
        else:
            try:
                get_official_model_name(name)
                model = HookedTransformer.from_pretrained(name, device=device, **kwargs)
                model.cfg.model_name = label
                return model
            except Exception as e:  # kept and reported if the bridge fails too
                attempts.append(f"HookedTransformer.from_pretrained: {type(e).__name__}: {e}")
    from transformer_lens.model_bridge import TransformerBridge

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = TransformerBridge.boot_transformers(path, device=device, **kwargs)
    except Exception as e:
        attempts.append(f"TransformerBridge.boot_transformers: {type(e).__name__}: {e}")
        raise InputError(f"could not load model {name!r} (a local folder, an embedded name "
                         f"{', '.join(EMBEDDED)}, or a Hub name where the Hub is reachable): "
                         + "; ".join(attempts)) from e
    model.eval()
    try:
        model.cfg.model_name = label
    except AttributeError:  # a config without the field
        pass
    return model


__all__ = ["EMBEDDED", "load"]
