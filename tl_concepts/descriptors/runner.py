"""The descriptor stage end to end: sentences -> LLM descriptors -> vocabulary -> neurons.

:func:`run_descriptors` reads sentences and a hook's activations from a capture store,
asks the LLM for each sentence's descriptors (resumable: ``<out>/sentences.jsonl``),
clusters them into a vocabulary (``<out>/vocabulary.json``), maps every neuron on a
calibration half and again on a validation half, and reports Jaccard stability and, with
a labelled subset, precision@k / recall@k.

The result is a :class:`~tl_concepts.descriptors.results.Descriptors` (saved to ``out``):

* ``sentences``: ``sentence, text, status, descriptors, raw, message, model, backend,
  template, template_version, key, entries`` (``entries``: vocabulary ids of the descriptors;
  ``key``: the fingerprint of the answer's inputs; each answer's LLM usage stays in
  ``<out>/sentences.jsonl``, their sum over the current sentences is ``metrics["llm_usage"]``);
* ``vocabulary``: ``id, representative, members, member_counts, sentences``;
* ``mapping``: the columns of :data:`~tl_concepts.descriptors.schema.MAPPING_COLUMNS`
  (``hook, unit, half, neuron, rank, entry, descriptor, composition, base_rate, lift,
  excess, support``).

When no neuron receives a descriptor (every answer failed, too few answers for the split,
or no entry passes the thresholds) the result is empty, typed, and says why
(``Descriptors.message``); nothing raises after the LLM work is done. A fatal LLM error
(:class:`tl_concepts.errors.LLMError`) stops the stage.

For the main job, :meth:`DescriptorsConfig.small` gives settings that finish in a minute or
two with the embedded in-process SmolLM2 on a laptop CPU.

Example:
    >>> out = run_descriptors(DescriptorsConfig(store="runs/x", hook="blocks.3.mlp.hook_post",
    ...                                         out="runs/x/descriptors"))       # doctest: +SKIP
    >>> print(summary_table(out))                                                 # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tl_concepts._sync import run_sync
from tl_concepts.atomic import folder_lock
from tl_concepts.errors import ConfigError, InputError
from tl_concepts.ids import unit_id
from tl_concepts.usage import descriptors_usage

from .embed import Embedder, MiniLMEmbedder
from .generate import SentenceDescriptors, agenerate_descriptors
from .mapping import CorpusTooSmallError, NeuronDescriptorMap, map_neurons, sentence_activations, split_halves
from .metrics import jaccard_stability, precision_recall_at_k
from .prompts import TEMPLATES
from .results import Descriptors, descriptors_from_rows
from .vocabulary import Vocabulary, build_vocabulary

log = logging.getLogger(__name__)


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
    """LLM spec: ``in-process``, ``openai:MODEL``, ... (none: ``$TL_CONCEPTS_LLM`` or in-process)."""
    template: str = "descriptors"
    """Prompt template name."""
    max_sentences: int | None = None
    """Use only the first N sentences of the store (None: all)."""
    requests_per_batch: int = 16
    """LLM requests sent together: sentences per concurrent batch (and per save)."""
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
    at_k: int = 2
    """k of precision@k / recall@k against ``gold``."""
    temperature: float = 0.0
    """Sampling temperature of the LLM (part of every answer's key)."""
    retry_failed: bool = False
    """Also ask again for sentences whose answer failed for a permanent reason (unparseable,
    refusal, truncated); transient failures are always asked again."""
    executor: str = "local"
    """Where sentence descriptors are asked for: ``local`` (this process) or ``ray`` (Ray tasks; ``pip install
    tl-concepts[ray]``). A Ray run writes the same files with the same keys as a local one,
    so either resumes the other."""
    ray_address: str | None = None
    """Ray cluster to join when the executor is ``ray`` (e.g. ``ray://head:10001`` or ``auto``;
    none starts a local Ray instance)."""

    @classmethod
    def small(cls, store: str, hook: str, out: str, **overrides: Any) -> "DescriptorsConfig":
        """Settings for the main job: the first 32 sentences, 3 exemplars per neuron and half.

        Measured: about a minute with the in-process SmolLM2-135M on 2 CPU cores for a MiniLM
        store of the Lee corpus (see the report of ``tl-concepts run``). ``overrides`` replace
        any field.

        Example:
            >>> DescriptorsConfig.small("runs/x/store", "blocks.3.mlp.hook_post", "runs/x/descriptors").top_k
            3
        """
        base = dict(max_sentences=32, requests_per_batch=16, top_k=3, min_support=2, min_entry_sentences=2)
        return cls(store=store, hook=hook, out=out, **{**base, **overrides})

    def check(self) -> None:
        """Raise :class:`~tl_concepts.errors.ConfigError` for settings no run can use."""
        if self.template not in TEMPLATES:
            raise ConfigError(f"unknown descriptor template {self.template!r}; "
                              f"choose one of {', '.join(sorted(TEMPLATES))}")
        for name, v, lo in (("top-k", self.top_k, 1), ("requests-per-batch", self.requests_per_batch, 1), ("at-k", self.at_k, 1),
                            ("min-support", self.min_support, 1)):
            if v < lo:
                raise ConfigError(f"--{name} must be >= {lo}; got {v}")
        if self.max_sentences is not None and self.max_sentences < 2:
            raise ConfigError(f"--max-sentences must be >= 2; got {self.max_sentences}")
        if not 0.0 < self.composition_threshold <= 1.0:
            raise ConfigError(f"--composition-threshold must be in (0, 1]; got {self.composition_threshold}")
        if not 0.0 < self.distance_threshold <= 2.0:
            raise ConfigError(f"--distance-threshold must be in (0, 2]; got {self.distance_threshold}")
        if self.gold is not None and not Path(self.gold).is_file():
            raise InputError(f"gold descriptor file {self.gold} does not exist")


DescriptorOutput = Descriptors
"""Former name of :class:`~tl_concepts.descriptors.results.Descriptors`."""



def mapping_rows(m: NeuronDescriptorMap, vocab: Vocabulary, half: str, hook: str = "") -> list[dict[str, Any]]:
    """Rows of the mapping table for one half."""
    rows = []
    for j, entries in m.all_descriptors().items():
        for rank, v in enumerate(entries):
            c, b = float(m.composition[j, v]), float(m.base_rate[v])
            rows.append({"hook": hook, "unit": unit_id(hook, j), "half": half, "neuron": j, "rank": rank, "entry": v,
                         "descriptor": vocab.names[v], "composition": c, "base_rate": b,
                         "lift": c / b if b else float("inf"), "excess": float(m.excess[j, v]),
                         "support": int(m.support[v])})
    return rows


def read_gold(path: str) -> dict[int, list[str]]:
    """A labelled subset ``{neuron: [descriptor, ...]}`` (checked before any LLM work)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        gold = {int(n): [str(d) for d in ds] for n, ds in raw.items() if not isinstance(ds, str)}
        if len(gold) != len(raw):
            raise ValueError("a value is not a list")
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise InputError(f"gold descriptor file {path} must be JSON {{neuron: [descriptor, ...]}} ({e})") from None
    if not any(gold.values()):
        raise InputError(f"gold descriptor file {path} gives no descriptor for any neuron")
    return gold


def _gold_entries(gold: dict[int, list[str]], vocab: Vocabulary) -> dict[int, set[int]]:
    from .prompts import normalise

    out: dict[int, set[int]] = {}
    unknown = []
    for n, ds in gold.items():
        ids = set()
        for d in ds:
            v = vocab.cluster_of.get(normalise(d))
            if v is None:
                unknown.append(d)
            else:
                ids.add(v)
        out[n] = ids
    if unknown:
        log.warning("%d gold descriptors are not in the vocabulary (counted as misses): %s", len(unknown), unknown[:5])
    return out


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
    kw: dict[str, Any] = dict(top_k=cfg.top_k, composition_threshold=cfg.composition_threshold, min_lift=cfg.min_lift,
              min_support=cfg.min_support)
    return map_neurons(a, tags, cal, **kw), map_neurons(a, tags, val, **kw), rows


def _open_store(cfg: DescriptorsConfig) -> Any:
    from tl_concepts.capture import ActivationStore

    try:
        store = ActivationStore.open(cfg.store)
    except FileNotFoundError as e:
        raise InputError(str(e)) from None
    if cfg.hook not in store.hooks:
        raise InputError(f"hook {cfg.hook} was not captured in {cfg.store}; captured: {', '.join(store.hooks)}")
    return store


def _failed_counts(records: list[SentenceDescriptors]) -> dict[str, int]:
    return {s: sum(r.status == s for r in records) for s in sorted({r.status for r in records} - {"ok"})}


async def arun_descriptors(cfg: DescriptorsConfig, *, llm: Any = None, embed: Embedder | None = None,
                           progress: bool = True) -> Descriptors:
    """Awaitable :func:`run_descriptors` (for code already inside an event loop)."""
    cfg.check()
    tpl = TEMPLATES[cfg.template]
    out = Path(cfg.out)
    store = _open_store(cfg)
    ids, acts = sentence_activations(store, cfg.hook)
    texts = store.sentence_texts()
    if cfg.max_sentences is not None:
        ids, acts = ids[: cfg.max_sentences], acts[: cfg.max_sentences]
    if len(ids) // 2 < cfg.top_k:
        raise CorpusTooSmallError(
            f"the store has {len(ids)} sentences with tokens at {cfg.hook}; the calibration/validation split "
            f"needs at least {2 * cfg.top_k} (2 x top_k={cfg.top_k}) sentences with descriptors; "
            "give a larger corpus or a lower --top-k")
    sentences = {int(s): texts[int(s)] for s in ids}
    gold = read_gold(cfg.gold) if cfg.gold else None
    if llm is None:  # built here, not before the checks above
        from tl_concepts.llm import get_llm

        llm = get_llm(cfg.llm)
    with folder_lock(out, "these descriptors"):  # a second writer of the folder is refused
        return await _generate_and_map(cfg, tpl, store, ids, acts, sentences, gold, llm, embed, progress)


async def _generate_and_map(cfg: DescriptorsConfig, tpl: Any, store: Any, ids: np.ndarray, acts: np.ndarray,
                            sentences: dict[int, str], gold: dict[int, list[str]] | None, llm: Any,
                            embed: Embedder | None, progress: bool) -> Descriptors:
    from tl_concepts.probing.labels import store_fingerprint

    out = Path(cfg.out)
    records = await agenerate_descriptors(sentences, llm, out / "sentences.jsonl", template=tpl,
                                          batch_size=cfg.requests_per_batch, temperature=cfg.temperature,
                                          retry_failed=cfg.retry_failed, progress=progress,
                                          executor=cfg.executor, ray_address=cfg.ray_address)
    ok = [r for r in records if r.ok]
    failed = _failed_counts(records)
    provenance = {"store": str(cfg.store), "store_fingerprint": store_fingerprint(store), "hook": cfg.hook,
                  "llm": llm.cache_identity(), "temperature": cfg.temperature, "max_tokens": tpl.max_tokens,
                  "template": tpl.name, "template_version": tpl.version, "config": asdict(cfg)}
    metrics: dict[str, Any] = {"sentences": len(records), "ok": len(ok), "failed": failed, "entries": 0,
                               "neurons": int(acts.shape[1]), "neurons_mapped": 0, "jaccard": float("nan"),
                               "k": cfg.at_k}
    vocab: Vocabulary | None = None
    mapping: list[dict[str, Any]] = []
    message = ""
    if not ok:
        message = (f"no sentence got descriptors ({len(records)} failed: "
                   f"{', '.join(f'{k} {v}' for k, v in failed.items())}); see sentences.parquet for the reasons")
    elif len(ok) // 2 < cfg.top_k:
        message = (f"only {len(ok)} of {len(records)} sentences got descriptors; the calibration/validation split "
                   f"needs at least {2 * cfg.top_k} (2 x top_k={cfg.top_k}); use more sentences (--max-sentences) "
                   "or a lower --top-k")
    else:
        if embed is None:
            embed = MiniLMEmbedder()
        provenance["embedder"] = str(getattr(embed, "name", ""))
        vocab = build_vocabulary([r.descriptors for r in ok], embed, distance_threshold=cfg.distance_threshold,
                                 min_sentences=cfg.min_entry_sentences)
        metrics["entries"] = len(vocab)
        if not len(vocab):
            message = (f"no descriptor was given to {cfg.min_entry_sentences} or more sentences, so the vocabulary "
                       "is empty; use more sentences")
        else:
            row_of = {int(s): i for i, s in enumerate(ids)}
            cal, val, _ = describe_neurons(records, acts, vocab, cfg, row_of_sentence=row_of)
            cal_map, val_map = cal.all_descriptors(), val.all_descriptors()
            metrics.update(neurons_mapped=len(cal_map), jaccard=jaccard_stability(cal_map, val_map))
            if gold:
                p, r = precision_recall_at_k(cal_map, _gold_entries(gold, vocab), cfg.at_k)
                metrics.update(precision_at_k=p, recall_at_k=r)
            mapping = (mapping_rows(cal, vocab, "calibration", cfg.hook)
                       + mapping_rows(val, vocab, "validation", cfg.hook))
            if not mapping:
                message = (f"no neuron received a descriptor: no entry reached composition >= "
                           f"{cfg.composition_threshold}, lift >= {cfg.min_lift} and support >= {cfg.min_support} "
                           f"among the top {cfg.top_k} sentences of any neuron; lower these thresholds or use "
                           "more sentences")
    if message:
        metrics["message"] = message
        log.warning("descriptors: %s", message)
    cluster_of = vocab.cluster_of if vocab is not None else {}
    metrics["llm_usage"] = descriptors_usage(records)  # what the answers cost, also when reused from a rerun
    sent_rows = [{**{k: v for k, v in asdict(r).items() if k != "usage"},  # usage: per-record in sentences.jsonl
                  "entries": sorted({cluster_of[d] for d in r.descriptors if d in cluster_of})}
                 for r in records]
    voc_rows = [] if vocab is None else [
        {"id": c.id, "representative": c.representative, "members": list(c.members),
         "member_counts": list(c.members.values()), "sentences": c.sentences} for c in vocab.clusters]
    res = descriptors_from_rows(sent_rows, voc_rows, mapping, metrics=metrics, hook=cfg.hook, message=message,
                                provenance=provenance)
    if vocab is not None:
        vocab.save(out / "vocabulary.json")
    res.save(out)
    return res


def run_descriptors(cfg: DescriptorsConfig, *, llm: Any = None, embed: Embedder | None = None,
                    progress: bool = True) -> Descriptors:
    """Run the whole stage (see the module docstring); resumes the LLM step from ``cfg.out``.

    Works from scripts and inside a running event loop (a notebook cell); the awaitable
    twin is :func:`arun_descriptors`.

    Example:
        >>> res = run_descriptors(DescriptorsConfig.small("runs/x/store", "blocks.3.mlp.hook_post",
        ...                                               "runs/x/descriptors"))   # doctest: +SKIP
        >>> res.to_pandas().head()                                                  # doctest: +SKIP
    """
    return run_sync(arun_descriptors(cfg, llm=llm, embed=embed, progress=progress))


def summary_table(res: Descriptors, max_neurons: int = 15) -> str:
    """Text summary: counts, metrics, and the best-described neurons of the calibration half."""
    m = res.metrics
    lines = [f"sentences: {m['sentences']} ({m['ok']} ok; failed: {m['failed'] or 'none'})",
             f"vocabulary entries: {m['entries']}",
             f"neurons mapped: {m['neurons_mapped']} of {m['neurons']}",
             f"Jaccard stability (calibration vs validation): {m['jaccard']:.3f}"]
    if res.message:
        lines.append(f"note: {res.message}")
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
