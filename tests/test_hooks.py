"""The one hook-name utility: layer parsing, names via TransformerLens, clear errors."""
from __future__ import annotations

import pytest

from tl_concepts.errors import ConfigError
from tl_concepts.hooks import BLOCK_KINDS, MLP_POST, hook_name, layer_of, require_layer, split_hook


@pytest.mark.parametrize("hook, layer, rest", [
    ("blocks.0.mlp.hook_post", 0, "mlp.hook_post"),
    ("blocks.11.hook_resid_post", 11, "hook_resid_post"),
    ("blocks.3.attn.hook_z", 3, "attn.hook_z"),
    ("hook_embed", None, "hook_embed"),
    ("ln_final.hook_normalized", None, "ln_final.hook_normalized"),
    ("blocks.x.hook_resid_post", None, "blocks.x.hook_resid_post"),
])
def test_split_and_layer(hook, layer, rest):
    assert split_hook(hook) == (layer, rest)
    assert layer_of(hook) == layer


@pytest.mark.parametrize("bad", ["", "blocks.3.", "blocks..3", "3.blocks", "blocks.3.mlp hook_post", None, 3])
def test_not_a_hook_name(bad):
    with pytest.raises(ConfigError, match="not a hook point name"):
        split_hook(bad)


def test_require_layer():
    assert require_layer("blocks.7.hook_resid_pre") == 7
    with pytest.raises(ConfigError, match="not inside a transformer block"):
        require_layer("hook_embed")


def test_names_come_from_transformer_lens_and_round_trip():
    assert hook_name(3, "post") == "blocks.3.mlp.hook_post" and hook_name(2) == "blocks.2.hook_resid_post"
    assert split_hook(hook_name(5, "post")) == (5, MLP_POST)
    for kind in BLOCK_KINDS:
        assert layer_of(hook_name(4, kind)) == 4


@pytest.mark.parametrize("layer, kind, msg", [(-1, "post", "block index"), (1.0, "post", "block index"),
                                              (True, "post", "block index"), (1, "embed", "choose one of"),
                                              (1, "blocks.1.mlp.hook_post", "choose one of")])
def test_hook_name_refuses_bad_input(layer, kind, msg):
    with pytest.raises(ConfigError, match=msg):
        hook_name(layer, kind)
