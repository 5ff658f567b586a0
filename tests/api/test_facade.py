"""The package-root API on live models (TransformerLens 4.x Bridge, and HookedTransformer /
HookedEncoder where 3.x is installed: CI runs this file in a second environment with 3.9)."""
from __future__ import annotations

import asyncio

import pytest

import tl_concepts as tlc
from tests.helpers.explain_fakes import RuleLLM
from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import ExemplarConfig

HOOK = "blocks.1.mlp.hook_post"
EX = ExemplarConfig(n_train_top=3, n_calibration_top=2, n_test_top=2, n_calibration_random=2, n_test_random=2,
                    n_quantile_bins=0, n_per_quantile=0)
OPTS = dict(min_activating=1, detection=False, fuzzing=False, n_bootstrap=20, progress=False)


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_CONCEPTS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _hooked_models(tokenizer):
    """TransformerLens 3.x models (HookedTransformer, HookedEncoder) built from configs."""
    import torch
    from transformer_lens import HookedEncoder, HookedTransformer, HookedTransformerConfig

    cfg = dict(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=64, d_vocab=len(tokenizer),
               act_fn="gelu", seed=0)
    models = [HookedTransformer(HookedTransformerConfig(**cfg), tokenizer=tokenizer),
              HookedEncoder(HookedTransformerConfig(**cfg), tokenizer=tokenizer)]
    # HookedEncoder leaves some weights uninitialised (torch.empty): whatever memory held, NaN included.
    # Seeded weights make both models real, finite networks.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in models:
            for name, p in m.named_parameters():
                p.copy_(torch.ones_like(p) if name.endswith(".w") and p.dim() == 1
                        else torch.randn(p.shape, generator=gen) * 0.05)
            m.eval()
    return models


def test_capture_and_explain_a_live_bridge_with_default_folders(tiny_bridge, runs):
    store = tlc.capture(tiny_bridge, TEXTS, [HOOK], context_tokens=16, exemplars=EX, progress=False)
    assert store.path.parent == runs and store.n_tokens > 100
    llm = RuleLLM(["digits"])
    res = tlc.explain(store, HOOK, units=[0, 3], llm=llm, **OPTS)
    assert isinstance(res, tlc.ExplanationResults) and [u.id for u in res] == [tlc.unit_id(HOOK, 0),
                                                                                tlc.unit_id(HOOK, 3)]
    assert res.out_dir.parent == runs
    calls = dict(llm.calls)
    again = tlc.explain(store, HOOK, units=[0, 3], llm=llm, **OPTS)
    assert llm.calls == calls and again.to_pandas().equals(res.to_pandas())  # same inputs: reused
    loaded = tlc.load(res.out_dir)
    assert loaded.to_pandas().equals(res.to_pandas())
    # the same call with a live model captures first (into its own keyed folder)
    live = tlc.explain(tiny_bridge, HOOK, units=[0], corpus=TEXTS, llm=RuleLLM(["digits"]), **OPTS)
    assert live[0].unit == 0


@pytest.mark.tl3
def test_every_tl3_model_class(tiny_bridge):
    for model in _hooked_models(tiny_bridge.tokenizer):
        res = tlc.explain(model, HOOK, units=[1], corpus=TEXTS, llm=RuleLLM(["digits"]), **OPTS)
        assert res[0].status in ("ok", "too_few_activating") and res[0].hook == HOOK


def test_sync_api_inside_a_running_loop_and_awaitable_twin(tiny_bridge):
    store = tlc.capture(tiny_bridge, TEXTS, [HOOK], context_tokens=16, exemplars=EX, progress=False)

    async def cell():
        assert asyncio.get_running_loop()
        a = tlc.explain(store, HOOK, units=[2], llm=RuleLLM(["digits"]), **OPTS)  # sync call in a loop
        b = await tlc.aexplain(store, HOOK, units=[2], llm=RuleLLM(["digits"]), **OPTS)
        return a, b

    a, b = asyncio.run(cell())
    assert a.to_pandas().equals(b.to_pandas())


def test_bad_options_and_inputs_say_what_to_do(tiny_bridge):
    store = tlc.capture(tiny_bridge, TEXTS, [HOOK], context_tokens=16, exemplars=EX, progress=False)
    with pytest.raises(tlc.ConfigError, match="unknown explain option.*n_bootstrapp.*valid:"):
        tlc.explain(store, HOOK, units=[0], llm=RuleLLM(), n_bootstrapp=3)
    d = store.d(HOOK)
    with pytest.raises(tlc.InputError, match=f"out of range.*0..{d - 1}"):
        tlc.explain(store, HOOK, units=[d], llm=RuleLLM())
    with pytest.raises(tlc.InputError, match="not in the store"):
        tlc.explain(store, "blocks.0.hook_resid_post", units=[0], llm=RuleLLM())
    with pytest.raises(tlc.ConfigError, match="hook points"):
        tlc.capture(tiny_bridge, TEXTS, [])
