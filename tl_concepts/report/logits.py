"""Direct logit effects of MLP neurons: a neuron's output weights through the unembedding.

For a neuron ``n`` at ``blocks.L.mlp.hook_post`` of a causal LM, ``W_out[L][n] @ W_U`` is the
change of every vocabulary logit per unit of the neuron's activation along the direct path
(the final LayerNorm is left out, as in Neuronpedia's and OpenAI's neuron viewers). The
tokens with the largest and smallest values are what the neuron promotes and suppresses.

Example:
    >>> effects = logit_effects(model, "blocks.1.mlp.hook_post", [0, 5], k=10)   # doctest: +SKIP
    >>> save_logit_effects("runs/x/logit_effects.json", effects)                  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from tl_concepts.atomic import write_json
from tl_concepts.hooks import MLP_POST, split_hook
from tl_concepts.ids import unit_id

LOGIT_FILE = "logit_effects.json"
"""File name of the logit effects in a run folder (read by :func:`tl_concepts.report.build_report`)."""


def _weights(model: Any, layer: int) -> tuple[Any, Any] | None:
    """(W_out of the layer [d_mlp, d_model], W_U [d_model, d_vocab]) or None."""
    w_u = getattr(model, "W_U", None)
    w_out = None
    try:
        w_out = model.blocks[layer].mlp.W_out
    except Exception:
        try:
            w_out = model.W_out[layer]
        except Exception:
            w_out = None
    if w_u is None or w_out is None:
        return None
    return w_out, w_u


def visible(token: str) -> str:
    """A token with whitespace and control characters made visible (``\\n``, ``\\x07``, ``·`` for spaces at the ends).

    Example:
        >>> visible("\\n")
        '\\\\n'
    """
    out = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in token)
    return out if out.strip() == out else out.replace(" ", "\u00b7") if not out.strip() else out


def is_causal_lm(model: Any) -> bool:
    """True for a decoder (an unembedding and no encoder classification head)."""
    from tl_concepts.models.adapters import is_encoder

    try:
        return not is_encoder(model) and getattr(model, "W_U", None) is not None
    except Exception:
        return False


def logit_effects(model: Any, hook: str, units: Sequence[int], *, k: int = 10) -> dict[str, Any]:
    """Top ``k`` promoted and suppressed tokens of each neuron of ``hook`` (an ``mlp.hook_post``).

    Returns ``{"hook", "k", "method", "units": {unit_id: {"positive": [[token, value], ...],
    "negative": [...]}}}``. Raises ``ValueError`` for a hook that is not an MLP output or a
    model without an unembedding (an encoder such as MiniLM).

    Example:
        >>> logit_effects(model, "blocks.0.mlp.hook_post", [3])["units"]["blocks.0.mlp.hook_post.3"]  # doctest: +SKIP
    """
    import torch

    layer, rest = split_hook(hook)
    if layer is None or rest != MLP_POST:
        raise ValueError(f"logit effects need an MLP neuron hook (blocks.L.mlp.hook_post), got {hook!r}")
    if not is_causal_lm(model):
        raise ValueError("logit effects need a causal LM with an unembedding (W_U); this model has none")
    w = _weights(model, layer)
    if w is None:
        raise ValueError(f"the model exposes no W_out for {hook} or no W_U")
    w_out, w_u = w
    tok = model.tokenizer
    out: dict[str, Any] = {"hook": hook, "k": k, "method": "W_out[unit] @ W_U (direct path, no final LayerNorm)",
                           "units": {}}
    with torch.no_grad():
        rows = w_out.detach().float()[list(int(u) for u in units)] @ w_u.detach().float()
        kk = min(k, rows.shape[1])
        def name(i: Any) -> str:
            text = tok.decode([int(i)])
            if "\ufffd" in text and hasattr(tok, "convert_ids_to_tokens"):  # a byte of a multi-byte character
                text = str(tok.convert_ids_to_tokens(int(i)))
            return visible(text)

        for u, row in zip(units, rows):
            pos = torch.topk(row, kk)
            neg = torch.topk(-row, kk)
            out["units"][unit_id(hook, int(u))] = {
                "positive": [[name(i), float(v)] for v, i in zip(pos.values, pos.indices)],
                "negative": [[name(i), -float(v)] for v, i in zip(neg.values, neg.indices)],
            }
    return out


def save_logit_effects(path: str | os.PathLike, *effects: dict[str, Any]) -> Path:
    """Write one or more :func:`logit_effects` results as one JSON file (atomic)."""
    merged: dict[str, Any] = {"units": {}, "methods": sorted({e.get("method", "") for e in effects})}
    for e in effects:
        for uid, v in e.get("units", {}).items():
            merged["units"][uid] = {**v, "k": e.get("k"), "method": e.get("method")}
    write_json(Path(path), merged, indent=1, ensure_ascii=True)
    return Path(path)


def load_logit_effects(src: Any) -> dict[str, dict[str, Any]]:
    """Unit id -> effects, from a path, a saved dict or a :func:`logit_effects` result (``{}`` if none)."""
    if src is None:
        return {}
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not p.is_file():
            return {}
        src = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(src, (list, tuple)):
        out: dict[str, Any] = {}
        for s in src:
            out.update(load_logit_effects(s))
        return out
    return {uid: {**v, "method": v.get("method", src.get("method"))} for uid, v in (src.get("units") or {}).items()}
