"""neuron-explainer interop on fixtures built to their JSON schema (dataclass_name tags,
NaN as null, interleaved splits), round trips, and rescoring."""
import asyncio
import json

import numpy as np
import pytest

from tl_concepts.errors import InputError
from tl_concepts.explain.interop import (
    NeuronRecordData,
    read_neuron_record,
    read_scored_explanations,
    rescore,
    result_to_neuron_simulation_results,
    write_neuron_record,
    write_neuron_simulation_results,
)
from tl_concepts.explain.runner import ExplainConfig, explain_unit

from tests.helpers.explain_fakes import RuleLLM, planted_unit


def _ar(tokens, acts):
    return {"dataclass_name": "ActivationRecord", "tokens": tokens, "activations": acts}


def _neuron_record_fixture():
    rng = np.random.default_rng(0)
    top = [_ar([" a", f" t{i}", " c"], [0.0, float(10 - i), -0.1]) for i in range(8)]
    rnd = [_ar([" x", f" r{i}"], [round(float(rng.normal()), 3), 0.0]) for i in range(6)]
    return {"dataclass_name": "NeuronRecord",
            "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 5, "neuron_index": 131},
            "random_sample": rnd,
            "random_sample_by_quantile": [[rnd[0]], [rnd[1]]],
            "quantile_boundaries": [0.1, 0.5],
            "mean": 0.02, "variance": 0.3, "skewness": None, "kurtosis": None,
            "most_positive_activation_records": top}


def test_neuron_record_round_trip_and_their_splits(tmp_path):
    fx = _neuron_record_fixture()
    p = tmp_path / "131.json"
    p.write_text(json.dumps(fx))
    nr = read_neuron_record(p)
    assert (nr.layer_index, nr.neuron_index) == (5, 131) and np.isnan(nr.skewness)
    assert nr.to_json() == fx
    write_neuron_record(nr, tmp_path / "back.json")
    assert json.loads((tmp_path / "back.json").read_text()) == fx
    u = nr.to_unit_records()
    name = lambda recs: [r.tokens[1].strip() for r in recs]  # noqa: E731
    # stride 4 over top records (train, calibration, valid, test), stride 3 over random ones
    assert name(u.train_top) == ["t0", "t4"] and name(u.calibration_top) == ["t1", "t5"]
    assert name(u.test_top) == ["t3", "t7"] and name(u.calibration_random) == ["r0", "r3"]
    assert name(u.test_random) == ["r2", "r5"] and u.train_random == []
    assert name(nr.to_unit_records(test_split="valid").test_top) == ["t2", "t6"]
    assert u.hook == "blocks.5.mlp.hook_post" and u.unit == 131 and u.max_activation == 10.0
    back = NeuronRecordData.from_unit_records(u, layer_index=5).to_unit_records()
    for split in ("train_top", "calibration_top", "test_top", "calibration_random", "test_random"):
        assert name(getattr(back, split)) == name(getattr(u, split)), split


def test_bad_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="expected a NeuronRecord, got a ScoredExplanation"):
        read_neuron_record({"dataclass_name": "ScoredExplanation"})
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not a neuron-explainer JSON"):
        read_neuron_record(p)
    with pytest.raises(InputError, match="lacks 'tokens'"):
        read_neuron_record({**_neuron_record_fixture(), "random_sample": [{"activations": [1.0]}]})


def _scored_fixture():
    """Two explanations of one neuron in their NeuronSimulationResults layout; the
    stored scores computed here with numpy the way their scoring.py defines them."""
    rng = np.random.default_rng(1)
    seqs_t = [np.maximum(rng.normal(size=6), 0) for _ in range(4)]
    out = []
    for expl, noise in (("commas", 0.3), ("dates", 2.0)):
        seqs_s = [np.clip(3 * t + rng.normal(scale=noise, size=t.size), 0, 10) for t in seqs_t]
        ta, sa = np.concatenate(seqs_t), np.concatenate(seqs_s)
        seq_objs = [{"dataclass_name": "ScoredSequenceSimulation",
                     "simulation": {"dataclass_name": "SequenceSimulation", "tokens": [f"w{j}" for j in range(6)],
                                    "expected_activations": s.tolist(),
                                    "activation_scale": "simulated_normalized_activations",
                                    "distribution_values": [[0, 1]] * 6, "distribution_probabilities": [[0.5, 0.5]] * 6,
                                    "uncalibrated_simulation": None},
                     "true_activations": t.tolist(), "ev_correlation_score": float(np.corrcoef(t, s)[0, 1]),
                     "rsquared_score": None, "absolute_dev_explained_score": None}
                    for t, s in zip(seqs_t, seqs_s)]
        out.append({"dataclass_name": "ScoredExplanation", "explanation": expl, "scored_simulation": {
            "dataclass_name": "ScoredSimulation", "scored_sequence_simulations": seq_objs,
            "ev_correlation_score": float(np.corrcoef(ta, sa)[0, 1]),
            "rsquared_score": float(1 - np.mean((ta - sa) ** 2) / np.mean(ta ** 2)),
            "absolute_dev_explained_score": float(1 - np.mean(np.abs(ta - sa)) / np.mean(np.abs(ta)))}})
    return {"dataclass_name": "NeuronSimulationResults",
            "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 0, "neuron_index": 816},
            "scored_explanations": out}


def test_rescoring_their_scored_explanations_gives_their_numbers(tmp_path):
    fx = _scored_fixture()
    p = tmp_path / "816.jsonl"
    p.write_text(json.dumps(fx) + "\n")
    got = read_scored_explanations(p)
    assert [e.explanation for e in got] == ["commas", "dates"]
    assert got[0].layer_index == 0 and got[0].neuron_index == 816
    for e, raw in zip(got, fx["scored_explanations"]):
        s = rescore(e)
        stored = raw["scored_simulation"]
        assert s.correlation.value == pytest.approx(stored["ev_correlation_score"], abs=1e-12)
        assert s.rsquared.value == pytest.approx(stored["rsquared_score"], abs=1e-12)
        assert s.absolute_dev_explained.value == pytest.approx(stored["absolute_dev_explained_score"], abs=1e-12)
    assert rescore(got[0]).correlation.value > rescore(got[1]).correlation.value
    # a bare ScoredExplanation reads too
    assert read_scored_explanations(fx["scored_explanations"][1])[0].explanation == "dates"


def test_our_results_export_to_their_format_and_read_back(tmp_path):
    unit = planted_unit("weekday", seed=2)
    unit.hook = "blocks.3.mlp.hook_post"
    res = asyncio.run(explain_unit(unit, RuleLLM(), ExplainConfig(out_dir=str(tmp_path), n_bootstrap=0,
                                                                     detection=False, fuzzing=False)))
    obj = result_to_neuron_simulation_results(res)
    assert obj["neuron_id"] == {"dataclass_name": "NeuronId", "layer_index": 3, "neuron_index": 0}
    write_neuron_simulation_results(obj, tmp_path / "0.jsonl")
    lines = (tmp_path / "0.jsonl").read_text().splitlines()
    assert len(lines) == 1
    back = read_scored_explanations(tmp_path / "0.jsonl")
    assert [e.explanation for e in back] == ["days of the week", res["baseline"]["explanation"]["text"]]
    for e, which in zip(back, ("llm", "baseline")):
        ours = res[which]["scores"]["all"]["correlation"]["value"]
        assert e.ev_correlation_score == pytest.approx(ours, abs=1e-12)
        assert rescore(e).correlation.value == pytest.approx(ours, abs=1e-12)
