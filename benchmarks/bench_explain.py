"""Explain benchmarks: batched simulation, concurrency against a slow endpoint, SmolLM2 scores.

Prints measured figures (not a test). Usage:

    .venv/bin/python benchmarks/bench_explain.py simulate  [--records 20 --tokens 64]
    .venv/bin/python benchmarks/bench_explain.py standin   [--units 100 --latency 0.2 --concurrency 16]
    .venv/bin/python benchmarks/bench_explain.py smollm2   [--units 50 --layer 5 --docs 120]

1. ``simulate``: one unit simulated on R records x T tokens with the in-process backend
   (embedded SmolLM2): forward passes, wall time, and the compute floor (one forward over
   the prompts' common prefix plus batched forwards over the record parts alone); ends
   with ``floor ratio: floor/wall``. ``--kind detection`` does the same for detection
   prompts; ``--no-prefix-cache`` recomputes every prompt from its start (the old path).
   The ratio is of process CPU time with one torch thread (wall time on a shared machine
   swings by 2x between runs); the wall-time ratio is printed too.
2. ``standin``: N planted units explained, simulated (calibration + test, LLM explanation
   and baseline) and scored (correlation, detection, fuzzing) through the real ``openai``
   client against the stand-in server (separate process) answering after ``latency``
   seconds, with a concurrency cap C: wall time against the ideal
   ``ceil(requests / C) * latency``.
3. ``smollm2``: capture ``blocks.L.mlp.hook_post`` of SmolLM2-135M over Lee documents,
   then explain and score the first N neurons with the embedded explainer and simulator
   (SmolLM2 itself): mean and distribution of the test correlation, LLM explainer vs the
   token-lookup baseline (through the same simulator) and the lookup table (no LLM).
   Resumable: rerun with the same ``--out`` to continue.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tl_concepts.explain import ExplainConfig, run_explain, summary_table  # noqa: E402
from tl_concepts.explain.simulators import AllAtOnceSimulator  # noqa: E402


def _floor_seconds(llm, prompts: list[str], batch_size: int, extra: list[int] | None = None) -> tuple:
    """The compute floor of scoring ``prompts`` with one explanation: one forward over
    their common token prefix plus batched forwards over each prompt's remaining tokens
    alone (no prefix, no LM head). Returns ((wall s, CPU s), prefix tokens, suffix tokens)."""
    import torch

    ids = [llm.tokenizer(p)["input_ids"] for p in prompts]
    common = min(len(x) for x in ids)
    for x in ids[1:]:
        common = min(common, next((i for i, (a, b) in enumerate(zip(ids[0], x)) if a != b), common))
    common = min(common, min(len(x) for x in ids) - 1)
    base = llm.hf_model.base_model
    pad = llm._pad_id()
    extra = extra or [0] * len(ids)
    # ``extra``: tokens appended per prompt (a multi-token candidate's later tokens per slot)
    suffixes = sorted((x[common:] + x[common:common + 1] * e for x, e in zip(ids, extra)), key=len)
    with torch.inference_mode():
        t0, c0 = time.perf_counter(), time.process_time()
        if common:
            base(input_ids=torch.tensor([ids[0][:common]]), use_cache=False)
        for i in range(0, len(suffixes), batch_size):
            chunk = suffixes[i:i + batch_size]
            T = max(len(x) for x in chunk)
            inp = torch.full((len(chunk), T), pad)
            mask = torch.zeros((len(chunk), T), dtype=torch.long)
            for r, x in enumerate(chunk):
                inp[r, :len(x)] = torch.tensor(x)
                mask[r, :len(x)] = 1
            base(input_ids=inp, attention_mask=mask, use_cache=False)
        return (time.perf_counter() - t0, time.process_time() - c0), common, sum(len(x) for x in suffixes)


def bench_simulate(args: argparse.Namespace) -> dict:
    """Simulation (or detection) of one unit's records: wall time against the floor."""
    from tests.helpers.explain_fakes import planted_unit

    from tl_concepts.explain.prompts import detection_prompt, simulation_prompt
    from tl_concepts.llm import InProcessBackend

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    llm = InProcessBackend(batch_size=args.batch_size, prefix_cache=not args.no_prefix_cache)
    llm.hf_model
    unit = planted_unit("weekday", seed=0, n_top=args.records, n_random=0)
    recs = []
    for r in unit.test_top:
        toks = (r.tokens * (args.tokens // len(r.tokens) + 1))[: args.tokens]
        recs.append(toks)
    sim = AllAtOnceSimulator(llm, few_shot=() if args.no_few_shot else AllAtOnceSimulator(llm).few_shot)
    explanations = ["days of the week", "names of weekdays such as Monday or Friday"]

    async def detect(expl: str) -> list:
        ps = [detection_prompt(expl, t) for t in recs]
        return await asyncio.gather(*(llm.anext_token_distributions(p, [len(p)], ["0", "1"]) for p in ps))

    def run(expl: str) -> list:
        if args.kind == "detection":
            return asyncio.run(detect(expl))
        return asyncio.run(sim.asimulate_many(expl, recs))

    def prompts(expl: str) -> list[str]:
        if args.kind == "detection":
            return [detection_prompt(expl, t) for t in recs]
        return [simulation_prompt(expl, t, few_shot=sim.few_shot).text for t in recs]

    asyncio.run(sim.asimulate_many("warm-up", [recs[0][:4]]))  # warm-up (mask checks)
    walls, floors, cpus, cpu_floors, cpu_floors_ext, passes = [], [], [], [], [], 0
    n_cont = sum(len(llm.tokenizer(c, add_special_tokens=False)["input_ids"]) - 1
                 for c in (sim.candidates if args.kind == "simulation" else ["0", "1"]))
    for rep in range(args.repeat):
        expl = explanations[rep % len(explanations)] + ("" if rep < len(explanations) else f" ({rep})")
        before = llm.forward_passes
        t0, c0 = time.perf_counter(), time.process_time()
        out = run(expl)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        passes = llm.forward_passes - before
        (f, fc), prefix_tokens, suffix_tokens = _floor_seconds(llm, prompts(expl), args.batch_size)
        floors.append(f)
        cpu_floors.append(fc)
        slots = [len(t) if args.kind == "simulation" else 1 for t in recs]
        (_, fce), _, _ = _floor_seconds(llm, prompts(expl), args.batch_size, [n_cont * k for k in slots])
        cpu_floors_ext.append(fce)
    ok = all((s.ok if hasattr(s, "ok") else s.failure is None) for s in out)
    wall, floor = min(walls), min(floors)
    cpu, cpu_floor = min(cpus), min(cpu_floors)
    result = {"kind": args.kind, "records": len(recs), "tokens_per_record": args.tokens,
              "prefix_cache": llm.prefix_cache and bool(llm._prefix_ok),
              "backend_batch_size": llm.batch_size, "forward_passes": passes,
              "prefix_passes": llm.prefix_passes, "prefix_tokens_computed": llm.prefix_tokens_computed,
              "common_prefix_tokens": prefix_tokens, "suffix_tokens": suffix_tokens,
              "all_ok": ok, "wall_s": round(wall, 2), "floor_s": round(floor, 2),
              "walls_s": [round(w, 2) for w in walls], "floors_s": [round(f, 2) for f in floors],
              "cpu_s": round(cpu, 2), "cpu_floor_s": round(cpu_floor, 2), "torch_threads": torch.get_num_threads(),
              "continuation_tokens_per_slot": n_cont,
              "cpu_floor_with_continuations_s": round(min(cpu_floors_ext), 2),
              "s_per_record": round(wall / len(recs), 3)}
    print(json.dumps(result, indent=1))
    print(f"floor ratio (wall time, noisy on a shared machine): {floor / wall:.2f}")
    print(f"floor ratio counting the multi-token candidates' continuation tokens: {min(cpu_floors_ext) / cpu:.2f}")
    print(f"floor ratio: {cpu_floor / cpu:.2f}")
    return {}


def bench_standin(args: argparse.Namespace) -> dict:
    from tests.helpers.explain_fakes import planted_unit

    from tl_concepts.llm import Limiter, OpenAIBackend

    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.openai_server", "--latency", str(args.latency)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        base_url = json.loads(proc.stdout.readline())["base_url"]
        classes = ["weekday", "digit", "past"]
        units = [planted_unit(classes[i % 3], unit=i, seed=i, n_top=2, n_random=2) for i in range(args.units)]
        llm = OpenAIBackend("standin-model", base_url=base_url, api_key="sk-bench",
                            limiter=Limiter(max_concurrency=args.concurrency))
        with tempfile.TemporaryDirectory() as d:
            cfg = ExplainConfig(out_dir=d, max_concurrency=args.concurrency, n_bootstrap=100, progress=False)
            t0, c0 = time.perf_counter(), time.process_time()
            res = run_explain(units, llm, cfg)
            wall, client_cpu = time.perf_counter() - t0, time.process_time() - c0
            ledger = [json.loads(x) for x in (Path(d) / "ledger.jsonl").read_text().splitlines()]
        stats = json.loads(urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/_standin/stats").read())
    finally:
        proc.terminate()
        proc.wait()
    server_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server_cpu.ru_utime + server_cpu.ru_stime
    n_http = int(stats.get("requests", 0))
    ideal = math.ceil(n_http / args.concurrency) * args.latency
    return {"units": args.units, "ok_units": sum(r["status"] == "ok" for r in res),
            "llm_calls": len(ledger), "http_requests": n_http, "server_stats": stats,
            "latency_s": args.latency, "concurrency_cap": args.concurrency,
            "wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "wall_over_ideal": round(wall / ideal, 3),
            "client_cpu_s": round(client_cpu, 1), "server_cpu_s": round(server_cpu, 1),
            "cpu_ms_per_request": round(1000 * (client_cpu + server_cpu) / max(n_http, 1), 1),
            "load_avg_1m": round(os.getloadavg()[0], 1), "cpu_cores": os.cpu_count()}


def _dist(values: list[float]) -> dict:
    a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not a.size:
        return {"n": 0}
    q = np.quantile(a, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {"n": int(a.size), "mean": round(float(a.mean()), 3),
            "p10": round(float(q[0]), 3), "p25": round(float(q[1]), 3), "median": round(float(q[2]), 3),
            "p75": round(float(q[3]), 3), "p90": round(float(q[4]), 3),
            "share_ge_0.3": round(float((a >= 0.3).mean()), 3)}


def bench_smollm2(args: argparse.Namespace) -> dict:
    from tl_concepts import models
    from tl_concepts.capture import ActivationStore, ExemplarConfig, capture
    from tl_concepts.corpus import lee_corpus
    from tl_concepts.explain import explain_store
    from tl_concepts.llm import InProcessBackend

    out = Path(args.out)
    hook = f"blocks.{args.layer}.mlp.hook_post"
    store_dir = out / "store"
    t0 = time.perf_counter()
    if (store_dir / "manifest.json").exists() and ActivationStore.open(store_dir).complete:
        store = ActivationStore.open(store_dir)
    else:
        model = models.load("smollm2-135m")
        ex = ExemplarConfig(n_train_top=5, n_calibration_top=2, n_test_top=3, n_train_random=0,
                            n_calibration_random=2, n_test_random=3, n_quantile_bins=0, n_per_quantile=0)
        store = capture(model, lee_corpus().head(args.docs), [hook], store_dir, context_tokens=args.ctx,
                        exemplars=ex, progress=False)
        del model
    t_capture = time.perf_counter() - t0
    llm = InProcessBackend(batch_size=16)
    cfg = ExplainConfig(out_dir=str(out / "explain"), few_shot=not args.no_few_shot, detection=args.detection,
                        fuzzing=args.detection, n_bootstrap=200, max_concurrency=16, explain_max_tokens=24,
                        max_units_in_flight=8, progress=True)
    t0 = time.perf_counter()
    res = explain_store(store, hook, range(args.units), llm, cfg)
    t_explain = time.perf_counter() - t0

    def corr(r: dict, which: str, split: str = "all") -> float | None:
        try:
            return r[which]["scores"][split]["correlation"]["value"]
        except (KeyError, TypeError):
            return None

    llm_c = [corr(r, "llm") for r in res]
    base_c = [corr(r, "baseline") for r in res]
    table_c = [(r.get("lookup_table") or {}).get("correlation", {}).get("value") for r in res]
    both = [(a, b) for a, b in zip(llm_c, base_c) if a is not None and b is not None]
    statuses: dict[str, int] = {}
    for r in res:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    print(summary_table(res, max_rows=args.units))
    return {"hook": hook, "units": len(res), "docs": args.docs, "ctx_tokens": args.ctx,
            "few_shot": not args.no_few_shot, "status": statuses,
            "llm_explainer_corr": _dist(llm_c), "baseline_corr": _dist(base_c), "lookup_table_corr": _dist(table_c),
            "llm_random_only_corr": _dist([corr(r, "llm", "random") for r in res]),
            "llm_beats_baseline": f"{sum(a > b for a, b in both)}/{len(both)}",
            "capture_s": round(t_capture, 1), "explain_s": round(t_explain, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("simulate")
    s.add_argument("--records", type=int, default=20)
    s.add_argument("--tokens", type=int, default=64)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--no-few-shot", action="store_true")
    s.add_argument("--no-prefix-cache", action="store_true", help="recompute every prompt from its start")
    s.add_argument("--kind", choices=["simulation", "detection"], default="simulation")
    s.add_argument("--repeat", type=int, default=2, help="runs (fresh explanations); min time is kept")
    s.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time = compute; 0: torch default)")
    s = sub.add_parser("standin")
    s.add_argument("--units", type=int, default=100)
    s.add_argument("--latency", type=float, default=0.2)
    s.add_argument("--concurrency", type=int, default=8, help="cap on LLM requests in flight "
                   "(ExplainConfig.max_concurrency default: 8)")
    s = sub.add_parser("smollm2")
    s.add_argument("--units", type=int, default=50)
    s.add_argument("--layer", type=int, default=5)
    s.add_argument("--docs", type=int, default=120)
    s.add_argument("--ctx", type=int, default=32)
    s.add_argument("--out", default="runs/bench-explain-smollm2")
    s.add_argument("--no-few-shot", action="store_true")
    s.add_argument("--detection", action="store_true", help="also run detection and fuzzing")
    args = ap.parse_args()
    fn = {"simulate": bench_simulate, "standin": bench_standin, "smollm2": bench_smollm2}[args.what]
    result = fn(args)
    if result:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
