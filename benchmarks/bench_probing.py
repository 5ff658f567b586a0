"""Probing benchmarks (prints figures; not a test). Usage:

    .venv/bin/python benchmarks/bench_probing.py [--layer 3] [--k 100] [--docs N] [--work runs/bench-probing]

1. MiniLM on the Lee corpus (captured once into ``--work``, reused afterwards), concepts at
   one layer (Ward, K=--k, default word filters), then one binary probe per concept with a
   control task: time per probe, mean accuracy, control accuracy and selectivity;
2. Probeless ranking of the 1536 MLP neurons of that layer over 100k token rows (POS of each
   token's word as the label; the Lee tokens repeated to reach 100k): time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tl_concepts.capture import ActivationStore, capture  # noqa: E402
from tl_concepts.probing import ProbeOptions, probeless  # noqa: E402
from tl_concepts.probing.runner import ProbeConfig, probe_summary_table, run_probes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--docs", type=int, default=None, help="first N Lee documents (default: all 299)")
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--work", default="runs/bench-probing")
    args = ap.parse_args()
    work = Path(args.work)
    resid, mlp = f"blocks.{args.layer}.hook_resid_post", f"blocks.{args.layer}.mlp.hook_post"

    store_dir = work / "store"
    if (store_dir / "manifest.json").exists() and ActivationStore.open(store_dir).complete:
        store = ActivationStore.open(store_dir)
    else:
        from tl_concepts import models
        from tl_concepts.corpus import lee_corpus
        from tl_concepts.corpus.types import Corpus

        corpus = lee_corpus()
        if args.docs:
            corpus = Corpus(corpus.name, [s for s in corpus.sentences if s.doc < args.docs])
        t0 = time.perf_counter()
        store = capture(models.load("minilm"), corpus, [resid, mlp], store_dir, progress=True)
        print(f"capture: {time.perf_counter() - t0:.1f}s")
    print(f"store: {store.n_tokens:,} tokens, {len(store.words()['word_id']):,} words")

    cdir = work / f"concepts-l{args.layer}-k{args.k}"
    if not (cdir / "meta.json").exists():
        from tl_concepts.concepts import ConceptsConfig, discover_concepts

        t0 = time.perf_counter()
        discover_concepts(ConceptsConfig(store=str(store_dir), hook=resid, k=args.k, out=str(cdir)), progress=True)
        print(f"concepts: {time.perf_counter() - t0:.1f}s")

    cfg = ProbeConfig(store=str(store_dir), hook=resid, labels=f"concepts:{cdir}", min_size=10,
                      multiclass=False, options=ProbeOptions())
    t0 = time.perf_counter()
    ds = run_probes(cfg, progress=True)
    wall = time.perf_counter() - t0
    print(probe_summary_table(ds, max_rows=10))
    acc, ctrl, sel = (float(np.mean(ds[c])) for c in ("test_accuracy", "control_accuracy", "selectivity"))
    print(f"\n[probes] layer {args.layer}, {len(ds)} concepts (>= 10 members) of K={args.k}: "
          f"{wall / len(ds) * 1000:.0f} ms per probe (fits: {np.mean(ds['seconds']) * 1000:.0f} ms; "
          f"3 C values x task + control), mean accuracy {acc:.3f}, control {ctrl:.3f}, selectivity {sel:.3f}")

    acts = store.activations(mlp)
    tok = store.tokens()
    pos = np.asarray(store.words()["pos"], dtype=object)
    wid = np.asarray(tok["word_id"])
    keep = wid >= 0
    x, labels = acts[keep], pos[wid[keep]]
    reps = int(np.ceil(args.tokens / len(x)))
    x = np.tile(x, (reps, 1))[: args.tokens]
    labels = np.tile(labels, reps)[: args.tokens].tolist()
    t0 = time.perf_counter()
    r = probeless(x, labels)
    dt = time.perf_counter() - t0
    print(f"[probeless] {x.shape[1]} neurons x {x.shape[0]:,} tokens, {len(r.classes)} POS classes: {dt:.2f}s "
          f"(top neurons overall: {r.order[:5].tolist()})")


if __name__ == "__main__":
    main()
