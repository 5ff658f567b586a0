"""Embedded offline models and TransformerLens version adapters.

Example:
    >>> from tl_concepts import models
    >>> model = models.load("minilm")   # all-MiniLM-L6-v2, offline   # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EMBEDDED = ("minilm", "smollm2-135m")


@dataclass
class ModelRecipe:
    """A picklable way to build a model where it runs: ``load(name, device, **kwargs)``.

    A distributed capture (``executor="ray"``) gives each worker a recipe instead of the
    model itself, so every worker loads its own replica (from its own disk or GPU).

    Example:
        >>> recipe = ModelRecipe("minilm")
        >>> recipe
        ModelRecipe(name='minilm', device='cpu', kwargs={})
        >>> model = recipe.build()              # doctest: +SKIP
    """

    name: str
    """An embedded name (``minilm``, ``smollm2-135m``), a Hugging Face name or a local folder."""
    device: str = "cpu"
    """Device the model is loaded on (``build(device=...)`` overrides it)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Further arguments of :func:`load` (picklable values only)."""

    def build(self, device: str | None = None) -> Any:
        """The model, loaded in this process (on ``device``, default the recipe's)."""
        return load(self.name, device=device or self.device, **self.kwargs)


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


__all__ = ["EMBEDDED", "ModelRecipe", "load"]
