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
5. writes ``units/<hook>.<unit>.json`` atomically (temp file + ``os.replace``).

A rerun skips units whose file exists. LLM calls go through a shared concurrency cap and
into ``ledger.jsonl`` (no prompt text, no secrets). :func:`summary_table` prints the LLM
explainer against the baseline.

Example:
    >>> from tl_concepts.llm import get_llm                          # doctest: +SKIP
    >>> cfg = ExplainConfig(out_dir="runs/explain-l5")                # doctest: +SKIP
    >>> results = run_explain(units, get_llm("in-process"), cfg)      # doctest: +SKIP
    >>> print(summary_table(cfg.out_dir))                             # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.llm.base import LLM
from tl_concepts.explain.calibration import LinearCalibration
from tl_concepts.explain.detection import DetectionScorer, FuzzingScorer
from tl_concepts.explain.explainers import Explanation, LLMExplainer, TokenLookupExplainer, best_of_n
from tl_concepts.explain.ledger import UnitMeter
from tl_concepts.explain.prompts import EXPLAIN_TEMPLATE, FEW_SHOT, SIMULATE_TEMPLATE
from tl_concepts.explain.scoring import score
from tl_concepts.explain.simulators import AllAtOnceSimulator, JsonSimulator, Simulator
from tl_concepts.explain.units import n_activating, split_overlaps
from tl_concepts.atomic import write_json

UnitSource = Union[UnitRecords, tuple[str, Union[UnitRecords, Callable[[], UnitRecords]]]]

RESULT_VERSION = 1


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
    """Show the few-shot example neurons in explanation and simulation prompts (False
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
    max_concurrency: int = 8
    """LLM requests in flight at once (across all units)."""
    max_units_in_flight: int = 64
    """Units processed at once."""
    save_simulations: bool = True
    """Keep per-record true and simulated activations in the unit files."""
    progress: bool = True
    """Show a tqdm progress bar."""


def unit_key(hook: str, unit: int | str) -> str:
    """File-name-safe key of a unit, e.g. ``blocks.5.mlp.hook_post.17``."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{hook}.{unit}")


def unit_path(out_dir: str | os.PathLike, key: str) -> Path:
    """Where a unit's result file lives."""
    return Path(out_dir) / "units" / f"{key}.json"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to a temp file in the same folder, then ``os.replace`` it."""
    write_json(path, obj, indent=1, ensure_ascii=True, allow_nan=False, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


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
    raw = [s.activations for s in test_sims]
    calibration = (LinearCalibration.fit(cal, [s.activations for s in cal_sims])
                   if cal_sims else LinearCalibration())
    calibrated = [calibration.apply(a) for a in raw]
    kw = dict(n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    s_all = score(test, raw, **kw)
    s_all_cal = score(test, calibrated, **kw)
    scores: dict[str, Any] = {
        "all": {"correlation": s_all.correlation.to_dict(), "r_squared": s_all_cal.r_squared.to_dict(),
                "abs_dev_explained": s_all_cal.abs_dev_explained.to_dict(),
                "n_records": s_all.n_records, "n_tokens": s_all.n_tokens},
    }
    if unit.test_random:
        s_r = score(test[n_top:], raw[n_top:], **kw)
        s_r_cal = score(test[n_top:], calibrated[n_top:], **kw)
        scores["random"] = {"correlation": s_r.correlation.to_dict(), "r_squared": s_r_cal.r_squared.to_dict(),
                            "abs_dev_explained": s_r_cal.abs_dev_explained.to_dict(),
                            "n_records": s_r.n_records, "n_tokens": s_r.n_tokens}
    out["status"] = "ok"
    out["scores"] = scores
    out["calibration"] = calibration.to_dict()
    if cfg.save_simulations:
        out["simulations"] = [{"split": "test_top" if i < n_top else "test_random", "doc": r.doc,
                               "start": r.start, "tokens": r.tokens, "true": r.activations, "simulated": a}
                              for i, (r, a) in enumerate(zip(test, raw))]
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
                      "few_shot": cfg.few_shot},
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
        return await _evaluate(expl, unit, simulator, sim_llm, cfg)

    async def baseline_part() -> dict[str, Any]:
        base = (await lookup.aexplain(unit))[0]
        return await _evaluate(base, unit, simulator, sim_llm, cfg)

    # The baseline does not wait for the LLM explanation.
    evals = await asyncio.gather(llm_part(), *([baseline_part()] if cfg.baseline else []))
    res["llm"] = evals[0]
    if cfg.baseline:
        res["baseline"] = evals[1]
        test = list(unit.test_top) + list(unit.test_random)
        table = await lookup.simulator(unit).asimulate_many("", [r.tokens for r in test])
        s = score(test, [x.activations for x in table], n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
        res["lookup_table"] = {"correlation": s.correlation.to_dict(), "n_tokens": s.n_tokens}
    res["status"] = evals[0].get("status", "ok")
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _normalise_sources(units: Iterable[UnitSource]) -> list[tuple[str, Union[UnitRecords, Callable[[], UnitRecords]]]]:
    out = []
    for u in units:
        if isinstance(u, UnitRecords):
            out.append((unit_key(u.hook, u.unit), u))
        else:
            name, src = u
            out.append((re.sub(r"[^A-Za-z0-9_.\-]", "_", str(name)), src))
    keys = [k for k, _ in out]
    if len(set(keys)) != len(keys):
        raise ValueError("two units share a name; pass (name, records) pairs with distinct names")
    return out


async def arun_explain(
    units: Iterable[UnitSource],
    explainer_llm: LLM,
    config: ExplainConfig,
    *,
    simulator_llm: LLM | None = None,
) -> list[dict[str, Any]]:
    """Async :func:`run_explain`."""
    out_dir = Path(config.out_dir)
    (out_dir / "units").mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "config.json", asdict(config))
    sources = _normalise_sources(units)
    todo = [(k, s) for k, s in sources if not unit_path(out_dir, k).exists()]
    cap = asyncio.Semaphore(config.max_concurrency)
    unit_slots = asyncio.Semaphore(config.max_units_in_flight)
    ledger = out_dir / "ledger.jsonl"

    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), initial=len(sources) - len(todo), desc="explain", unit="unit")

    async def one(key: str, src: Any) -> None:
        async with unit_slots:
            unit = src if isinstance(src, UnitRecords) else await asyncio.to_thread(src)
            ex = UnitMeter(explainer_llm, cap, ledger_path=ledger, unit=key)
            sim = UnitMeter(simulator_llm, cap, ledger_path=ledger, unit=key) if simulator_llm else None
            try:
                res = await explain_unit(unit, ex, config, simulator_llm=sim)
            except Exception as e:  # a crash of one unit is recorded and does not stop the run
                res = {"version": RESULT_VERSION, "hook": unit.hook, "unit": unit.unit, "status": "error",
                       "message": f"{type(e).__name__}: {e}"}
            res["key"] = key
            res["llm_usage"] = {"explainer": ex.usage_dict(), **({"simulator": sim.usage_dict()} if sim else {})}
            if res["status"] != "error":  # errors are retried on the next run
                write_json_atomic(unit_path(out_dir, key), _clean(res))
            else:
                write_json_atomic(out_dir / "errors" / f"{key}.json", _clean(res))
            if bar is not None:
                bar.update(1)

    try:
        await asyncio.gather(*(one(k, s) for k, s in todo))
    finally:
        if bar is not None:
            bar.close()
    results = load_results(out_dir, keys=[k for k, _ in sources])
    write_json_atomic(out_dir / "ledger_summary.json", usage_summary(results))
    return results


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
) -> list[dict[str, Any]]:
    """Explain, simulate and score every unit; one JSON file per unit in ``config.out_dir``.

    ``units``: :class:`UnitRecords`, or ``(name, records_or_loader)`` pairs (a loader is
    called when the unit starts, e.g. ``lambda: store.unit_records(hook, 3)``). Units
    whose file exists are skipped (resume). Returns every unit's result (loaded from disk,
    in input order; units that crashed are in ``errors/`` and missing here).

    Example:
        >>> res = run_explain([unit], get_llm("in-process"), ExplainConfig("runs/x"))  # doctest: +SKIP
        >>> res[0]["llm"]["scores"]["all"]["correlation"]["value"]                  # doctest: +SKIP
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_explain(units, explainer_llm, config, simulator_llm=simulator_llm))
    raise RuntimeError("run_explain called inside a running event loop (e.g. Jupyter); use "
                       "`await arun_explain(...)` instead")


def explain_store(
    store: Any,
    hook: str,
    units: Sequence[int],
    explainer_llm: LLM,
    config: ExplainConfig,
    *,
    simulator_llm: LLM | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_explain` over ``store.unit_records(hook, u)`` for each unit index (loaded lazily).

    Example:
        >>> explain_store(store, "blocks.5.mlp.hook_post", range(50), llm, ExplainConfig("runs/l5"))  # doctest: +SKIP
    """
    sources = [(unit_key(hook, u), (lambda u=u: store.unit_records(hook, int(u)))) for u in units]
    return run_explain(sources, explainer_llm, config, simulator_llm=simulator_llm)


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
) -> list[dict[str, Any]]:
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
                raise ValueError(f"bad unit range {part!r}; write it as START:STOP, e.g. 0:50") from None
            out.extend(range(lo, hi))
        else:
            try:
                out.append(int(part))
            except ValueError:
                raise ValueError(f"bad unit {part!r}; give indices like 0:50 or 3,7,9") from None
    if not out:
        raise ValueError(f"no units in {spec!r}; give indices like 0:50 or 3,7,9")
    return out


def load_results(out_dir: str | os.PathLike, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Unit results in ``out_dir/units`` (all, or those in ``keys`` that exist, in that order)."""
    d = Path(out_dir) / "units"
    if keys is None:
        paths = sorted(d.glob("*.json"))
    else:
        paths = [unit_path(out_dir, k) for k in keys if unit_path(out_dir, k).exists()]
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def _corr(res: dict[str, Any], which: str, split: str = "all") -> float | None:
    e = res.get(which) or {}
    try:
        return e["scores"][split]["correlation"]["value"]
    except (KeyError, TypeError):
        return None


def summary_table(results_or_dir: str | os.PathLike | Sequence[dict[str, Any]], *, max_rows: int = 50) -> str:
    """Text table: per unit the LLM explanation and its test correlation next to the
    baseline's, then means over units where both were scored, and status counts.

    Example:
        >>> print(summary_table("runs/explain-l5"))   # doctest: +SKIP
    """
    results = load_results(results_or_dir) if isinstance(results_or_dir, (str, os.PathLike)) else list(results_or_dir)
    f = lambda v: "   -  " if v is None else f"{v:+.3f}"  # noqa: E731
    lines = [f"{'unit':<28} {'status':<19} {'llm r':>7} {'rand r':>7} {'base r':>7} {'table r':>7}  explanation"]
    for r in results[:max_rows]:
        expl = ((r.get("llm") or {}).get("explanation") or {}).get("text") or ""
        table = (r.get("lookup_table") or {}).get("correlation", {}).get("value")
        lines.append(f"{str(r.get('key', r.get('unit'))):<28.28} {r.get('status', '?'):<19.19} "
                     f"{f(_corr(r, 'llm')):>7} {f(_corr(r, 'llm', 'random')):>7} {f(_corr(r, 'baseline')):>7} "
                     f"{f(table):>7}  {expl[:60]}")
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
                     f"LLM {a[:, 0].mean():+.3f}  baseline {a[:, 1].mean():+.3f}; "
                     f"LLM better on {int((a[:, 0] > a[:, 1]).sum())}/{len(both)}")
    lines.append("status: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)
