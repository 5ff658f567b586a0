"""The descriptor stage end to end: sentences -> LLM descriptors -> vocabulary -> neurons.

:func:`run_descriptors` reads sentences and a hook's activations from a capture store,
asks the LLM for each sentence's descriptors (resumable: ``<out>/sentences.jsonl``),
clusters them into a vocabulary (``<out>/vocabulary.json``), maps every neuron on a
calibration half and again on a validation half, and reports Jaccard stability and, with
a labelled subset, precision@k / recall@k.

Datasets (:class:`DescriptorOutput`):

* ``sentences``: ``sentence, text, status, descriptors, entries, raw, message, model,
  backend, template, template_version`` (``entries``: vocabulary ids of the descriptors);
* ``vocabulary``: ``id, representative, members, member_counts, sentences``;
* ``mapping``: ``half`` (``calibration`` / ``validation``), ``neuron, rank, entry,
  descriptor, composition, base_rate, lift, excess, support``.

Example:
    >>> out = run_descriptors(DescriptorsConfig(store="runs/x", hook="blocks.3.mlp.hook_post",
    ...                                         out="runs/x/descriptors"))       # doctest: +SKIP
    >>> print(summary_table(out))                                                 # doctest: +SKIP
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tl_concepts.atomic import atomic_write, write_json

from .embed import Embedder, MiniLMEmbedder
from .generate import SentenceDescriptors, generate_descriptors
from .mapping import CorpusTooSmallError, NeuronDescriptorMap, map_neurons, sentence_activations, split_halves
from .metrics import jaccard_stability, precision_recall_at_k
from .prompts import TEMPLATES
from .vocabulary import Vocabulary, build_vocabulary


@dataclass
class DescriptorsConfig:
    """Settings of ``tl-concepts descriptors``."""

    store: str
    """Capture store directory (sentences and activations)."""
    hook: str
    """Hook whose neurons are described (e.g. ``blocks.3.mlp.hook_post``)."""
    out: str
    """Output directory (records, vocabulary, parquet tables); reruns resume from it."""
    llm: str | None = None
    """LLM spec for ``tl_concepts.llm.get_llm`` (None: ``$TL_CONCEPTS_LLM`` or in-process)."""
    template: str = "descriptors"
    """Prompt template name."""
    max_sentences: int | None = None
    """Use only the first N sentences of the store (None: all)."""
    batch_size: int = 16
    """Concurrent LLM requests per batch."""
    distance_threshold: float = 0.3
    """Cosine distance cut of the descriptor clustering."""
    min_entry_sentences: int = 2
    """Vocabulary entries tagging fewer sentences are dropped."""
    top_k: int = 20
    """Exemplar sentences per neuron (per half)."""
    composition_threshold: float = 0.3
    """Minimum share of a neuron's exemplars tagged with an entry."""
    min_lift: float = 2.0
    """Minimum composition / base rate."""
    min_support: int = 3
    """Minimum sentences of the half tagged with an entry."""
    seed: int = 0
    """Seed of the calibration/validation split."""
    gold: str | None = None
    """JSON file {neuron: [descriptor, ...]} of a labelled subset, for P@k / R@k."""
    k: int = 2
    """k of precision@k / recall@k."""


@dataclass
class DescriptorOutput:
    """Everything the stage produced."""

    sentences: Any
    """``datasets.Dataset``: one row per sentence (see the module docstring)."""
    vocabulary: Any
    """``datasets.Dataset``: one row per vocabulary entry."""
    mapping: Any
    """``datasets.Dataset``: mapped (neuron, entry) pairs per half."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """``jaccard``, ``precision_at_k``, ``recall_at_k``, ``k``, counts of sentences/failures/
    neurons mapped."""


def mapping_rows(m: NeuronDescriptorMap, vocab: Vocabulary, half: str) -> list[dict[str, Any]]:
    """Rows of the mapping table for one half."""
    rows = []
    for j, entries in m.all_descriptors().items():
        for rank, v in enumerate(entries):
            c, b = float(m.composition[j, v]), float(m.base_rate[v])
            rows.append({"half": half, "neuron": j, "rank": rank, "entry": v, "descriptor": vocab.names[v],
                         "composition": c, "base_rate": b, "lift": c / b if b else float("inf"),
                         "excess": float(m.excess[j, v]), "support": int(m.support[v])})
    return rows


def _gold_entries(path: str, vocab: Vocabulary) -> dict[int, set[int]]:
    from .prompts import normalise

    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    out: dict[int, set[int]] = {}
    unknown = []
    for n, ds in raw.items():
        ids = set()
        for d in ds:
            v = vocab.cluster_of.get(normalise(d))
            if v is None:
                unknown.append(d)
            else:
                ids.add(v)
        out[int(n)] = ids
    if unknown:
        print(f"[descriptors] {len(unknown)} gold descriptors are not in the vocabulary (counted as misses): "
              f"{unknown[:5]}")
    return out


def _save_parquet(ds: Any, path: Path) -> None:
    atomic_write(path, ds.to_parquet)


def describe_neurons(records: list[SentenceDescriptors], activations: np.ndarray, vocab: Vocabulary,
                     cfg: DescriptorsConfig, *, row_of_sentence: dict[int, int]
                     ) -> tuple[NeuronDescriptorMap, NeuronDescriptorMap, np.ndarray]:
    """Map neurons on the calibration and validation halves of the ``ok`` sentences.

    Returns (calibration map, validation map, activation rows of the ok sentences).
    """
    ok = [r for r in records if r.ok and r.sentence in row_of_sentence]
    split_halves(len(ok), cfg.seed, min_half=max(cfg.top_k, 1))  # raises CorpusTooSmallError early
    rows = np.asarray([row_of_sentence[r.sentence] for r in ok])
    a = activations[rows]
    tags = vocab.tag_matrix([r.descriptors for r in ok])
    cal, val = split_halves(len(ok), cfg.seed, min_half=cfg.top_k)
    kw = dict(top_k=cfg.top_k, composition_threshold=cfg.composition_threshold, min_lift=cfg.min_lift,
              min_support=cfg.min_support)
    return map_neurons(a, tags, cal, **kw), map_neurons(a, tags, val, **kw), rows


def run_descriptors(cfg: DescriptorsConfig, *, llm: Any = None, embed: Embedder | None = None,
                    progress: bool = True) -> DescriptorOutput:
    """Run the whole stage (see the module docstring); resumes the LLM step from ``cfg.out``."""
    import datasets

    from tl_concepts.capture import ActivationStore

    if cfg.template not in TEMPLATES:
        raise ValueError(f"unknown template {cfg.template!r}; choose one of {sorted(TEMPLATES)}")
    tpl = TEMPLATES[cfg.template]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ActivationStore.open(cfg.store)
    ids, acts = sentence_activations(store, cfg.hook)
    texts = store.sentence_texts()
    if cfg.max_sentences is not None:
        ids, acts = ids[: cfg.max_sentences], acts[: cfg.max_sentences]
    if len(ids) // 2 < cfg.top_k:
        raise CorpusTooSmallError(
            f"the store has {len(ids)} sentences with tokens at {cfg.hook}; the calibration/validation split "
            f"needs at least {2 * cfg.top_k} (2 x top_k={cfg.top_k}) sentences with descriptors; "
            "give a larger corpus or lower top_k")
    sentences = {int(s): texts[int(s)] for s in ids}
    if llm is None:
        from tl_concepts.llm import get_llm

        llm = get_llm(cfg.llm)
    records = generate_descriptors(sentences, llm, out / "sentences.jsonl", template=tpl,
                                   batch_size=cfg.batch_size, progress=progress)
    ok = [r for r in records if r.ok]
    if embed is None:
        embed = MiniLMEmbedder()
    vocab = build_vocabulary([r.descriptors for r in ok], embed, distance_threshold=cfg.distance_threshold,
                             min_sentences=cfg.min_entry_sentences)
    vocab.save(out / "vocabulary.json")
    row_of = {int(s): i for i, s in enumerate(ids)}
    cal, val, _ = describe_neurons(records, acts, vocab, cfg, row_of_sentence=row_of)
    cal_map, val_map = cal.all_descriptors(), val.all_descriptors()
    metrics: dict[str, Any] = {
        "sentences": len(records), "ok": len(ok),
        "failed": {s: sum(r.status == s for r in records) for s in sorted({r.status for r in records} - {"ok"})},
        "entries": len(vocab), "neurons": int(acts.shape[1]),
        "neurons_mapped": len(cal_map), "jaccard": jaccard_stability(cal_map, val_map), "k": cfg.k,
    }
    if cfg.gold:
        p, r = precision_recall_at_k(cal_map, _gold_entries(cfg.gold, vocab), cfg.k)
        metrics.update(precision_at_k=p, recall_at_k=r)
    sent_rows = [{**asdict(r), "entries": sorted({vocab.cluster_of[d] for d in r.descriptors if d in vocab.cluster_of})}
                 for r in records]
    res = DescriptorOutput(
        sentences=datasets.Dataset.from_list(sent_rows),
        vocabulary=datasets.Dataset.from_list([{"id": c.id, "representative": c.representative,
                                                "members": list(c.members), "member_counts": list(c.members.values()),
                                                "sentences": c.sentences} for c in vocab.clusters]),
        mapping=datasets.Dataset.from_list(mapping_rows(cal, vocab, "calibration") + mapping_rows(val, vocab, "validation"),
                                           features=_mapping_features()),
        metrics=metrics)
    for name in ("sentences", "vocabulary", "mapping"):
        _save_parquet(getattr(res, name), out / f"{name}.parquet")
    write_json(out / "metrics.json", metrics, ensure_ascii=True)
    return res


def _mapping_features() -> Any:
    from datasets import Features, Value

    return Features({"half": Value("string"), "neuron": Value("int64"), "rank": Value("int64"),
                     "entry": Value("int64"), "descriptor": Value("string"), "composition": Value("float64"),
                     "base_rate": Value("float64"), "lift": Value("float64"), "excess": Value("float64"),
                     "support": Value("int64")})


def summary_table(res: DescriptorOutput, max_neurons: int = 15) -> str:
    """Text summary: counts, metrics, and the best-described neurons of the calibration half."""
    m = res.metrics
    lines = [f"sentences: {m['sentences']} ({m['ok']} ok; failed: {m['failed'] or 'none'})",
             f"vocabulary entries: {m['entries']}",
             f"neurons mapped: {m['neurons_mapped']} of {m['neurons']}",
             f"Jaccard stability (calibration vs validation): {m['jaccard']:.3f}"]
    if "precision_at_k" in m:
        lines.append(f"precision@{m['k']}: {m['precision_at_k']:.3f}   recall@{m['k']}: {m['recall_at_k']:.3f}")
    by: dict[int, list[tuple[float, str]]] = {}
    for r in res.mapping:
        if r["half"] == "calibration":
            by.setdefault(r["neuron"], []).append((r["excess"], r["descriptor"]))
    best = sorted(by.items(), key=lambda kv: -max(e for e, _ in kv[1]))[:max_neurons]
    if best:
        w = max(len(str(n)) for n, _ in best)
        lines += ["", "neuron".ljust(max(w, 6)) + "  descriptors (excess)"]
        lines += [str(n).ljust(max(w, 6)) + "  " + ", ".join(f"{d} ({e:.2f})" for e, d in ds[:4]) for n, ds in best]
    return "\n".join(lines)
