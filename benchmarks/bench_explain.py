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
   swings by 2x between runs); the wall-time ratio is printed too. Two more ratios show
   what the floor leaves out and an exact answer needs: the later tokens of multi-token
   candidates (SmolLM2 spells "10" as "1" "0": one more token per slot) and the LM head
   with a log-sum-exp over the vocabulary at every slot; the rest of the gap is the
   record tokens' attention to the cached prefix (the floor runs them without it).
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
4. ``layer``: every neuron of MiniLM ``blocks.3.mlp.hook_post`` (1,536 units) explained and
   scored offline with the embedded LLM through ``tlc.capture`` / ``tlc.explain``,
   ``--limit N`` units per invocation (a rerun with the same ``--out`` continues): units per
   hour, the ratio to the floor, and the extrapolated wall time for GPT-2 XL's 307,200
   neurons on ``--workers N`` with a served LLM at ``--tokens-per-second T`` each (tokens per
   unit from the run's ledger).

    .venv/bin/python benchmarks/bench_explain.py layer --limit 8 --out runs/bench-layer
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
    lm_heads: list[float] = []
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
        lm_heads.append(_lm_head_seconds(llm, sum(slots) * (1 + n_cont), 128))
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
              "cpu_lm_head_s": round(min(lm_heads), 2),
              "s_per_record": round(wall / len(recs), 3)}
    print(json.dumps(result, indent=1))
    print(f"floor ratio (wall time, noisy on a shared machine): {floor / wall:.2f}")
    print(f"floor ratio counting the multi-token candidates' continuation tokens: {min(cpu_floors_ext) / cpu:.2f}")
    print("floor ratio counting the continuation tokens and the LM head at every slot (log-sum-exp over the "
          f"vocabulary): {(min(cpu_floors_ext) + min(lm_heads)) / cpu:.2f}")
    print(f"floor ratio: {cpu_floor / cpu:.2f}")
    return {}


def _lm_head_seconds(llm, n_states: int, chunk: int) -> float:
    """CPU seconds of the LM head and a log-sum-exp over the vocabulary for ``n_states``
    hidden states (what exact probabilities at the slots need beyond the forward)."""
    import torch

    lm = llm.hf_model.get_output_embeddings()
    h = torch.randn(min(chunk, n_states), lm.weight.shape[1])
    with torch.inference_mode():
        c0 = time.process_time()
        for i in range(0, n_states, chunk):
            torch.logsumexp(lm(h[: min(chunk, n_states - i)]).float(), dim=-1)
        return time.process_time() - c0


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


GPT2_XL_NEURONS = 48 * 6400
"""GPT-2 XL's MLP neurons (48 layers x 6,400), the count Bills et al. (2023) explained."""


def _plain_forward_seconds_per_token(llm, batch: int = 16, length: int = 256) -> float:
    """CPU seconds per token of a plain batched forward (no cache, no LM head) of the
    in-process model over ``batch`` x ``length`` tokens: the floor's unit price."""
    import torch

    ids = llm.tokenizer("The quick brown fox jumps over the lazy dog. " * 64)["input_ids"][:length]
    inp = torch.tensor([ids] * batch)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            c0 = time.process_time()
            llm.hf_model.base_model(input_ids=inp, use_cache=False)
            best = min(best, time.process_time() - c0)
    return best / inp.numel()


def bench_layer(args: argparse.Namespace) -> dict:
    """Explain and score the units of one MiniLM layer with the embedded in-process LLM,
    ``--limit`` units per invocation (a rerun with the same ``--out`` continues)."""
    import torch

    import tl_concepts as tlc
    from tl_concepts.capture import ActivationStore
    from tl_concepts.errors import StoreError
    from tl_concepts.explain.results import ExplanationResults
    from tl_concepts.llm import InProcessBackend

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    hook = args.hook
    store_dir, explain_dir = out / "store", out / "explain"
    t0 = time.perf_counter()
    if (store_dir / "manifest.json").exists() and ActivationStore.open(store_dir).complete:
        store = ActivationStore.open(store_dir)
    else:
        store = tlc.capture(tlc.models.load("minilm"), "lee", [hook], out=store_dir, max_docs=args.docs,
                            progress=False)
    t_capture = time.perf_counter() - t0
    n_units = int(store.activations(hook).shape[-1])

    def done_ids() -> set[str]:
        try:
            return {u.id for u in ExplanationResults.load(explain_dir)}
        except StoreError:
            return set()

    before = done_ids()
    todo = [u for u in range(n_units) if tlc.unit_id(hook, u) not in before][: args.limit]
    llm = InProcessBackend(batch_size=16)
    options = dict(progress=False, max_units_in_flight=args.in_flight)
    if args.no_few_shot:
        options["few_shot"] = False
    t0, c0 = time.perf_counter(), time.process_time()
    if todo:
        tlc.explain(store, hook, todo, llm=llm, out=explain_dir, **options)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = ExplanationResults.load(explain_dir) if todo or before else []
    new = [u for u in after if u.id not in before]
    statuses: dict[str, int] = {}
    for u in after:
        statuses[u.status] = statuses.get(u.status, 0) + 1

    def unit_tokens(u) -> tuple[int, int]:
        p = c = 0
        for role in (u.llm_usage or {}).values():
            for stage in role.values():
                p += int(stage.get("prompt_tokens", 0))
                c += int(stage.get("completion_tokens", 0))
        return p, c

    toks = [unit_tokens(u) for u in after]
    prompt_per_unit = float(np.mean([p for p, _ in toks])) if toks else float("nan")
    completion_per_unit = float(np.mean([c for _, c in toks])) if toks else float("nan")
    tokens_per_unit = prompt_per_unit + completion_per_unit
    result: dict = {"hook": hook, "units_in_layer": n_units, "units_done_before": len(before),
                    "units_done_now": len(new), "units_done_total": len(after),
                    "units_left": n_units - len(after), "status": statuses,
                    "capture_s": round(t_capture, 1), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                    "torch_threads": torch.get_num_threads(), "load_avg_1m": round(os.getloadavg()[0], 1)}
    if new:
        spt = _plain_forward_seconds_per_token(llm)
        floor_dist = (llm.dist_tokens_computed + llm.prefix_tokens_computed) * spt
        floor_chat = (llm.chat_prompt_tokens + llm.chat_generated_tokens) * spt
        floor_cpu = floor_dist + floor_chat
        dist_cpu, chat_cpu = llm.cpu_seconds["dist"], llm.cpu_seconds["chat"]
        layer_h = n_units / len(new) * wall / 3600
        result.update({
            "units_per_hour": round(len(new) / wall * 3600, 1),
            "units_per_cpu_hour": round(len(new) / cpu * 3600, 1),
            "s_per_unit": round(wall / len(new), 1), "cpu_s_per_unit": round(cpu / len(new), 1),
            "extrapolated_layer_hours_here": round(layer_h, 1),
            "backend": {"forward_passes": llm.forward_passes, "dist_tokens_computed": llm.dist_tokens_computed,
                        "prefix_tokens_computed": llm.prefix_tokens_computed,
                        "chat_prompt_tokens": llm.chat_prompt_tokens,
                        "chat_generated_tokens": llm.chat_generated_tokens},
            "plain_forward_cpu_us_per_token": round(spt * 1e6, 1),
            "llm_cpu_s": {"distributions": round(dist_cpu, 1), "chat": round(chat_cpu, 1),
                          "rest_of_the_run": round(cpu - dist_cpu - chat_cpu, 1)},
            "floor_cpu_s": {"distributions": round(floor_dist, 1), "chat": round(floor_chat, 1)},
            "floor_ratio_distributions": round(floor_dist / max(dist_cpu, 1e-9), 2),
            "floor_ratio_chat": round(floor_chat / max(chat_cpu, 1e-9), 2),
            "floor_ratio_cpu": round(floor_cpu / cpu, 2)})
    if toks:
        gpt2_s = GPT2_XL_NEURONS * tokens_per_unit / (args.workers * args.tokens_per_second)
        result.update({
            "prompt_tokens_per_unit": round(prompt_per_unit), "completion_tokens_per_unit": round(completion_per_unit),
            "gpt2_xl": {"neurons": GPT2_XL_NEURONS, "workers": args.workers,
                        "tokens_per_second_per_worker": args.tokens_per_second,
                        "tokens": round(GPT2_XL_NEURONS * tokens_per_unit),
                        "wall_hours": round(gpt2_s / 3600, 1)}})
    print(json.dumps(result, indent=1))
    if new:
        print(f"units/hour: {result['units_per_hour']} (wall, {result['s_per_unit']} s/unit; "
              f"{result['units_per_cpu_hour']} per CPU-hour)")
        print(f"floor ratio: {result['floor_ratio_cpu']:.2f} (floor: a plain batched forward, no cache and no "
              "LM head, over every prompt token the backend computed, each shared prefix once, plus the "
              "explainer's prompt and generated tokens, at the per-token CPU time of a 16x256 forward in "
              "this process; measured: process CPU time of the whole run, scoring included)")
        print(f"  of which next-token distributions (simulation, detection, fuzzing): "
              f"{result['floor_ratio_distributions']:.2f}; explanations (generation; the floor counts a "
              f"generated token as one batched-forward token): {result['floor_ratio_chat']:.2f}; CPU outside "
              f"the LLM (prompts, scoring, bootstrap, files): {result['llm_cpu_s']['rest_of_the_run']} s")
        print(f"this layer ({n_units} units) here: about {result['extrapolated_layer_hours_here']} h")
    if toks:
        g = result["gpt2_xl"]
        print(f"GPT-2 XL ({GPT2_XL_NEURONS:,} neurons) on {args.workers} Ray workers at "
              f"{args.tokens_per_second:,.0f} tokens/s each: about {g['wall_hours']} h")
        print("  assumptions: the same prompts and settings as this run (ExplainConfig defaults: one "
              f"explanation, baseline, calibration, detection and fuzzing), so {tokens_per_unit:,.0f} "
              f"tokens per unit ({prompt_per_unit:,.0f} prompt + {completion_per_unit:,.0f} completion, "
              "from the run's ledger, averaged over the units done); records of GPT-2 XL's units as long as "
              "these; each worker's LLM serves T tokens/s of prompt+completion (no prefix caching at the "
              "server, which would only make it faster); the LLM is the bottleneck (capture, scoring and "
              "writes not counted); perfect scaling across workers.")
    return {}


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
    s = sub.add_parser("layer", help="explain and score one MiniLM layer with the embedded LLM (resumable)")
    s.add_argument("--hook", default="blocks.3.mlp.hook_post")
    s.add_argument("--limit", type=int, default=8, help="units to do in this invocation (rerun to continue)")
    s.add_argument("--out", default="runs/bench-explain-layer")
    s.add_argument("--docs", type=int, default=50, help="Lee documents captured")
    s.add_argument("--in-flight", type=int, default=8, help="units explained concurrently (batched together)")
    s.add_argument("--no-few-shot", action="store_true")
    s.add_argument("--workers", type=int, default=16, help="Ray workers of the GPT-2 XL extrapolation")
    s.add_argument("--tokens-per-second", type=float, default=5000.0,
                   help="served-LLM throughput per worker (prompt+completion tokens/s) of the extrapolation")
    s.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    args = ap.parse_args()
    fn = {"simulate": bench_simulate, "standin": bench_standin, "smollm2": bench_smollm2,
          "layer": bench_layer}[args.what]
    result = fn(args)
    if result:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
