"""Benchmarks of the LLM layer; prints measured ratios (not part of the test run).

1. 200 chat requests through ``get_llm`` (cache + ledger + limiter + retries) against the
   loopback stand-in server (50 ms per answer, in a subprocess so its threads do not
   share the client's GIL) with a concurrency cap of 16. Ratio: wall time / ideal
   (200 x 50 ms / 16 = 0.625 s); target <= 1.3. One warm-up request (imports, client,
   first connection) precedes the timed batch. Then a rerun from the cache: it must
   make 0 requests.
2. In-process next-token distributions (embedded SmolLM2-135M, CPU) for 20 prompts of
   about 300 tokens, 30 positions each, candidates "0".."10": one call at a time vs all
   20 at once (batched forward passes). Ratio: sequential / batched.

Run: ``python benchmarks/bench_llm.py [--repeats 3] [--skip-inprocess]``
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tl_concepts.llm import Ledger, Message, get_llm  # noqa: E402

N_REQUESTS, LATENCY, CONCURRENCY = 200, 0.05, 16


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.openai_server",
                             "--latency", str(latency)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["base_url"]


def server_requests(base_url: str) -> int:
    with urllib.request.urlopen(base_url + "/_standin/stats", timeout=10) as r:
        return int(json.load(r)["requests"])


async def run_batch(llm, tag: str) -> tuple[float, float, list]:
    t, c = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(
        llm.achat([Message("user", f"{tag} question {i}")], max_tokens=16, stage="bench")
        for i in range(N_REQUESTS)))
    return time.perf_counter() - t, time.process_time() - c, results


def bench_server(repeats: int) -> None:
    ideal = N_REQUESTS * LATENCY / CONCURRENCY
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work skews the "
          "wall times)")
    print(f"== {N_REQUESTS} requests, {LATENCY * 1000:.0f} ms latency, concurrency "
          f"{CONCURRENCY}: ideal {ideal:.3f} s")
    proc, url = start_server(LATENCY)
    try:
        ratios = []
        for rep in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                ledger = Ledger()
                llm = get_llm("openai:bench-model", base_url=url, api_key="sk-bench-key",
                              cache=Path(tmp) / "cache.sqlite", ledger=ledger,
                              max_concurrency=CONCURRENCY)

                async def go():
                    # one request first: imports, the client and a first connection
                    await llm.achat([Message("user", f"warm-up {rep}")], stage="warm-up")
                    first = await run_batch(llm, f"run{rep}")
                    before = server_requests(url)
                    second = await run_batch(llm, f"run{rep}")
                    after = server_requests(url)
                    await llm.aclose()
                    return first, second, after - before

                (wall, cpu, res), (wall2, _, res2), rerun_requests = asyncio.run(go())
                assert all(r.ok for r in res), [r.failure for r in res if not r.ok][:3]
                ratio = wall / ideal
                ratios.append(ratio)
                print(f"run {rep + 1}: wall {wall:.3f} s, ratio {ratio:.2f}x ideal "
                      f"(client CPU {cpu * 1000 / N_REQUESTS:.2f} ms/request); cached rerun "
                      f"{wall2 * 1000:.1f} ms, {rerun_requests} requests, "
                      f"{sum(r.cached for r in res2)}/{N_REQUESTS} from cache")
        print(f"ratio to ideal: median {statistics.median(ratios):.2f}x, best "
              f"{min(ratios):.2f}x (target <= 1.30)")
        print(ledger.summary_table())
    finally:
        proc.terminate()
        proc.wait()


def bench_inprocess(repeats: int) -> None:
    from tl_concepts.llm import InProcessBackend

    backend = InProcessBackend(batch_size=20, max_batch_tokens=32768)
    tok = backend.tokenizer
    words = ("the cat sat on a warm mat while rain fell over quiet hills and the river "
             "kept its slow course past old stone walls").split()
    prompts, positions = [], []
    for i in range(20):
        lines = []
        j = 0
        while True:
            w = words[(i * 7 + j) % len(words)]
            lines.append(f"{w}\t{(i + j) % 10}\n")
            j += 1
            text = "Activations, one token per line:\n" + "".join(lines)
            if len(tok(text)["input_ids"]) >= 300:
                break
        prompts.append(text)
        # positions right after each tab of the last 30 lines
        tabs = [k + 1 for k, ch in enumerate(text) if ch == "\t"]
        positions.append(tabs[-30:])
    n_tok = [len(tok(p)["input_ids"]) for p in prompts]
    cands = [str(k) for k in range(11)]
    print(f"== in-process next-token distributions: {len(prompts)} prompts of "
          f"{min(n_tok)}-{max(n_tok)} tokens, 30 positions, candidates 0..10")
    backend.next_token_distributions(prompts[0], positions[0], cands)  # load + warm up

    async def sequential():
        return [await backend.anext_token_distributions(p, pos, cands)
                for p, pos in zip(prompts, positions)]

    async def batched():
        return await asyncio.gather(*(backend.anext_token_distributions(p, pos, cands)
                                      for p, pos in zip(prompts, positions)))

    ratios = []
    for rep in range(repeats):
        t = time.perf_counter()
        seq = asyncio.run(sequential())
        t_seq = time.perf_counter() - t
        passes = backend.forward_passes
        t = time.perf_counter()
        bat = asyncio.run(batched())
        t_bat = time.perf_counter() - t
        n_passes = backend.forward_passes - passes
        diff = max(abs(a - b) for s, b_ in zip(seq, bat) for ra, rb in zip(s.probs, b_.probs)
                   for a, b in zip(ra.values(), rb.values()))
        ratios.append(t_seq / t_bat)
        print(f"run {rep + 1}: one at a time {t_seq:.2f} s, batched {t_bat:.2f} s "
              f"({n_passes} forward passes): speed-up {t_seq / t_bat:.2f}x, "
              f"max |p diff| {diff:.1e}")
    print(f"batched speed-up: median {statistics.median(ratios):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-inprocess", action="store_true")
    args = ap.parse_args()
    bench_server(args.repeats)
    if not args.skip_inprocess:
        bench_inprocess(args.repeats)


if __name__ == "__main__":
    main()
