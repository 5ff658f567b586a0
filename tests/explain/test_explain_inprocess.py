"""The explain pipeline on the in-process backend (embedded SmolLM2-135M-Instruct)."""
import asyncio
import math

import pytest

from tests.helpers.explain_fakes import planted_unit
from tl_concepts.explain.prompts import simulation_prompt
from tl_concepts.explain.runner import ExplainConfig, run_explain
from tl_concepts.explain.simulators import AllAtOnceSimulator, disjoint_candidates

pytestmark = pytest.mark.slow


def test_simulation_matches_direct_logits_and_batches_records(smollm2):
    import torch

    tokens = [["It", " rained", " on", " Monday"], ["We", " met", " on", " Friday", "."]]
    sim = AllAtOnceSimulator(smollm2, few_shot=())
    assert sim.overlap  # SmolLM2 splits "10" into "1" "0"
    before = smollm2.forward_passes
    sims = asyncio.run(sim.asimulate_many("days of the week", tokens))
    assert smollm2.forward_passes - before == 1  # both records in one batched pass
    assert all(s.ok and s.method == "logits" for s in sims)
    assert all(0.0 <= v <= 10.0 for s in sims for v in s.activations)
    # Recompute slot 3 of record 0 ("Monday") straight from the model's logits.
    p = simulation_prompt("days of the week", tokens[0], few_shot=())
    tok, model = smollm2.tokenizer, smollm2.hf_model
    ids = tok(p.text[: p.positions[3]], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
    digit = {str(d): tok.encode(str(d), add_special_tokens=False) for d in range(10)}
    assert all(len(v) == 1 for v in digit.values())
    probs = {c: math.exp(float(logp[v[0]])) for c, v in digit.items()}
    with torch.inference_mode():
        logp2 = torch.log_softmax(model(torch.cat([ids, torch.tensor([[digit["1"][0]]])], 1)).logits[0, -1].float(), -1)
    probs["10"] = probs["1"] * math.exp(float(logp2[digit["0"][0]]))
    probs = disjoint_candidates(probs)
    want = sum(int(c) * v for c, v in probs.items()) / sum(probs.values())
    assert sims[0].activations[3] == pytest.approx(want, rel=1e-3, abs=1e-3)


def test_explainer_and_runner_on_inprocess(smollm2, tmp_path):
    unit = planted_unit("weekday", seed=1, n_top=2, n_random=1)
    for split in ("train_top", "calibration_top", "test_top", "train_random", "calibration_random", "test_random"):
        for r in getattr(unit, split):
            del r.tokens[8:], r.activations[8:]
    cfg = ExplainConfig(out_dir=str(tmp_path / "run"), n_bootstrap=10, progress=False, detection=False,
                        fuzzing=False, min_activating=1, few_shot=False,
                        explain_max_tokens=48)
    res = run_explain([unit], smollm2, cfg)
    r = res[0].raw
    assert r["status"] == "ok", r
    e = r["llm"]["explanation"]
    assert e["model"] == smollm2.model == "SmolLM2-135M-Instruct" and e["text"] and e["raw"]
    assert r["llm"]["simulation_method"] == ["logits"]
    assert r["llm"]["scores"]["all"]["n_tokens"] == 8 * (len(unit.test_top) + len(unit.test_random))
    assert r["llm_usage"]["explainer"]["simulate"]["failures"] == 0
