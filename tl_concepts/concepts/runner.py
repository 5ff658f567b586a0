"""The latent-concept stage end to end: discover -> label -> evaluate -> summary.

Example:
    >>> from tl_concepts.concepts import ConceptsConfig, discover_concepts, label, evaluate, summary
    >>> cfg = ConceptsConfig(store="runs/x", layer=3, k=200, out="runs/x/concepts")   # doctest: +SKIP
    >>> cs = discover_concepts(cfg)                                                 # doctest: +SKIP
    >>> labels = label(cs, cfg, llm=get_llm("in-process"))                          # doctest: +SKIP
    >>> print(summary(cs, labels, evaluate(cs, cfg)))                               # doctest: +SKIP

Outputs under ``out`` (default ``<store>/concepts/layer{L}``): the concept set
(``meta.json``, ``points.json``, ``tree.npz``), ``labels-<template>.jsonl`` (resumable) and
``evaluation.json``.
"""
from __future__ import annotations

import logging

from tl_concepts.errors import ConfigError

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, cast


from tl_concepts.llm.base import LLM

from .evaluation import AlignmentReport, JudgeReport, ajudge_labels, alignment_reports
from .filters import FilterConfig, apply_filters
from .inputs import ConceptInput, ConceptInputError, from_store
from tl_concepts._sync import run_sync

from .labelling import LabelOptions, alabel_concepts
from .model import ConceptLabel, ConceptSet, _atomic_text
from .prompts import default_template
from .tree import ConceptTree
from .ward import Mode as WardMode, heldout_agreement, ward



logger = logging.getLogger(__name__)

@dataclass
class ConceptsConfig:
    """Everything the concept stage needs (SAELens-style: one flat config)."""

    store: str | None = None
    """Capture store directory (not needed when word representations are passed in from Python)."""
    layer: int | None = None
    """Block index L; picks ``blocks.L.hook_resid_post`` unless ``hook`` is given."""
    hook: str | None = None
    """Hook name to cluster."""
    agg: str = "mean"
    """Sub-token aggregation into words: ``mean``, ``first`` or ``last``."""
    k: int | None = None
    """Number of concepts; none picks one concept per ~40 clustered occurrences, at most
    Mousi et al.'s 600 (K=200 for the Lee corpus at 10/10)."""
    filters: FilterConfig = field(default_factory=FilterConfig)
    """Word filters (min_count / max_per_type / max_count)."""
    mode: str = "auto"
    """Ward mode: ``auto``, ``exact`` or ``micro``."""
    n_micro: int | None = None
    """Micro-clusters in ``micro`` mode (default: up to 10k, memory permitting)."""
    memory_fraction: float = 0.5
    """Share of free memory exact Ward may use before ``auto`` switches to ``micro``."""
    agreement_sample: int = 3000
    """Points per held-out subsample on which a ``micro`` run's partition is compared with
    exact Ward run on that subsample (two subsamples; 0: skip)."""
    seed: int = 0
    """Seed for sampling and k-means."""
    out: str | None = None
    """Output directory (default ``<store>/concepts/layer{L}``)."""
    label: LabelOptions = field(default_factory=LabelOptions)
    """Labelling options (template, tokens/types, context sentences, batch size)."""
    theta: float = 0.9
    """Alignment threshold (ConceptX: 0.9; 0.95 is the stricter option)."""
    judge_context: int = 0
    """Context sentences shown to the LLM judge."""
    executor: str = "local"
    """Where concept labels are asked for: ``local`` (this process) or ``ray`` (Ray tasks; ``pip install
    tl-concepts[ray]``). A Ray run writes the same files with the same keys as a local one,
    so either resumes the other."""
    ray_address: str | None = None
    """Ray cluster to join when the executor is ``ray`` (e.g. ``ray://head:10001`` or ``auto``;
    none starts a local Ray instance)."""

    def out_dir(self, layer: int) -> Path:
        if self.out:
            return Path(self.out)
        if self.store:
            return Path(self.store) / "concepts" / f"layer{layer}"
        raise ConfigError("set ConceptsConfig.out (or store) to say where concepts are written")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_k(n_points: int) -> int:
    """K when none is given: ``min(600, max(2, n_points // 40))``."""
    return int(min(600, max(2, n_points // 40)))


def load_input(cfg: ConceptsConfig) -> ConceptInput:
    """Open ``cfg.store`` and read the word representations at the configured hook/layer."""
    if not cfg.store:
        raise ConceptInputError("ConceptsConfig.store is not set and no ConceptInput was given")
    from tl_concepts.capture import ActivationStore  # imported late: the capture stage is optional here

    store = ActivationStore.open(cfg.store)
    return from_store(store, cfg.hook, layer=cfg.layer, agg=cfg.agg)


def discover_concepts(cfg: ConceptsConfig, inp: ConceptInput | None = None, *, save: bool = True,
                      progress: bool = True) -> ConceptSet:
    """Filter, cluster with Ward, cut at K; save the set (tree kept for any other K).

    Raises ``ValueError`` subclasses with what to change: K larger than the points left,
    too few points after a named filter, NaN/inf representations, an empty slice.
    """
    inp = inp if inp is not None else load_input(cfg)
    if cfg.k is not None and cfg.k < 1:
        raise ConfigError(f"k must be >= 1; got {cfg.k}")
    rows, report = apply_filters(inp.column("text"), cfg.filters, min_points=2)
    if cfg.k is None:
        from dataclasses import replace

        cfg = replace(cfg, k=default_k(len(rows)))
    k: int = cfg.k if cfg.k is not None else default_k(len(rows))
    if k > len(rows):
        raise ConfigError(
            f"K={cfg.k} concepts asked for but only {len(rows)} word occurrences remain after filtering "
            f"({report.describe()}); lower -k or relax the filters")
    x = inp.representations[rows]
    logger.info("%s occurrences of %s types at %s (d=%s); Ward mode=%s, K=%s", f"{len(rows):,}",
                f"{report.n_types:,}", inp.hook or f"layer {inp.layer}", inp.dim, cfg.mode, cfg.k)
    res = ward(x, mode=cast(WardMode, cfg.mode), k=k, n_micro=cfg.n_micro, memory_fraction=cfg.memory_fraction,
               seed=cfg.seed)
    tree = ConceptTree(res.linkage, res.leaf_of_point)
    if k > tree.n_leaves:
        raise ConfigError(f"K={cfg.k} exceeds the {tree.n_leaves} micro-clusters; raise n_micro")
    meta: dict[str, Any] = {
        "filters": report.to_dict(), "filter_config": asdict(cfg.filters), "mode": res.mode,
        "ward_seconds": res.seconds, "estimated_bytes": res.estimated_bytes, "ward_info": res.info,
        "agg": cfg.agg, "dim": inp.dim,
    }
    if res.mode == "micro" and cfg.agreement_sample:
        # the full run's K-partition on held-out subsamples against exact Ward on each subsample
        agr = heldout_agreement(x, tree.node_of_point_at(k), k,
                                sample=min(cfg.agreement_sample, len(rows)), seed=cfg.seed)
        meta["agreement"] = agr.to_dict()
    points = {name: [col[i] for i in rows.tolist()] for name, col in inp.words.items()}
    cs = ConceptSet(points, k=k, tree=tree, sentences=inp.sentences, layer=inp.layer, hook=inp.hook, meta=meta)
    if save:
        cs.save(cfg.out_dir(inp.layer))
    return cs


def discover_layers(cfg: ConceptsConfig, layers: Sequence[int], inputs: Mapping[int, ConceptInput] | None = None,
                    *, progress: bool = True) -> dict[int, ConceptSet]:
    """:func:`discover_concepts` for several layers (output ``<out>/layer{L}`` each).

    All layers must have the same width (e.g. all ``hook_resid_post``); otherwise a
    :class:`ConceptInputError` names the layers and widths before any clustering.
    """
    from dataclasses import replace

    from .inputs import check_same_dim

    ins = {int(L): (inputs[L] if inputs is not None and L in inputs
                    else load_input(replace(cfg, layer=L, hook=None))) for L in layers}
    check_same_dim({f"layer {L} ({inp.hook})": inp for L, inp in ins.items()})
    base = Path(cfg.out) if cfg.out else None
    out = {}
    for L, inp in ins.items():
        sub = replace(cfg, layer=L, hook=None, out=str(base / f"layer{L}") if base else None)
        out[L] = discover_concepts(sub, inp, progress=progress)
    return out


def labels_path(cfg: ConceptsConfig, cs: ConceptSet, llm: LLM | None = None) -> Path:
    """Where the labels of the configured template (or ``llm``'s default one) are kept."""
    return cfg.out_dir(cs.layer) / f"labels-{cfg.label.template or default_template(llm)}.jsonl"


async def alabel(cs: ConceptSet, cfg: ConceptsConfig, llm: LLM, *, retry_failed: bool = False,
                 progress: bool = True) -> list[ConceptLabel]:
    """Awaitable :func:`label`."""
    labels = await alabel_concepts(cs, llm, labels_path(cfg, cs, llm), cfg.label, retry_failed=retry_failed,
                                   executor=cfg.executor, ray_address=cfg.ray_address,
                                   progress=progress)
    if cfg.out or cfg.store:
        cs.save_labels(cfg.out_dir(cs.layer))
    return labels


def label(cs: ConceptSet, cfg: ConceptsConfig, llm: LLM, *, retry_failed: bool = False,
          progress: bool = True) -> list[ConceptLabel]:
    """Label every concept of ``cs`` (resumable, keyed by inputs; see
    :func:`~tl_concepts.concepts.labelling.label_concepts`); works inside a running event loop.

    Example:
        >>> labels = label(cs, cfg, get_llm("in-process"))     # doctest: +SKIP
    """
    return run_sync(alabel(cs, cfg, llm, retry_failed=retry_failed, progress=progress))


def describe_labels(labels: Sequence[ConceptLabel], k: int | None = None) -> str:
    """One line counting accepted labels first, then every other status with its reasons.

    Example:
        >>> from tl_concepts.concepts.model import ConceptLabel as L
        >>> describe_labels([L(1, "verbs", "ok", "t", "v1"), L(2, None, "rejected", "t", "v1", reason="echo")], 2)
        'labels: 1 accepted of 2 concepts; not accepted: 1 rejected (1 echo)'
    """
    from collections import Counter

    n_ok = sum(lab.accepted for lab in labels)
    line = f"labels: {n_ok} accepted" + (f" of {k} concepts" if k is not None else "")
    rest = [lab for lab in labels if not lab.accepted]
    if rest:
        parts = []
        for status, n in sorted(Counter(lab.status for lab in rest).items()):
            why = Counter(lab.reason for lab in rest if lab.status == status and lab.reason and lab.reason != status)
            detail = f" ({', '.join(f'{m} {r}' for r, m in sorted(why.items()))})" if why else ""
            parts.append(f"{n} {status}{detail}")
        line += "; not accepted: " + ", ".join(parts)
    return line


@dataclass
class EvaluationReport:
    """Alignment with known tags and, when a judge was given, label quality."""

    alignment: dict[str, AlignmentReport] = field(default_factory=dict)
    """Per tagset (pos, ner, gold) at ``theta``."""
    judge: JudgeReport | None = None
    """LLM judge rates (None when no judge was given)."""

    def to_dict(self) -> dict[str, Any]:
        return {"alignment": {k: v.to_dict() for k, v in self.alignment.items()},
                "judge": self.judge.to_dict() if self.judge else None}


async def aevaluate(cs: ConceptSet, cfg: ConceptsConfig | None = None, *,
                    labels: Sequence[ConceptLabel] | None = None, judge: LLM | None = None,
                    gold: Mapping[str, set[str]] | None = None, save: bool = True) -> EvaluationReport:
    """Awaitable :func:`evaluate`."""
    cfg = cfg or ConceptsConfig()
    rep = EvaluationReport(alignment_reports(cs, theta=cfg.theta, gold=gold))
    if judge is not None and labels:
        rep.judge = await ajudge_labels(cs, labels, judge, n_context=cfg.judge_context)
    if save and (cfg.out or cfg.store):
        out = cfg.out_dir(cs.layer)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_text(out / "evaluation.json", json.dumps(rep.to_dict(), indent=1))
    return rep


def evaluate(cs: ConceptSet, cfg: ConceptsConfig | None = None, *, labels: Sequence[ConceptLabel] | None = None,
             judge: LLM | None = None, gold: Mapping[str, set[str]] | None = None,
             save: bool = True) -> EvaluationReport:
    """Alignment (POS, NER, gold categories) and, with ``judge``, LLM-judged label quality
    (accepted labels only); works inside a running event loop."""
    return run_sync(aevaluate(cs, cfg, labels=labels, judge=judge, gold=gold, save=save))


def summary(cs: ConceptSet, labels: Sequence[ConceptLabel] = (), report: EvaluationReport | None = None,
            llm: LLM | None = None) -> str:
    """A few lines for the CLI: concepts, filters, Ward mode, labels, alignment, LLM ledger."""
    lines = [f"layer {cs.layer} ({cs.hook}): {cs.k} concepts over {cs.n_points:,} word occurrences"]
    steps = cs.meta.get("filters", {}).get("steps", [])
    if steps:
        lines.append("filters: " + " -> ".join(f"{st['name']} {st['n_points']:,}/{st['n_types']:,} types"
                                                for st in steps))
    mode = cs.meta.get("mode")
    if mode:
        lines.append(f"Ward: {mode} in {cs.meta.get('ward_seconds', 0):.1f}s"
                     + (f", {cs.meta['ward_info'].get('n_micro')} micro-clusters" if mode == "micro" else ""))
    if "agreement" in cs.meta:
        a = cs.meta["agreement"]
        lines.append(f"agreement with exact Ward: ARI {a['ari']:.3f} on subsamples of {a['n_sample']} points "
                     f"at K={a['k']} (exact Ward run on each subsample)")
    if labels:
        lines.append(describe_labels(labels, cs.k))
    if report is not None:
        lines += [r.describe() for r in report.alignment.values()]
        if report.judge is not None:
            lines.append(report.judge.describe())
    ledger = getattr(llm, "ledger", None) if llm is not None else None
    if ledger is not None:
        table = ledger.summary_table() if hasattr(ledger, "summary_table") else str(ledger)
        lines.append("LLM ledger:\n" + table)
    return "\n".join(lines)
