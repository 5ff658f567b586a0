"""Ward at scale: exact Ward against scikit-learn, and micro-cluster Ward at 60k and 250k
points (time, peak RSS, agreement with exact Ward on held-out subsamples).

    .venv/bin/python benchmarks/bench_concepts.py                 # ~20-30 min on 2 cores
    .venv/bin/python benchmarks/bench_concepts.py --sizes 60000   # one size only
    .venv/bin/python benchmarks/bench_concepts.py --store runs/x --layer 3   # a real capture

Each measurement runs in a fresh subprocess so its peak RSS is its own. Printed:

1. exact Ward (scipy's nearest-neighbour chain, what ``ward(mode="exact")`` runs) and
   scikit-learn's ``AgglomerativeClustering(linkage="ward")`` on the same 20k points:
   time, peak RSS, and the ARI between their K-partitions (1.0: the same clustering).
2. micro mode at each size with the default number of micro-clusters: time and peak
   RSS of the clustering, then its K-partition restricted to held-out subsamples (rows
   k-means did not see) against exact Ward on each subsample alone
   (:func:`~tl_concepts.concepts.ward.heldout_agreement`).

Measured here (2 cores, default M, 10:50 UTC 2026-12-04): exact 46.4s vs scikit-learn 43.5s
at 20k (3.22 GiB each, identical partitions); micro 60k: 11.1s, 0.85 GiB, held-out ARI 0.871;
250k: 16.8s, 1.16 GiB, ARI 0.871. The held-out ARI is not monotone in M (60k: 0.95 at
M=4,800, 0.84 at M=15,000): exact Ward on a 10k subsample is itself a coarse view of exact
Ward on all points, so read it as agreement with exact Ward at subsample scale.

Synthetic data: a Gaussian mixture with Zipf-distributed component sizes (4*K components)
in d=384 (the width of all-MiniLM-L6-v2), centres drawn with ``--centre-scale`` (1.0:
neighbouring components overlap but remain distinct; at 0.5 they blur, and exact Ward
itself then disagrees with exact Ward on a subsample: the check measured ARI 0.43
between exact Ward on 16k points and on a 5k subsample of them at K=600).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def mixture(n: int, d: int, n_comp: int, seed: int = 0, centre_scale: float = 1.0) -> np.ndarray:
    """float32 Zipf Gaussian mixture, generated in chunks (no float64 copy of the data)."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_comp + 1)
    comp = rng.choice(n_comp, size=n, p=w / w.sum())
    centres = rng.normal(scale=centre_scale, size=(n_comp, d)).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for i0 in range(0, n, 16_384):
        i1 = min(n, i0 + 16_384)
        x[i0:i1] = centres[comp[i0:i1]] + rng.standard_normal((i1 - i0, d), dtype=np.float32)
    return x


def from_store(path: str, layer: int) -> np.ndarray:
    from tl_concepts.capture import ActivationStore
    from tl_concepts.concepts.filters import FilterConfig, apply_filters
    from tl_concepts.concepts.inputs import from_store as fs

    inp = fs(ActivationStore.open(path), layer=layer)
    rows, _ = apply_filters(inp.column("text"), FilterConfig(min_count=2, max_per_type=10))
    return np.ascontiguousarray(inp.representations[rows], dtype=np.float32)


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def step_exact(args: argparse.Namespace) -> dict:
    from sklearn.cluster import AgglomerativeClustering

    from tl_concepts.concepts.tree import cut_labels
    from tl_concepts.concepts.ward import ward

    x = _data(args, args.n)
    k = min(args.k, args.n // 4)
    base = _peak_gib()
    if args.which == "sklearn":
        t0 = time.perf_counter()
        lab = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
        secs = time.perf_counter() - t0
    else:
        res = ward(x, mode="exact")
        secs = res.seconds
        lab = cut_labels(res.linkage, res.leaf_of_point, k)
    np.save(args.labels_out, lab)
    return {"step": f"exact-{args.which}", "n": args.n, "k": k, "seconds": round(secs, 1),
            "peak_rss_gib": round(_peak_gib(), 2), "data_rss_gib": round(base, 2)}


def step_micro(args: argparse.Namespace) -> dict:
    from tl_concepts.concepts.tree import cut_labels
    from tl_concepts.concepts.ward import default_n_micro, heldout_agreement, ward

    x = _data(args, args.n)
    n, k = x.shape[0], min(args.k, x.shape[0] // 4)
    base = _peak_gib()
    m = args.n_micro or default_n_micro(n, k)
    res = ward(x, mode="micro", k=k, n_micro=m, seed=args.seed)
    labels = cut_labels(res.linkage, res.leaf_of_point, k)
    peak = _peak_gib()
    fit_rows = _fit_rows(n, m, args.seed)
    agr = heldout_agreement(x, labels, k, sample=args.sample, repeats=args.repeats, exclude=fit_rows,
                            seed=args.seed + 1)
    return {"step": "micro", "n": n, "k": k, "n_micro": res.info["n_micro"], "seconds": round(res.seconds, 1),
            "peak_rss_gib": round(peak, 2), "data_rss_gib": round(base, 2),
            "heldout_aris": [round(a, 3) for a in agr.aris], "heldout_ari": round(agr.ari, 3),
            "heldout_sample": agr.n_sample, "exact_on_subsamples_s": round(agr.exact_seconds, 1),
            "total_peak_rss_gib": round(_peak_gib(), 2)}


def _fit_rows(n: int, m: int, seed: int) -> np.ndarray:
    """The rows micro_clusters fits its (coarse) k-means on, as it draws them."""
    from tl_concepts.concepts.ward import TWO_LEVEL_MIN_MICRO

    mm = int(max(2, round(np.sqrt(m)))) if m >= TWO_LEVEL_MIN_MICRO else m
    fit_n = min(n, 20 * mm)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=fit_n, replace=False)) if fit_n < n else np.arange(n)


def _data(args: argparse.Namespace, n: int) -> np.ndarray:
    if args.store:
        x = from_store(args.store, args.layer)
        return x[:n] if n else x
    return mixture(n, args.dim, 4 * args.k, seed=n, centre_scale=args.centre_scale)


def _child(extra: list[str], args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--dim", str(args.dim), "-k", str(args.k), "--seed", str(args.seed),
           "--centre-scale", str(args.centre_scale), "--sample", str(args.sample),
           "--repeats", str(args.repeats), *(["--store", args.store, "--layer", str(args.layer)] if args.store else []),
           *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[60_000, 250_000])
    ap.add_argument("--exact-n", type=int, default=20_000, help="points for exact vs scikit-learn (0: skip)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("-k", type=int, default=600)
    ap.add_argument("--centre-scale", type=float, default=1.0)
    ap.add_argument("--n-micro", type=int, default=None, help="micro-clusters (default: default_n_micro)")
    ap.add_argument("--sample", type=int, default=10_000, help="points per held-out subsample")
    ap.add_argument("--repeats", type=int, default=2, help="held-out subsamples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=None)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--step", choices=["exact", "micro"], help=argparse.SUPPRESS)
    ap.add_argument("--which", default="scipy", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--labels-out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(step_exact(args) if args.step == "exact" else step_micro(args)))
        return

    import tempfile

    from sklearn.metrics import adjusted_rand_score

    print(f"data: {'store ' + args.store if args.store else 'Zipf Gaussian mixture'}, d={args.dim}, "
          f"K={args.k}, centre scale {args.centre_scale}", flush=True)
    if args.exact_n:
        with tempfile.TemporaryDirectory() as d:
            runs = {}
            for which in ("scipy", "sklearn"):
                lab = f"{d}/{which}.npy"
                runs[which] = _child(["--step", "exact", "--which", which, "--n", str(args.exact_n),
                                      "--labels-out", lab], args)
                runs[which]["labels"] = np.load(lab)
            ari = adjusted_rand_score(runs["scipy"].pop("labels"), runs["sklearn"].pop("labels"))
        s, k = runs["scipy"], runs["sklearn"]
        print(f"exact Ward, N={args.exact_n:,}: tl-concepts (scipy NN-chain) {s['seconds']:.1f}s, peak RSS "
              f"{s['peak_rss_gib']:.2f} GiB; scikit-learn {k['seconds']:.1f}s, peak RSS {k['peak_rss_gib']:.2f} GiB; "
              f"ratio {s['seconds'] / max(k['seconds'], 1e-9):.2f}; ARI between their K={s['k']} "
              f"partitions {ari:.3f}", flush=True)
    for n in args.sizes:
        r = _child(["--step", "micro", "--n", str(n), *(["--n-micro", str(args.n_micro)] if args.n_micro else [])],
                   args)
        print(f"micro Ward, N={r['n']:,}: {r['seconds']:.1f}s, peak RSS {r['peak_rss_gib']:.2f} GiB "
              f"(data alone {r['data_rss_gib']:.2f} GiB), M={r['n_micro']:,} micro-clusters; held-out ARI vs "
              f"exact Ward at K={r['k']}: {r['heldout_ari']:.3f} (subsamples of {r['heldout_sample']:,}: "
              f"{r['heldout_aris']}; exact on them {r['exact_on_subsamples_s']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
