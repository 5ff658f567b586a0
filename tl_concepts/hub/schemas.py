"""The five published dataset kinds, their ``datasets.Features`` and row builders.

Kinds (one row per ...):

* ``concepts``: concept (the schema of :mod:`tl_concepts.concepts.dataset`, reused as is).
* ``explanations``: explained unit: explanation, scores with intervals, baseline, detection /
  fuzzing, and the test records with true and simulated activations.
* ``probes``: probe: the table of :func:`tl_concepts.probing.runner.run_probes` (hook, source,
  label, name, task, size, split sizes, train/dev/test/majority/control accuracy, selectivity,
  c, seconds, seed).
* ``rankings``: (label, method, rank): the long table of
  :func:`tl_concepts.probing.runner.run_rankings` (hook, source, label, name, method, rank,
  neuron, score).
* ``descriptors``: (half, neuron, rank): the neuron -> descriptor mapping table of
  :func:`tl_concepts.descriptors.runner.run_descriptors` (which descriptors each neuron got, on
  the calibration and on the validation half, with composition, base rate, lift, excess,
  support). The sentence and vocabulary tables are not published; the stage's metrics
  (vocabulary size, Jaccard, P@k / R@k) go on the card.

:func:`to_dataset` accepts the domain objects of each stage (a ``ConceptSet``, the explain
runner's result dicts or its output folder; ``run_probes``' Dataset; a ``RankOutput`` or its
``rankings`` Dataset; a ``DescriptorOutput`` or its ``mapping`` Dataset; the probing /
descriptor ``out`` folders), plain row dicts, or a ready ``Dataset``. Rows are validated
(missing or mistyped columns, accuracies outside [0, 1], selectivity that is not test minus
control accuracy, duplicate ranks). :func:`from_dataset` turns a dataset back into those
objects (row dicts for probes, rankings and descriptors).

Example:
    >>> ds = to_dataset("rankings", [{"hook": "blocks.1.mlp.hook_post", "source": "pos", "label": "NOUN",
    ...                               "name": "NOUN", "method": "probeless", "rank": 0, "neuron": 5,
    ...                               "score": 0.9}])
    >>> ds[0]["neuron"]
    5
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from tl_concepts.descriptors.schema import HALVES, MAPPING_COLUMNS  # noqa: E402  (the producing stages own
from tl_concepts.probing.schema import PROBE_COLUMNS, RANKING_COLUMNS  # noqa: E402  their schemas)
from tl_concepts.ids import unit_id
from tl_concepts.results import Column, column_features

KINDS = ("concepts", "explanations", "probes", "rankings", "descriptors")
SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """Data that does not fit the kind's schema."""


SCORE_NAMES = ("correlation", "rsquared", "absolute_dev_explained", "rsquared_centred",
               "absolute_dev_explained_centred")
"""Simulation scores kept per explanation: Pearson correlation; r-squared and absolute deviation
explained in neuron-explainer's uncentred definitions and their centred variants."""
OLD_SCORE_NAMES = {"rsquared_centred": "r_squared", "absolute_dev_explained_centred": "abs_dev_explained"}
"""Names older result files used for the centred variants."""


def _interval() -> dict[str, Any]:
    from datasets import Value

    return {k: Value("float64") for k in ("value", "low", "high", "level")}


def _sim_scores() -> dict[str, Any]:
    from datasets import Value

    return {**{name: _interval() for name in SCORE_NAMES}, "n_records": Value("int64"), "n_tokens": Value("int64")}


def _verdict() -> dict[str, Any]:
    from datasets import Value

    return {"label": Value("string"), "beats_chance": Value("bool"), "beats_baseline": Value("bool"),
            "delta_vs_baseline": _interval(), "vs_lookup_table": _interval()}


def _classification() -> dict[str, Any]:
    from datasets import Value

    return {"balanced_accuracy": Value("float64"), "auroc": Value("float64"), "n_positive": Value("int64"),
            "n_negative": Value("int64"), "n_failed": Value("int64"), "method": Value("string"),
            "template": Value("string"), "status": Value("string")}


# Column docs, rendered into the cards (name, type, meaning).
COLUMNS: dict[str, list[Column]] = {
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
        ("key", "string", "the unit id `<hook>.<unit>` (`tl_concepts.ids.unit_id`), as in the report and files"),
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
        ("scores", "struct", "held-out test scores (top + random): correlation, rsquared and "
                             "absolute_dev_explained (uncentred, as neuron-explainer), rsquared_centred, "
                             "absolute_dev_explained_centred, as {value, low, high, level} bootstrap intervals "
                             "(null: not computed)"),
        ("scores_random", "struct|null", "the same on the random test records only"),
        ("baseline_explanation", "string|null", "token-lookup baseline explanation"),
        ("baseline_scores", "struct|null", "scores of the baseline explanation"),
        ("lookup_correlation", "struct|null", "correlation of the token lookup table itself"),
        ("detection", "struct|null", "detection scorer: balanced accuracy, AUROC, counts"),
        ("fuzzing", "struct|null", "fuzzing scorer: balanced accuracy, AUROC, counts"),
        ("verdict", "struct|null", "verdict on the explanation from paired bootstrap intervals: label (`beats "
                                   "baseline`, `above chance`, `not above chance`, `not scored`), beats_chance, "
                                   "beats_baseline, delta_vs_baseline, vs_lookup_table (null: not computed)"),
        ("baseline_verdict", "struct|null", "the same for the baseline explanation"),
        ("records", "list<struct>", "test records: split, doc, start, tokens, true, simulated, baseline activations"),
    ],
    "probes": PROBE_COLUMNS,
    "rankings": RANKING_COLUMNS,
    "descriptors": MAPPING_COLUMNS,
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
            "detection": _classification(), "fuzzing": _classification(), "verdict": _verdict(),
            "baseline_verdict": _verdict(), "records": [record],
        })
    return column_features(COLUMNS[kind])


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
    out = {name: _interval_row(d.get(name, d.get(OLD_SCORE_NAMES.get(name, ""), None))) for name in SCORE_NAMES}
    return {**out, "n_records": int(d.get("n_records", 0)), "n_tokens": int(d.get("n_tokens", 0))}


def _verdict_row(d: Any) -> dict[str, Any] | None:
    if not isinstance(d, dict):
        return None
    return {"label": d.get("label"), "beats_chance": d.get("beats_chance"), "beats_baseline": d.get("beats_baseline"),
            "delta_vs_baseline": _interval_row(d.get("delta_vs_baseline")),
            "vs_lookup_table": _interval_row(d.get("vs_lookup_table"))}


def _class_row(d: Any) -> dict[str, Any] | None:
    if not d:
        return None
    return {"balanced_accuracy": _nan_to_none(d.get("balanced_accuracy")), "auroc": _nan_to_none(d.get("auroc")),
            "n_positive": int(d.get("n_positive", 0)), "n_negative": int(d.get("n_negative", 0)),
            "n_failed": int(d.get("n_failed", 0)), "method": d.get("method"), "template": d.get("template"),
            "status": d.get("status") or "ok"}


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
        "key": res.get("id") or unit_id(res["hook"], res["unit"]), "hook": res["hook"], "unit": int(res["unit"]),
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
        "verdict": _verdict_row(llm.get("verdict")), "baseline_verdict": _verdict_row(base.get("verdict")),
        "records": records,
    }


def explanation_result(row: dict[str, Any]) -> dict[str, Any]:
    """The explain-runner result dict (the fields the dataset keeps) of one ``explanations`` row.

    The inverse of :func:`explanation_row` up to fields the dataset does not keep (best-of-n
    candidates, calibration fits, timings)."""
    def scores(d: Any) -> dict[str, Any] | None:
        return None if d is None else {k: v for k, v in d.items() if v is not None}

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
    if row.get("verdict") is not None:
        llm["verdict"] = dict(row["verdict"])
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
        if row.get("baseline_verdict") is not None:
            res["baseline"]["verdict"] = dict(row["baseline_verdict"])
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


# Columns a row dict may leave out, with how they are filled (the producers always give them all).
OPTIONAL: dict[str, dict[str, Any]] = {
    "probes": {"source": "", "name": None, "control_accuracy": None, "selectivity": None, "seconds": 0.0,
               "seed": 0},
    "rankings": {"source": "", "name": None, "unit": None},
    "descriptors": {"hook": "", "unit": None},
}
TASKS = ("binary", "multiclass")
STAGE_FILES = {"probes": "probes.parquet", "rankings": "rankings.parquet", "descriptors": "mapping.parquet"}
"""Parquet table each producer writes to its ``out`` folder (accepted as a folder path)."""


def _num(kind: str, n: int, col: str, v: Any, typ: type) -> Any:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        raise SchemaError(f"{kind} row {n}: {col} is {v!r}, not a number")
    if typ is int:
        if float(v) != int(v):
            raise SchemaError(f"{kind} row {n}: {col} is {v!r}, not an integer")
        return int(v)
    return float(v)


def _check_row(kind: str, n: int, row: dict[str, Any]) -> None:
    def bad(msg: str) -> SchemaError:
        return SchemaError(f"{kind} row {n}: {msg}")

    if kind == "probes":
        if row["task"] not in TASKS:
            raise bad(f"task is {row['task']!r}; use one of {', '.join(TASKS)}")
        for c in ("train_accuracy", "dev_accuracy", "test_accuracy", "majority_accuracy", "control_accuracy"):
            v = row[c]
            if v is not None and not math.isnan(v) and not 0.0 <= v <= 1.0:
                raise bad(f"{c} is {v}, outside [0, 1]")
        t, ctl, sel = row["test_accuracy"], row["control_accuracy"], row["selectivity"]
        if sel is None and ctl is not None:
            row["selectivity"] = t - ctl
        elif sel is not None and (ctl is None or not math.isclose(sel, t - ctl, abs_tol=1e-9)):
            raise bad(f"selectivity {sel} is not test_accuracy - control_accuracy ({t} - {ctl})")
        for c in ("size", "n_train", "n_dev", "n_test"):
            if row[c] < 0:
                raise bad(f"{c} is {row[c]}, negative")
    elif kind == "rankings":
        if row["rank"] < 0 or row["neuron"] < 0:
            raise bad(f"rank {row['rank']} / neuron {row['neuron']} must be >= 0")
    elif kind == "descriptors":
        if row["half"] not in HALVES:
            raise bad(f"half is {row['half']!r}; use one of {', '.join(HALVES)}")
        if row["rank"] < 0 or row["neuron"] < 0 or row["entry"] < 0:
            raise bad(f"rank {row['rank']} / neuron {row['neuron']} / entry {row['entry']} must be >= 0")


# (label, method, rank) per hook and source; (neuron, rank) per half
_UNIQUE = {"rankings": ("hook", "source", "label", "method", "rank"), "descriptors": ("half", "neuron", "rank")}


def _generic_rows(kind: str, data: Iterable[Any]) -> list[dict[str, Any]]:
    """Validated rows of ``probes`` / ``rankings`` / ``descriptors`` (columns of :data:`COLUMNS`)."""
    cols = COLUMNS[kind]
    opt = OPTIONAL[kind]
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for n, obj in enumerate(data):
        d = _as_dict(obj)
        missing = [c for c, _, _ in cols if c not in d and c not in opt]
        if missing:
            raise SchemaError(f"{kind} row {n} lacks {', '.join(missing)} "
                              f"(columns: {', '.join(c for c, _, _ in cols)}; optional: {', '.join(opt) or 'none'})")
        row: dict[str, Any] = {}
        for c, typ, _ in cols:
            v = d.get(c, opt.get(c))
            if c == "unit" and v is None:  # the one unit id, from hook and neuron
                v = unit_id(row["hook"], d["neuron"]) if row.get("hook") else ""  # neuron: a required column
            base = typ.split("|")[0]
            if base == "string":
                if c == "name" and v is None:
                    v = row["label"]
                if c in ("label", "name") and isinstance(v, int) and not isinstance(v, bool):
                    v = str(v)  # a concept id given as a number
                if not isinstance(v, str):
                    raise SchemaError(f"{kind} row {n}: {c} is {v!r}, not a string")
            else:
                v = _num(kind, n, c, v, int if base == "int64" else float)
                if v is None and not typ.endswith("|null"):
                    raise SchemaError(f"{kind} row {n}: {c} is null")
            row[c] = v
        _check_row(kind, n, row)
        if kind in _UNIQUE:
            key = tuple(row[c] for c in _UNIQUE[kind])
            if key in seen:
                raise SchemaError(f"{kind} rows {seen[key]} and {n} have the same "
                                  f"({', '.join(_UNIQUE[kind])}) = {key}")
            seen[key] = n
        rows.append(row)
    return rows


def _stage_folder(kind: str, data: Any) -> Path | None:
    if isinstance(data, (str, os.PathLike)):
        d = Path(data)
        if not (d / STAGE_FILES[kind]).is_file():
            raise SchemaError(f"{d} is not a {kind} output folder (it has no {STAGE_FILES[kind]})")
        return d / STAGE_FILES[kind]
    return None


def stage_table(kind: str, data: Any) -> Any:
    """The table a ``probes`` / ``rankings`` / ``descriptors`` input stands for.

    ``probes``: :func:`~tl_concepts.probing.runner.run_probes`' Dataset; ``rankings``: a
    :class:`~tl_concepts.probing.runner.RankOutput` (its ``.rankings``) or that Dataset;
    ``descriptors``: a :class:`~tl_concepts.descriptors.runner.DescriptorOutput` (its
    ``.mapping``) or that Dataset; for each, the producer's ``out`` folder (its parquet table);
    anything else (row dicts, objects with ``to_dict()``) is returned as is.
    """
    from datasets import Dataset

    path = _stage_folder(kind, data)
    if path is not None:  # the stages' loaders also read tables without rows
        from tl_concepts.descriptors.results import Descriptors
        from tl_concepts.probing.results import ProbeResults, Rankings

        loaders: dict[str, Callable[[Path], Any]] = {"probes": ProbeResults.load, "rankings": Rankings.load,
                                                     "descriptors": Descriptors.load}
        return loaders[kind](path.parent).to_dataset()
    if hasattr(data, "to_dataset") and hasattr(data, "rows"):  # ProbeResults, Rankings, Descriptors
        return data.to_dataset()
    attr = {"rankings": "rankings", "descriptors": "mapping"}.get(kind)
    if attr and not isinstance(data, (Dataset, list, tuple, dict)) and hasattr(data, attr):
        return getattr(data, attr)
    return data


def stage_metrics(kind: str, data: Any) -> dict[str, Any]:
    """Stage-level figures that are not in the table: for ``descriptors``, ``run_descriptors``'
    ``metrics`` (from a ``DescriptorOutput`` or ``<out>/metrics.json``); else ``{}``."""
    if kind != "descriptors":
        return {}
    if isinstance(data, (str, os.PathLike)):
        f = Path(data) / "metrics.json"
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    m = getattr(data, "metrics", None)
    return dict(m) if isinstance(m, dict) else {}


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
        data = data.to_dicts() if hasattr(data, "to_dicts") else data  # ExplanationResults
        for r in _explain_results(data):
            out.append(r if "records" in r and "key" in r else explanation_row(r))
        return out
    data = stage_table(kind, data)
    if hasattr(data, "to_list") and hasattr(data, "column_names"):
        data = data.to_list()
    return _generic_rows(kind, data)


def to_dataset(kind: str, data: Any) -> Any:
    """A ``datasets.Dataset`` of ``kind`` with the kind's features (a Dataset is cast to them)."""
    from datasets import Dataset

    check_kind(kind)
    feats = features(kind)
    if kind in STAGE_FILES:
        data = stage_table(kind, data)
    if isinstance(data, Dataset):
        extra = sorted(set(data.column_names) - set(feats))
        if extra:
            raise SchemaError(f"the {kind} dataset has columns {sorted(data.column_names)}, expected {list(feats)} "
                              f"(unexpected: {', '.join(extra)})")
        if kind in STAGE_FILES:  # validate and fill optional columns row by row
            data = data.to_list()
        elif set(data.column_names) != set(feats):
            raise SchemaError(f"the {kind} dataset has columns {sorted(data.column_names)}, expected {sorted(feats)}")
        else:
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
