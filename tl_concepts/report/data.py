"""Read stage outputs into plain dicts the report templates render.

Everything here is tolerant of added fields and of both generations of score names
(``rsquared``/``absolute_dev_explained`` uncentred and ``*_centred``, or the older centred
``r_squared``/``abs_dev_explained``); what a result does not carry is shown as
"not computed", never invented.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

from tl_concepts.ids import unit_id

# (key, display name, older keys meaning the same quantity)
SCORES: list[tuple[str, str, tuple[str, ...]]] = [
    ("correlation", "correlation", ()),
    ("rsquared", "r² (uncentred, Bills et al.)", ()),
    ("absolute_dev_explained", "abs. dev. explained (uncentred)", ()),
    ("rsquared_centred", "r² (centred)", ("r_squared",)),
    ("absolute_dev_explained_centred", "abs. dev. explained (centred)", ("abs_dev_explained",)),
]
MIN_CLASS = 5
"""Detection / fuzzing metrics need this many positives and negatives to be shown."""


def finite(x: Any) -> float | None:
    """``x`` as a float, or None when missing / NaN / inf."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def interval(d: Any) -> dict[str, Any] | None:
    """A ``{value, low, high}`` interval (None when there is no value)."""
    if not isinstance(d, dict) or finite(d.get("value")) is None:
        return None
    return {"value": finite(d["value"]), "low": finite(d.get("low")), "high": finite(d.get("high")),
            "level": d.get("level")}


def score_rows(scores: Any) -> list[dict[str, Any]]:
    """Score name -> interval rows of one score block (``scores["all"]``), in display order."""
    if not isinstance(scores, dict):
        return []
    out = []
    for key, name, old in SCORES:
        src = next((scores[k] for k in (key, *old) if k in scores), None)
        if src is not None:
            out.append({"key": key, "name": name, "interval": interval(src)})
    return out


def _classifier(d: Any) -> dict[str, Any] | None:
    if not isinstance(d, dict):
        return None
    npos, nneg = d.get("n_positive"), d.get("n_negative")
    small = d.get("status") == "n too small" or (
        isinstance(npos, int) and isinstance(nneg, int) and (npos < MIN_CLASS or nneg < MIN_CLASS))
    return {"balanced_accuracy": finite(d.get("balanced_accuracy")), "auroc": finite(d.get("auroc")),
            "n_positive": npos, "n_negative": nneg, "n_failed": d.get("n_failed"),
            "status": "n too small" if small else d.get("status", "ok")}


def verdict(d: Any) -> dict[str, Any]:
    """A verdict block with every field present (``label`` ``not computed`` when absent)."""
    if not isinstance(d, dict):
        return {"label": "not computed", "beats_chance": None, "beats_baseline": None,
                "delta_vs_baseline": None, "vs_lookup_table": None}
    return {"label": d.get("label") or "not computed", "beats_chance": d.get("beats_chance"),
            "beats_baseline": d.get("beats_baseline"), "delta_vs_baseline": interval(d.get("delta_vs_baseline")),
            "vs_lookup_table": interval(d.get("vs_lookup_table"))}


def _explanation(kind: str, block: Any) -> dict[str, Any] | None:
    if not isinstance(block, dict):
        return None
    ex = block.get("explanation") or {}
    scores = block.get("scores") or {}
    return {"kind": kind, "text": ex.get("text"), "raw": ex.get("raw"), "explainer": ex.get("explainer", kind),
            "status": block.get("status", "ok" if scores else "not scored"),
            "scores": score_rows(scores.get("all")), "scores_random": score_rows(scores.get("random")),
            "n_records": (scores.get("all") or {}).get("n_records"),
            "n_records_random": (scores.get("random") or {}).get("n_records"),
            "verdict": verdict(block.get("verdict")), "detection": _classifier(block.get("detection")),
            "fuzzing": _classifier(block.get("fuzzing")), "failures": block.get("failures") or [],
            "failure": (ex.get("failure") or {}).get("message") if isinstance(ex.get("failure"), dict) else None,
            "candidates": [{"text": c.get("text"), "score": finite(c.get("calibration_correlation")),
                            "failure": c.get("failure")} for c in ex.get("candidates") or [] if isinstance(c, dict)],
            "template": ex.get("template")}


def _corr(e: dict[str, Any] | None) -> dict[str, Any] | None:
    if not e:
        return None
    return next((s["interval"] for s in e["scores"] if s["key"] == "correlation"), None)


def unit_view(res: dict[str, Any]) -> dict[str, Any]:
    """One unit result (``explain/units/<id>.json``) as the dict the templates use."""
    hook, unit = res.get("hook", "?"), res.get("unit", "?")
    uid = res.get("id") or unit_id(hook, unit)
    llm = _explanation("llm", res.get("llm"))
    base = _explanation("baseline", res.get("baseline"))
    sims = (res.get("llm") or {}).get("simulations") or []
    bsims = (res.get("baseline") or {}).get("simulations") or []
    records = []
    for j, s in enumerate(sims):
        b = bsims[j].get("simulated") if j < len(bsims) and bsims[j].get("tokens") == s.get("tokens") else None
        true = [finite(a) for a in s.get("true") or []]
        records.append({"split": s.get("split", ""), "doc": s.get("doc"), "start": s.get("start"),
                        "tokens": list(s.get("tokens") or []), "true": true,
                        "simulated": [finite(a) for a in s.get("simulated") or []],
                        "baseline": [finite(a) for a in b] if b else None,
                        "max": max((a for a in true if a is not None), default=None)})
    records.sort(key=lambda r: -(r["max"] if r["max"] is not None else -math.inf))
    lookup = (res.get("lookup_table") or {}).get("correlation")
    tpl = res.get("templates") or {}
    return {"id": uid, "hook": hook, "unit": unit, "status": res.get("status", "?"), "message": res.get("message"),
            "max_activation": finite(res.get("max_activation")), "n_contexts": res.get("n_contexts"),
            "n_activating": res.get("n_activating"), "splits": res.get("splits") or {},
            "explainer_model": res.get("explainer_model", ""), "simulator_model": res.get("simulator_model", ""),
            "templates": {k: v for k, v in tpl.items()}, "llm": llm, "baseline": base,
            "corr": _corr(llm), "base_corr": _corr(base), "lookup": interval(lookup),
            "records": records, "llm_usage": res.get("llm_usage") or {}, "seconds": res.get("seconds")}


def explain_results(src: Any) -> list[dict[str, Any]]:
    """Explain-runner result dicts from an ``explain`` folder, a list of dicts, an
    ``explanations`` dataset or a loaded hub dataset."""
    if src is None:
        return []
    if isinstance(src, (str, os.PathLike)):
        from tl_concepts.explain.results import load_unit_dicts

        return load_unit_dicts(src)
    if hasattr(src, "to_dicts"):  # ExplanationResults
        return [dict(r) for r in src.to_dicts()]
    if hasattr(src, "dataset") and hasattr(src, "kind"):
        src = src.dataset
    if hasattr(src, "to_list") and hasattr(src, "features"):
        from tl_concepts.hub.schemas import explanation_result

        return [explanation_result(r) for r in src.to_list()]
    return [dict(r) for r in src]


def verdict_counts(units: list[dict[str, Any]], which: str = "llm") -> dict[str, Any]:
    """How many explanations have each verdict, and whether verdicts were computed at all."""
    ex = [u[which] for u in units if u.get(which)]
    computed = [e for e in ex if e["verdict"]["label"] != "not computed"]
    counts: dict[str, int] = {}
    for e in computed:
        counts[e["verdict"]["label"]] = counts.get(e["verdict"]["label"], 0) + 1
    return {"n": len(ex), "n_computed": len(computed), "counts": counts,
            "beats_baseline": sum(1 for e in computed if e["verdict"]["beats_baseline"] is True),
            "beats_chance": sum(1 for e in computed if e["verdict"]["beats_chance"] is True)}


# -- other stages ------------------------------------------------------------------------------------
def table_rows(src: Any, file_name: str) -> list[dict[str, Any]]:
    """Rows of a stage table from a Dataset, a list of dicts, an object with that table, or a folder."""
    if src is None:
        return []
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        p = p / file_name if p.is_dir() else p
        if not p.is_file():
            return []
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    if hasattr(src, "to_list"):
        return src.to_list()
    return [dict(r) for r in src]


def label_state(lab: Any) -> dict[str, Any]:
    """A concept label as {label, status, state (accepted / rejected / failed), reason, provenance}."""
    d = lab if isinstance(lab, dict) else {**(lab.to_dict() if hasattr(lab, "to_dict") else {}), **vars(lab)}
    status = d.get("status") or "?"
    state = "accepted" if status in ("ok", "accepted") else "rejected" if status == "rejected" else "failed"
    return {"label": d.get("label"), "status": status, "state": state,
            "reason": d.get("reason") or d.get("message") or "", "template": d.get("template", ""),
            "template_version": d.get("template_version", ""), "model": d.get("model", ""), "raw": d.get("raw")}


def concept_views(cs: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(concept dicts, tree roots) of a ``ConceptSet``; each root ``{"id", "concept", "children"}``
    where internal merge-tree nodes above the cut have ``concept`` None."""
    rows = []
    parent: dict[int, int | None] = {}
    for c in cs.concepts():
        labels = [label_state(lab) for lab in c.labels]
        accepted = next((lab["label"] for lab in labels if lab["state"] == "accepted" and lab["label"]), None)
        members = []
        for m in c.members:
            members.append({"word": cs.points["text"][m], "sentence": int(cs.points["sentence"][m])
                            if "sentence" in cs.points else None,
                            "index": int(cs.points["index"][m]) if "index" in cs.points else None})
        rows.append({"id": int(c.id), "layer": c.layer, "size": c.size, "types": c.types, "labels": labels,
                     "label": accepted, "parent": c.parent, "children": list(c.children), "members": members})
    ids = {r["id"] for r in rows}
    chain_nodes: set[int] = set()
    if getattr(cs, "tree", None) is not None:
        for r in rows:
            node, n = r["id"], 0
            while n < 10_000:
                p = cs.tree.parent_of(node)
                parent[node] = None if p is None else int(p)
                if p is None:
                    break
                chain_nodes.add(int(p))
                node, n = int(p), n + 1
    by_id = {r["id"]: r for r in rows}
    nodes: dict[int, dict[str, Any]] = {i: {"id": i, "concept": by_id.get(i), "children": []}
                                        for i in ids | chain_nodes}
    roots = []
    for i, node in nodes.items():
        p = parent.get(i)
        if p is not None and p in nodes:
            nodes[p]["children"].append(node)
        else:
            roots.append(node)

    def finish(n: dict[str, Any]) -> int:
        n["children"].sort(key=lambda c: c["id"])
        n["n_concepts"] = (1 if n["concept"] else 0) + sum(finish(c) for c in n["children"])
        return n["n_concepts"]

    for r in roots:
        finish(r)
    return rows, sorted(roots, key=lambda n: n["id"])


def load_concepts(src: Any) -> Any:
    """A ``ConceptSet`` from a set, a concepts folder (with its label files), or None."""
    if src is None:
        return None
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not (p / "meta.json").is_file():
            return None
        from tl_concepts.concepts.model import ConceptLabel, ConceptSet

        cs = ConceptSet.load(p)
        for f in sorted(p.glob("labels-*.jsonl")):
            labs = []
            for line in f.read_text(encoding="utf-8").splitlines():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of an interrupted run
                lab = ConceptLabel.from_dict(d)
                for extra in ("reason",):
                    if extra in d:
                        setattr(lab, extra, d[extra])
                labs.append(lab)
            have = set(cs.concept_ids())
            cs.add_labels([lab for lab in labs if lab.concept_id in have])
        return cs
    return src


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def safe_name(s: str) -> str:
    """A string as a file-name / anchor-safe token."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(s)).strip("-") or "x"


def iter_unique(xs: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(xs))
