"""Hook-point names: the one place that builds them and reads the layer out of them.

A hook point inside a transformer block is named ``blocks.<L>.<rest>`` (for example
``blocks.3.mlp.hook_post`` or ``blocks.3.hook_resid_post``), the same in TransformerLens 3.x
and 4.x; names outside the blocks (``hook_embed``, ``ln_final.hook_normalized``) have no
layer. Names are built with TransformerLens's own ``get_act_name``, so the short names it
knows (``post``, ``pre``, ``resid_post``, ``mlp_out``, ``z``, ...) mean what they mean there.

Example:
    >>> from tl_concepts.hooks import hook_name, layer_of, split_hook
    >>> layer_of("blocks.3.mlp.hook_post"), layer_of("hook_embed")
    (3, None)
    >>> split_hook("blocks.11.hook_resid_post")
    (11, 'hook_resid_post')
    >>> hook_name(3, "post"), hook_name(3)
    ('blocks.3.mlp.hook_post', 'blocks.3.hook_resid_post')
"""
from __future__ import annotations

import re

from tl_concepts.errors import ConfigError

__all__ = ["BLOCK_KINDS", "MLP_POST", "RESID_POST", "hook_name", "layer_of", "require_layer", "split_hook"]

MLP_POST = "mlp.hook_post"
"""What follows ``blocks.L.`` in the name of an MLP's neurons (after the nonlinearity)."""
RESID_POST = "hook_resid_post"
"""What follows ``blocks.L.`` in the name of the residual stream after a block."""

BLOCK_KINDS = frozenset({
    "resid_pre", "resid_mid", "resid_post", "attn_in", "attn_out", "mlp_in", "mlp_out", "q_input", "k_input",
    "v_input", "pre", "pre_linear", "post", "q", "k", "v", "z", "rot_q", "rot_k", "result", "pattern", "attn",
    "attn_scores", "attn_logits"})
"""Short names ``get_act_name`` turns into a hook inside a block."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


def split_hook(hook: str) -> tuple[int | None, str]:
    """``(layer, rest)`` of a hook name: ``blocks.3.mlp.hook_post`` -> ``(3, "mlp.hook_post")``;
    a hook outside the blocks -> ``(None, hook)``. A string that is not a dotted name raises
    :class:`~tl_concepts.errors.ConfigError`."""
    if not isinstance(hook, str) or not _NAME.fullmatch(hook):
        raise ConfigError(f"{hook!r} is not a hook point name; names look like blocks.3.mlp.hook_post "
                          "or blocks.3.hook_resid_post")
    m = _BLOCK.fullmatch(hook)
    return (int(m.group(1)), m.group(2)) if m else (None, hook)


def layer_of(hook: str) -> int | None:
    """Block index of a ``blocks.L.…`` hook; None for a hook outside the blocks."""
    return split_hook(hook)[0]


def require_layer(hook: str) -> int:
    """Block index of a hook that must be inside a block (else :class:`ConfigError`).

    Example:
        >>> require_layer("hook_embed")
        Traceback (most recent call last):
        ...
        tl_concepts.errors.ConfigError: hook 'hook_embed' is not inside a transformer block; pick a hook named blocks.<layer>.…, e.g. blocks.3.mlp.hook_post
    """
    layer = layer_of(hook)
    if layer is None:
        raise ConfigError(f"hook {hook!r} is not inside a transformer block; pick a hook named "
                          "blocks.<layer>.…, e.g. blocks.3.mlp.hook_post")
    return layer


def hook_name(layer: int, kind: str = "resid_post") -> str:
    """The full hook name of ``kind`` at block ``layer``, via TransformerLens's ``get_act_name``
    (``post`` -> ``blocks.L.mlp.hook_post``, ``resid_post`` -> ``blocks.L.hook_resid_post``,
    ``mlp_out``, ``pre``, ``z``, ...). A negative or non-integer layer raises ``ConfigError``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ConfigError(f"layer must be a block index 0, 1, 2, ...; got {layer!r}")
    if kind not in BLOCK_KINDS:
        raise ConfigError(f"{kind!r} is not the short name of a hook inside a block; choose one of: "
                          f"{', '.join(sorted(BLOCK_KINDS))}")
    try:  # TransformerLens 4.x
        from transformer_lens.utilities import get_act_name
    except ImportError:  # TransformerLens 3.x
        from transformer_lens.utils import get_act_name  # type: ignore[no-redef]  # same function, 3.x module
    return str(get_act_name(kind, layer))
