"""Run probes and neuron rankings over every label of a source; typed, saved results.

:func:`run_probes` returns :class:`~tl_concepts.probing.results.ProbeResults` and
:func:`run_rankings` :class:`~tl_concepts.probing.results.Rankings`; both save to ``out``,
by default ``<store>/probing/<hook>/<labels>`` (:func:`default_out`). The columns are
defined once, in :mod:`tl_concepts.probing.schema`.

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
``hook, source, label, name, method, rank, neuron, unit, score``; ``label`` ``*all*`` is the
multi-class ranking over every label. Alignment table (``concepts:`` sources): one row per
concept at K with sub-concepts: ``hook, concept, name, children, overlaps, mean, n, method``.

Example:
    >>> ds = run_probes(ProbeConfig(store="runs/x", hook="blocks.3.hook_resid_post",
    ...                             labels="pos"))                         # doctest: +SKIP
    >>> print(probe_summary_table(ds))                                     # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tl_concepts.atomic import folder_lock, write_json
from tl_concepts.crash import crashpoint
from tl_concepts.errors import ConfigError
from tl_concepts.fingerprint import fingerprint
from tl_concepts.ids import unit_id

from .data import LabelledData, ProbingInputError, binary_task
from .labels import LabelledWords, load_labelled, store_fingerprint
from .overlap import concept_alignment, tree_members
from .probes import ProbeOptions, probe_data
from .rankers import RANKERS
from .results import ProbeResults, Rankings
from .schema import ALIGNMENT_COLUMNS, RANKING_COLUMNS, dataset

log = logging.getLogger(__name__)

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
    """Directory for ``probes.parquet`` (None: ``<store>/probing/<hook>/<labels>``)."""


@dataclass
class RankConfig:
    """Settings of ``tl-concepts rank``."""

    store: str
    """Capture store directory."""
    hook: str
    """Hook whose word representations are ranked (e.g. ``blocks.3.mlp.hook_post``)."""
    labels: str = "pos"
    """Label source: ``pos``, ``ner``, ``concepts:<dir>`` or a word_id,label .tsv/.csv (as for probes)."""
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
    """Directory for ``rankings.parquet`` / ``alignment.parquet`` and the saved rankings of an
    interrupted run (None: ``<store>/probing/<hook>/<labels>``)."""


def default_out(store: str, hook: str, labels: str) -> Path:
    """Where results go without ``out``: ``<store>/probing/<hook>/<labels>`` (a label file or
    concept folder by its name plus a short fingerprint of the full path).

    Example:
        >>> default_out("runs/x/store", "blocks.3.mlp.hook_post", "pos").as_posix()
        'runs/x/store/probing/blocks.3.mlp.hook_post/pos'
    """
    if labels in ("pos", "ner"):
        slug = labels
    else:
        name = Path(labels.split(":", 1)[1] if labels.startswith("concepts:") else labels).name
        kind = "concepts-" if labels.startswith("concepts:") else ""
        slug = f"{kind}{''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)}-{fingerprint(labels)[:6]}"
    return Path(store) / "probing" / hook.replace("/", "_") / slug


def _out_dir(cfg: ProbeConfig | RankConfig) -> Path:
    return Path(cfg.out) if cfg.out is not None else default_out(cfg.store, cfg.hook, cfg.labels)


def _kept(lw: LabelledWords, min_size: int, max_labels: int | None) -> list[str]:
    kept = list(lw.label_counts(min_size))
    if len(kept) < 1:
        biggest = max(lw.label_counts().values(), default=0)
        raise ProbingInputError(f"no label of {lw.source} has {min_size} or more rows (the largest has {biggest}); "
                                "lower the minimum label size (--min-size)")
    return kept[:max_labels] if max_labels else kept


def _check_common(cfg: ProbeConfig | RankConfig) -> None:
    if cfg.agg not in ("mean", "first", "last"):
        raise ConfigError(f"unknown sub-token aggregation {cfg.agg!r}; use mean, first or last")
    if cfg.min_size < 2:
        raise ConfigError(f"--min-size must be >= 2 (a label needs rows to train and to test on); got {cfg.min_size}")
    if cfg.max_labels is not None and cfg.max_labels < 1:
        raise ConfigError(f"--max-labels must be >= 1; got {cfg.max_labels}")


def _multiclass(lw: LabelledWords, kept: list[str]) -> LabelledData | None:
    if len(kept) < 2:
        return None
    keep = set(kept)
    rows = [i for i, lab in enumerate(lw.labels) if lab in keep]
    return LabelledData.make(lw.x[rows], [lw.labels[i] for i in rows], types=[lw.types[i] for i in rows])


def _load(cfg: ProbeConfig | RankConfig, labelled: LabelledWords | None) -> tuple[LabelledWords, str]:
    """The labelled words and the store's fingerprint ("" when ``labelled`` was given without a store)."""
    from tl_concepts.capture import ActivationStore

    if labelled is not None:
        try:
            return labelled, store_fingerprint(ActivationStore.open(cfg.store))
        except (FileNotFoundError, ValueError):
            return labelled, ""
    lw = load_labelled(cfg.store, cfg.hook, cfg.labels, agg=cfg.agg, k=cfg.k)
    return lw, lw.store_fingerprint


def run_probes(cfg: ProbeConfig, *, labelled: LabelledWords | None = None, progress: bool = True) -> ProbeResults:
    """One binary probe per label (+ one multi-class probe); saved to ``cfg.out`` (default:
    :func:`default_out` under the store).

    Example:
        >>> res = run_probes(ProbeConfig(store="runs/x/store", hook="blocks.3.hook_resid_post"))  # doctest: +SKIP
        >>> res.to_pandas()[["label", "test_accuracy", "selectivity"]]                            # doctest: +SKIP
    """
    _check_common(cfg)
    if cfg.negatives <= 0:
        raise ConfigError(f"--negatives must be > 0; got {cfg.negatives}")
    lw, store_fp = _load(cfg, labelled)
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
    res = ProbeResults(probes=rows, hook=lw.hook, source=lw.source,
                       provenance={"store": str(cfg.store), "store_fingerprint": store_fp,
                                   "config": config_dict(cfg)})
    out = _out_dir(cfg)
    res.save(out)
    log.info("probes written to %s", out)
    return res


RankOutput = Rankings
"""Former name of :class:`~tl_concepts.probing.results.Rankings`."""


def ranking_key(data_fp: str, label: str, method: str, cfg: RankConfig, kept: list[str]) -> str:
    """Fingerprint of one ranking's inputs: the representations and labels (``data_fp``), the
    label (and, for the multi-class ranking, every kept label), the method and its settings."""
    settings: dict[str, Any] = {"top_n": cfg.top_n}
    if method == "probe_weights":
        settings.update(mass=cfg.mass, seed=cfg.seed)
    return fingerprint({"data": data_fp, "label": label, "kept": kept if label == ALL else None,
                        "method": method, "settings": settings, "version": 1})


def _ranking_rows(lw: LabelledWords, label: str, method: str, r: Any, top_n: int) -> list[dict[str, Any]]:
    return [{"hook": lw.hook, "source": lw.source, "label": label, "name": lw.names.get(label, label),
             "method": method, "rank": rank, "neuron": int(neuron), "unit": unit_id(lw.hook, int(neuron)),
             "score": float(r.scores[neuron])}
            for rank, neuron in enumerate(r.order[:top_n].tolist())]


def run_rankings(cfg: RankConfig, *, labelled: LabelledWords | None = None, progress: bool = True) -> Rankings:
    """Rank neurons for every label (label vs rest) and over all labels, per method.

    Each ranking is saved as it finishes (``<out>/rankings.parts/``), keyed by a fingerprint of
    its inputs (representations, labels, method settings): an interrupted run keeps the
    finished ones and a rerun does not compute them again. ``out`` defaults to
    :func:`default_out` under the store.

    Example:
        >>> rk = run_rankings(RankConfig(store="runs/x/store", hook="blocks.3.mlp.hook_post"))  # doctest: +SKIP
        >>> rk.top("NOUN", "probeless", 5)                                                      # doctest: +SKIP
    """
    _check_common(cfg)
    bad = [m for m in cfg.methods if m not in RANKERS]
    if bad or not cfg.methods:
        raise ConfigError(f"unknown ranking method(s) {', '.join(bad) or '(none given)'}; "
                          f"choose from {', '.join(sorted(RANKERS))}")
    if cfg.top_n < 1 or not 0.0 < cfg.mass <= 1.0 or cfg.align_n < 1:
        raise ConfigError(f"--top-n and --align-n must be >= 1 and --mass in (0, 1]; got top-n {cfg.top_n}, "
                          f"align-n {cfg.align_n}, mass {cfg.mass}")
    lw, store_fp = _load(cfg, labelled)
    kept = _kept(lw, cfg.min_size, cfg.max_labels)
    out_dir = _out_dir(cfg)
    with folder_lock(out_dir, "these rankings"):  # a second writer of the folder is refused
        return _rank_all(cfg, lw, kept, store_fp, out_dir, progress)


def _rank_all(cfg: RankConfig, lw: LabelledWords, kept: list[str], store_fp: str, out_dir: Path,
              progress: bool) -> Rankings:
    parts = out_dir / "rankings.parts"
    data_fp = fingerprint({"x": lw.x, "labels": lw.labels})
    labels = np.asarray(lw.labels, dtype=object)
    rows: list[dict[str, Any]] = []
    secs: dict[str, float] = {m: 0.0 for m in cfg.methods}
    resumed = 0
    todo = [*kept, ALL] if len(kept) > 1 else list(kept)
    bar = tqdm(total=len(todo) * len(cfg.methods), desc=f"ranking {cfg.hook}", unit="ranking",
               disable=not progress)
    try:
        for label in todo:
            data: LabelledData | None = None
            for m in cfg.methods:
                part = parts / f"{ranking_key(data_fp, label, m, cfg, kept)}.json"
                if part.is_file():
                    try:
                        rows += json.loads(part.read_text(encoding="utf-8"))["rows"]
                        resumed += 1
                        bar.update(1)
                        continue
                    except (ValueError, KeyError):
                        log.warning("ignoring an unreadable saved ranking %s; computing it again", part)
                if data is None:
                    data = (_multiclass(lw, kept) if label == ALL
                            else binary_task(lw.x, labels == label, negatives=None))
                kw: dict[str, Any] = {"data": data}
                if m == "probe_weights":
                    kw.update(mass=cfg.mass, seed=cfg.seed)
                t0 = time.perf_counter()
                r = RANKERS[m](None, None, **kw)
                secs[m] += time.perf_counter() - t0
                got = _ranking_rows(lw, label, m, r, cfg.top_n)
                write_json(part, {"label": label, "method": m, "rows": got}, ensure_ascii=True)
                crashpoint("rank.ranking")
                rows += got
                bar.update(1)
    finally:
        bar.close()
    if resumed:
        log.info("rankings: %d of %d read back from %s", resumed, len(todo) * len(cfg.methods), parts)
    res = Rankings(rankings=dataset(rows, RANKING_COLUMNS), seconds=secs, hook=lw.hook, source=lw.source,
                   resumed=resumed, provenance={"store": str(cfg.store), "store_fingerprint": store_fp,
                                                "data_fingerprint": data_fp, "config": config_dict(cfg)})
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
        res.alignment = dataset(arows, ALIGNMENT_COLUMNS) if arows else None
    res.save(out_dir)
    log.info("rankings written to %s", out_dir)
    return res


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
    rows = [[r[c] for c in cols] for r in list(ds)[:max_rows]]
    binary = [r for r in ds if r["task"] == "binary"]
    mean = lambda k: float(np.mean([r[k] for r in binary if r[k] is not None])) if binary else None  # noqa: E731
    rows.append(["mean", f"{len(binary)} binary", "", "", mean("test_accuracy"),
                 mean("control_accuracy") if any(r["control_accuracy"] is not None for r in binary) else None,
                 mean("selectivity") if any(r["selectivity"] is not None for r in binary) else None])
    return _table(["label", "name", "task", "size", "accuracy", "control", "selectivity"], rows)


def rank_summary_table(out: Rankings, top: int = 5, max_rows: int = 30) -> str:
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
