"""Ward at scale: exact vs micro-cluster Ward (time, memory estimate, agreement).

Prints, for each N: exact Ward time and its memory estimate, micro mode time, and the
adjusted Rand index between the two partitions at K; then micro mode alone on a larger N
(where exact would not fit the budget) with its sampled agreement estimate.

    .venv/bin/python benchmarks/bench_concepts.py                       # synthetic, ~1-2 min
    .venv/bin/python benchmarks/bench_concepts.py --store runs/x --layer 3   # a real capture store

Synthetic data: a Gaussian mixture with Zipf-distributed component sizes in d=384 (the
width of all-MiniLM-L6-v2), i.e. many small concepts and a few large ones.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from tl_concepts.concepts.tree import cut_labels
from tl_concepts.concepts.ward import agreement_with_exact, exact_memory_bytes, micro_memory_bytes, ward


def mixture(n: int, d: int, n_comp: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_comp + 1)
    comp = rng.choice(n_comp, size=n, p=w / w.sum())
    centres = rng.normal(scale=2.0, size=(n_comp, d))
    return (centres[comp] + rng.normal(size=(n, d))).astype(np.float32)


def from_store(path: str, layer: int) -> np.ndarray:
    from tl_concepts.capture import ActivationStore
    from tl_concepts.concepts.filters import FilterConfig, apply_filters
    from tl_concepts.concepts.inputs import from_store as fs

    inp = fs(ActivationStore.open(path), layer=layer)
    rows, _ = apply_filters(inp.column("text"), FilterConfig(min_count=2, max_per_type=10))
    return inp.representations[rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--large", type=int, default=60000, help="N for the micro-only run (0: skip)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("-k", type=int, default=200)
    ap.add_argument("--micro-ratio", type=float, default=0.25, help="micro-clusters per point")
    ap.add_argument("--store", default=None)
    ap.add_argument("--layer", type=int, default=3)
    args = ap.parse_args()

    print(f"{'N':>7} {'exact s':>8} {'exact GiB':>9} {'micro s':>8} {'M':>6} {'micro GiB':>9} {'ARI@K':>6}")
    datasets = ([from_store(args.store, args.layer)] if args.store
                else [mixture(n, args.dim, 4 * args.k, seed=n) for n in args.sizes])
    for x in datasets:
        n = x.shape[0]
        k = min(args.k, n // 4)
        ex = ward(x, mode="exact")
        m = max(int(args.micro_ratio * n), 4 * k)
        mi = ward(x, mode="micro", k=k, n_micro=m)
        ari = adjusted_rand_score(cut_labels(ex.linkage, ex.leaf_of_point, k), cut_labels(mi.linkage, mi.leaf_of_point, k))
        print(f"{n:>7} {ex.seconds:>8.2f} {exact_memory_bytes(n, x.shape[1]) / 2**30:>9.3f} {mi.seconds:>8.2f} "
              f"{mi.info['n_micro']:>6} {micro_memory_bytes(n, x.shape[1], mi.info['n_micro']) / 2**30:>9.3f} {ari:>6.3f}")
    if args.large and not args.store:
        n = args.large
        x = mixture(n, args.dim, 4 * args.k, seed=n)
        t0 = time.perf_counter()
        mi = ward(x, mode="micro", k=args.k, n_micro=min(10_000, int(args.micro_ratio * n)))
        agr = agreement_with_exact(x, args.k, n_micro_ratio=mi.info["n_micro"] / n, sample=3000)
        print(f"\nmicro only, N={n:,}: {mi.seconds:.1f}s with M={mi.info['n_micro']} micro-clusters "
              f"(~{micro_memory_bytes(n, args.dim, mi.info['n_micro']) / 2**30:.2f} GiB; exact would need "
              f"~{exact_memory_bytes(n, args.dim) / 2**30:.1f} GiB); sampled ARI vs exact on {agr.n_sample} points "
              f"at K={agr.k}: {agr.ari:.3f} (total {time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    main()
