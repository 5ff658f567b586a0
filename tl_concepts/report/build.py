"""A static, self-contained HTML report: no server, no network, opens from disk.

Layout of ``out_dir``::

    index.html        summary, unit table, score plots, link to the concept browser
    units/<key>.html  one page per unit: explanation, scores with intervals, baseline,
                      test records coloured by true, simulated and baseline activation
    concepts.html     concept browser: label and provenance, members in context, tree position
    style.css, report.js

Every text that came from a model or a corpus is HTML-escaped.

Example:
    >>> build_report("runs/x/report", explanations="runs/x/explain", concepts=cs)   # doctest: +SKIP
    PosixPath('runs/x/report/index.html')
"""
from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import Any, Sequence
from tl_concepts.atomic import replacing_dir

from .svg import histogram_svg, scatter_svg

TRUE_RGB = (0, 170, 60)
SIM_RGB = (30, 90, 255)
BASE_RGB = (230, 120, 0)

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; color: #222; }
h1, h2, h3 { font-weight: 600; } a { color: #1a55c4; }
table { border-collapse: collapse; margin: .5rem 0 1rem; } td, th { border: 1px solid #ddd; padding: .25rem .5rem; }
th { background: #f4f4f4; text-align: left; }
.rec { margin: .6rem 0 1rem; padding: .4rem; border: 1px solid #eee; }
.line { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.9; }
.line .who { display: inline-block; width: 6.5rem; color: #666; font-family: system-ui, sans-serif; }
.tok { white-space: pre; border-radius: 2px; }
.concept { border: 1px solid #ddd; padding: .5rem .8rem; margin: .6rem 0; }
.concept.hidden { display: none; }
mark { background: #ffe27a; }
.muted { color: #777; } .plots { display: flex; gap: 1rem; flex-wrap: wrap; }
.legend span { padding: 0 .4rem; margin-right: .5rem; }
"""

JS = """
(function () {
  var box = document.getElementById('filter');
  if (box) {
    box.addEventListener('input', function () {
      var q = box.value.toLowerCase();
      var items = document.querySelectorAll('.concept');
      for (var i = 0; i < items.length; i++) {
        var t = items[i].getAttribute('data-search') || '';
        items[i].classList.toggle('hidden', q !== '' && t.indexOf(q) < 0);
      }
    });
  }
  document.body.setAttribute('data-ready', '1');
})();
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{float(x):.{nd}f}"


def _interval(iv: Any) -> str:
    if not iv or iv.get("value") is None:
        return "n/a"
    if iv.get("low") is None or iv.get("high") is None:
        return _f(iv["value"])
    return f"{_f(iv['value'])} <span class=muted>[{_f(iv['low'])}, {_f(iv['high'])}]</span>"


def _corr(s: Any) -> float | None:
    return None if not s or not s.get("correlation") else s["correlation"].get("value")


def unit_file(key: str) -> str:
    """File name of a unit's page (``blocks.3.mlp.hook_post:17`` -> ``blocks.3.mlp.hook_post-17.html``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", key) + ".html"


def _page(title: str, body: str, root: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<link rel=icon href='data:,'><link rel=stylesheet href='{root}style.css'></head>"
            f"<body>\n{body}\n<script src='{root}report.js'></script></body></html>\n")


def _tokens_line(who: str, tokens: Sequence[str], acts: Sequence[float], scale: float, rgb: tuple[int, int, int],
                 cls: str) -> str:
    spans = []
    for t, a in zip(tokens, acts):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, float(a) / scale))
        style = f"background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.3f})" if alpha > 0 else ""
        spans.append(f"<span class='tok {cls}' style='{style}' title='{_f(a, 2)}'>{_e(t)}</span>")
    return f"<div class=line><span class=who>{_e(who)}</span>{''.join(spans)}</div>"


def _scores_table(row: dict[str, Any]) -> str:
    head = "<tr><th></th><th>correlation</th><th>r&sup2;</th><th>abs. dev. explained</th><th>records</th></tr>"
    lines = []
    for name, s in (("explanation (test)", row.get("scores")), ("explanation (random test)", row.get("scores_random")),
                    ("baseline (test)", row.get("baseline_scores"))):
        if s:
            lines.append(f"<tr><td>{name}</td><td>{_interval(s.get('correlation'))}</td>"
                         f"<td>{_interval(s.get('r_squared'))}</td><td>{_interval(s.get('abs_dev_explained'))}</td>"
                         f"<td>{s.get('n_records', '')}</td></tr>")
    if row.get("lookup_correlation"):
        lines.append(f"<tr><td>token lookup table</td><td>{_interval(row['lookup_correlation'])}</td>"
                     "<td></td><td></td><td></td></tr>")
    out = f"<table>{head}{''.join(lines)}</table>" if lines else "<p class=muted>No scores.</p>"
    cls = [(k, row.get(k)) for k in ("detection", "fuzzing") if row.get(k)]
    if cls:
        out += "<table><tr><th>scorer</th><th>balanced accuracy</th><th>AUROC</th><th>n+ / n- / failed</th></tr>"
        for k, c in cls:
            out += (f"<tr><td>{k}</td><td>{_f(c.get('balanced_accuracy'))}</td><td>{_f(c.get('auroc'))}</td>"
                    f"<td>{c.get('n_positive')} / {c.get('n_negative')} / {c.get('n_failed')}</td></tr>")
        out += "</table>"
    return out


def _unit_page(row: dict[str, Any], max_records: int) -> str:
    key = row["key"]
    body = [f"<p><a href='../index.html'>&larr; index</a></p><h1>{_e(key)}</h1>"]
    body.append(f"<p>status: <b>{_e(row.get('status'))}</b> {_e(row.get('message') or '')}</p>")
    body.append(f"<h2>Explanation</h2><p class=explanation>{_e(row.get('explanation') or 'none')}</p>")
    body.append(f"<p class=muted>explainer {_e(row.get('explainer_model'))} ({_e(row.get('template_explain'))}), "
                f"simulator {_e(row.get('simulator_model'))} ({_e(row.get('template_simulate'))}); "
                f"max activation {_f(row.get('max_activation'))}, {row.get('n_activating', 0)} of "
                f"{row.get('n_contexts', 0)} contexts activating</p>")
    body.append(f"<h2>Scores</h2>{_scores_table(row)}")
    body.append(f"<h2>Baseline</h2><p>{_e(row.get('baseline_explanation') or 'none')}</p>")
    recs = row.get("records") or []
    if recs:
        t, s, b = TRUE_RGB, SIM_RGB, BASE_RGB
        body.append("<h2>Test records</h2><p class=legend>"
                    f"<span style='background:rgba({t[0]},{t[1]},{t[2]},.6)'>true activation</span>"
                    f"<span style='background:rgba({s[0]},{s[1]},{s[2]},.6)'>simulated (0-10)</span>"
                    f"<span style='background:rgba({b[0]},{b[1]},{b[2]},.6)'>baseline simulated</span></p>")
        scale = max([float(row.get("max_activation") or 0.0)] + [max(r["true"], default=0.0) for r in recs])
        for r in recs[:max_records]:
            parts = [_tokens_line("true", r["tokens"], r["true"], scale, TRUE_RGB, "true"),
                     _tokens_line("simulated", r["tokens"], r["simulated"], 10.0, SIM_RGB, "sim")]
            if r.get("baseline"):
                parts.append(_tokens_line("baseline", r["tokens"], r["baseline"], 10.0, BASE_RGB, "base"))
            body.append(f"<div class=rec><div class=muted>{_e(r.get('split'))}, doc {r.get('doc')}</div>"
                        f"{''.join(parts)}</div>")
    return _page(key, "\n".join(body), root="../")


def _explanation_rows(explanations: Any) -> list[dict[str, Any]]:
    if explanations is None:
        return []
    if hasattr(explanations, "dataset") and hasattr(explanations, "kind"):
        explanations = explanations.dataset
    if hasattr(explanations, "to_list"):
        return explanations.to_list()
    from tl_concepts.hub.schemas import rows

    return rows("explanations", explanations)


def _concept_input(concepts: Any, sentences: Any) -> tuple[list[dict[str, Any]], dict[int, str], dict[int, list[int]]]:
    """(concept rows, sentence id -> text, concept id -> ancestor ids)."""
    ancestors: dict[int, list[int]] = {}
    if concepts is None:
        return [], {}, ancestors
    from tl_concepts.concepts.model import ConceptSet

    if hasattr(concepts, "dataset") and hasattr(concepts, "kind"):
        sentences = sentences if sentences is not None else concepts.sentences
        concepts = concepts.dataset
    if isinstance(concepts, ConceptSet):
        from tl_concepts.concepts.dataset import concept_rows

        rows = concept_rows(concepts)
        if sentences is None:
            sentences = concepts.sentences
        if concepts.tree is not None:
            for r in rows:
                chain, node = [], concepts.tree.parent_of(r["concept_id"])
                while node is not None and len(chain) < 100:
                    chain.append(int(node))
                    node = concepts.tree.parent_of(node)
                ancestors[r["concept_id"]] = chain
    else:
        rows = concepts.to_list() if hasattr(concepts, "to_list") else [dict(r) for r in concepts]
    text: dict[int, str] = {}
    if sentences is not None:
        if hasattr(sentences, "to_list"):
            sentences = sentences.to_list()
        if isinstance(sentences, dict):
            text = {int(k): v for k, v in sentences.items()}
        else:
            for i, s in enumerate(sentences):
                if isinstance(s, dict):
                    text[int(s["sentence"])] = s["text"]
                else:
                    text[i] = s
    for r in rows:
        ancestors.setdefault(r["concept_id"], [r["parent"]] if r.get("parent") is not None else [])
    return rows, text, ancestors


def _in_context(sentence: str, index: int, word: str) -> str:
    words = sentence.split()
    if 0 <= index < len(words) and words[index] == word:
        return " ".join(f"<mark>{_e(w)}</mark>" if i == index else _e(w) for i, w in enumerate(words))
    return _e(sentence).replace(_e(word), f"<mark>{_e(word)}</mark>", 1)


def _concepts_page(rows: list[dict[str, Any]], text: dict[int, str], ancestors: dict[int, list[int]],
                   max_members: int) -> str:
    present = {r["concept_id"] for r in rows}
    label_of = {r["concept_id"]: r.get("label") for r in rows}

    def ref(cid: int) -> str:
        lab = label_of.get(cid)
        name = f"#{cid}" + (f" {lab}" if lab else "")
        return f"<a href='#c{cid}'>{_e(name)}</a>" if cid in present else f"<span class=muted>{_e(name)}</span>"

    body = ["<p><a href='index.html'>&larr; index</a></p><h1>Concepts</h1>",
            f"<p>{len(rows)} concepts. <input id=filter type=search placeholder='filter by label or word'></p>"]
    for r in sorted(rows, key=lambda r: -r.get("size", 0)):
        cid = r["concept_id"]
        words = [m["word"] for m in r.get("members", [])]
        types = list(dict.fromkeys(words))
        search = " ".join([str(r.get("label") or "")] + types).lower()
        path = " &rarr; ".join(ref(a) for a in reversed(ancestors.get(cid, []))) or "root"
        kids = ", ".join(ref(c) for c in r.get("children", [])) or "none"
        labels = "".join(f"<li>{_e(lab.get('label'))} <span class=muted>({_e(lab.get('status'))}, "
                         f"{_e(lab.get('template'))} {_e(lab.get('template_version'))}, {_e(lab.get('model'))})</span></li>"
                         for lab in r.get("labels", []))
        ctx = []
        seen: set[int] = set()
        for m in r.get("members", []):
            s = m.get("sentence")
            if s in seen or s not in text:
                continue
            seen.add(s)
            ctx.append(f"<li>{_in_context(text[s], int(m.get('index', -1)), m['word'])}</li>")
            if len(ctx) >= max_members:
                break
        body.append(
            f"<div class=concept id='c{cid}' data-search='{_e(search)}'><h3>#{cid}: "
            f"{_e(r.get('label') or 'unlabelled')}</h3>"
            f"<p class=muted>layer {r.get('layer')}, {r.get('size')} occurrences, {len(types)} word types</p>"
            f"<p>words: {_e(', '.join(types[:30]))}</p>"
            f"<p>tree: {path} &rarr; <b>#{cid}</b>; children: {kids}</p>"
            + (f"<ul>{labels}</ul>" if labels else "")
            + (f"<p>in context:</p><ul>{''.join(ctx)}</ul>" if ctx else "") + "</div>")
    return _page("Concepts", "\n".join(body))


def _index_page(title: str, rows: list[dict[str, Any]], concepts: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    body = [f"<h1>{_e(title)}</h1>"]
    if meta:
        body.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta.items())
                    + "</table>")
    if concepts:
        n_lab = sum(1 for c in concepts if c.get("label"))
        body.append(f"<h2>Concepts</h2><p>{len(concepts)} concepts, {n_lab} labelled. "
                    "<a href='concepts.html'>Browse the concepts</a></p>")
    if rows:
        expl = [_corr(r.get("scores")) for r in rows]
        base = [_corr(r.get("baseline_scores")) for r in rows]
        body.append("<h2>Explanations</h2><div class=plots>")
        body.append(histogram_svg([x for x in expl if x is not None], title="explanation correlation",
                                  rgb=SIM_RGB, overlay=[x for x in base if x is not None], overlay_rgb=BASE_RGB,
                                  overlay_name="baseline"))
        pairs = [(b, e) for e, b in zip(expl, base) if e is not None and b is not None]
        body.append(scatter_svg(pairs, x_name="baseline correlation", y_name="explanation correlation"))
        body.append("</div><table><tr><th>unit</th><th>status</th><th>explanation</th><th>correlation</th>"
                    "<th>baseline</th></tr>")
        order = sorted(range(len(rows)), key=lambda i: -(expl[i] if expl[i] is not None else -2))
        for i in order:
            r = rows[i]
            body.append(f"<tr><td><a href='units/{_e(unit_file(r['key']))}'>{_e(r['key'])}</a></td>"
                        f"<td>{_e(r.get('status'))}</td><td>{_e(r.get('explanation') or '')}</td>"
                        f"<td>{_interval((r.get('scores') or {}).get('correlation'))}</td>"
                        f"<td>{_f(base[i])}</td></tr>")
        body.append("</table>")
    if not rows and not concepts:
        body.append("<p class=muted>Nothing to show: pass explanations= and/or concepts=.</p>")
    return _page(title, "\n".join(body))


def build_report(out_dir: str | os.PathLike, *, explanations: Any = None, concepts: Any = None,
                 sentences: Any = None, meta: dict[str, Any] | None = None, title: str = "tl-concepts report",
                 max_records: int = 20, max_members: int = 8) -> Path:
    """Write the report folder and return the path of its ``index.html``.

    ``explanations``: explain-runner result dicts, its output folder, an ``explanations``
    dataset or a :class:`~tl_concepts.hub.LoadedDataset`. ``concepts``: a ``ConceptSet``, a
    ``concepts`` dataset / rows or a loaded dataset; ``sentences``: the sentence texts members
    point to (list by id, dict, or the ``sentences`` dataset). ``meta``: key/value facts for
    the index (model, corpus, ...). The folder is built aside and moved into place.

    Example:
        >>> build_report("runs/x/report", explanations="runs/x/explain")   # doctest: +SKIP
    """
    rows = _explanation_rows(explanations)
    crow, text, anc = _concept_input(concepts, sentences)
    out = Path(out_dir)
    with replacing_dir(out) as tmp:
        (tmp / "units").mkdir()
        (tmp / "style.css").write_text(CSS, encoding="utf-8")
        (tmp / "report.js").write_text(JS, encoding="utf-8")
        (tmp / "index.html").write_text(_index_page(title, rows, crow, dict(meta or {})), encoding="utf-8")
        for r in rows:
            (tmp / "units" / unit_file(r["key"])).write_text(_unit_page(r, max_records), encoding="utf-8")
        if crow:
            (tmp / "concepts.html").write_text(_concepts_page(crow, text, anc, max_members), encoding="utf-8")
    return out / "index.html"
