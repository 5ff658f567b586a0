"""The package-root API: one call per stage, for a notebook with a model already loaded.

Every function accepts a live TransformerLens model (4.x ``TransformerBridge``, 3.x
``HookedTransformer`` / ``HookedEncoder``), an :class:`~tl_concepts.capture.ActivationStore`
or a store path; output folders default to a run folder under ``./tl_concepts_runs`` named
by a fingerprint of the inputs, so calling a function twice resumes instead of redoing work,
and other inputs never reuse it. Every sync function also works inside a running event loop
(Jupyter); the ``a*`` twins are awaitable.

Example:
    >>> import tl_concepts as tlc                                          # doctest: +SKIP
    >>> model = tlc.models.load("minilm")                                  # doctest: +SKIP
    >>> store = tlc.capture(model, "lee", ["blocks.3.mlp.hook_post"], max_docs=20)   # doctest: +SKIP
    >>> res = tlc.explain(store, "blocks.3.mlp.hook_post", units=[0, 1])  # doctest: +SKIP
    >>> res.to_pandas()[["unit", "explanation", "correlation", "correlation_low"]]   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from tl_concepts.errors import ConfigError, InputError
from tl_concepts.fingerprint import fingerprint
from tl_concepts.hooks import hook_name

RUNS_ENV = "TL_CONCEPTS_RUNS"
"""Environment variable naming the default run root (default ``./tl_concepts_runs``)."""


def runs_root() -> Path:
    """Where default output folders go: ``$TL_CONCEPTS_RUNS``, else ``./tl_concepts_runs``."""
    return Path(os.environ.get(RUNS_ENV) or "tl_concepts_runs")


def _default_out(stage: str, *inputs: Any) -> Path:
    return runs_root() / f"{stage}-{fingerprint(inputs, 12)}"


def _is_store(x: Any) -> bool:
    from tl_concepts.capture import ActivationStore

    return isinstance(x, ActivationStore)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _model_name(model: Any) -> str:
    if isinstance(model, str):
        return model
    cfg = getattr(model, "cfg", None)
    return str(getattr(cfg, "model_name", None) or type(model).__name__)


# Where a stage runs, not what it computes: kept out of default run-folder names (a Ray run
# and a local run of the same inputs share one folder, so either resumes the other).
_PLACEMENT = ("executor", "ray_address", "ray", "progress")


def _placement(executor: str, ray_address: str | None) -> dict[str, Any]:
    """The checked ``executor`` / ``ray_address`` settings of a stage config."""
    from tl_concepts.executor import check_executor, check_reachable

    if check_executor(executor) == "ray":  # a wrong address is refused before any folder is made
        check_reachable(ray_address)
    return {"executor": executor, "ray_address": ray_address}


def _split_options(cls: type, options: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(options) - names)
    if bad:
        raise ConfigError(f"unknown {what} option(s) {', '.join(bad)}; valid: {', '.join(sorted(names))}")
    return options


def _llm(llm: Any) -> Any:
    from tl_concepts.llm import get_llm
    from tl_concepts.llm.base import LLM

    if llm is None or isinstance(llm, str):
        return get_llm(llm)
    if isinstance(llm, LLM):
        return llm
    raise ConfigError(f"llm must be None, a spec like 'openai:gpt-4o-mini', or an LLM object; got {type(llm).__name__}")


def capture(model: Any, corpus: Any = "lee", hooks: Sequence[str] | str = (), out: str | os.PathLike | None = None,
            *, max_docs: int | None = None, progress: bool = True, executor: str = "local",
            ray_address: str | None = None, **options: Any) -> Any:
    """Capture ``hooks`` of a live model (or a model name such as ``"minilm"``) over
    ``corpus`` into an activation store (see :func:`tl_concepts.capture.capture` for
    ``options`` such as ``context_tokens``, ``exemplars``, ``dtype``, ``ray``).

    ``corpus``: ``"lee"``, a list of strings, a file path, or a :class:`~tl_concepts.corpus.Corpus`.
    ``out`` defaults to a run folder keyed by the model, corpus, hooks and options; calling
    again with the same inputs resumes or reuses it. ``executor="ray"`` runs the forward
    passes on Ray workers (``ray_address``: the cluster; None starts a local one); the
    store and its folder are the same as a local run's.

    Example:
        >>> store = tlc.capture(model, ["Monday was cold.", "Tuesday too."], ["blocks.0.mlp.hook_post"])  # doctest: +SKIP
        >>> store.activations("blocks.0.mlp.hook_post").shape                                             # doctest: +SKIP
        >>> store = tlc.capture("minilm", "lee", ["blocks.3.mlp.hook_post"], executor="ray")               # doctest: +SKIP
    """
    from tl_concepts.capture import capture as _capture
    from tl_concepts.corpus import load_corpus

    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hooks:
        raise ConfigError("give the hook points to capture, e.g. hooks=['blocks.3.mlp.hook_post']")
    placement = _placement(executor, ray_address)
    corp = load_corpus(corpus, max_docs=max_docs)
    overwrite = options.pop("overwrite", None)
    if out is None:
        keyed = {k: v for k, v in options.items() if k not in _PLACEMENT}
        out = _default_out("capture", _model_name(model), corp.fingerprint(), hooks, keyed)
        overwrite = True if overwrite is None else overwrite  # our own folder: recompute on any change
    return _capture(model, corp, hooks, Path(out), overwrite=bool(overwrite), progress=progress,
                    model_name=options.pop("model_name", None) or _model_name(model), **placement, **options)


def _store_from(model_or_store: Any, hooks: Sequence[str], corpus: Any, max_docs: int | None,
                progress: bool, executor: str = "local", ray_address: str | None = None) -> Any:
    from tl_concepts.capture import ActivationStore

    if _is_store(model_or_store):
        return model_or_store
    if _is_path(model_or_store):
        return ActivationStore.open(model_or_store)
    if not hasattr(model_or_store, "run_with_hooks") and not hasattr(model_or_store, "hooks"):
        raise InputError(f"expected a TransformerLens model, an ActivationStore or a store path; got "
                         f"{type(model_or_store).__name__}")
    return capture(model_or_store, corpus if corpus is not None else "lee", list(hooks),
                   max_docs=max_docs if max_docs is not None or corpus is not None else 50, progress=progress,
                   executor=executor, ray_address=ray_address)


def explain(model_or_store: Any, hook: str, units: Sequence[int] | str | int = 10, *, corpus: Any = None,
            llm: Any = None, simulator_llm: Any = None, out: str | os.PathLike | None = None,
            max_docs: int | None = None, retry_failed: bool = False, executor: str = "local",
            ray_address: str | None = None, **options: Any) -> Any:
    """Explain, simulate and score units at ``hook`` (Bills et al. 2023); returns
    :class:`~tl_concepts.explain.results.ExplanationResults`.

    ``units``: indices, a spec like ``"0:50"``, or a count (the first N units). ``llm``:
    None (``$TL_CONCEPTS_LLM`` or the embedded SmolLM2), a spec such as
    ``"openai:gpt-4o-mini"``, or an LLM object. A live model is captured first over
    ``corpus`` (default: 50 documents of the embedded Lee corpus). ``options`` are
    :class:`~tl_concepts.explain.ExplainConfig` fields (e.g. ``n_explanations=3``,
    ``fuzzing=False``). ``executor="ray"`` (with ``ray_address``) runs the capture of a
    live model and the units on Ray; the results go to the same folder as a local run's.

    Example:
        >>> res = tlc.explain(model, "blocks.3.mlp.hook_post", units=[0, 1])   # doctest: +SKIP
        >>> res[0]                                                            # doctest: +SKIP
    """
    from tl_concepts._sync import run_sync

    return run_sync(aexplain(model_or_store, hook, units, corpus=corpus, llm=llm, simulator_llm=simulator_llm,
                             out=out, max_docs=max_docs, retry_failed=retry_failed, executor=executor,
                             ray_address=ray_address, **options))


async def aexplain(model_or_store: Any, hook: str, units: Sequence[int] | str | int = 10, *, corpus: Any = None,
                   llm: Any = None, simulator_llm: Any = None, out: str | os.PathLike | None = None,
                   max_docs: int | None = None, retry_failed: bool = False, executor: str = "local",
                   ray_address: str | None = None, **options: Any) -> Any:
    """Awaitable :func:`explain`."""
    from tl_concepts.explain.runner import ExplainConfig, arun_explain, check_units, parse_units, unit_key

    _split_options(ExplainConfig, options, "explain")
    placement = _placement(executor, ray_address)
    if "out_dir" in options:
        raise ConfigError("pass out=... (not out_dir)")
    if isinstance(units, int):
        idx = list(range(units))
    elif isinstance(units, str):
        idx = parse_units(units)
    else:
        idx = [int(u) for u in units]
    progress = bool(options.get("progress", True))
    store = await asyncio.to_thread(_store_from, model_or_store, [hook], corpus, max_docs, progress, **placement)
    idx = check_units(store, hook, idx)
    ex_llm = _llm(llm)
    sim_llm = _llm(simulator_llm) if simulator_llm is not None else None
    if out is None:
        out = _default_out("explain", str(Path(store.path).resolve()), hook)
    cfg = ExplainConfig(out_dir=str(out), **placement, **options)
    sources = [(unit_key(hook, u), (lambda u=u: store.unit_records(hook, int(u)))) for u in idx]
    res = await arun_explain(sources, ex_llm, cfg, simulator_llm=sim_llm, retry_failed=retry_failed)
    res.store = str(store.path)
    return res


def find_concepts(model_or_store: Any, layer: int | None = None, *, hook: str | None = None, k: int | None = None,
                  corpus: Any = None, max_docs: int | None = None, out: str | os.PathLike | None = None,
                  progress: bool = True, executor: str = "local", ray_address: str | None = None,
                  **options: Any) -> Any:
    """Latent concepts: Ward clustering of contextual word representations (ConceptX) at
    ``hook`` (default ``blocks.<layer>.hook_resid_post``); returns a
    :class:`~tl_concepts.concepts.ConceptSet`. ``options`` are
    :class:`~tl_concepts.concepts.ConceptsConfig` fields (``agg``, ``mode``, ``filters`` ...).
    ``executor="ray"`` (with ``ray_address``) runs the capture of a live model and the
    labelling (``label=...``) on Ray.

    Example:
        >>> cs = tlc.find_concepts(store, layer=3, k=40)      # doctest: +SKIP
        >>> cs.to_pandas().head()                             # doctest: +SKIP
    """
    from tl_concepts.concepts import ConceptsConfig, discover_concepts

    if hook is None:
        if layer is None:
            raise ConfigError("give layer=L (clusters blocks.L.hook_resid_post) or hook=...")
        hook = hook_name(layer)
    _split_options(ConceptsConfig, options, "concepts")
    placement = _placement(executor, ray_address)
    store = _store_from(model_or_store, [hook], corpus, max_docs, progress, **placement)
    cfg = ConceptsConfig(store=str(store.path), hook=hook, k=k, out=str(out) if out is not None else None,
                         **placement, **options)
    cs = discover_concepts(cfg, progress=progress)
    cs.meta.setdefault("out_dir", str(cfg.out_dir(cs.layer)))  # where label_concepts keeps its labels
    return cs


def label_concepts(concepts: Any, llm: Any = None, *, executor: str = "local", ray_address: str | None = None,
                   **options: Any) -> Any:
    """Label every concept with an LLM (resumable; answers keyed by each concept's members,
    the prompt and the LLM); returns the labels. ``options``: ``progress`` and
    :class:`~tl_concepts.concepts.LabelOptions` fields. ``executor="ray"`` (with
    ``ray_address``) labels the concepts on Ray, into the same folder as a local run.

    Example:
        >>> labels = tlc.label_concepts(cs)          # doctest: +SKIP
    """
    from tl_concepts._sync import run_sync

    return run_sync(alabel_concepts(concepts, llm, executor=executor, ray_address=ray_address, **options))


async def alabel_concepts(concepts: Any, llm: Any = None, *, executor: str = "local", ray_address: str | None = None,
                          **options: Any) -> Any:
    """Awaitable :func:`label_concepts`."""
    from tl_concepts.concepts import ConceptsConfig, LabelOptions, label

    progress = bool(options.pop("progress", True))
    _split_options(LabelOptions, options, "label")
    placement = _placement(executor, ray_address)
    out = concepts.meta.get("out_dir") or str(_default_out("concepts", concepts.hook, concepts.k,
                                                           fingerprint(concepts.points)))
    cfg = ConceptsConfig(out=out, label=LabelOptions(**options), **placement)
    the_llm = _llm(llm)
    return await asyncio.to_thread(label, concepts, cfg, the_llm, progress=progress)


def probe(model_or_store: Any, hook: str, labels: str = "pos", *, corpus: Any = None, max_docs: int | None = None,
          out: str | os.PathLike | None = None, progress: bool = True, executor: str = "local",
          ray_address: str | None = None, **options: Any) -> Any:
    """Linear probes for each label of ``labels`` (``pos``, ``ner``, ``gold`` or a concept
    set) on ``hook``, with control tasks and selectivity. ``options``:
    :class:`~tl_concepts.probing.runner.ProbeConfig` fields. ``executor``/``ray_address``:
    where the capture of a live model runs (the probes train here).

    Example:
        >>> probes = tlc.probe(store, "blocks.3.hook_resid_post", labels="pos")   # doctest: +SKIP
    """
    from tl_concepts.probing.runner import ProbeConfig, run_probes

    _split_options(ProbeConfig, options, "probe")
    store = _store_from(model_or_store, [hook], corpus, max_docs, progress, **_placement(executor, ray_address))
    cfg = ProbeConfig(store=str(store.path), hook=hook, labels=labels, out=str(out) if out else None, **options)
    return run_probes(cfg, progress=progress)


def rank(model_or_store: Any, hook: str, labels: str = "pos", *, methods: Sequence[str] = ("probeless",),
         corpus: Any = None, max_docs: int | None = None, out: str | os.PathLike | None = None,
         progress: bool = True, executor: str = "local", ray_address: str | None = None, **options: Any) -> Any:
    """Neuron rankings per label (``probeless``, ``probe_weights``, ``average_precision``).
    ``options``: :class:`~tl_concepts.probing.runner.RankConfig` fields. ``executor``/``ray_address``:
    where the capture of a live model runs.

    Example:
        >>> r = tlc.rank(store, "blocks.3.mlp.hook_post", labels="pos")   # doctest: +SKIP
    """
    from tl_concepts.probing.runner import RankConfig, run_rankings

    _split_options(RankConfig, options, "rank")
    store = _store_from(model_or_store, [hook], corpus, max_docs, progress, **_placement(executor, ray_address))
    cfg = RankConfig(store=str(store.path), hook=hook, labels=labels, methods=tuple(methods),
                     out=str(out) if out else None, **options)
    return run_rankings(cfg, progress=progress)


def describe_neurons(model_or_store: Any, hook: str, *, llm: Any = None, corpus: Any = None,
                     max_docs: int | None = None, out: str | os.PathLike | None = None, progress: bool = True,
                     executor: str = "local", ray_address: str | None = None, **options: Any) -> Any:
    """Neuron descriptors mined from the data (Mondal et al.): LLM sentence descriptors ->
    descriptor vocabulary -> neurons; returns :class:`~tl_concepts.descriptors.Descriptors`
    (empty, with ``.message`` saying why, when nothing maps). ``options``:
    :class:`~tl_concepts.descriptors.DescriptorsConfig` fields. ``executor="ray"`` (with
    ``ray_address``) runs the capture of a live model and the sentence descriptors on Ray.

    Example:
        >>> d = tlc.describe_neurons(store, "blocks.3.mlp.hook_post", max_sentences=100)   # doctest: +SKIP
    """
    from tl_concepts._sync import run_sync

    return run_sync(adescribe_neurons(model_or_store, hook, llm=llm, corpus=corpus, max_docs=max_docs, out=out,
                                      progress=progress, executor=executor, ray_address=ray_address, **options))


async def adescribe_neurons(model_or_store: Any, hook: str, *, llm: Any = None, corpus: Any = None,
                            max_docs: int | None = None, out: str | os.PathLike | None = None,
                            progress: bool = True, executor: str = "local", ray_address: str | None = None,
                            **options: Any) -> Any:
    """Awaitable :func:`describe_neurons`."""
    from tl_concepts.descriptors.runner import DescriptorsConfig, arun_descriptors

    _split_options(DescriptorsConfig, options, "descriptors")
    placement = _placement(executor, ray_address)
    store = await asyncio.to_thread(_store_from, model_or_store, [hook], corpus, max_docs, progress, **placement)
    if out is None:
        out = _default_out("descriptors", str(Path(store.path).resolve()), hook,
                           {k: v for k, v in options.items() if k not in _PLACEMENT})
    cfg = DescriptorsConfig(store=str(store.path), hook=hook, out=str(out), **placement, **options)
    return await arun_descriptors(cfg, llm=_llm(llm), progress=progress)


def _kind_of(results: Any) -> str:
    from tl_concepts.concepts.model import ConceptSet
    from tl_concepts.explain.results import ExplanationResults

    if isinstance(results, ExplanationResults):
        return "explanations"
    if isinstance(results, ConceptSet):
        return "concepts"
    name = type(results).__name__.lower()
    for kind in ("probe", "rank", "descriptor"):
        if kind in name:
            return {"probe": "probes", "rank": "rankings", "descriptor": "descriptors"}[kind]
    raise ConfigError(f"cannot publish a {type(results).__name__}; pass the result of explain, find_concepts, "
                      "probe, rank or describe_neurons (or give kind=...)")


def publish(results: Any, repo_id: str, *, kind: str | None = None, store: Any = None, private: bool = False,
            token: str | None = None, **meta: Any) -> Any:
    """Push a typed result to the Hugging Face Hub as a ``datasets`` dataset with a card;
    returns the publish result (``.url``). The card names the model, hooks and corpus from
    the activation store the results came from (``store=``, else the one recorded with the
    results). Token: ``token=``, ``$HF_TOKEN`` or the stored login. ``meta``: extra
    :class:`~tl_concepts.hub.cards.CardMeta` fields.

    Example:
        >>> tlc.publish(res, "me/minilm-l3-explanations")     # doctest: +SKIP
    """
    from tl_concepts.capture import ActivationStore
    from tl_concepts.hub.cards import meta_from_manifest
    from tl_concepts.hub.push import publish as _publish

    kind = kind or _kind_of(results)
    store = store if store is not None else getattr(results, "store", None) or (
        getattr(results, "meta", {}) or {}).get("store")
    if store is None:
        raise ConfigError("the card needs the activation store these results came from: pass store=...")
    if not _is_store(store):
        store = ActivationStore.open(store)
    data = results.to_dicts() if kind == "explanations" and hasattr(results, "to_dicts") else results
    meta.setdefault("pretty_name", f"tl-concepts {kind} ({store.manifest.get('model', {}).get('id', '?')})")
    card = meta_from_manifest(store.manifest, **meta)
    return _publish(kind, data, card, repo_id, private=private, token=token)


def load(path_or_repo: str | os.PathLike, *, kind: str | None = None, token: str | None = None) -> Any:
    """Load what tl-concepts wrote: a store folder -> ``ActivationStore``; an explanation
    folder -> ``ExplanationResults``; a dataset folder or Hub repo id -> the loaded dataset.

    Example:
        >>> res = tlc.load("tl_concepts_runs/explain-0123456789ab")    # doctest: +SKIP
    """
    from tl_concepts.capture import ActivationStore
    from tl_concepts.explain.results import ExplanationResults
    from tl_concepts.hub.load import load as load_local
    from tl_concepts.hub.load import load_from_hub

    p = Path(path_or_repo)
    if p.exists():
        if (p / "manifest.json").exists() and kind in (None, "store"):
            return ActivationStore.open(p)
        if (p / "units").is_dir() and kind in (None, "explanations"):
            return ExplanationResults.load(p)
        return load_local(p, kind=kind)
    if isinstance(path_or_repo, str) and path_or_repo.count("/") == 1 and not path_or_repo.startswith((".", "/")):
        return load_from_hub(path_or_repo, kind=kind, token=token)
    raise InputError(f"{path_or_repo} is neither a folder written by tl-concepts nor a Hub repo id (owner/name)")


def report(out: str | os.PathLike | None = None, *, explanations: Any = None, concepts: Any = None,
           **kwargs: Any) -> Path:
    """A static HTML report of the results; returns the path of ``index.html``.

    Example:
        >>> tlc.report(explanations=res, concepts=cs)      # doctest: +SKIP
    """
    from tl_concepts.report import build_report

    if out is None:
        out = _default_out("report", str(getattr(explanations, "out_dir", "")), getattr(concepts, "k", None))
    return Path(build_report(out, explanations=explanations, concepts=concepts, **kwargs))
