"""Explaining from a real capture store (tiny GPT-2 from a config): neurons, residual
dimensions and a direction."""
import numpy as np
import pytest

from tests.helpers.explain_fakes import RuleLLM
from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import ActivationStore, ExemplarConfig, capture
from tl_concepts.explain.runner import ExplainConfig, explain_store, summary_table
from tl_concepts.explain.units import records_for_direction


def test_explain_store_neurons_resid_and_direction(tiny_bridge, tmp_path):
    ex = ExemplarConfig(n_train_top=3, n_calibration_top=2, n_test_top=2, n_calibration_random=2,
                        n_test_random=2, n_quantile_bins=0, n_per_quantile=0)
    store = capture(tiny_bridge, TEXTS, ["blocks.1.mlp.hook_post", "blocks.0.hook_resid_post"],
                    tmp_path / "store", context_tokens=16, exemplars=ex, progress=False)
    cfg = ExplainConfig(out_dir=str(tmp_path / "explain"), n_bootstrap=20, progress=False, min_activating=1,
                        detection=False, fuzzing=False)
    llm = RuleLLM(["digits"])
    res = explain_store(store, "blocks.1.mlp.hook_post", [0, 3], llm, cfg)
    assert [r.id for r in res] == ["blocks.1.mlp.hook_post.0", "blocks.1.mlp.hook_post.3"]
    for r in res:
        assert r.status in ("ok", "too_few_activating")
        if r.status == "ok":
            sims = r.raw["llm"]["simulations"]
            docs = {(s["split"], s["start"]) for s in sims}
            assert len(docs) == len(sims) and len(sims) == r.raw["splits"]["test_top"] + r.raw["splits"]["test_random"]
    resid = explain_store(store, "blocks.0.hook_resid_post", [5], llm, cfg)
    assert resid[0].hook == "blocks.0.hook_resid_post"
    # a direction over the residual stream equals the matching dimension's activations
    d = store.d("blocks.0.hook_resid_post")
    vec = np.zeros(d)
    vec[5] = 1.0
    u = records_for_direction(ActivationStore.open(tmp_path / "store"), "blocks.0.hook_resid_post", vec,
                              exemplars=ExemplarConfig(n_train_top=2, n_test_top=2, n_test_random=2))
    acts = store.activations("blocks.0.hook_resid_post")[:, 5]
    for r in u.train_top + u.test_top:
        np.testing.assert_allclose(r.activations, acts[r.start:r.start + len(r.tokens)], rtol=1e-6)
    assert u.max_activation == pytest.approx(max(float(np.max(acts)), 0.0))
    assert "status:" in summary_table(cfg.out_dir)
