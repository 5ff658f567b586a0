"""Interop with OpenAI's neuron-explainer (Bills et al. 2023) JSON files.

Their published data (GPT-2 XL neurons, explanations, scored simulations) is JSON written
from their dataclasses, each object carrying ``"dataclass_name"``; NaN is written as null.
This module reads and writes:

* ``NeuronRecord`` (``collated-activations/<layer>/<neuron>.json``): ``neuron_id``
  (``NeuronId``: ``layer_index``, ``neuron_index``), ``most_positive_activation_records``
  and ``random_sample`` (lists of ``ActivationRecord``: ``tokens``, ``activations``),
  ``random_sample_by_quantile``, ``quantile_boundaries``, ``mean``, ``variance``,
  ``skewness``, ``kurtosis``: :class:`NeuronRecordData`, :func:`read_neuron_record`,
  :func:`write_neuron_record`, and conversion to / from :class:`UnitRecords` with their
  splits (top records interleaved train / calibration / valid / test, random records
  calibration / valid / test, equal-sized).
* ``NeuronSimulationResults`` (``explanations/<layer>/<neuron>.jsonl``, one line):
  ``neuron_id`` and ``scored_explanations`` (``ScoredExplanation``: ``explanation`` and
  ``scored_simulation``: ``ScoredSimulation`` with ``scored_sequence_simulations``
  (``ScoredSequenceSimulation``: ``simulation`` (``SequenceSimulation``: ``tokens``,
  ``expected_activations``, ``activation_scale``, ``distribution_values``,
  ``distribution_probabilities``, ``uncalibrated_simulation``), ``true_activations``,
  ``ev_correlation_score``, ``rsquared_score``, ``absolute_dev_explained_score``) and the
  same three scores over all sequences): :func:`read_scored_explanations`,
  :func:`rescore`, :func:`scored_explanation_json`, :func:`neuron_simulation_results_json`,
  :func:`result_to_neuron_simulation_results` (a unit result of this package's runner).

Scores written here use neuron-explainer's definitions (correlation; uncentred r-squared
and absolute deviation explained), the same as :func:`tl_concepts.explain.scoring.score`'s
``correlation``, ``rsquared`` and ``absolute_dev_explained``.

Example:
    >>> nr = read_neuron_record("collated-activations/0/123.json")      # doctest: +SKIP
    >>> unit = nr.to_unit_records()                                       # doctest: +SKIP
    >>> for e in read_scored_explanations("explanations/0/123.jsonl"):   # doctest: +SKIP
    ...     print(e.explanation, rescore(e).correlation.value)
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tl_concepts.atomic import write_json
from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.errors import InputError
from tl_concepts.hooks import hook_name, layer_of
from tl_concepts.explain.scoring import SimulationScores, absolute_dev_explained, correlation, rsquared, score

TOP_SPLITS = ("train", "calibration", "valid", "test")
"""neuron-explainer's splits of the top-activating records (interleaved, stride 4)."""
RANDOM_SPLITS = ("calibration", "valid", "test")
"""neuron-explainer's splits of the random records (interleaved, stride 3)."""


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _json_num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _load(src: str | os.PathLike | dict | list) -> Any:
    if isinstance(src, (dict, list)):
        return src
    text = Path(src).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        return json.loads(lines[0] if len(lines) == 1 else text)
    except (json.JSONDecodeError, IndexError) as e:
        raise InputError(f"{src}: not a neuron-explainer JSON file ({e})") from None


def _expect(d: Any, name: str, where: str) -> dict:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a {name} object, got {type(d).__name__}")
    got = d.get("dataclass_name", name)
    if got != name:
        raise InputError(f"{where}: expected a {name}, got a {got}")
    return d


def _record(d: Any, where: str) -> ActivationRecord:
    d = _expect(d, "ActivationRecord", where)
    try:
        return ActivationRecord([str(t) for t in d["tokens"]], [_num(a) for a in d["activations"]])
    except KeyError as e:
        raise InputError(f"{where}: ActivationRecord lacks {e}") from None


def _record_json(r: ActivationRecord) -> dict[str, Any]:
    return {"dataclass_name": "ActivationRecord", "tokens": list(r.tokens),
            "activations": [_json_num(a) for a in r.activations]}


def _neuron_id_json(layer: int, neuron: int) -> dict[str, Any]:
    return {"dataclass_name": "NeuronId", "layer_index": int(layer), "neuron_index": int(neuron)}


def _interleaved(items: Sequence[Any], names: Sequence[str]) -> dict[str, list[Any]]:
    """neuron-explainer's equal interleaved splits: ``n = len // k`` per split, split ``i``
    takes items ``i, i + k, ...`` among the first ``n * k``."""
    k = len(names)
    n = len(items) // k
    return {name: list(items[i: n * k: k]) for i, name in enumerate(names)}


@dataclass
class NeuronRecordData:
    """A neuron-explainer ``NeuronRecord`` (field names as theirs)."""

    layer_index: int
    """``neuron_id.layer_index``."""
    neuron_index: int
    """``neuron_id.neuron_index``."""
    most_positive_activation_records: list[ActivationRecord] = field(default_factory=list)
    """Top-activating records, strongest first."""
    random_sample: list[ActivationRecord] = field(default_factory=list)
    """Random records."""
    random_sample_by_quantile: list[list[ActivationRecord]] | None = None
    """Random records per activation quantile (None when not tracked)."""
    quantile_boundaries: list[float] | None = None
    """Boundaries of those quantiles."""
    mean: float = float("nan")
    """Moments of the neuron's activations (nan when unknown)."""
    variance: float = float("nan")
    skewness: float = float("nan")
    kurtosis: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        """The NeuronRecord JSON object (NaN as null, as their writer does)."""
        return {
            "dataclass_name": "NeuronRecord",
            "neuron_id": _neuron_id_json(self.layer_index, self.neuron_index),
            "random_sample": [_record_json(r) for r in self.random_sample],
            "random_sample_by_quantile": None if self.random_sample_by_quantile is None else
            [[_record_json(r) for r in q] for q in self.random_sample_by_quantile],
            "quantile_boundaries": None if self.quantile_boundaries is None else
            [_json_num(b) for b in self.quantile_boundaries],
            "mean": _json_num(self.mean), "variance": _json_num(self.variance),
            "skewness": _json_num(self.skewness), "kurtosis": _json_num(self.kurtosis),
            "most_positive_activation_records": [_record_json(r) for r in self.most_positive_activation_records],
        }

    @classmethod
    def from_json(cls, d: Any, where: str = "NeuronRecord") -> "NeuronRecordData":
        d = _expect(d, "NeuronRecord", where)
        try:
            nid = _expect(d["neuron_id"], "NeuronId", f"{where}.neuron_id")
            quant = d.get("random_sample_by_quantile")
            bounds = d.get("quantile_boundaries")
            return cls(
                int(nid["layer_index"]), int(nid["neuron_index"]),
                [_record(r, f"{where}.most_positive_activation_records[{i}]")
                 for i, r in enumerate(d.get("most_positive_activation_records") or [])],
                [_record(r, f"{where}.random_sample[{i}]") for i, r in enumerate(d.get("random_sample") or [])],
                None if quant is None else [[_record(r, f"{where}.random_sample_by_quantile") for r in q]
                                            for q in quant],
                None if bounds is None else [_num(b) for b in bounds],
                _num(d.get("mean")), _num(d.get("variance")), _num(d.get("skewness")), _num(d.get("kurtosis")))
        except KeyError as e:
            raise InputError(f"{where}: NeuronRecord lacks {e}") from None

    def to_unit_records(self, *, hook: str | None = None, test_split: str = "test") -> UnitRecords:
        """Their splits as :class:`UnitRecords`: train top -> ``train_top``, calibration
        top + random -> ``calibration_*``, and ``test_split`` (``"test"`` or ``"valid"``)
        top + random -> ``test_*``. ``hook`` defaults to ``blocks.<layer>.mlp.hook_post``;
        records get ``doc`` = their index in the source list (top, then random after
        the top ones) so that split checks can tell them apart.
        """
        if test_split not in ("test", "valid"):
            raise InputError(f"test_split must be 'test' or 'valid', not {test_split!r}")
        top = [ActivationRecord(r.tokens, r.activations, doc=i) for i, r in
               enumerate(self.most_positive_activation_records)]
        off = len(top)
        rnd = [ActivationRecord(r.tokens, r.activations, doc=off + i) for i, r in enumerate(self.random_sample)]
        t, r = _interleaved(top, TOP_SPLITS), _interleaved(rnd, RANDOM_SPLITS)
        finite = [a for x in self.most_positive_activation_records for a in x.activations if math.isfinite(a)]
        return UnitRecords(
            hook or hook_name(int(self.layer_index), "post"), self.neuron_index,
            train_top=t["train"], calibration_top=t["calibration"], test_top=t[test_split],
            calibration_random=r["calibration"], test_random=r[test_split],
            max_activation=max(finite, default=0.0), n_contexts=len(top) + len(rnd))

    @classmethod
    def from_unit_records(cls, unit: UnitRecords, *, layer_index: int = 0) -> "NeuronRecordData":
        """Our splits in their layout: top records interleaved train / calibration / valid /
        test and random records calibration / valid / test, ``n`` per split with ``n`` the
        smallest of our train / calibration / test sizes (``valid`` gets the test records
        too, as we have no such split; records beyond ``n`` are left out)."""
        n_top = min(len(unit.train_top), len(unit.calibration_top), len(unit.test_top))
        n_rnd = min(len(unit.calibration_random), len(unit.test_random))
        top: list[ActivationRecord] = []
        for i in range(n_top):
            top += [unit.train_top[i], unit.calibration_top[i], unit.test_top[i], unit.test_top[i]]
        rnd: list[ActivationRecord] = []
        for i in range(n_rnd):
            rnd += [unit.calibration_random[i], unit.test_random[i], unit.test_random[i]]
        return cls(layer_index, int(unit.unit), top, rnd)


def read_neuron_record(src: str | os.PathLike | dict) -> NeuronRecordData:
    """A neuron-explainer NeuronRecord from a file (or its parsed JSON)."""
    return NeuronRecordData.from_json(_load(src), str(src) if not isinstance(src, dict) else "NeuronRecord")


def write_neuron_record(record: NeuronRecordData, path: str | os.PathLike) -> None:
    """Write a NeuronRecord JSON file (atomically)."""
    write_json(path, record.to_json())


# --------------------------------------------------------------------------- explanations
@dataclass
class ImportedExplanation:
    """One ``ScoredExplanation`` read from a neuron-explainer file."""

    explanation: str
    """The explanation text."""
    true_records: list[list[float]]
    """True activations per scored sequence."""
    tokens: list[list[str]]
    """Tokens per scored sequence."""
    expected_activations: list[list[float]]
    """Simulated expected activations per sequence (as stored: calibrated or not)."""
    activation_scale: list[str]
    """``activation_scale`` of each sequence's simulation."""
    ev_correlation_score: float
    """Their stored correlation over all sequences (nan when absent)."""
    rsquared_score: float
    """Their stored r-squared (uncentred) over all sequences."""
    absolute_dev_explained_score: float
    """Their stored absolute deviation explained over all sequences."""
    layer_index: int = -1
    """From ``neuron_id`` (-1 when read from a bare ScoredExplanation)."""
    neuron_index: int = -1


def rescore(e: ImportedExplanation, *, n_bootstrap: int = 0, seed: int = 0) -> SimulationScores:
    """This package's scores of an imported explanation's stored simulation."""
    return score(e.true_records, e.expected_activations, n_bootstrap=n_bootstrap, seed=seed)


def _scored_explanation(d: Any, where: str, layer: int = -1, neuron: int = -1) -> ImportedExplanation:
    d = _expect(d, "ScoredExplanation", where)
    ss = _expect(d.get("scored_simulation"), "ScoredSimulation", f"{where}.scored_simulation")
    trues, toks, evs, scales = [], [], [], []
    for i, seq in enumerate(ss.get("scored_sequence_simulations") or []):
        w = f"{where}.scored_sequence_simulations[{i}]"
        seq = _expect(seq, "ScoredSequenceSimulation", w)
        sim = _expect(seq.get("simulation"), "SequenceSimulation", f"{w}.simulation")
        if seq.get("true_activations") is None:
            raise InputError(f"{w}: no true_activations; this file cannot be rescored")
        trues.append([_num(a) for a in seq["true_activations"]])
        toks.append([str(t) for t in sim.get("tokens") or []])
        evs.append([_num(a) for a in sim.get("expected_activations") or []])
        scales.append(str(sim.get("activation_scale", "")))
    return ImportedExplanation(str(d.get("explanation", "")), trues, toks, evs, scales,
                               _num(ss.get("ev_correlation_score")), _num(ss.get("rsquared_score")),
                               _num(ss.get("absolute_dev_explained_score")), layer, neuron)


def read_scored_explanations(src: str | os.PathLike | dict) -> list[ImportedExplanation]:
    """Every ScoredExplanation in a ``NeuronSimulationResults`` file (their
    ``explanations/<layer>/<neuron>.jsonl``) or a single ScoredExplanation object."""
    d = _load(src)
    where = str(src) if not isinstance(src, dict) else "explanations"
    if isinstance(d, dict) and d.get("dataclass_name", "NeuronSimulationResults" if "scored_explanations" in d
                                     else "ScoredExplanation") == "NeuronSimulationResults":
        nid = _expect(d.get("neuron_id"), "NeuronId", f"{where}.neuron_id")
        return [_scored_explanation(e, f"{where}.scored_explanations[{i}]", int(nid["layer_index"]),
                                    int(nid["neuron_index"])) for i, e in enumerate(d.get("scored_explanations") or [])]
    return [_scored_explanation(d, where)]


def _seq_scores(t: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    return correlation(t, s), rsquared(t, s), absolute_dev_explained(t, s)


def scored_explanation_json(
    explanation: str,
    tokens: Sequence[Sequence[str]],
    true_activations: Sequence[Sequence[float]],
    expected_activations: Sequence[Sequence[float]],
    *,
    activation_scale: str = "simulated_normalized_activations",
) -> dict[str, Any]:
    """A neuron-explainer ``ScoredExplanation`` object for one explanation and its
    simulation of some records, with their per-sequence and overall scores.

    ``activation_scale``: ``simulated_normalized_activations`` (raw 0..10 simulation) or
    ``neuron_activations`` (calibrated). The distributions are not kept here, so
    ``distribution_values`` / ``distribution_probabilities`` hold one value per token (the
    expected value, probability 1).
    """
    if not (len(tokens) == len(true_activations) == len(expected_activations)):
        raise ValueError("tokens, true_activations and expected_activations differ in length")
    seqs = []
    for toks, t, s in zip(tokens, true_activations, expected_activations):
        ta, sa = np.asarray(t, float), np.asarray(s, float)
        if not (len(toks) == ta.size == sa.size):
            raise ValueError("a sequence's tokens, true and simulated activations differ in length")
        ev, r2, ade = _seq_scores(ta, sa)
        seqs.append({
            "dataclass_name": "ScoredSequenceSimulation",
            "simulation": {"dataclass_name": "SequenceSimulation", "tokens": list(toks),
                           "expected_activations": [float(v) for v in s], "activation_scale": activation_scale,
                           "distribution_values": [[float(v)] for v in s],
                           "distribution_probabilities": [[1.0] for _ in s], "uncalibrated_simulation": None},
            "true_activations": [float(v) for v in t],
            "ev_correlation_score": _json_num(ev), "rsquared_score": _json_num(r2),
            "absolute_dev_explained_score": _json_num(ade)})
    t_all = np.concatenate([np.asarray(t, float) for t in true_activations]) if seqs else np.zeros(0)
    s_all = np.concatenate([np.asarray(s, float) for s in expected_activations]) if seqs else np.zeros(0)
    ev, r2, ade = _seq_scores(t_all, s_all)
    return {"dataclass_name": "ScoredExplanation", "explanation": explanation,
            "scored_simulation": {"dataclass_name": "ScoredSimulation", "scored_sequence_simulations": seqs,
                                  "ev_correlation_score": _json_num(ev), "rsquared_score": _json_num(r2),
                                  "absolute_dev_explained_score": _json_num(ade)}}


def neuron_simulation_results_json(layer_index: int, neuron_index: int,
                                   scored_explanations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A ``NeuronSimulationResults`` object (write it as one line of ``<layer>/<neuron>.jsonl``)."""
    return {"dataclass_name": "NeuronSimulationResults", "neuron_id": _neuron_id_json(layer_index, neuron_index),
            "scored_explanations": list(scored_explanations)}


def result_to_neuron_simulation_results(result: dict[str, Any], *, layer_index: int | None = None,
                                        which: Sequence[str] = ("llm", "baseline")) -> dict[str, Any]:
    """A unit result of :func:`tl_concepts.explain.runner.explain_unit` (run with
    ``save_simulations=True``) as neuron-explainer's ``NeuronSimulationResults``: one
    ScoredExplanation per explanation in ``which`` that has simulations (raw 0..10
    simulation of the test records). ``layer_index`` defaults to the number after
    ``blocks.`` in the hook (0 when there is none)."""
    hook = str(result.get("hook", ""))
    if layer_index is None:
        layer_index = (layer_of(hook) if hook else None) or 0
    out = []
    for k in which:
        part = result.get(k) or {}
        sims = part.get("simulations")
        text = (part.get("explanation") or {}).get("text")
        if not sims or not text:
            continue
        out.append(scored_explanation_json(text, [s["tokens"] for s in sims], [s["true"] for s in sims],
                                           [s["simulated"] for s in sims]))
    return neuron_simulation_results_json(layer_index, int(result.get("unit", -1)), out)


def write_neuron_simulation_results(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a NeuronSimulationResults object as their one-line JSONL file (atomically)."""
    from tl_concepts.atomic import write_text

    write_text(path, json.dumps(obj, allow_nan=False) + "\n")
