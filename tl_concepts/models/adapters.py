"""What tl-concepts needs from a live TransformerLens model, across TL versions.

Works with a 4.x ``TransformerBridge`` and, where TransformerLens 3.x is installed, a
``HookedTransformer`` or ``HookedEncoder``: all expose ``hooks()``, ``hook_dict``,
``cfg`` and ``tokenizer``.

Example:
    >>> resolve_hooks(model, ["blocks.3.mlp.hook_post"])   # doctest: +SKIP
    ['blocks.3.mlp.hook_post']
"""
from __future__ import annotations

from tl_concepts.errors import ConfigError, NotFoundError

import difflib
from typing import Any, Sequence

import torch

def check_model(model: Any) -> None:
    """Raise ``TypeError`` unless ``model`` is a TransformerLens model with a tokenizer."""
    missing = [a for a in ("hooks", "hook_dict", "cfg") if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} is not a TransformerLens model (no {', '.join(missing)}); pass a "
            "TransformerBridge, HookedTransformer or HookedEncoder, or a name for tl_concepts.models.load()"
        )
    if getattr(model, "tokenizer", None) is None:
        raise TypeError("the model has no tokenizer; set model.tokenizer (or load it with one)")


def is_encoder(model: Any) -> bool:
    """True for bidirectional encoders (BERT-like), which take no BOS and see the whole context."""
    name = type(model).__name__
    if "Encoder" in name:
        return True
    hf = getattr(model, "original_model", None)
    cfg = getattr(hf, "config", None)
    return getattr(cfg, "model_type", "") in {"bert", "roberta", "distilbert", "electra", "albert"}


def hook_names(model: Any) -> list[str]:
    """Every hook name the model answers to (canonical names and aliases)."""
    names = set(model.hook_dict)
    aliases = getattr(model, "hook_aliases", None)
    if isinstance(aliases, dict):
        names.update(aliases)
    return sorted(names)


def _has_hook(model: Any, name: str) -> bool:
    if name in model.hook_dict:
        return True
    getter = getattr(model, "get_hook_point", None)
    if getter is not None:
        try:
            return getter(name) is not None
        except Exception:
            return False
    return False


def resolve_hooks(model: Any, hooks: Sequence[str]) -> list[str]:
    """Check hook names; an unknown one raises ``KeyError`` naming the closest valid names."""
    if isinstance(hooks, str):
        hooks = [hooks]
    if not hooks:
        raise ConfigError("no hook points given; pass hooks=['blocks.0.mlp.hook_post', ...]")
    out = []
    for name in hooks:
        if not _has_hook(model, name):
            close = difflib.get_close_matches(name, hook_names(model), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise NotFoundError(f"the model has no hook point '{name}'{hint}")
        if name not in out:
            out.append(name)
    return out


def special_tokens(model: Any) -> tuple[list[int], list[int]]:
    """Token ids the model's inputs start and end with (BOS, or [CLS] ... [SEP])."""
    tok = model.tokenizer
    with_sp = list(tok("a").input_ids)
    without = list(tok("a", add_special_tokens=False).input_ids)
    prefix: list[int] = []
    suffix: list[int] = []
    for i in range(len(with_sp) - len(without) + 1):
        if with_sp[i:i + len(without)] == without:
            prefix, suffix = with_sp[:i], with_sp[i + len(without):]
            break
    if not prefix and not is_encoder(model) and getattr(model.cfg, "default_prepend_bos", False):
        bos = getattr(tok, "bos_token_id", None)
        if bos is not None:
            prefix = [bos]
    return prefix, suffix


def max_context(model: Any) -> int:
    """Longest input the model takes, in tokens."""
    n = getattr(model.cfg, "n_ctx", None) or getattr(model.tokenizer, "model_max_length", None) or 1024
    return int(min(n, 100_000))


def forward_for_hooks(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """One forward pass with the padding mask passed the way this model class takes it."""
    if type(model).__name__ == "HookedEncoder":
        model(input_ids, one_zero_attention_mask=attention_mask)
    else:
        model(input_ids, attention_mask=attention_mask)


def model_id(model: Any) -> str:
    """A readable identifier of the model (HF name or path when known)."""
    cfg = model.cfg
    for attr in ("model_name", "original_architecture"):
        val = getattr(cfg, attr, None)
        if val:
            return str(val)
    hf = getattr(model, "original_model", None)
    return str(getattr(getattr(hf, "config", None), "_name_or_path", "") or type(model).__name__)


def tl_version() -> str:
    from importlib.metadata import version

    return version("transformer-lens")
