"""Run probes and neuron rankings over every label of a source; results as ``datasets``.

Probe table (:func:`run_probes`, one row per probe), columns:

=====================  ==========================================================
``hook``               hook the representations come from
``source``             label source (``pos``, ``ner``, ``concepts:<dir>``, a file)
``label``              the probed label (``*all*`` for the multi-class probe)
``name``               display name (a concept's LLM label, else the label)
``task``               ``binary`` (label vs balanced sample of the rest) or ``multiclass``
``size``               rows carrying the label (all rows for ``*all*``)
``n_train/n_dev/n_test``  split sizes (60/20/20 per class)
``train_accuracy`` ... ``test_accuracy``  accuracies; ``test_accuracy`` is the probe's
``majority_accuracy``  test accuracy of the majority class
``control_accuracy``   test accuracy on the control task (random label per word type)
``selectivity``        ``test_accuracy - control_accuracy``
``c``                  chosen inverse regularisation; ``seconds``: fit time; ``seed``
=====================  ==========================================================

Ranking table (:func:`run_rankings`, one row per (label, method, rank) up to ``top_n``):
``hook, source, label, name, method, rank, neuron, score``; ``label`` ``*all*`` is the
multi-class ranking over every label. Alignment table (``concepts:`` sources): one row per
concept at K with sub-concepts: ``hook, concept, name, children, overlaps, mean, n, method``.

Example:
    >>> ds = run_probes(ProbeConfig(store="runs/x", hook="blocks.3.hook_resid_post",
    ...                             labels="pos"))                         # doctest: +SKIP
    >>> print(probe_summary_table(ds))                                     # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from tl_concepts.atomic import atomic_write

from .data import LabelledData, ProbingInputError, binary_task
from .labels import LabelledWords, load_labelled
from .overlap import concept_alignment, tree_members
from .probes import ProbeOptions, probe_data
from .rankers import RANKERS

ALL = "*all*"


@dataclass
class ProbeConfig:
    """Settings of ``tl-concepts probe``."""

    store: str
    """Capture store directory."""
    hook: str
    """Hook whose word representations are probed."""
    labels: str = "pos"
    """Label source: ``pos``, ``ner``, ``concepts:<dir>`` or a word_id,label .tsv/.csv."""
    k: int | None = None
    """Cut of a concept set (default: the K it was saved with)."""
    agg: str = "mean"
    """Sub-token aggregation: ``mean``, ``first`` or ``last``."""
    min_size: int = 10
    """Labels with fewer rows are skipped."""
    max_labels: int | None = None
    """Probe only the largest labels (None: all)."""
    negatives: float = 1.0
    """Binary probes: sampled non-members per member."""
    multiclass: bool = True
    """Also train one multi-class probe over all kept labels."""
    options: ProbeOptions = field(default_factory=ProbeOptions)
    """Split, seed, C grid, control task."""
    out: str | None = None
    """Directory for ``probes.parquet`` (None: do not save)."""


@dataclass
class RankConfig:
    """Settings of ``tl-concepts rank``."""

    store: str
    """Capture store directory."""
    hook: str
    """Hook whose word representations are ranked (e.g. ``blocks.3.mlp.hook_post``)."""
    labels: str = "pos"
    """Label source, as in :class:`ProbeConfig`."""
    methods: tuple[str, ...] = ("probeless",)
    """Rankers to run (``probeless``, ``probe_weights``, ``average_precision``)."""
    k: int | None = None
    """Cut of a concept set."""
    agg: str = "mean"
    """Sub-token aggregation."""
    min_size: int = 10
    """Labels with fewer rows are skipped."""
    max_labels: int | None = None
    """Rank only the largest labels."""
    top_n: int = 20
    """Neurons kept per (label, method) in the table."""
    mass: float = 0.5
    """``probe_weights``: share of the weight mass per class."""
    align_n: int = 10
    """Top-n of the super/sub-concept alignment (``concepts:`` sources)."""
    seed: int = 0
    """Seed of negative sampling and the elastic-net solver."""
    out: str | None = None
    """Directory for ``rankings.parquet`` / ``alignment.parquet`` (None: do not save)."""


def _save(ds: Any, out: str | None, name: str) -> None:
    if out is None:
        return
    atomic_write(Path(out) / name, ds.to_parquet)


def _kept(lw: LabelledWords, min_size: int, max_labels: int | None) -> list[str]:
    kept = list(lw.label_counts(min_size))
    if len(kept) < 1:
        raise ProbingInputError(f"no label of {lw.source} has >= {min_size} rows; lower min_size")
    return kept[:max_labels] if max_labels else kept


def _multiclass(lw: LabelledWords, kept: list[str]) -> LabelledData | None:
    if len(kept) < 2:
        return None
    keep = set(kept)
    rows = [i for i, lab in enumerate(lw.labels) if lab in keep]
    return LabelledData.make(lw.x[rows], [lw.labels[i] for i in rows], types=[lw.types[i] for i in rows])


def run_probes(cfg: ProbeConfig, *, labelled: LabelledWords | None = None, progress: bool = True) -> Any:
    """One binary probe per label (+ one multi-class probe); returns a ``datasets.Dataset``."""
    import datasets

    lw = labelled or load_labelled(cfg.store, cfg.hook, cfg.labels, agg=cfg.agg, k=cfg.k)
    kept = _kept(lw, cfg.min_size, cfg.max_labels)
    rows: list[dict[str, Any]] = []
    labels = np.asarray(lw.labels, dtype=object)
    counts = lw.label_counts()
    bar = tqdm(total=len(kept) + (cfg.multiclass and len(kept) > 1), desc=f"probing {cfg.hook}",
               unit="probe", disable=not progress)

    def add(label: str, data: LabelledData, size: int) -> None:
        r = probe_data(data, name=label, options=cfg.options)
        d = r.to_dict()
        d.pop("extra"), d.pop("classes"), d.pop("name")
        rows.append({"hook": lw.hook, "source": lw.source, "label": label, "name": lw.names.get(label, label),
                     "size": size, **d})
        bar.update(1)
        bar.set_postfix(label=label[:20], acc=f"{r.test_accuracy:.2f}")

    try:
        for label in kept:
            data = binary_task(lw.x, labels == label, negatives=cfg.negatives, seed=cfg.options.seed,
                               types=lw.types)
            add(label, data, counts[label])
        if cfg.multiclass and (mc := _multiclass(lw, kept)) is not None:
            add(ALL, mc, mc.n)
    finally:
        bar.close()
    ds = datasets.Dataset.from_list(rows)
    _save(ds, cfg.out, "probes.parquet")
    return ds


@dataclass
class RankOutput:
    """What :func:`run_rankings` returns."""

    rankings: Any
    """``datasets.Dataset`` of top neurons per (label, method)."""
    alignment: Any = None
    """``datasets.Dataset`` of super/sub-concept overlaps (``concepts:`` sources), else None."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Total ranking time per method."""


def run_rankings(cfg: RankConfig, *, labelled: LabelledWords | None = None, progress: bool = True) -> RankOutput:
    """Rank neurons for every label (label vs rest) and over all labels, per method."""
    import datasets

    bad = [m for m in cfg.methods if m not in RANKERS]
    if bad:
        raise ValueError(f"unknown ranking method(s) {bad}; choose from {sorted(RANKERS)}")
    lw = labelled or load_labelled(cfg.store, cfg.hook, cfg.labels, agg=cfg.agg, k=cfg.k)
    kept = _kept(lw, cfg.min_size, cfg.max_labels)
    labels = np.asarray(lw.labels, dtype=object)
    rows: list[dict[str, Any]] = []
    secs: dict[str, float] = {m: 0.0 for m in cfg.methods}
    mc = _multiclass(lw, kept)
    tasks: list[tuple[str, LabelledData]] = [(lab, binary_task(lw.x, labels == lab, negatives=None))
                                              for lab in kept]
    if mc is not None:
        tasks.append((ALL, mc))
    bar = tqdm(total=len(tasks) * len(cfg.methods), desc=f"ranking {cfg.hook}", unit="ranking",
               disable=not progress)
    try:
        for label, data in tasks:
            for m in cfg.methods:
                kw: dict[str, Any] = {"data": data}
                if m == "probe_weights":
                    kw.update(mass=cfg.mass, seed=cfg.seed)
                t0 = time.perf_counter()
                r = RANKERS[m](None, None, **kw)
                secs[m] += time.perf_counter() - t0
                for rank, neuron in enumerate(r.order[:cfg.top_n].tolist()):
                    rows.append({"hook": lw.hook, "source": lw.source, "label": label,
                                 "name": lw.names.get(label, label), "method": m, "rank": rank,
                                 "neuron": int(neuron), "score": float(r.scores[neuron])})
                bar.update(1)
    finally:
        bar.close()
    out = RankOutput(rankings=datasets.Dataset.from_list(rows), seconds=secs)
    _save(out.rankings, cfg.out, "rankings.parquet")
    if lw.concepts is not None and lw.concepts.tree is not None:
        members, children = tree_members(lw.concepts)
        arows = []
        for label in kept:
            node = int(label)
            if not children(node):
                continue
            try:
                al = concept_alignment(lw.x, node, members=members, children=children, n=cfg.align_n,
                                       ranker=RANKERS[cfg.methods[0]], seed=cfg.seed)
            except ValueError:  # sub-concepts too small to rank
                continue
            arows.append({"hook": lw.hook, "concept": node, "name": lw.names.get(label, label),
                          "children": al.children, "overlaps": al.overlaps, "mean": al.mean, "n": al.n,
                          "method": al.method})
        out.alignment = datasets.Dataset.from_list(arows) if arows else None
        if out.alignment is not None:
            _save(out.alignment, cfg.out, "alignment.parquet")
    return out


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[_fmt(v) for v in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in cells]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def probe_summary_table(ds: Any, max_rows: int = 30) -> str:
    """Text table of a probe Dataset: one line per probe, then the means."""
    cols = ["label", "name", "task", "size", "test_accuracy", "control_accuracy", "selectivity"]
    rows = [[r[c] for c in cols] for r in ds.select(range(min(len(ds), max_rows)))]
    binary = [r for r in ds if r["task"] == "binary"]
    mean = lambda k: float(np.mean([r[k] for r in binary if r[k] is not None])) if binary else None  # noqa: E731
    rows.append(["mean", f"{len(binary)} binary", "", "", mean("test_accuracy"),
                 mean("control_accuracy") if any(r["control_accuracy"] is not None for r in binary) else None,
                 mean("selectivity") if any(r["selectivity"] is not None for r in binary) else None])
    return _table(["label", "name", "task", "size", "accuracy", "control", "selectivity"], rows)


def rank_summary_table(out: RankOutput, top: int = 5, max_rows: int = 30) -> str:
    """Text table: the top neurons per (label, method), then alignment means."""
    groups: dict[tuple[str, str], list[int]] = {}
    names: dict[str, str] = {}
    for r in out.rankings:
        if r["rank"] < top:
            groups.setdefault((r["label"], r["method"]), []).append(r["neuron"])
            names[r["label"]] = r["name"]
    rows = [[lab, names[lab], m, ", ".join(map(str, ns))] for (lab, m), ns in list(groups.items())[:max_rows]]
    text = _table(["label", "name", "method", f"top {top} neurons"], rows)
    if out.alignment is not None:
        means = [r["mean"] for r in out.alignment]
        text += (f"\n\nsuper/sub-concept top-{out.alignment[0]['n']} alignment: mean {np.mean(means):.3f} "
                 f"over {len(means)} concepts")
    text += "\n" + ", ".join(f"{m}: {s:.2f}s" for m, s in out.seconds.items())
    return text


def config_dict(cfg: ProbeConfig | RankConfig) -> dict[str, Any]:
    """The config as a plain dict (for logs and cards)."""
    return asdict(cfg)
