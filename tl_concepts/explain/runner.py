"""Run explain -> simulate -> score over many units, resumably.

For each unit (a :class:`UnitRecords`), :func:`arun_explain`:

1. checks that its train / calibration / test records share no context (else status
   ``overlapping_splits``) and that it has at least ``min_activating`` activating
   contexts (else status ``too_few_activating``): reported, not dropped;
2. explains it from the train split with the LLM explainer (best-of-n on the calibration
   split when ``n_explanations > 1``) and with the token-lookup baseline;
3. for each explanation: simulates the calibration split, fits the linear calibration,
   simulates the test split, and scores (:func:`tl_concepts.explain.scoring.score`):
   ``all`` = test top + random, ``random`` = test random only. Correlation uses the raw
   simulation (0..10 expected values) against the raw activations; r-squared and absolute
   deviation explained use the calibrated simulation against the raw activations;
4. scores the baseline's own lookup-table prediction (no LLM), and detection / fuzzing;
5. writes ``units/<unit id>.json`` atomically, through the stages' one results store
   (:func:`tl_concepts.explain.results.unit_store`, a :class:`tl_concepts.resultstore.ResultStore`).

A rerun reuses a unit's file only when its ``input_key`` matches the unit's current inputs
(:func:`unit_inputs`) and it did not fail for a transient reason. With ``executor="ray"`` the
units run as Ray tasks (each worker rebuilds the LLMs, see
:func:`tl_concepts.llm.workers.llm_recipe`) and each result is saved as it arrives, with the same
keys: a Ray run resumes a local one and vice versa. LLM calls are capped by the LLM layer's
limiter and logged in ``ledger.jsonl`` (no prompt text, no secrets; a Ray worker's calls are
added as they come back). :func:`summary_table` prints the LLM explainer against the baseline.

Example:
    >>> from tl_concepts.llm import get_llm                          # doctest: +SKIP
    >>> cfg = ExplainConfig(out_dir="runs/explain-l5")                # doctest: +SKIP
    >>> results = run_explain(units, get_llm("in-process"), cfg)      # doctest: +SKIP
    >>> print(summary_table(cfg.out_dir))                             # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from tl_concepts.results import json_default
from tl_concepts._sync import run_sync
from tl_concepts.atomic import folder_lock
from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.crash import crashpoint
from tl_concepts.errors import ConfigError, InputError, TLConceptsError
from tl_concepts.fingerprint import fingerprint
from tl_concepts.ids import safe_id, unit_id
from tl_concepts.llm.base import LLM
from tl_concepts.llm.ledger import Ledger, MeteredLLM
from tl_concepts.explain.calibration import LinearCalibration
from tl_concepts.explain.detection import DetectionScorer, FuzzingScorer
from tl_concepts.explain.explainers import Explanation, LLMExplainer, TokenLookupExplainer, best_of_n, revise
from tl_concepts.explain.prompts import EXPLAIN_TEMPLATE, FEW_SHOT, REVISE_TEMPLATE, SIMULATE_TEMPLATE
from tl_concepts.explain.results import ExplanationResults, load_unit_dicts, unit_store
from tl_concepts.executor import check_executor, imap_items
from tl_concepts.llm.workers import Stopped, WorkerMeter, absorb_usage, llm_recipe
from tl_concepts.resultstore import ResultStore
from tl_concepts.explain.scoring import score
from tl_concepts.explain.verdict import count_verdicts, verdict
from tl_concepts.explain.simulators import AllAtOnceSimulator, JsonSimulator, Simulator
from tl_concepts.explain.units import n_activating, split_overlaps
from tl_concepts.atomic import write_json

UnitSource = Union[UnitRecords, tuple[str, Union[UnitRecords, Callable[[], UnitRecords]]]]

RESULT_VERSION = 2
"""Version of the unit-file format (2: ``id``, ``input_key`` and ``provenance``)."""

@dataclass
class ExplainConfig:
    """Settings of an explanation run (stored in ``config.json`` of the output dir)."""

    out_dir: str
    """Output directory: ``units/*.json``, ``ledger.jsonl``,
    ``ledger_summary.json`` (calls and tokens per stage), ``config.json``."""
    n_explanations: int = 1
    """LLM explanations per unit; above 1, the best on the calibration split is kept."""
    explain_temperature: float = 0.0
    """Temperature of the explainer (1.0 is used for best-of-n when this is 0)."""
    max_train_records: int = 10
    """Training records shown to the explainer (top first, then random)."""
    explain_max_tokens: int = 48
    """Answer budget of the explainer (tokens)."""
    few_shot: bool = True
    """Show the few-shot example neurons in explanation and simulation prompts (off
    makes prompts shorter and cheaper, e.g. for a small local model)."""
    simulator: str = "all-at-once"
    """``all-at-once`` (next-token distributions, JSON fallback) or ``json``."""
    calibrate: bool = True
    """Fit a linear calibration on the calibration split (needed for r-squared)."""
    baseline: bool = True
    """Also score the token-lookup baseline explanation."""
    detection: bool = True
    """Run the detection scorer."""
    fuzzing: bool = True
    """Run the fuzzing scorer."""
    min_activating: int = 5
    """Fewer activating top contexts than this: status ``too_few_activating``."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for confidence intervals (0: none)."""
    seed: int = 0
    """Seed of bootstrap and fuzzing."""
    max_units_in_flight: int = 64
    """Units processed at once."""
    revise: int = 0
    """Revision rounds: show the explainer the calibration records its explanation simulated
    worst and keep a revision only if its calibration correlation improves (test records
    are never seen)."""
    save_simulations: bool = True
    """Keep per-record true and simulated activations in the unit files."""
    progress: bool = True
    """Show a tqdm progress bar."""
    executor: str = "local"
    """Where units are explained and scored: ``local`` (this process) or ``ray`` (Ray tasks; ``pip install
    tl-concepts[ray]``). A Ray run writes the same files with the same keys as a local one,
    so either resumes the other."""
    ray_address: str | None = None
    """Ray cluster to join when the executor is ``ray`` (e.g. ``ray://head:10001`` or ``auto``;
    none starts a local Ray instance)."""


def unit_key(hook: str, unit: int | str) -> str:
    """The unit's id (:func:`tl_concepts.ids.unit_id`), e.g. ``blocks.5.mlp.hook_post.17``."""
    return unit_id(hook, unit)


def unit_path(out_dir: str | os.PathLike, key: str) -> Path:
    """Where a unit's result file lives."""
    return Path(out_dir) / "units" / f"{key}.json"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to a temp file in the same folder, then ``os.replace`` it."""
    write_json(path, obj, indent=1, ensure_ascii=True, allow_nan=False, default=json_default)


def _clean(obj: Any) -> Any:
    """nan -> None recursively (JSON has no nan)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


async def _evaluate(
    explanation: Explanation,
    unit: UnitRecords,
    simulator: Simulator,
    llm: LLM | None,
    cfg: ExplainConfig,
) -> dict[str, Any]:
    """Simulate + score one explanation on the unit's calibration and test splits."""
    out: dict[str, Any] = {"explanation": explanation.to_dict()}
    if not explanation.ok:
        out["status"] = "explanation_failed"
        return out
    text = explanation.text or ""
    cal = list(unit.calibration_top) + list(unit.calibration_random)
    test = list(unit.test_top) + list(unit.test_random)
    n_top = len(unit.test_top)
    # Everything after the explanation is independent: run it concurrently.
    cal_sims, test_sims, detection, fuzzing = await asyncio.gather(
        simulator.asimulate_many(text, [r.tokens for r in cal]) if cfg.calibrate and cal else _none(),
        simulator.asimulate_many(text, [r.tokens for r in test]),
        DetectionScorer(llm).ascore(text, unit) if llm is not None and cfg.detection else _none(),
        FuzzingScorer(llm, seed=cfg.seed).ascore(text, unit) if llm is not None and cfg.fuzzing else _none(),
    )
    if detection is not None:
        out["detection"] = detection.to_dict()
    if fuzzing is not None:
        out["fuzzing"] = fuzzing.to_dict()
    failed = [s for s in test_sims + (cal_sims or []) if not s.ok]
    out["simulation_method"] = sorted({s.method or "?" for s in test_sims})
    if failed:
        out["status"] = "simulation_failed"
        out["failures"] = [s.to_dict()["failure"] for s in failed[:5]]
        out["n_failed_simulations"] = len(failed)
        return out
    raw = [_activations(s) for s in test_sims]
    calibration = (LinearCalibration.fit(cal, [_activations(s) for s in cal_sims])
                   if cal_sims else LinearCalibration())
    calibrated = [calibration.apply(a) for a in raw]
    scores: dict[str, Any] = {"all": _scores(test, raw, calibrated, cfg)}
    if unit.test_random:
        scores["random"] = _scores(test[n_top:], raw[n_top:], calibrated[n_top:], cfg)
    out["_test_sims"] = raw  # for the paired verdict; not written
    out["status"] = "ok"
    out["scores"] = scores
    out["calibration"] = calibration.to_dict()
    if cfg.save_simulations:
        out["simulations"] = [{"split": "test_top" if i < n_top else "test_random", "doc": r.doc,
                               "start": r.start, "tokens": r.tokens, "true": r.activations, "simulated": a}
                              for i, (r, a) in enumerate(zip(test, raw))]
    return out


def _activations(sim: Any) -> list[float]:
    """A successful simulation's activations (failed ones were handled before)."""
    if sim.activations is None:
        raise ValueError("a simulation without activations was taken for a successful one")
    return list(sim.activations)


def _scores(test: Sequence[ActivationRecord], raw: Sequence[Sequence[float]],
            calibrated: Sequence[Sequence[float]], cfg: ExplainConfig) -> dict[str, Any]:
    """Correlation of the raw simulation (0..10 expected values: correlation ignores the
    scale); r-squared and absolute deviation explained (neuron-explainer's uncentred
    definitions, and the centred variants under their own names) of the calibrated one."""
    s_raw = score(test, raw, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    s_cal = score(test, calibrated, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    out: dict[str, Any] = {"correlation": s_raw.correlation.to_dict()}
    for name in ("rsquared", "absolute_dev_explained", "rsquared_centred", "absolute_dev_explained_centred"):
        out[name] = getattr(s_cal, name).to_dict()
    out.update(n_records=s_raw.n_records, n_tokens=s_raw.n_tokens)
    return out


async def _none() -> None:
    return None


def _make_simulator(llm: LLM, cfg: ExplainConfig) -> Simulator:
    if cfg.simulator == "all-at-once":
        return AllAtOnceSimulator(llm, few_shot=FEW_SHOT if cfg.few_shot else ())
    if cfg.simulator == "json":
        return JsonSimulator(llm)
    raise ValueError(f"unknown simulator {cfg.simulator!r}; use 'all-at-once' or 'json'")


async def explain_unit(
    unit: UnitRecords,
    explainer_llm: LLM,
    cfg: ExplainConfig,
    *,
    simulator_llm: LLM | None = None,
) -> dict[str, Any]:
    """Explain, simulate and score one unit; returns the result dict (not written)."""
    t0 = time.perf_counter()
    sim_llm = simulator_llm or explainer_llm
    res: dict[str, Any] = {
        "version": RESULT_VERSION, "hook": unit.hook, "unit": unit.unit,
        "max_activation": unit.max_activation, "n_contexts": unit.n_contexts,
        "n_activating": n_activating(unit),
        "splits": {k: len(getattr(unit, k)) for k in ("train_top", "train_random", "calibration_top",
                                                       "calibration_random", "test_top", "test_random")},
        "templates": {"explain": EXPLAIN_TEMPLATE.id, "simulate": SIMULATE_TEMPLATE.id,
                      **({"revise": REVISE_TEMPLATE.id} if cfg.revise else {}), "few_shot": cfg.few_shot},
        "explainer_model": getattr(explainer_llm, "model", ""), "simulator_model": getattr(sim_llm, "model", ""),
    }
    overlaps = split_overlaps(unit)
    if overlaps:
        res["status"] = "overlapping_splits"
        res["message"] = (f"splits share contexts ({', '.join(overlaps)}); scores would not be held out. "
                          "Mine the records again with disjoint splits")
        return res
    if res["n_activating"] < cfg.min_activating:
        res["status"] = "too_few_activating"
        res["message"] = (f"{res['n_activating']} activating contexts < min_activating={cfg.min_activating}; "
                          "capture more text or lower min_activating")
        return res
    if not (unit.test_top or unit.test_random):
        res["status"] = "no_test_records"
        res["message"] = "the unit has no test split; mine records with a test fraction > 0"
        return res
    simulator = _make_simulator(sim_llm, cfg)
    explainer = LLMExplainer(explainer_llm, temperature=cfg.explain_temperature,
                             max_records=cfg.max_train_records, max_tokens=cfg.explain_max_tokens,
                             few_shot=FEW_SHOT if cfg.few_shot else ())
    lookup = TokenLookupExplainer()

    async def llm_part() -> dict[str, Any]:
        if cfg.n_explanations > 1:
            expl = await best_of_n(explainer, simulator, unit, cfg.n_explanations)
        else:
            expl = (await explainer.aexplain(unit, 1))[0]
        if cfg.revise:
            expl = await revise(explainer, simulator, unit, expl, cfg.revise)
        return await _evaluate(expl, unit, simulator, sim_llm, cfg)

    async def baseline_part() -> dict[str, Any]:
        base = (await lookup.aexplain(unit))[0]
        return await _evaluate(base, unit, simulator, sim_llm, cfg)

    # The baseline does not wait for the LLM explanation.
    evals = await asyncio.gather(llm_part(), *([baseline_part()] if cfg.baseline else []))
    res["llm"] = evals[0]
    test = list(unit.test_top) + list(unit.test_random)
    table_sims = None
    if cfg.baseline:
        res["baseline"] = evals[1]
        table = await lookup.simulator(unit).asimulate_many("", [r.tokens for r in test])
        table_sims = [_activations(x) for x in table]
        s = score(test, table_sims, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
        res["lookup_table"] = {"correlation": s.correlation.to_dict(), "n_tokens": s.n_tokens}
    base_sims = res["baseline"].pop("_test_sims", None) if cfg.baseline else None
    res["llm"]["verdict"] = verdict(test, res["llm"].pop("_test_sims", None), base_sims, table_sims,
                                    n_bootstrap=cfg.n_bootstrap, seed=cfg.seed).to_dict()
    res["status"] = evals[0].get("status", "ok")
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _normalise_sources(units: Iterable[UnitSource]) -> list[tuple[str, Union[UnitRecords, Callable[[], UnitRecords]]]]:
    out: list[tuple[str, Union[UnitRecords, Callable[[], UnitRecords]]]] = []
    for u in units:
        if isinstance(u, UnitRecords):
            out.append((unit_key(u.hook, u.unit), u))
        else:
            name, src = u
            out.append((safe_id(name), src))
    keys = [k for k, _ in out]
    if len(set(keys)) != len(keys):
        raise ValueError("two units share a name; pass (name, records) pairs with distinct names")
    return out


NOT_INPUTS = ("out_dir", "progress", "max_units_in_flight", "executor", "ray_address")
"""Settings that do not change a unit's result (where and how fast it runs): not in its input key,
so a Ray run resumes a local one and vice versa."""


def unit_inputs(unit: UnitRecords, explainer_llm: LLM, simulator_llm: LLM | None,
                config: ExplainConfig) -> dict[str, Any]:
    """Everything that determines a unit's result, as fingerprints and names.

    A stored result is reused only when these are equal (see :func:`arun_explain`): the
    unit's records (tokens, activations, splits), the prompt templates, the explainer and
    simulator LLMs (backend, model, endpoint, weights) and the scoring settings.
    """
    settings = {k: v for k, v in asdict(config).items()
                if k not in NOT_INPUTS}
    sim = simulator_llm or explainer_llm
    return {
        "records": fingerprint(unit),
        "templates": {"explain": EXPLAIN_TEMPLATE.id, "simulate": SIMULATE_TEMPLATE.id,
                      "revise": REVISE_TEMPLATE.id},
        "explainer": explainer_llm.cache_identity(),
        "simulator": sim.cache_identity(),
        "settings": settings,
    }


async def _pending(key: str, src: Any, store: ResultStore, explainer_llm: LLM, simulator_llm: LLM | None,
                   config: ExplainConfig, retry_failed: bool,
                   bar: Any) -> tuple[UnitRecords, str, dict[str, Any]] | None:
    """``(unit, input_key, inputs)`` of a unit still to explain; None (and the bar moved on) when
    its stored result was computed from these inputs and is reused."""
    unit = src if isinstance(src, UnitRecords) else await asyncio.to_thread(src)
    inputs = unit_inputs(unit, explainer_llm, simulator_llm, config)
    input_key = fingerprint(inputs)
    if store.reusable(key, input_key, retry_failed) is None:
        return unit, input_key, inputs
    if bar is not None:
        bar.update(1)
    return None


async def arun_explain(
    units: Iterable[UnitSource],
    explainer_llm: LLM,
    config: ExplainConfig,
    *,
    simulator_llm: LLM | None = None,
    retry_failed: bool = False,
) -> ExplanationResults:
    """Awaitable :func:`run_explain` (use it inside a running event loop if you prefer)."""
    out_dir = Path(config.out_dir)
    with folder_lock(out_dir, "these explanations"):
        return await _run_locked(units, explainer_llm, config, simulator_llm, retry_failed, out_dir)


async def _run_locked(units: Iterable[UnitSource], explainer_llm: LLM, config: ExplainConfig,
                      simulator_llm: LLM | None, retry_failed: bool, out_dir: Path) -> ExplanationResults:
    check_executor(config.executor)
    (out_dir / "units").mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "config.json", asdict(config))
    sources = _normalise_sources(units)
    store, errors = unit_store(out_dir), unit_store(out_dir, "errors")
    # The stage's own record of its calls, tagged by unit (``ledger.jsonl``, no prompt text);
    # the caller's LLM keeps metering into its own ledger as well. Concurrency is capped by
    # the LLM layer (the endpoint's limiter), not here.
    ledger = Ledger(sink=out_dir / "ledger.jsonl")

    bar = calls_bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc="explain", unit="unit")
        calls_bar = tqdm(desc="LLM calls", unit="call")  # moves per request, not only per unit
        ledger.listeners.append(lambda stage, unit: calls_bar.update(1))

    def save(key: str, input_key: str, inputs: dict[str, Any], res: dict[str, Any]) -> None:
        res.update(id=key, key=key, input_key=input_key, provenance=inputs)
        res["llm_usage"] = res.pop("llm_usage", {})  # after the provenance, as it always was
        if res["status"] != "error":
            store.put(_clean(res))
            errors.remove(key)
        else:
            errors.put(_clean(res))
            store.remove(key)  # never leave an older result standing in for this one
        crashpoint("explain.unit")
        if bar is not None:
            bar.update(1)

    try:
        if config.executor == "ray":
            await _run_ray(sources, explainer_llm, simulator_llm, config, retry_failed, store, ledger, save, bar)
        else:
            await _run_local(sources, explainer_llm, simulator_llm, config, retry_failed, store, ledger, save, bar)
    finally:
        for b in (bar, calls_bar):
            if b is not None:
                b.close()
    keys = [k for k, _ in sources]
    results = load_results(out_dir, keys=keys, with_errors=True)
    write_json_atomic(out_dir / "ledger_summary.json", usage_summary(results))
    return ExplanationResults.from_dicts(results, out_dir)


async def _explain_metered(unit: UnitRecords, key: str, ex_meter: MeteredLLM, sim_meter: MeteredLLM | None,
                           config: ExplainConfig) -> dict[str, Any]:
    """One unit's result with its LLM usage (``llm_usage``); a bug is recorded as status ``error``."""
    ex = ex_meter.tagged(unit=key)
    sim = sim_meter.tagged(unit=f"{key}#simulator") if sim_meter is not None else None
    try:
        res = await explain_unit(unit, ex, config, simulator_llm=sim)
    except TLConceptsError:
        raise  # a wrong key, an unreachable endpoint, a bad setting: stops the run
    except Exception as e:  # a bug hit by one unit: recorded (with its type), retried next run
        res = {"version": RESULT_VERSION, "hook": unit.hook, "unit": unit.unit, "status": "error",
               "message": f"{type(e).__name__}: {e}"}
    res["llm_usage"] = {"explainer": _stage_usage(ex_meter.ledger, key),
                        **({"simulator": _stage_usage(sim_meter.ledger, f"{key}#simulator")}
                           if sim_meter is not None else {})}
    return res


async def _run_local(sources: list[tuple[str, Any]], explainer_llm: LLM, simulator_llm: LLM | None,
                     config: ExplainConfig, retry_failed: bool, store: ResultStore, ledger: Ledger,
                     save: Callable[[str, str, dict[str, Any], dict[str, Any]], None], bar: Any) -> None:
    unit_slots = asyncio.Semaphore(config.max_units_in_flight)
    ex_meter = MeteredLLM(explainer_llm, ledger)
    sim_meter = MeteredLLM(simulator_llm, ledger) if simulator_llm is not None else None

    async def one(key: str, src: Any) -> None:
        async with unit_slots:
            todo = await _pending(key, src, store, explainer_llm, simulator_llm, config, retry_failed, bar)
            if todo is not None:
                unit, input_key, inputs = todo
                save(key, input_key, inputs, await _explain_metered(unit, key, ex_meter, sim_meter, config))

    tasks = [asyncio.ensure_future(one(k, s)) for k, s in sources]
    try:
        if tasks:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for t in tasks:
                exc = t.exception() if t.done() and not t.cancelled() else None
                if exc is not None:
                    raise exc
    finally:
        for t in tasks:
            t.cancel()


@dataclass(frozen=True)
class _RayContext:
    """Builds a Ray worker's explainer and simulator LLMs (picklable recipes)."""

    explainer: Callable[[], LLM]
    simulator: Callable[[], LLM] | None

    def __call__(self) -> tuple[LLM, LLM | None]:
        return self.explainer(), self.simulator() if self.simulator is not None else None


def _explain_on_worker(item: tuple[str, UnitRecords, ExplainConfig], ctx: tuple[LLM, LLM | None]
                       ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None] | Stopped:
    """A Ray task: one unit's result, with the explainer's and simulator's usage."""
    key, unit, config = item
    ex_m, sim_m = WorkerMeter(), (WorkerMeter() if ctx[1] is not None else None)
    try:
        res = run_sync(_explain_metered(unit, key, ex_m.wrap(ctx[0]),
                                        sim_m.wrap(ctx[1]) if sim_m is not None else None, config))
    except TLConceptsError as e:
        return Stopped(e, [ex_m.export(), sim_m.export() if sim_m is not None else None])
    finally:
        ex_m.export()
        if sim_m is not None:
            sim_m.export()
    return res, ex_m.export(), sim_m.export() if sim_m is not None else None


async def _run_ray(sources: list[tuple[str, Any]], explainer_llm: LLM, simulator_llm: LLM | None,
                   config: ExplainConfig, retry_failed: bool, store: ResultStore, ledger: Ledger,
                   save: Callable[[str, str, dict[str, Any], dict[str, Any]], None], bar: Any) -> None:
    """Units as Ray tasks, each result saved as it arrives (same keys and files as locally)."""
    todo: list[tuple[str, UnitRecords, ExplainConfig]] = []
    inputs_of: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, src in sources:
        pending = await _pending(key, src, store, explainer_llm, simulator_llm, config, retry_failed, bar)
        if pending is None:
            continue
        unit, input_key, inputs = pending
        inputs_of[key] = (input_key, inputs)
        todo.append((key, unit, config))
    if not todo:
        return
    setup = _RayContext(llm_recipe(explainer_llm, config.ray_address),
                        llm_recipe(simulator_llm, config.ray_address) if simulator_llm is not None else None)
    ex_ledger, sim_ledger = getattr(explainer_llm, "ledger", None), getattr(simulator_llm, "ledger", None)

    def consume() -> None:
        for i, out in imap_items(_explain_on_worker, todo, setup=setup, executor="ray",
                                 ray_address=config.ray_address, ordered=False):
            ex_usage, sim_usage = out.usages if isinstance(out, Stopped) else out[1:]
            absorb_usage(ex_usage, [ledger, ex_ledger])
            if sim_usage is not None:
                absorb_usage(sim_usage, [ledger, sim_ledger])
            if isinstance(out, Stopped):
                raise out.error  # a wrong key, an unreachable endpoint: stops the run, as locally
            res = out[0]
            key = todo[i][0]
            save(key, *inputs_of[key], res)

    await asyncio.to_thread(consume)


def _stage_usage(ledger: Ledger, unit: str) -> dict[str, dict[str, int]]:
    """A unit's requests, tokens, cache hits and failures per stage (explain, simulate, ...)."""
    out = {}
    for stage, u in ledger.units():
        if u == unit:
            x = ledger.usage(stage=stage, unit=unit)
            out[stage] = {"requests": int(x["requests"]), "calls": int(x["calls"]),
                          "prompt_tokens": int(x["prompt_tokens"]), "completion_tokens": int(x["completion_tokens"]),
                          "cached": int(x["cache_hits"]), "failures": int(sum(x["failures"].values()))}
    return out


def usage_summary(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """LLM calls, tokens, cache hits and failures per stage, summed over unit results."""
    total: dict[str, dict[str, int]] = {}
    for r in results:
        for role in (r.get("llm_usage") or {}).values():
            for stage, u in role.items():
                t = total.setdefault(stage, {})
                for k, v in u.items():
                    t[k] = t.get(k, 0) + int(v)
    return total


def run_explain(
    units: Iterable[UnitSource],
    explainer_llm: LLM,
    config: ExplainConfig,
    *,
    simulator_llm: LLM | None = None,
    retry_failed: bool = False,
) -> ExplanationResults:
    """Explain, simulate and score every unit; one JSON file per unit in ``config.out_dir``.

    ``units``: :class:`UnitRecords`, or ``(name, records_or_loader)`` pairs (a loader is
    called when the unit starts, e.g. ``lambda: store.unit_records(hook, 3)``).

    Resume: a unit's stored result is reused only when it was computed from the same inputs
    (:func:`unit_inputs`: records, prompt templates, LLMs, settings); otherwise it is
    recomputed. Units that failed for a transient LLM reason (rate limits, 5xx, timeouts)
    are retried on the next run; other failures are kept with their reason unless
    ``retry_failed``. A fatal LLM error (wrong key, unreachable endpoint) stops the run with
    :class:`tl_concepts.errors.LLMError`. A unit that hit a bug is listed with status
    ``error`` (details in ``errors/``) and retried on the next run.

    Works in scripts and inside a running event loop (Jupyter); ``await arun_explain(...)``
    is the awaitable twin.

    Example:
        >>> res = run_explain([unit], get_llm("in-process"), ExplainConfig("runs/x"))  # doctest: +SKIP
        >>> res[0].correlation, res.to_pandas().columns[:4]                          # doctest: +SKIP
    """
    return run_sync(arun_explain(units, explainer_llm, config, simulator_llm=simulator_llm,
                                 retry_failed=retry_failed))


def check_units(store: Any, hook: str, units: Sequence[int]) -> list[int]:
    """The unit indices, checked against the store before any work starts.

    Raises :class:`~tl_concepts.errors.InputError` for a hook the store lacks or an index
    outside ``0..d-1``.
    """
    hooks = list(store.hooks)
    if hook not in hooks:
        raise InputError(f"hook {hook!r} is not in the store {store.path}; it has: {', '.join(hooks)}")
    d = int(store.d(hook))
    out = [int(u) for u in units]
    bad = [u for u in out if not 0 <= u < d]
    if bad:
        raise InputError(f"unit {bad[0]} is out of range for {hook}: it has {d} units (0..{d - 1}); "
                         f"pick units like 0:{min(d, 50)}")
    if not out:
        raise InputError("no units given; pick units like 0:50")
    return out


def explain_store(
    store: Any,
    hook: str,
    units: Sequence[int],
    explainer_llm: LLM,
    config: ExplainConfig,
    *,
    simulator_llm: LLM | None = None,
    retry_failed: bool = False,
) -> ExplanationResults:
    """:func:`run_explain` over ``store.unit_records(hook, u)`` for each unit index (loaded lazily).

    Example:
        >>> explain_store(store, "blocks.5.mlp.hook_post", range(50), llm, ExplainConfig("runs/l5"))  # doctest: +SKIP
    """
    sources = [(unit_key(hook, u), (lambda u=u: store.unit_records(hook, int(u))))
               for u in check_units(store, hook, units)]
    res = run_explain(sources, explainer_llm, config, simulator_llm=simulator_llm, retry_failed=retry_failed)
    res.store = str(store.path)
    return res


def explain_model(
    model: Any,
    texts: Sequence[str],
    hook: str,
    units: Sequence[int],
    explainer_llm: LLM,
    config: ExplainConfig,
    *,
    ctx_len: int = 64,
    exemplars: Any = None,
    simulator_llm: LLM | None = None,
) -> ExplanationResults:
    """:func:`run_explain` on a live TransformerLens model.

    Captures ``hook`` over ``texts`` into ``<out_dir>/store`` with
    :func:`tl_concepts.capture.capture` (texts are split into ``ctx_len``-token contexts,
    never cut; the capture resumes like any other) and explains the units from that store.
    ``exemplars``: a :class:`tl_concepts.capture.ExemplarConfig` (default: its defaults).

    Example:
        >>> explain_model(model, texts, "blocks.5.mlp.hook_post", range(10), llm,
        ...               ExplainConfig("runs/live"))                           # doctest: +SKIP
    """
    from tl_concepts.capture import ExemplarConfig, capture

    store = capture(model, list(texts), [hook], Path(config.out_dir) / "store", context_tokens=ctx_len,
                    exemplars=exemplars or ExemplarConfig(), progress=config.progress)
    return explain_store(store, hook, list(units), explainer_llm, config, simulator_llm=simulator_llm)


def check_units_for_model(model: Any, hook: str, units: Sequence[int]) -> None:
    """Check unit indices against a live model's width at ``hook`` before capturing
    (MLP hooks: ``d_mlp``; attention ``hook_z``/``hook_q``...: skipped; else ``d_model``)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return
    if ".mlp." in hook or hook.endswith(("hook_mlp_in", "hook_pre", "hook_post")):
        d = getattr(cfg, "d_mlp", None)
    elif ".attn." in hook:
        return
    else:
        d = getattr(cfg, "d_model", None)
    if not d:
        return
    bad = [int(u) for u in units if not 0 <= int(u) < int(d)]
    if bad:
        raise InputError(f"unit {bad[0]} is out of range for {hook}: it has {d} units (0..{int(d) - 1}); "
                         f"pick units like 0:{min(int(d), 50)}")


def parse_units(spec: str) -> list[int]:
    """Unit indices from a CLI spec: ``"0:50"`` (half-open range), ``"3,7,9"``, or both
    (``"0:10,42"``).

    Example:
        >>> parse_units("0:3,7")
        [0, 1, 2, 7]
    """
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            a, b = part.split(":", 1)
            try:
                lo, hi = int(a or 0), int(b)
            except ValueError:
                raise ConfigError(f"bad unit range {part!r}; write it as START:STOP, e.g. 0:50") from None
            out.extend(range(lo, hi))
        else:
            try:
                out.append(int(part))
            except ValueError:
                raise ConfigError(f"bad unit {part!r}; give indices like 0:50 or 3,7,9") from None
    if not out:
        raise ConfigError(f"no units in {spec!r}; give indices like 0:50 or 3,7,9")
    return out


def load_results(out_dir: str | os.PathLike, keys: Sequence[str] | None = None,
                 with_errors: bool = False) -> list[dict[str, Any]]:
    """Unit result dicts in ``out_dir/units`` (all, or those in ``keys`` that exist, in that
    order); with ``with_errors``, units that hit a bug (``errors/``) are included in place."""
    return load_unit_dicts(out_dir, keys, with_errors=with_errors)


def _corr(res: dict[str, Any], which: str, split: str = "all") -> float | None:
    e = res.get(which) or {}
    try:
        return e["scores"][split]["correlation"]["value"]
    except (KeyError, TypeError):
        return None


def summary_table(results_or_dir: str | os.PathLike | ExplanationResults | Sequence[dict[str, Any]], *,
                  max_rows: int = 50) -> str:
    """Text table: per unit the LLM explanation, its test correlation, the baseline's and the
    lookup table's, and the paired-bootstrap verdict; then mean correlations, verdict counts
    (from intervals, not point estimates) and status counts.

    Example:
        >>> print(summary_table("runs/explain-l5"))   # doctest: +SKIP
    """
    if isinstance(results_or_dir, (str, os.PathLike)):
        results = load_results(results_or_dir)
    elif isinstance(results_or_dir, ExplanationResults):
        results = results_or_dir.to_dicts()
    else:
        results = list(results_or_dir)
    f = lambda v: "   -  " if v is None else f"{v:+.3f}"  # noqa: E731
    lines = [f"{'unit':<28} {'status':<19} {'llm r':>7} {'rand r':>7} {'base r':>7} {'table r':>7} "
             f"{'verdict':<16}  explanation"]
    for r in results[:max_rows]:
        expl = ((r.get("llm") or {}).get("explanation") or {}).get("text") or ""
        table = (r.get("lookup_table") or {}).get("correlation", {}).get("value")
        v = ((r.get("llm") or {}).get("verdict") or {}).get("label") or "-"
        lines.append(f"{str(r.get('id', r.get('key', r.get('unit')))):<28.28} {r.get('status', '?'):<19.19} "
                     f"{f(_corr(r, 'llm')):>7} {f(_corr(r, 'llm', 'random')):>7} {f(_corr(r, 'baseline')):>7} "
                     f"{f(table):>7} {v:<16.16}  {expl[:60]}")
    if len(results) > max_rows:
        lines.append(f"... {len(results) - max_rows} more units")
    both = [(a, b) for a, b in ((_corr(r, "llm"), _corr(r, "baseline")) for r in results)
            if a is not None and b is not None]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    lines.append("")
    if both:
        a = np.array(both)
        lines.append(f"units scored by both: {len(both)}; mean test correlation (top+random): "
                     f"LLM {a[:, 0].mean():+.3f}  baseline {a[:, 1].mean():+.3f}")
    verdicts = [(r.get("llm") or {}).get("verdict") for r in results if r.get("llm")]
    if verdicts:
        lines.append(count_verdicts(verdicts))
    lines.append("status: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)
