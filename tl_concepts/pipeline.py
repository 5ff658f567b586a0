"""The main job: every stage on one model and corpus, into one run folder.

capture -> concepts (Ward) -> LLM labels -> explanations + scores -> probes and rankings
-> dataset folders with cards -> HTML report (-> the Hub with ``push_to_hub``).

Each stage writes its own files under ``out`` and is resumable on its own, so rerunning
an interrupted job continues where it stopped and a finished job makes no LLM request.

Example:
    >>> from tl_concepts.pipeline import RunConfig, run
    >>> result = run(RunConfig(out="runs/main"))          # doctest: +SKIP
    >>> result["report"]                                  # doctest: +SKIP
    'runs/main/report/index.html'
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from tl_concepts.atomic import folder_lock, write_json
from tl_concepts.crash import crashpoint
from tl_concepts.hooks import hook_name

logger = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Settings of the main job (the defaults run offline in a few minutes on 2 CPU cores)."""

    out: str = "runs/main"
    """Run folder: ``store/``, ``concepts/``, ``explain/``, ``probing/``, ``datasets/``, ``report/``."""
    model: str = "minilm"
    """Model whose insides are interpreted (``minilm``, ``smollm2-135m`` or a HF name/folder)."""
    device: str = "cpu"
    """Device the interpreted model is loaded on and runs on."""
    corpus: str = "lee"
    """Corpus: ``lee``, a .txt/.jsonl/.parquet file, or a ``datasets`` name or folder."""
    max_docs: int | None = 100
    """Documents of the corpus used (None: all)."""
    layer: int = 3
    """Block whose MLP neurons are explained and whose residual stream is clustered."""
    k: int | None = 40
    """Concepts (None: one per ~40 clustered words)."""
    min_count: int = 5
    """Concept filter: minimum occurrences of a word type (5 here, below the ``concepts``
    command's 10, so the small default corpus keeps enough words)."""
    n_units: int = 3
    """Number of MLP neurons explained (units 0..n_units-1; units with too few activating contexts are
    reported as such, not dropped)."""
    fuzzing: bool = False
    """Also run the fuzzing scorer (detection always runs); off by default to keep the
    offline job within minutes on a CPU."""
    llm: str | None = None
    """LLM spec for labels, explanations and simulation (None: ``$TL_CONCEPTS_LLM`` or the
    embedded SmolLM2-135M-Instruct in process)."""
    base_url: str | None = None
    """OpenAI-compatible endpoint for an ``openai:MODEL`` LLM."""
    push_to_hub: str | None = None
    """Hub repo prefix: datasets go to ``<prefix>-<kind>`` (None: local only)."""
    private: bool = False
    """Create the Hub repos private."""
    progress: bool = True
    """Show progress bars."""
    overwrite: bool = False
    """Recompute a run folder whose capture holds other inputs (otherwise refused, naming
    what changed) or whose capture cannot be resumed."""
    retry_failed: bool = False
    """Also retry labels and explanations that failed for a permanent reason (unparseable,
    truncated, refused); transient failures are always retried."""
    executor: str = "local"
    """Where the capture and every LLM stage run: ``local`` (this process) or ``ray`` (Ray tasks; ``pip install
    tl-concepts[ray]``). A Ray run writes the same files with the same keys as a local one,
    so either resumes the other."""
    ray_address: str | None = None
    """Ray cluster to join when the executor is ``ray`` (e.g. ``ray://head:10001`` or ``auto``;
    none starts a local Ray instance)."""


def stage_placement(cfg: RunConfig) -> dict[str, Any]:
    """``executor`` and ``ray_address`` of the run, as every stage config takes them (the
    capture, the concept labels, the explanations and the descriptors).

    Example:
        >>> stage_placement(RunConfig(executor="ray", ray_address="auto"))
        {'executor': 'ray', 'ray_address': 'auto'}
    """
    from tl_concepts.executor import check_executor

    return {"executor": check_executor(cfg.executor), "ray_address": cfg.ray_address}


def _stage(name: str, log: list[dict[str, Any]], fn: Callable[[], Any], progress: bool) -> Any:
    t0 = time.time()
    logger.info("%s ...", name)
    result = fn()
    log.append({"stage": name, "seconds": round(time.time() - t0, 2)})
    logger.info("%s done in %.1f s", name, time.time() - t0)
    crashpoint("run.stage")
    return result


def _usage_line(ledger: dict[str, Any]) -> str:
    t = ledger.get("totals", {})
    fails = sum((t.get("failures") or {}).values())
    return (f"{t.get('requests', 0)} requests, {t.get('cache_hits', 0)} cache hits, "
            f"{t.get('prompt_tokens', 0):,} prompt + {t.get('completion_tokens', 0):,} completion tokens, "
            f"{fails} failures")


def produced_ledger(llm: Any, usage_by_stage: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ledger-shaped dict (``rows`` per stage, ``totals``) from the usage stored with each
    stage's results (see :mod:`tl_concepts.usage`), for cards, ``run.json`` and the report."""
    from tl_concepts.llm import merge_usage

    rows = [{"stage": stage, "backend": getattr(llm, "name", ""), "model": getattr(llm, "model", ""), **u}
            for stage, u in usage_by_stage.items() if u.get("calls")]
    return {"rows": rows, "totals": merge_usage(*usage_by_stage.values()),
            "note": "usage stored with the results (this and earlier invocations, cache hits counted)"}


def run(cfg: RunConfig, *, token: str | None = None) -> dict[str, Any]:
    """Run every stage; returns paths and headline figures (also saved as ``run.json``).

    One writer per run folder (a second concurrent ``run`` into it is refused). A fatal LLM
    error (wrong key, unreachable endpoint) stops the job with :class:`~tl_concepts.errors.LLMError`;
    rerunning the same command resumes every stage from its files.
    """
    from tl_concepts.executor import check_executor, check_reachable

    if check_executor(cfg.executor) == "ray":  # a wrong address is refused before anything is written
        check_reachable(cfg.ray_address)
    with folder_lock(Path(cfg.out), "this run"):
        return _run(cfg, token)


def _run(cfg: RunConfig, token: str | None) -> dict[str, Any]:
    from tl_concepts import models
    from tl_concepts.models import ModelRecipe
    from tl_concepts.capture import RayCapture, capture
    from tl_concepts.concepts import ConceptsConfig, discover_concepts, evaluate, label
    from tl_concepts.concepts.runner import describe_labels
    from tl_concepts.concepts.filters import FilterConfig
    from tl_concepts.corpus import load_corpus
    from tl_concepts.descriptors import DescriptorsConfig, run_descriptors
    from tl_concepts.explain.runner import ExplainConfig, explain_store, summary_table
    from tl_concepts.hub.cards import meta_from_manifest, model_identity
    from tl_concepts.hub.push import EmptyDatasetError, publish, save_local
    from tl_concepts.llm import get_llm
    from tl_concepts.probing.runner import ProbeConfig, RankConfig, run_probes, run_rankings
    from tl_concepts.report import build_report
    from tl_concepts.usage import descriptors_usage, explanations_usage, labels_usage

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages: list[dict[str, Any]] = []
    mlp_hook = hook_name(cfg.layer, "post")
    resid_hook = hook_name(cfg.layer, "resid_post")
    placement = stage_placement(cfg)  # where each stage runs: every stage config gets it
    llm_kw: dict[str, Any] = {"base_url": cfg.base_url} if cfg.base_url else {}
    llm = get_llm(cfg.llm, cache=out / "llm-cache.sqlite", **llm_kw)

    loaded: dict[str, Any] = {}

    def do_capture():
        corpus = load_corpus(cfg.corpus, max_docs=cfg.max_docs)
        loaded["model"] = models.load(cfg.model, device=cfg.device)
        # On Ray each worker loads its own replica by name (fingerprint-checked against this one)
        return capture(loaded["model"], corpus, [mlp_hook, resid_hook], out / "store", model_name=cfg.model,
                       progress=cfg.progress, overwrite=cfg.overwrite, ray=RayCapture(replica=ModelRecipe(cfg.model, cfg.device)),
                       **placement)

    store = _stage("capture", stages, do_capture, cfg.progress)

    ccfg = ConceptsConfig(store=str(store.path), hook=resid_hook, k=cfg.k, out=str(out / "concepts"),
                          filters=FilterConfig(min_count=cfg.min_count), **placement)
    concept_set = _stage("concepts", stages, lambda: discover_concepts(ccfg), cfg.progress)
    labels = _stage("labels", stages, lambda: label(concept_set, ccfg, llm, retry_failed=cfg.retry_failed,
                                                    progress=cfg.progress), cfg.progress)
    evaluation = _stage("concept evaluation", stages, lambda: evaluate(concept_set, ccfg, labels=labels),
                        cfg.progress)

    def do_explain():
        # the first units with activating contexts; units with too few are reported by the runner
        ecfg = ExplainConfig(out_dir=str(out / "explain"), few_shot=False, n_bootstrap=200,
                             fuzzing=cfg.fuzzing, progress=cfg.progress, **placement)
        return explain_store(store, mlp_hook, list(range(cfg.n_units)), llm, ecfg, retry_failed=cfg.retry_failed)

    explanations = _stage("explanations", stages, do_explain, cfg.progress)

    probes = _stage("probes", stages, lambda: run_probes(
        ProbeConfig(store=str(store.path), hook=resid_hook, labels="pos", max_labels=8,
                    out=str(out / "probing")), progress=cfg.progress), cfg.progress)
    rankings = _stage("rankings", stages, lambda: run_rankings(
        RankConfig(store=str(store.path), hook=mlp_hook, labels="pos", max_labels=8,
                   out=str(out / "probing")), progress=cfg.progress), cfg.progress)

    descriptors = _stage("descriptors", stages, lambda: run_descriptors(
        DescriptorsConfig.small(str(store.path), mlp_hook, str(out / "descriptors"), **placement), llm=llm,
        progress=cfg.progress), cfg.progress)

    ledger = llm.ledger.to_dict(units=False)  # this invocation's calls
    # The usage that produced the data, stored with each stage's results: the same whether
    # they came from this invocation, an interrupted earlier one, or the cache.
    produced = produced_ledger(llm, {"concepts.label": labels_usage(labels),
                                     "explain": explanations_usage(explanations),
                                     "descriptors.generate": descriptors_usage(descriptors)})
    base_meta = dict(llm={"spec": cfg.llm or "in-process", "model": getattr(llm, "model", "")},
                     ledger=produced)
    datasets = {
        "concepts": (concept_set, "Latent concepts"),
        "explanations": (str(out / "explain"), "Neuron explanations"),
        "probes": (probes, "Concept probes"),
        "rankings": (rankings, "Neuron rankings"),
        "descriptors": (descriptors, "Neuron descriptors"),
    }

    model_id = model_identity(cfg.model)["id"]
    metas = {kind: meta_from_manifest(store.manifest, pretty_name=f"{title} ({model_id}, {cfg.corpus})",
                                      **base_meta)
             for kind, (_, title) in datasets.items()}
    metas["descriptors"].stage_settings = {"hook": mlp_hook}  # its table has no hook column

    empty: dict[str, str] = {}  # kind -> why it has no dataset (e.g. no neuron got a descriptor)

    def do_save() -> dict[str, str]:
        paths = {}
        for kind, (data, _) in datasets.items():  # each folder is swapped in whole (atomic)
            try:
                paths[kind] = str(save_local(kind, data, metas[kind], out / "datasets" / kind))
            except EmptyDatasetError as e:
                empty[kind] = str(e)
            crashpoint("cards.dataset")
        return paths

    dataset_paths = _stage("datasets", stages, do_save, cfg.progress)
    report = _stage("report", stages, lambda: build_report(
        out / "report", run_dir=out, concepts=concept_set, model=loaded.get("model"), ledger=produced,
        meta={"model": model_id, "corpus": f"{cfg.corpus} ({store.manifest['corpus']['n_docs']} docs)",
              "layer": cfg.layer, "LLM": cfg.llm or "in-process SmolLM2-135M-Instruct",
              "LLM usage that produced the results": _usage_line(produced),
              "LLM usage (this invocation)": _usage_line(ledger)}), cfg.progress)

    published: dict[str, str] = {}
    if cfg.push_to_hub:
        def do_push() -> dict[str, str]:
            return {kind: publish(kind, data, metas[kind], f"{cfg.push_to_hub}-{kind}", private=cfg.private,
                                  token=token).url
                    for kind, (data, _) in datasets.items() if kind not in empty}
        published = _stage("push to hub", stages, do_push, cfg.progress)

    ok = [r for r in explanations if r.status == "ok"]
    result = {
        "config": asdict(cfg),
        "store": str(store.path),
        "tokens": store.n_tokens,
        "concepts": concept_set.k,
        "labels_accepted": sum(1 for lb in labels if lb.accepted),
        "labels_summary": describe_labels(labels, concept_set.k),
        "verdicts": explanations.verdict_counts(),
        "alignment": {k: v.to_dict() for k, v in evaluation.alignment.items()},
        "units_explained": len(ok),
        "units_reported": len(explanations),
        "descriptors": {"neurons_mapped": descriptors.metrics.get("neurons_mapped", 0),
                        "sentences_ok": descriptors.metrics.get("ok", 0), "message": descriptors.message},
        "datasets": dataset_paths,
        "report": str(report),
        "published": published,
        "empty_datasets": empty,
        "stages": stages,
        "llm_usage": produced,
        "llm_ledger": ledger,
    }
    write_json(out / "run.json", result)
    result["summary"] = "\n".join([
        summary_table(explanations), "", result["labels_summary"],
        f"descriptors: {result['descriptors']['neurons_mapped']} neurons mapped"
        + (f" ({descriptors.message})" if descriptors.message else ""),
        "", llm.ledger.summary_table(), "",
        f"report    {report}", f"datasets  {out / 'datasets'}", f"run       {out / 'run.json'}",
        *(f"hub       {url}" for url in published.values()),
        *(f"empty     {kind}: {why}" for kind, why in empty.items())])
    return result
