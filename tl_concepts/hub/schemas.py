"""The five published dataset kinds, their ``datasets.Features`` and row builders.

Kinds (one row per ...):

* ``concepts``: concept (the schema of :mod:`tl_concepts.concepts.dataset`, reused as is).
* ``explanations``: explained unit: explanation, scores with intervals, baseline, detection /
  fuzzing, and the test records with true and simulated activations.
* ``probes``: probe (concept, hook, accuracy, control accuracy, selectivity, weights).
* ``rankings``: (concept, method): units ranked for the concept, with their scores.
* ``descriptors``: unit: the descriptors mined for it, with scores.

:func:`to_dataset` accepts the domain objects of each stage (a ``ConceptSet``, the explain
runner's result dicts or its output folder), plain row dicts, or a ready ``Dataset``;
:func:`from_dataset` turns a dataset back into those objects.

Example:
    >>> ds = to_dataset("rankings", [{"concept_id": 3, "concept": "days", "hook": "blocks.1.mlp.hook_post",
    ...                               "layer": 1, "method": "probeless", "units": [5, 2], "scores": [0.9, 0.4]}])
    >>> ds[0]["units"]
    [5, 2]
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

KINDS = ("concepts", "explanations", "probes", "rankings", "descriptors")
SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """Data that does not fit the kind's schema."""


def _interval() -> dict[str, Any]:
    from datasets import Value

    return {k: Value("float64") for k in ("value", "low", "high", "level")}


def _sim_scores() -> dict[str, Any]:
    from datasets import Value

    return {"correlation": _interval(), "r_squared": _interval(), "abs_dev_explained": _interval(),
            "n_records": Value("int64"), "n_tokens": Value("int64")}


def _classification() -> dict[str, Any]:
    from datasets import Value

    return {"balanced_accuracy": Value("float64"), "auroc": Value("float64"), "n_positive": Value("int64"),
            "n_negative": Value("int64"), "n_failed": Value("int64"), "method": Value("string"),
            "template": Value("string")}


# Column docs, rendered into the cards (name, type, meaning).
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "concepts": [
        ("concept_id", "int64", "node id of the concept in the merge tree"),
        ("layer", "int64", "block index the representations came from"),
        ("hook", "string", "hook point name"),
        ("k", "int64", "number of concepts in the cut"),
        ("size", "int64", "number of member word occurrences"),
        ("label", "string|null", "first usable LLM label (null when none)"),
        ("labels", "list<struct>", "every label with provenance (template, version, model, backend, raw answer)"),
        ("members", "list<struct>", "member occurrences: word, word_id, sentence id, word index"),
        ("parent", "int64|null", "super-concept node id"),
        ("children", "list<int64>", "sub-concept node ids"),
    ],
    "explanations": [
        ("key", "string", "`hook:unit`"),
        ("hook", "string", "hook point name"),
        ("unit", "int64", "unit (neuron / dimension) index at the hook"),
        ("status", "string", "`ok`, or why the unit has no score (e.g. `too_few_activating`)"),
        ("message", "string|null", "detail for a non-ok status"),
        ("max_activation", "float64", "largest activation of the unit over the corpus"),
        ("n_contexts", "int64", "contexts the unit was mined over"),
        ("n_activating", "int64", "contexts where the unit fired"),
        ("explainer_model", "string", "LLM that wrote the explanation"),
        ("simulator_model", "string", "LLM that simulated activations"),
        ("template_explain", "string", "explanation prompt template id and version"),
        ("template_simulate", "string", "simulation prompt template id and version"),
        ("explanation", "string|null", "the explanation (null when the LLM failed)"),
        ("explainer", "string", "explainer name"),
        ("explanation_raw", "string|null", "raw LLM answer"),
        ("scores", "struct", "held-out test scores (top + random): correlation, r_squared, abs_dev_explained "
                             "as {value, low, high, level} bootstrap intervals"),
        ("scores_random", "struct|null", "the same on the random test records only"),
        ("baseline_explanation", "string|null", "token-lookup baseline explanation"),
        ("baseline_scores", "struct|null", "scores of the baseline explanation"),
        ("lookup_correlation", "struct|null", "correlation of the token lookup table itself"),
        ("detection", "struct|null", "detection scorer: balanced accuracy, AUROC, counts"),
        ("fuzzing", "struct|null", "fuzzing scorer: balanced accuracy, AUROC, counts"),
        ("records", "list<struct>", "test records: split, doc, start, tokens, true, simulated, baseline activations"),
    ],
    "probes": [
        ("probe_id", "string", "probe identifier"),
        ("concept_id", "int64", "concept the probe detects (-1 for a gold class)"),
        ("concept", "string", "concept label or class name"),
        ("hook", "string", "hook point name"),
        ("layer", "int64", "block index"),
        ("method", "string", "probe type (e.g. `logistic-l1`)"),
        ("n_train", "int64", "training examples"),
        ("n_test", "int64", "held-out examples"),
        ("accuracy", "float64", "held-out accuracy"),
        ("control_accuracy", "float64|null", "accuracy on the control task"),
        ("selectivity", "float64|null", "accuracy minus control accuracy"),
        ("weights", "list<float64>", "probe weights, one per unit"),
        ("bias", "float64", "probe bias"),
        ("settings", "string", "JSON of the probe settings"),
    ],
    "rankings": [
        ("concept_id", "int64", "concept the ranking is for"),
        ("concept", "string", "concept label"),
        ("hook", "string", "hook point name"),
        ("layer", "int64", "block index"),
        ("method", "string", "ranking method (e.g. `probeless`, `probe-weights`)"),
        ("units", "list<int64>", "unit indices, best first"),
        ("scores", "list<float64>", "score of each unit (same order)"),
    ],
    "descriptors": [
        ("hook", "string", "hook point name"),
        ("layer", "int64", "block index"),
        ("unit", "int64", "unit index"),
        ("descriptors", "list<struct>", "descriptors of the unit: text, score"),
        ("n_sentences", "int64", "sentences the descriptors were mined over"),
    ],
}


def features(kind: str) -> Any:
    """The ``datasets.Features`` of a kind."""
    from datasets import Features, Sequence, Value

    check_kind(kind)
    if kind == "concepts":
        from tl_concepts.concepts.dataset import features as concept_features

        return concept_features()
    s, i, f = Value("string"), Value("int64"), Value("float64")
    if kind == "explanations":
        record = {"split": s, "doc": i, "start": i, "tokens": Sequence(s), "true": Sequence(f),
                  "simulated": Sequence(f), "baseline": Sequence(f)}
        return Features({
            "key": s, "hook": s, "unit": i, "status": s, "message": s, "max_activation": f, "n_contexts": i,
            "n_activating": i, "explainer_model": s, "simulator_model": s, "template_explain": s,
            "template_simulate": s, "explanation": s, "explainer": s, "explanation_raw": s,
            "scores": _sim_scores(), "scores_random": _sim_scores(), "baseline_explanation": s,
            "baseline_scores": _sim_scores(), "lookup_correlation": _interval(),
            "detection": _classification(), "fuzzing": _classification(), "records": [record],
        })
    if kind == "probes":
        return Features({"probe_id": s, "concept_id": i, "concept": s, "hook": s, "layer": i, "method": s,
                         "n_train": i, "n_test": i, "accuracy": f, "control_accuracy": f, "selectivity": f,
                         "weights": Sequence(f), "bias": f, "settings": s})
    if kind == "rankings":
        return Features({"concept_id": i, "concept": s, "hook": s, "layer": i, "method": s,
                         "units": Sequence(i), "scores": Sequence(f)})
    return Features({"hook": s, "layer": i, "unit": i,
                     "descriptors": [{"text": s, "score": f}], "n_sentences": i})


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise SchemaError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")


# -- explanations -----------------------------------------------------------------------------
def _nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def _interval_row(d: Any) -> dict[str, Any] | None:
    if not d:
        return None
    return {k: _nan_to_none(None if d.get(k) is None else float(d[k])) for k in ("value", "low", "high", "level")}


def _scores_row(d: Any) -> dict[str, Any] | None:
    if not d:
        return None
    return {"correlation": _interval_row(d.get("correlation")), "r_squared": _interval_row(d.get("r_squared")),
            "abs_dev_explained": _interval_row(d.get("abs_dev_explained")),
            "n_records": int(d.get("n_records", 0)), "n_tokens": int(d.get("n_tokens", 0))}


def _class_row(d: Any) -> dict[str, Any] | None:
    if not d:
        return None
    return {"balanced_accuracy": _nan_to_none(d.get("balanced_accuracy")), "auroc": _nan_to_none(d.get("auroc")),
            "n_positive": int(d.get("n_positive", 0)), "n_negative": int(d.get("n_negative", 0)),
            "n_failed": int(d.get("n_failed", 0)), "method": d.get("method"), "template": d.get("template")}


def explanation_row(res: dict[str, Any]) -> dict[str, Any]:
    """One row of the ``explanations`` kind from one explain-runner result dict."""
    llm = res.get("llm") or {}
    base = res.get("baseline") or {}
    expl = llm.get("explanation") or {}
    bexpl = base.get("explanation") or {}
    tpl = res.get("templates") or {}
    sims = llm.get("simulations") or []
    bsims = base.get("simulations") or []
    records = []
    for j, r in enumerate(sims):
        b = bsims[j]["simulated"] if j < len(bsims) and bsims[j].get("tokens") == r["tokens"] else []
        records.append({"split": r.get("split", ""), "doc": int(r.get("doc", -1)), "start": int(r.get("start", -1)),
                        "tokens": list(r["tokens"]), "true": [float(x) for x in r["true"]],
                        "simulated": [float(x) for x in r["simulated"]], "baseline": [float(x) for x in b]})
    scores = llm.get("scores") or {}
    return {
        "key": f"{res['hook']}:{res['unit']}", "hook": res["hook"], "unit": int(res["unit"]),
        "status": res.get("status", ""), "message": res.get("message"),
        "max_activation": float(res.get("max_activation", 0.0)), "n_contexts": int(res.get("n_contexts", 0)),
        "n_activating": int(res.get("n_activating", 0)), "explainer_model": res.get("explainer_model", ""),
        "simulator_model": res.get("simulator_model", ""), "template_explain": tpl.get("explain", ""),
        "template_simulate": tpl.get("simulate", ""), "explanation": expl.get("text"),
        "explainer": expl.get("explainer", ""), "explanation_raw": expl.get("raw"),
        "scores": _scores_row(scores.get("all")), "scores_random": _scores_row(scores.get("random")),
        "baseline_explanation": bexpl.get("text"), "baseline_scores": _scores_row((base.get("scores") or {}).get("all")),
        "lookup_correlation": _interval_row((res.get("lookup_table") or {}).get("correlation")),
        "detection": _class_row(llm.get("detection")), "fuzzing": _class_row(llm.get("fuzzing")),
        "records": records,
    }


def explanation_result(row: dict[str, Any]) -> dict[str, Any]:
    """The explain-runner result dict (the fields the dataset keeps) of one ``explanations`` row.

    The inverse of :func:`explanation_row` up to fields the dataset does not keep (best-of-n
    candidates, calibration fits, timings)."""
    def scores(d: Any) -> dict[str, Any] | None:
        return None if d is None else {k: v for k, v in d.items()}

    llm: dict[str, Any] = {"explanation": {"text": row["explanation"], "explainer": row["explainer"],
                                           "raw": row["explanation_raw"]}}
    if row["scores"] is not None:
        llm["scores"] = {"all": scores(row["scores"])}
        if row["scores_random"] is not None:
            llm["scores"]["random"] = scores(row["scores_random"])
    llm["simulations"] = [{"split": r["split"], "doc": r["doc"], "start": r["start"], "tokens": r["tokens"],
                           "true": r["true"], "simulated": r["simulated"]} for r in row["records"]]
    for k in ("detection", "fuzzing"):
        if row[k] is not None:
            llm[k] = dict(row[k])
    res: dict[str, Any] = {
        "hook": row["hook"], "unit": row["unit"], "status": row["status"], "max_activation": row["max_activation"],
        "n_contexts": row["n_contexts"], "n_activating": row["n_activating"],
        "explainer_model": row["explainer_model"], "simulator_model": row["simulator_model"],
        "templates": {"explain": row["template_explain"], "simulate": row["template_simulate"]}, "llm": llm,
    }
    if row["message"] is not None:
        res["message"] = row["message"]
    if row["baseline_explanation"] is not None or row["baseline_scores"] is not None:
        res["baseline"] = {"explanation": {"text": row["baseline_explanation"]},
                           "scores": {"all": scores(row["baseline_scores"])} if row["baseline_scores"] else {},
                           "simulations": [{"split": r["split"], "doc": r["doc"], "start": r["start"],
                                            "tokens": r["tokens"], "true": r["true"], "simulated": r["baseline"]}
                                           for r in row["records"] if r["baseline"]]}
    if row["lookup_correlation"] is not None:
        res["lookup_table"] = {"correlation": dict(row["lookup_correlation"])}
    return res


def _explain_results(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, (str, os.PathLike)):
        from tl_concepts.explain.runner import load_results

        if not Path(data).is_dir():
            raise SchemaError(f"{data} is not an explain output folder")
        return load_results(data)
    return list(data)


# -- generic rows -----------------------------------------------------------------------------
def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise SchemaError(f"cannot turn a {type(obj).__name__} into a row; give dicts or objects with to_dict()")


OPTIONAL = {
    "probes": {"control_accuracy", "selectivity", "settings", "bias", "n_train", "n_test", "concept_id", "weights",
               "probe_id"},
    "rankings": {"concept_id"},
    "descriptors": {"n_sentences", "layer"},
}


def _generic_rows(kind: str, data: Iterable[Any]) -> list[dict[str, Any]]:
    names = [c[0] for c in COLUMNS[kind]]
    rows = []
    for n, obj in enumerate(data):
        d = _as_dict(obj)
        missing = [c for c in names if c not in d and c not in OPTIONAL.get(kind, set())]
        if missing:
            raise SchemaError(f"{kind} row {n} lacks {', '.join(missing)} (columns: {', '.join(names)})")
        row = {c: d.get(c) for c in names}
        if kind == "probes":
            if not isinstance(row["settings"], (str, type(None))):
                row["settings"] = json.dumps(row["settings"], sort_keys=True, default=str)
            row["settings"] = row["settings"] or "{}"
            row["probe_id"] = row["probe_id"] or f"{row['hook']}:{row['concept']}:{row['method']}"
            row["concept_id"] = -1 if row["concept_id"] is None else row["concept_id"]
            row["weights"] = [float(w) for w in (row["weights"] if row["weights"] is not None else [])]
        if kind == "rankings":
            row["concept_id"] = -1 if row["concept_id"] is None else row["concept_id"]
            if len(row["units"]) != len(row["scores"]):
                raise SchemaError(f"rankings row {n}: {len(row['units'])} units but {len(row['scores'])} scores")
        if kind == "descriptors":
            row["descriptors"] = [x if isinstance(x, dict) else {"text": x[0], "score": float(x[1])}
                                  for x in row["descriptors"]]
            row["n_sentences"] = row["n_sentences"] or 0
            row["layer"] = -1 if row["layer"] is None else row["layer"]
        rows.append(row)
    return rows


def rows(kind: str, data: Any) -> list[dict[str, Any]]:
    """The rows of ``kind`` built from a stage's objects (see the module docstring)."""
    check_kind(kind)
    if kind == "concepts":
        from tl_concepts.concepts.dataset import concept_rows
        from tl_concepts.concepts.model import ConceptSet

        if isinstance(data, ConceptSet):
            return concept_rows(data)
        return [_as_dict(x) for x in data]
    if kind == "explanations":
        out = []
        for r in _explain_results(data):
            out.append(r if "records" in r and "key" in r else explanation_row(r))
        return out
    return _generic_rows(kind, data)


def to_dataset(kind: str, data: Any) -> Any:
    """A ``datasets.Dataset`` of ``kind`` with the kind's features (a Dataset is cast to them)."""
    from datasets import Dataset

    check_kind(kind)
    feats = features(kind)
    if isinstance(data, Dataset):
        if set(data.column_names) != set(feats):
            raise SchemaError(f"the {kind} dataset has columns {sorted(data.column_names)}, expected {sorted(feats)}")
        return data.select_columns(list(feats)).cast(feats) if data.features != feats else data
    try:
        built = rows(kind, data)
        if not built:
            return Dataset.from_dict({name: [] for name in feats}, features=feats)
        return Dataset.from_list(built, features=feats)
    except (TypeError, ValueError, KeyError) as e:
        if isinstance(e, SchemaError):
            raise
        raise SchemaError(f"{kind} rows do not fit the schema: {e}") from e


def from_dataset(kind: str, ds: Any) -> list[Any]:
    """The stage objects of a dataset: ``Concept`` for concepts, explain-runner result dicts for
    explanations, row dicts for the other kinds."""
    check_kind(kind)
    if kind == "explanations":
        return [explanation_result(r) for r in ds]
    if kind == "concepts":
        from tl_concepts.concepts.model import Concept, ConceptLabel

        out = []
        for r in ds:
            labels = [ConceptLabel(concept_id=r["concept_id"], **lab) for lab in r["labels"]]
            out.append(Concept(id=r["concept_id"], layer=r["layer"],
                               members=list(range(len(r["members"]))), words=[m["word"] for m in r["members"]],
                               parent=r["parent"], children=list(r["children"]), labels=labels))
        return out
    return list(ds)
