"""Capture locally against capture on Ray (2 workers) on the embedded MiniLM over the Lee corpus.

Prints measured times (not a test). Usage:

    .venv/bin/python benchmarks/bench_capture_ray.py [--docs 100] [--workers 2] [--layer 3]

Both runs capture the same hooks (``blocks.L.mlp.hook_post`` and ``blocks.L.hook_resid_post``)
into fresh stores with the same settings; the Ray time counts the workers' start and model
load (each worker boots its own MiniLM replica and checks its fingerprint) but not the Ray
cluster's own start, which is printed apart. The two stores are compared (activations must be
equal) before the ratio is printed. On a machine with few cores shared by the workers and the
driver, expect no speed-up: the workers compete for the same cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tl_concepts import models  # noqa: E402
from tl_concepts.capture import RayCapture, capture  # noqa: E402
from tl_concepts.corpus import load_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--shard-tokens", type=int, default=4096, help="rows per shard (the unit of Ray work)")
    args = ap.parse_args()

    import ray

    hooks = [f"blocks.{args.layer}.mlp.hook_post", f"blocks.{args.layer}.hook_resid_post"]
    corpus = load_corpus("lee", max_docs=args.docs)
    model = models.load("minilm")
    settings = dict(shard_tokens=args.shard_tokens, progress=False)
    print(f"MiniLM, Lee corpus {args.docs} docs, hooks {', '.join(hooks)}, shard_tokens {args.shard_tokens}, "
          f"{os.cpu_count()} CPUs visible")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local = capture(model, corpus, hooks, Path(tmp) / "local", **settings)
        t_local = time.perf_counter() - t0
        print(f"local capture:             {t_local:7.2f} s  ({local.n_tokens} tokens, "
              f"{len(local.manifest['shards'])} shards, {local.n_tokens / t_local:,.0f} tok/s)")

        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        t_start = time.perf_counter() - t0
        print(f"ray.init (local cluster):  {t_start:7.2f} s")
        try:
            t0 = time.perf_counter()
            on_ray = capture(model, corpus, hooks, Path(tmp) / "ray", executor="ray",
                             ray=RayCapture(num_workers=args.workers, replica="minilm"), **settings)
            t_ray = time.perf_counter() - t0
        finally:
            ray.shutdown()
        print(f"ray capture ({args.workers} workers):   {t_ray:7.2f} s  ({on_ray.n_tokens / t_ray:,.0f} tok/s; "
              "workers' start and model load included)")
        same = all(np.array_equal(local.activations(h), on_ray.activations(h)) for h in hooks)
        print(f"stores equal: {same}")
        print(f"ray/local time ratio: {t_ray / t_local:.2f}")


if __name__ == "__main__":
    main()
