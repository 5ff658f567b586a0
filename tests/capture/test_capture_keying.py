"""A store is keyed by all its inputs: every model weight, the tokenizer, the corpus and the
capture settings. A changed input is refused naming what changed, or recomputed with
overwrite=True; never are old activations returned for new inputs."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import CaptureConfig, ExemplarConfig, capture
from tl_concepts.capture import runner
from tl_concepts.errors import ConfigError, StaleResultError

HOOK = "blocks.2.mlp.hook_post"


@pytest.fixture
def edit_last_layer(tiny_bridge):
    """Add 0.5 to one weight of the model's last block (restored afterwards)."""
    name, p = [(n, p) for n, p in tiny_bridge.named_parameters() if ".h.2." in n and "mlp" in n
               and p.dim() == 2][0]
    saved = p.detach().clone()

    def edit():
        with torch.no_grad():
            p[3, 5] += 0.5
        return name

    yield edit
    with torch.no_grad():
        p.copy_(saved)


def test_fingerprint_covers_every_parameter(tiny_bridge):
    params = list(tiny_bridge.parameters())
    before = runner.model_fingerprint(tiny_bridge)
    for p in (params[0], params[len(params) // 2], params[-1]):  # first, middle and last tensor
        with torch.no_grad():
            flat = p.view(-1)
            old = flat[-1].item()
            flat[-1] = old + 1e-3  # the last byte of the tensor
            assert runner.model_fingerprint(tiny_bridge) != before
            flat[-1] = old
    assert runner.model_fingerprint(tiny_bridge) == before


def test_edited_later_layer_is_refused_then_recomputed(tiny_bridge, edit_last_layer, tmp_path):
    out = tmp_path / "store"
    old = capture(tiny_bridge, TEXTS, [HOOK], out, progress=False)
    old_acts = old.activations(HOOK).copy()
    key = old.manifest["key"]
    assert set(key) == {"model", "tokenizer", "corpus", "settings"}
    assert old.manifest["settings"]["hooks"] == [HOOK] and old.manifest["tokenizer"]["fingerprint"]

    edit_last_layer()
    with pytest.raises(StaleResultError) as e:
        capture(tiny_bridge, TEXTS, [HOOK], out, progress=False)
    msg = str(e.value)
    assert "model weights" in msg and "overwrite" in msg
    assert not any(w in msg for w in ("tokenizer", "corpus", "settings"))  # only what changed
    new = capture(tiny_bridge, TEXTS, [HOOK], out, progress=False, overwrite=True)
    assert new.manifest["key"]["model"] != key["model"]
    assert new.manifest["key"]["corpus"] == key["corpus"]
    assert not np.allclose(new.activations(HOOK), old_acts)  # recomputed, not the old numbers
    again = capture(tiny_bridge, TEXTS, [HOOK], out, progress=False)  # same inputs: resumes as is
    np.testing.assert_array_equal(again.activations(HOOK), new.activations(HOOK))


def test_refusal_names_each_changed_input(tiny_bridge, tmp_path, monkeypatch):
    out = tmp_path / "store"
    capture(tiny_bridge, TEXTS[:4], [HOOK], out, context_tokens=24, progress=False)

    with pytest.raises(StaleResultError, match=r"other inputs: corpus \(texts, fingerprint \w+, 4 docs -> "):
        capture(tiny_bridge, TEXTS[:5], [HOOK], out, context_tokens=24, progress=False)
    with pytest.raises(StaleResultError, match=r"other inputs: settings \(context_tokens 24 -> 16; "
                                               r"context_tokens_effective 24 -> 16\)"):
        capture(tiny_bridge, TEXTS[:4], [HOOK], out, context_tokens=16, progress=False)
    with pytest.raises(StaleResultError, match=r"other inputs: settings \(nonfinite 'error' -> 'zero'\)"):
        capture(tiny_bridge, TEXTS[:4], [HOOK], out, context_tokens=24, nonfinite="zero", progress=False)
    with pytest.raises(StaleResultError, match=r"settings \(hooks \['blocks.2.mlp.hook_post'\] -> "):
        capture(tiny_bridge, TEXTS[:4], [HOOK, "blocks.0.hook_resid_post"], out, context_tokens=24,
                progress=False)
    monkeypatch.setattr(runner, "tokenizer_fingerprint", lambda tok: "0123456789abcdef")
    with pytest.raises(StaleResultError, match=r"other inputs: tokenizer \(.* -> \w+ 0123456789abcdef\)") as e:
        capture(tiny_bridge, TEXTS[:4], [HOOK], out, context_tokens=24, progress=False)
    assert "corpus" not in str(e.value) and "model weights" not in str(e.value)
    with pytest.raises(StaleResultError, match=r"tokenizer .*; corpus"):
        capture(tiny_bridge, TEXTS[:5], [HOOK], out, context_tokens=24, progress=False)


def test_tokenizer_fingerprint_sees_a_changed_vocabulary(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    a = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    b = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    assert runner.tokenizer_fingerprint(a) == runner.tokenizer_fingerprint(b)
    b.add_tokens(["zebra-crossing"])
    assert runner.tokenizer_fingerprint(a) != runner.tokenizer_fingerprint(b)


def test_exemplar_change_remines_a_finished_store(tiny_bridge, tmp_path):
    out = tmp_path / "store"
    s1 = capture(tiny_bridge, TEXTS, [HOOK], out, progress=False)
    assert s1.exemplar_ids(HOOK)["test_random"].shape[1] == 10
    s2 = capture(tiny_bridge, TEXTS, [HOOK], out, progress=False, exemplars="bills")
    assert s2.exemplar_ids(HOOK)["test_random"].shape[1] == 5
    assert s2.manifest["exemplars"] == ExemplarConfig.bills().to_dict()


def test_callers_config_is_not_modified(tiny_bridge, tmp_path):
    cfg = CaptureConfig(hooks=["blocks.0.mlp.hook_post"], context_tokens=20,
                        exemplars=ExemplarConfig(n_test_random=4))
    before = copy.deepcopy(cfg)
    store = capture(tiny_bridge, TEXTS[:4], [HOOK], tmp_path / "s", config=cfg, batch_size=3, dtype="float16",
                    progress=False)
    assert cfg == before
    assert store.manifest["settings"]["hooks"] == [HOOK] and store.manifest["settings"]["dtype"] == "float16"
    assert store.manifest["settings"]["context_tokens"] == 20 and store.manifest["exemplars"]["n_test_random"] == 4
    with pytest.raises(ConfigError, match="unknown capture setting 'context_size'"):
        capture(tiny_bridge, TEXTS[:4], [HOOK], tmp_path / "t", context_size=3, progress=False)
    with pytest.raises(ConfigError, match="nonfinite must be 'error' or 'zero'"):
        capture(tiny_bridge, TEXTS[:4], [HOOK], tmp_path / "t", nonfinite="skip", progress=False)
    assert not (tmp_path / "t").exists()


def test_cli_refusal_is_one_line_with_exit_2(tiny_gpt2_dir, tmp_path, capsys):
    from tl_concepts.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS[:4]), encoding="utf-8")
    base = ["capture", "--model", str(tiny_gpt2_dir), "--corpus", str(corpus), "--hooks", HOOK,
            "--out", str(tmp_path / "s"), "--no-progress"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base + ["--context-tokens", "16"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # the lines before are the model loader's progress bar
    assert err.startswith("tl-concepts: error: ")
    assert "other inputs: settings (context_tokens 64 -> 16" in err and "--overwrite" in err
    assert main(base + ["--context-tokens", "16", "--overwrite", "--exemplars", "bills"]) == 0
