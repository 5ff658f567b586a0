"""A static, self-contained HTML report: no server, no network, opens from ``file://``.

Layout of the output folder::

    index.html          verdict counts, unit table (plots from 10 units on), LLM usage
    units/<id>.html     one page per unit: explanations with scores, intervals and verdicts,
                        activation histogram, logit effects (causal LMs), test / training /
                        quantile / random records, prev/next, related rankings and descriptors
    concepts.html       merge tree with clickable nodes, label status (accepted / rejected and
                        why), alignment results, every concept in context
    probes.html         test accuracy vs control task and majority baseline
    rankings.html       ranking scores, neurons linked to their unit pages
    descriptors.html    descriptor vocabulary with mapped units, P@k / R@k, Jaccard
    search-index.js     the static search index (units, explanations, labels, descriptors)
    style.css, report.js, data/logit_effects.json (when computed)

Pages are rendered from the Jinja2 templates in ``tl_concepts/report/templates`` with
autoescaping: every text from a model or a corpus is HTML-escaped.

Example:
    >>> build_report("runs/x/report", run_dir="runs/x")    # doctest: +SKIP
    PosixPath('runs/x/report/index.html')
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from tl_concepts.atomic import replacing_dir
from tl_concepts.hooks import MLP_POST, split_hook
from tl_concepts.ids import unit_file_name, unit_id

from . import data as D
from .logits import LOGIT_FILE, is_causal_lm, load_logit_effects, logit_effects
from .svg import histogram_svg, scatter_svg

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
POS_RGB = (0, 140, 70)
NEG_RGB = (210, 50, 50)
MIN_PLOT_UNITS = 10
"""From this many explained units on, the index shows histograms and a scatter plot."""


def unit_file(key: str) -> str:
    """File name of a unit's page, from its unit id (``blocks.3.mlp.hook_post.17``) or ``hook:unit``.

    Example:
        >>> unit_file("blocks.3.mlp.hook_post:17")
        'blocks.3.mlp.hook_post.17.html'
    """
    if ":" in key:
        hook, _, unit = key.rpartition(":")
        key = unit_id(hook, unit)
    return unit_file_name(key, ".html")


# -- token cells ----------------------------------------------------------------------------------
def _bg(v: float | None) -> str:
    """Background of a value on the 0..10 display scale (negative: the second hue)."""
    if v is None or not math.isfinite(v) or v == 0:
        return ""
    rgb = POS_RGB if v > 0 else NEG_RGB
    a = min(1.0, abs(v) / 10.0)
    return f"background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.3f})"


def token_cells(tokens: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None], float]]) -> str:
    """HTML of a record: one column per token, one cell per row (true, simulated, ...).

    ``rows``: (name, raw values, factor to the 0..10 display scale). Columns wrap together,
    so the rows stay aligned on every line."""
    from markupsafe import escape

    parts = ["<span class='t lab'>" + "".join(f"<span>{escape(name)}</span>" for name, _, _ in rows) + "</span>"]
    for i, tok in enumerate(tokens):
        cells = []
        for name, vals, factor in rows:
            raw = vals[i] if i < len(vals) else None
            disp = None if raw is None else raw * factor
            title = f"{name} {raw:.3f}" if raw is not None else f"{name} n/a"
            style = _bg(disp)
            cells.append(f"<span{' style=' + repr(style) if style else ''} title='{escape(title)}'>"
                         f"{escape(tok) if tok else '&nbsp;'}</span>")
        parts.append(f"<span class=t>{''.join(cells)}</span>")
    return "".join(parts)


# -- inputs -------------------------------------------------------------------------------------------
def _open_store(store: Any) -> Any:
    if store is None:
        return None
    if isinstance(store, (str, os.PathLike)):
        from tl_concepts.capture.store import ActivationStore

        p = Path(store)
        if not (p / "manifest.json").is_file():
            return None
        return ActivationStore(p)
    return store


def _ledger_rows(ledger: Any) -> list[dict[str, Any]]:
    if not isinstance(ledger, dict):
        return []
    out = []
    for r in ledger.get("rows", []):
        fails = ", ".join(f"{k}={v}" for k, v in sorted((r.get("failures") or {}).items())) or "0"
        cost = r.get("cost_usd")
        out.append({**{k: r.get(k, 0) for k in ("stage", "backend", "model", "requests", "cache_hits",
                                                 "prompt_tokens", "completion_tokens")},
                    "failures": fails, "cost_usd": "n/a" if cost is None else f"{cost:.4f}"})
    return out


def _unit_usage(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tot: dict[str, dict[str, float]] = {}
    for r in results:
        for role in (r.get("llm_usage") or {}).values():
            for stage, u in (role or {}).items():
                if isinstance(u, dict):
                    c = tot.setdefault(stage, {})
                    for k, v in u.items():
                        if isinstance(v, (int, float)):
                            c[k] = c.get(k, 0) + v
    return [{"stage": s, "requests": c.get("requests", c.get("calls", 0)), "prompt_tokens": c.get("prompt_tokens", 0),
             "completion_tokens": c.get("completion_tokens", 0)} for s, c in sorted(tot.items())]


def _descriptor_input(src: Any) -> tuple[list[dict], list[dict], dict[str, Any]] | None:
    """(vocabulary rows, mapping rows, metrics) of a descriptors folder or ``DescriptorOutput``."""
    if src is None:
        return None
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not (p / "mapping.parquet").is_file() and not (p / "metrics.json").is_file():
            return None
        return (D.table_rows(p, "vocabulary.parquet"), D.table_rows(p, "mapping.parquet"),
                D.read_json(p / "metrics.json") or {})
    if hasattr(src, "mapping"):
        return (D.table_rows(getattr(src, "vocabulary", None), ""), D.table_rows(src.mapping, ""),
                dict(getattr(src, "metrics", {}) or {}))
    return [], D.table_rows(src, ""), {}


class _Env:
    def __init__(self, title: str):
        import jinja2

        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                      autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.title = title
        self.nav: list[dict[str, str]] = []

    def render(self, name: str, root: str = "", **ctx: Any) -> str:
        return self.env.get_template(name).render(title=self.title, nav=self.nav, root=root, **ctx)


def _markup(s: str) -> Any:
    from markupsafe import Markup

    return Markup(s)


def _in_context(sentence: str, index: int | None, word: str) -> Any:
    from markupsafe import escape

    words = sentence.split()
    if index is not None and 0 <= index < len(words) and words[index] == word:
        return _markup(" ".join(f"<mark>{escape(w)}</mark>" if i == index else str(escape(w))
                                for i, w in enumerate(words)))
    return _markup(str(escape(sentence)).replace(str(escape(word)), f"<mark>{escape(word)}</mark>", 1))


def _sentences_of(cs: Any, sentences: Any) -> dict[int, str]:
    src = sentences if sentences is not None else getattr(cs, "sentences", None)
    if src is None:
        return {}
    if hasattr(src, "to_list"):
        src = src.to_list()
    if isinstance(src, dict):
        return {int(k): v for k, v in src.items()}
    out = {}
    for i, s in enumerate(src):
        if isinstance(s, dict):
            out[int(s["sentence"])] = s["text"]
        else:
            out[i] = s
    return out


# -- the report --------------------------------------------------------------------------------------
def build_report(out_dir: str | os.PathLike, *, run_dir: str | os.PathLike | None = None, explanations: Any = None,
                 concepts: Any = None, sentences: Any = None, store: Any = None, probes: Any = None,
                 rankings: Any = None, alignment: Any = None, evaluation: Any = None, descriptors: Any = None,
                 logit_effects_data: Any = None, model: Any = None, ledger: dict[str, Any] | None = None,
                 meta: dict[str, Any] | None = None, title: str = "tl-concepts report", max_records: int = 20,
                 max_members: int = 8, min_plot_units: int = MIN_PLOT_UNITS) -> Path:
    """Write the report folder and return the path of its ``index.html``.

    ``run_dir``: a ``tl-concepts run`` folder; every input left None is read from it
    (``explain/``, ``store/``, ``concepts/`` with ``evaluation.json``, ``probing/*.parquet``,
    ``descriptors/``, ``logit_effects.json``, ``run.json``'s LLM ledger). Explicit arguments win:
    ``explanations``: explain folder, result dicts or an ``explanations`` dataset; ``concepts``: a
    ``ConceptSet`` or its folder; ``sentences``: texts members point to (default: the set's);
    ``store``: an ``ActivationStore`` or its folder (histograms, training / quantile records);
    ``probes`` / ``rankings`` / ``alignment``: the probing tables (Dataset, rows or folder);
    ``evaluation``: concept alignment (``evaluation.json`` path or dict); ``descriptors``: a
    ``DescriptorOutput`` or its folder; ``logit_effects_data``: a :func:`logit_effects` result
    or its JSON file; ``model``: a causal TransformerLens model to compute logit effects of
    the explained MLP neurons now; ``ledger``: ``Ledger.to_dict()`` of the run; ``meta``:
    key/value facts for the index. The folder is built aside and moved into place.

    Example:
        >>> build_report("runs/x/report", run_dir="runs/x")   # doctest: +SKIP
    """
    rd = Path(run_dir) if run_dir is not None else None
    if rd is not None:
        explanations = explanations if explanations is not None else rd / "explain"
        store = store if store is not None else rd / "store"
        concepts = concepts if concepts is not None else rd / "concepts"
        probes = probes if probes is not None else rd / "probing" / "probes.parquet"
        rankings = rankings if rankings is not None else rd / "probing" / "rankings.parquet"
        alignment = alignment if alignment is not None else rd / "probing" / "alignment.parquet"
        descriptors = descriptors if descriptors is not None else rd / "descriptors"
        logit_effects_data = logit_effects_data if logit_effects_data is not None else rd / LOGIT_FILE
        if ledger is None:
            ledger = (D.read_json(rd / "run.json") or {}).get("llm_ledger")
    results = D.explain_results(explanations)
    units = [D.unit_view(r) for r in results]
    units.sort(key=lambda u: (u["hook"], u["unit"] if isinstance(u["unit"], int) else 0, str(u["unit"])))
    for u in units:
        u["file"] = unit_file(u["id"])
    st = _open_store(store)
    cs = D.load_concepts(concepts)
    if evaluation is None and isinstance(concepts, (str, os.PathLike)):
        evaluation = Path(concepts) / "evaluation.json"
    if isinstance(evaluation, (str, os.PathLike)):
        evaluation = D.read_json(Path(evaluation))
    if evaluation is not None and hasattr(evaluation, "to_dict"):
        evaluation = evaluation.to_dict()
    probe_rows = D.table_rows(probes, "probes.parquet")
    rank_rows = D.table_rows(rankings.rankings if hasattr(rankings, "rankings") else rankings, "rankings.parquet")
    if alignment is None and hasattr(rankings, "alignment"):
        alignment = rankings.alignment
    align_rows = D.table_rows(alignment, "alignment.parquet")
    desc = _descriptor_input(descriptors)
    effects = load_logit_effects(logit_effects_data)
    if model is not None:
        effects.update(_compute_effects(model, units))

    env = _Env(title)
    pages = [("concepts.html", "Concepts", cs is not None), ("probes.html", "Probes", bool(probe_rows)),
             ("rankings.html", "Rankings", bool(rank_rows)), ("descriptors.html", "Descriptors", desc is not None)]
    env.nav = [{"file": f, "name": n} for f, n, on in pages if on]
    by_file = {u["id"]: u["file"] for u in units}
    search: list[dict[str, str]] = []

    out = Path(out_dir)
    with replacing_dir(out) as tmp:
        (tmp / "units").mkdir()
        for name in ("style.css", "report.js"):
            (tmp / name).write_text((TEMPLATES / name).read_text(encoding="utf-8"), encoding="utf-8")
        if effects:
            (tmp / "data").mkdir()
            (tmp / "data" / LOGIT_FILE).write_text(json.dumps({"units": effects}, indent=1, ensure_ascii=True),
                                                   encoding="utf-8")
        acts_cache: dict[str, Any] = {}
        for i, u in enumerate(units):
            html = _unit_page(env, u, units[i - 1] if i else None, units[i + 1] if i + 1 < len(units) else None,
                              st, acts_cache, effects, rank_rows, desc, max_records, cs is not None)
            (tmp / "units" / u["file"]).write_text(html, encoding="utf-8")
            search.append({"k": "unit", "n": u["id"], "x": (u["llm"] or {}).get("text") or "",
                           "u": f"units/{u['file']}"})
            if u["baseline"] and u["baseline"].get("text"):
                search.append({"k": "baseline", "n": u["id"], "x": u["baseline"]["text"], "u": f"units/{u['file']}"})
        concept_stats: dict[str, Any] = {"concepts_n": None, "concepts_accepted": 0, "concepts_rejected": 0}
        if cs is not None:
            html, stats, entries = _concepts_page(env, cs, sentences, evaluation, align_rows, max_members)
            (tmp / "concepts.html").write_text(html, encoding="utf-8")
            concept_stats.update(stats)
            search += entries
        if probe_rows:
            (tmp / "probes.html").write_text(_probes_page(env, probe_rows), encoding="utf-8")
        if rank_rows:
            (tmp / "rankings.html").write_text(_rankings_page(env, rank_rows, by_file), encoding="utf-8")
        if desc is not None:
            html, entries = _descriptors_page(env, desc, by_file)
            (tmp / "descriptors.html").write_text(html, encoding="utf-8")
            search += entries
        (tmp / "search-index.js").write_text(
            "window.TL_SEARCH = " + json.dumps(search, ensure_ascii=True).replace("</", "<\\/") + ";\n",
            encoding="utf-8")
        (tmp / "index.html").write_text(_index_page(env, units, results, meta or {}, ledger, concept_stats,
                                                    len(probe_rows), len({_rank_key(r) for r in rank_rows}),
                                                    None if desc is None else _n_entries(desc), min_plot_units),
                                        encoding="utf-8")
    return out / "index.html"


def _compute_effects(model: Any, units: list[dict[str, Any]]) -> dict[str, Any]:
    if not is_causal_lm(model):
        return {}
    hooks: dict[str, list[int]] = {}
    for u in units:
        if split_hook(str(u["hook"]))[1] == MLP_POST and isinstance(u["unit"], int):
            hooks.setdefault(u["hook"], []).append(u["unit"])
    out: dict[str, Any] = {}
    for hook, us in hooks.items():
        try:
            out.update(load_logit_effects(logit_effects(model, hook, us)))
        except ValueError as e:
            log.warning("logit effects of %s not computed: %s", hook, e)
    return out


# -- pages ------------------------------------------------------------------------------------------
def _index_page(env: _Env, units: list[dict], results: list[dict], meta: dict[str, Any], ledger: Any,
                concept_stats: dict[str, Any], n_probes: int, n_rankings: int, n_desc: int | None,
                min_plot_units: int) -> str:
    plots = []
    scored = [u for u in units if u["corr"] is not None]
    if len(scored) >= min_plot_units:
        plots.append(_markup(histogram_svg([u["corr"]["value"] for u in scored], lo=-1, hi=1,
                                           title="LLM explanations: test correlation", x_label="correlation",
                                           y_label="units")))
        base = [u["base_corr"]["value"] for u in units if u["base_corr"] is not None]
        if base:
            plots.append(_markup(histogram_svg(base, lo=-1, hi=1, title="baseline: test correlation",
                                               x_label="correlation", y_label="units", rgb=(230, 120, 0))))
        lut = [u["lookup"]["value"] for u in units if u["lookup"] is not None]
        if lut:
            plots.append(_markup(histogram_svg(lut, lo=-1, hi=1, title="lookup table: test correlation",
                                               x_label="correlation", y_label="units", rgb=(120, 120, 120))))
        both = [u for u in scored if u["base_corr"] is not None]
        if both:
            plots.append(_markup(scatter_svg(
                [(u["base_corr"]["value"], u["corr"]["value"]) for u in both],
                x_err=[(u["base_corr"]["low"], u["base_corr"]["high"]) for u in both],
                y_err=[(u["corr"]["low"], u["corr"]["high"]) for u in both],
                x_label="baseline correlation", y_label="LLM explanation correlation",
                title="per unit, with 95% intervals")))
    status = Counter(u["status"] for u in units)
    return env.render("index.html.j2", page_title="index", meta=[(k, v) for k, v in meta.items()], units=units,
                      verdicts=D.verdict_counts(units), status_counts=sorted(status.items()), plots=plots,
                      min_plot_units=min_plot_units, ledger_rows=_ledger_rows(ledger),
                      unit_usage=_unit_usage(results), probes_n=n_probes, rankings_n=n_rankings,
                      descriptors_n=n_desc, **concept_stats)


def _store_records(st: Any, u: dict[str, Any], scale: float, max_records: int) -> tuple[list, list, Any, int]:
    """(training records, quantile bins, histogram svg, n tokens) of a unit from the store."""
    if st is None or u["hook"] not in st.hooks or not isinstance(u["unit"], int):
        return [], [], None, 0
    try:
        ur = st.unit_records(u["hook"], u["unit"])
    except Exception as e:  # a store that cannot serve this unit: say so on the page, keep building
        log.warning("store records of %s unavailable: %s", u["id"], e)
        return [], [], None, 0

    def view(recs: Sequence[Any], where: str) -> list[dict[str, Any]]:
        out = []
        for r in recs:
            acts = [D.finite(a) for a in r.activations]
            mx = max((a for a in acts if a is not None), default=None)
            out.append({"where": f"{where}, doc {r.doc}, token {r.start}", "max": mx,
                        "cells": _markup(token_cells(r.tokens, [("true", acts, 10.0 / scale)]))})
        return sorted(out, key=lambda r: -(r["max"] if r["max"] is not None else -math.inf))[:max_records]

    train = view(list(ur.train_top) + list(getattr(ur, "train_random", [])), "training")
    quant = [{"bin": b, "records": view(recs, f"quantile bin {b + 1}")}
             for b, recs in sorted((getattr(ur, "quantile", None) or {}).items())]
    return train, quant, None, 0


def _unit_page(env: _Env, u: dict[str, Any], prev: dict | None, nxt: dict | None, st: Any, acts_cache: dict,
               effects: dict[str, Any], rank_rows: list[dict], desc: Any, max_records: int, has_concepts: bool) -> str:
    recs = u["records"]
    scale = max([u["max_activation"] or 0.0] + [r["max"] or 0.0 for r in recs])
    scale = scale if scale > 0 else 1.0
    has_base = any(r["baseline"] for r in recs)
    row_names = "true (top), simulated from the LLM explanation" + (", simulated from the baseline" if has_base else "")

    def view(r: dict[str, Any]) -> dict[str, Any]:
        rows = [("true", r["true"], 10.0 / scale), ("simulated", r["simulated"], 1.0)]
        if has_base:
            rows.append(("baseline", r["baseline"] or [], 1.0))
        return {"where": f"{r['split']}, doc {r['doc']}, token {r['start']}", "max": r["max"],
                "cells": _markup(token_cells(r["tokens"], rows))}

    test_top = [view(r) for r in recs if r["split"] != "test_random"][:max_records]
    test_random = [view(r) for r in recs if r["split"] == "test_random"][:max_records]
    train, quant, _, _ = _store_records(st, u, scale, max_records)
    histogram, hist_n = None, 0
    if st is not None and u["hook"] in st.hooks and isinstance(u["unit"], int):
        try:
            if u["hook"] not in acts_cache:
                acts_cache[u["hook"]] = st.activations(u["hook"])
            col = acts_cache[u["hook"]][:, u["unit"]]
            hist_n = int(col.shape[0])
            histogram = _markup(histogram_svg(col.tolist(), title=f"activations of {u['id']}",
                                              x_label="activation", log_y=True, n_bins=40))
        except Exception as e:
            log.warning("histogram of %s unavailable: %s", u["id"], e)
    logits = None
    if effects:
        logits = effects.get(u["id"]) or {}
    related = []
    for r in rank_rows:
        if r.get("hook") == u["hook"] and r.get("neuron") == u["unit"]:
            src = str(r.get("source") or "")
            related.append({**r, "anchor": _rank_anchor(r), "name": r.get("name") or r.get("label"),
                            "concept_anchor": f"c{r['label']}" if has_concepts and src.startswith("concepts")
                            and str(r.get("label", "")).isdigit() else None})
    related.sort(key=lambda r: r["rank"])
    rel_desc = []
    if desc is not None:
        rel_desc = sorted([m for m in desc[1] if m.get("neuron") == u["unit"]],
                          key=lambda m: (m.get("half", ""), m.get("rank", 0)))
    return env.render("unit.html.j2", root="../", page_title=u["id"], u=u, prev=prev, next=nxt, scale=scale,
                      row_names=row_names, test_top=test_top, test_random=test_random, train=train,
                      quantiles=quant, has_store=st is not None, histogram=histogram, hist_n=hist_n,
                      logits=logits, related_rankings=related[:30], related_descriptors=rel_desc[:30],
                      min_class=D.MIN_CLASS)


def _concepts_page(env: _Env, cs: Any, sentences: Any, evaluation: Any, align_rows: list[dict],
                   max_members: int) -> tuple[str, dict[str, Any], list[dict[str, str]]]:
    rows, roots = D.concept_views(cs)
    text = _sentences_of(cs, sentences)
    for r in rows:
        ctx, seen = [], set()
        for m in r["members"]:
            s = m["sentence"]
            if s is None or s not in text or text[s] in seen:
                continue
            seen.add(text[s])
            ctx.append(_in_context(text[s], m["index"], m["word"]))
            if len(ctx) >= max_members:
                break
        r["contexts"] = ctx
    states = Counter(lab["state"] for r in rows for lab in r["labels"])
    alignment = []
    for a in ((evaluation or {}).get("alignment") or {}).values():
        n_c, n_t = a.get("n_concepts") or 0, a.get("n_tags") or 0
        alignment.append({**a, "aligned_share": a.get("aligned_share", a.get("n_aligned", 0) / n_c if n_c else 0.0),
                          "tag_coverage": a.get("tag_coverage", a.get("n_tags_covered", 0) / n_t if n_t else 0.0)})
    meta = getattr(cs, "meta", {}) or {}
    info = [(k, meta[k]) for k in ("mode", "agg") if k in meta and not isinstance(meta[k], (dict, list))]
    info = [("layer", cs.layer), ("hook", cs.hook), ("K", cs.k)] + info
    html = env.render("concepts.html.j2", page_title="concepts", concepts=rows, roots=roots,
                      present={r["id"] for r in rows}, info=info, alignment=alignment, sub_alignment=align_rows,
                      n_accepted=states.get("accepted", 0), n_rejected=states.get("rejected", 0),
                      n_failed=states.get("failed", 0))
    n_acc = sum(1 for r in rows if r["label"])
    n_rej = sum(1 for r in rows if any(lab["state"] == "rejected" for lab in r["labels"]) and not r["label"])
    entries = [{"k": "concept", "n": f"#{r['id']}", "x": (r["label"] or "") + " · " + ", ".join(r["types"][:8]),
                "u": f"concepts.html#c{r['id']}"} for r in rows]
    return html, {"concepts_n": len(rows), "concepts_accepted": n_acc, "concepts_rejected": n_rej}, entries


def _probes_page(env: _Env, rows: list[dict]) -> str:
    probes = []
    for r in rows:
        t, m = D.finite(r.get("test_accuracy")), D.finite(r.get("majority_accuracy"))
        probes.append({**{k: r.get(k) for k in ("hook", "label", "task", "size")}, "name": r.get("name") or r.get("label"),
                       "test_accuracy": t, "majority_accuracy": m, "control_accuracy": D.finite(r.get("control_accuracy")),
                       "selectivity": D.finite(r.get("selectivity")),
                       "over_majority": None if t is None or m is None else t - m,
                       "anchor": "p-" + D.safe_name(f"{r.get('hook')}-{r.get('label')}-{r.get('task')}")})
    return env.render("probes.html.j2", page_title="probes", probes=probes)


def _rank_key(r: dict[str, Any]) -> tuple:
    return (r.get("hook"), r.get("source", ""), r.get("label"), r.get("method"))


def _rank_anchor(r: dict[str, Any]) -> str:
    return "r-" + D.safe_name(f"{r.get('hook')}-{r.get('source', '')}-{r.get('label')}-{r.get('method')}")


def _rankings_page(env: _Env, rows: list[dict], by_id: dict[str, str]) -> str:
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault(_rank_key(r), {"hook": r.get("hook"), "source": r.get("source", ""),
                                             "label": r.get("label"), "name": r.get("name") or r.get("label"),
                                             "method": r.get("method"), "anchor": _rank_anchor(r), "rows": []})
        g["rows"].append({"rank": r.get("rank"), "neuron": r.get("neuron"), "score": D.finite(r.get("score")),
                          "file": by_id.get(unit_id(r["hook"], r["neuron"]))})  # required ranking columns
    for g in groups.values():
        g["rows"].sort(key=lambda x: x["rank"])
    return env.render("rankings.html.j2", page_title="rankings", groups=list(groups.values()))


def _n_entries(desc: Any) -> int:
    vocab, mapping, metrics = desc
    if metrics.get("entries") is not None:
        return int(metrics["entries"])
    return len(vocab) if vocab else len({m.get("entry") for m in mapping})


def _descriptors_page(env: _Env, desc: Any, by_id: dict[str, str]) -> tuple[str, list[dict[str, str]]]:
    vocab, mapping, metrics = desc
    hook = metrics.get("hook")
    units_of: dict[int, list[dict[str, Any]]] = {}
    names: dict[int, str] = {}
    for m in mapping:
        names.setdefault(m["entry"], m.get("descriptor", ""))
        if m.get("half") == "calibration":
            f = next((f for uid, f in by_id.items() if uid.endswith(f".{m['neuron']}")
                      and (hook is None or uid.startswith(hook))), None)
            units_of.setdefault(m["entry"], []).append({"neuron": m["neuron"], "excess": D.finite(m.get("excess")),
                                                        "file": f})
    entries: list[dict[str, Any]] = []
    for v in vocab:
        eid = int(v.get("id"))
        sents = v.get("sentences")
        entries.append({"id": eid, "descriptor": v.get("representative") or names.get(eid, ""),
                        "members": list(v.get("members") or []),
                        "n_sentences": len(sents) if isinstance(sents, list) else sents,
                        "units": sorted(units_of.get(eid, []), key=lambda x: -(x["excess"] or 0))})
    known = {e["id"] for e in entries}
    for eid, name in sorted(names.items()):
        if eid not in known:
            entries.append({"id": eid, "descriptor": name, "members": [], "n_sentences": None,
                            "units": sorted(units_of.get(eid, []), key=lambda x: -(x["excess"] or 0))})
    entries.sort(key=lambda e: (-len(e["units"]), e["id"]))
    mkeys = ("entries", "neurons_mapped", "neurons", "sentences", "ok", "jaccard", "precision_at_k", "recall_at_k", "k")
    m = {k: metrics.get(k) for k in mkeys}
    search = [{"k": "descriptor", "n": e["descriptor"], "x": ", ".join(str(x["neuron"]) for x in e["units"][:8]),
               "u": f"descriptors.html#e{e['id']}"} for e in entries]
    return env.render("descriptors.html.j2", page_title="descriptors", entries=entries, metrics=m), search
