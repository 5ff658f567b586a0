"""Truth benchmark: does the explain -> simulate -> score pipeline recover planted truth?

Planted units (tl_concepts.explain.planted): activations over the real tokens of the
embedded Lee corpus that fire on a known class (weekday names, month names, numbers in
digits, country names from questions-words.txt, past-tense verbs and plural nouns by
spaCy tag), exemplars picked by the capture's rules, run through the real
``tl_concepts.explain.runner.explain_unit``.

Usage:

    .venv/bin/python benchmarks/bench_truth.py --llm oracle
    .venv/bin/python benchmarks/bench_truth.py --llm in-process --classes weekday,month,number
    .venv/bin/python benchmarks/bench_truth.py --llm oracle --revise 1   # revision from a wrong start
    .venv/bin/python benchmarks/bench_truth.py --part concepts      # planted concepts (truth_concepts.py)

``--llm oracle``: a stand-in that explains with the class name and simulates from class
membership; every unit must be recovered. ``--llm <spec>`` (any ``get_llm`` spec, e.g.
``in-process`` for the embedded SmolLM2): recovery (the explanation names the planted
class) and the distribution of test correlations beside the token-lookup baseline and
the lookup table. ``--mismatch`` also scores a wrong class name per unit. The last line is
``recovered N/M planted units``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tl_concepts._sync import run_sync  # noqa: E402
from tl_concepts.corpus import lee_corpus  # noqa: E402
from tl_concepts.explain.planted import (  # noqa: E402
    OracleLLM,
    arevision_effect,
    ascore_planted,
    planted_classes,
    planted_units,
)
from tl_concepts.explain.runner import ExplainConfig  # noqa: E402
from tl_concepts.explain.verdict import Verdict, count_verdicts  # noqa: E402


def _dist(xs: list) -> str:
    v = np.array([x for x in xs if x is not None], dtype=float)
    if not v.size:
        return "n=0"
    q = np.quantile(v, [0.0, 0.5, 1.0])
    return f"mean {v.mean():+.3f}  min {q[0]:+.3f}  median {q[1]:+.3f}  max {q[2]:+.3f}  (n={v.size})"


def part_units(args: argparse.Namespace) -> list[dict]:
    corpus = lee_corpus()
    classes = planted_classes(corpus)
    keys = [k for k in args.classes.split(",") if k] if args.classes else list(classes)
    unknown = sorted(set(keys) - set(classes))
    if unknown:
        raise SystemExit(f"unknown classes {unknown}; choose from {sorted(classes)}")
    units = planted_units(corpus, classes, keys=keys, seed=args.seed)
    oracle = args.llm == "oracle"
    if oracle:
        llm = OracleLLM(classes)
    else:
        from tl_concepts.llm import get_llm

        llm = get_llm(args.llm)
    mismatch = OracleLLM(classes, mismatch=True) if (oracle or args.mismatch) else None
    out = args.out or tempfile.mkdtemp(prefix="bench-truth-")
    cfg = ExplainConfig(out_dir=out, n_bootstrap=args.bootstrap, progress=False, seed=args.seed,
                        detection=oracle, fuzzing=oracle, few_shot=not args.no_few_shot)
    t0 = time.perf_counter()
    rows = run_sync(ascore_planted(units, llm, cfg, classes=classes, mismatch_llm=mismatch,
                                   simulator_llm=llm if mismatch is not None and not oracle else None))
    secs = time.perf_counter() - t0
    print(f"planted units: {len(rows)} over the Lee corpus ({corpus.n_words} words), llm={args.llm}, "
          f"{secs:.1f} s")
    print(f"{'class':<8} {'named':<5} {'llm r':>7} {'base r':>7} {'table r':>7} {'wrong r':>7}  {'verdict':<16} explanation")
    f = lambda v: "   -   " if v is None else f"{v:+.3f}"  # noqa: E731
    for r in rows:
        print(f"{r['class']:<8} {'yes' if r['named_right'] else 'no':<5} {f(r['llm']):>7} {f(r['baseline']):>7} "
              f"{f(r['table']):>7} {f(r.get('mismatched')):>7}  {r['verdict']['label']:<16} "
              f"{(r['explanation'] or '')[:70]!r}"
              + (f" (failed: {r['failure']['kind']}: {r['failure']['message'][:60]})" if r.get("failure") else ""))
    print()
    print("test correlation, LLM explanation: " + _dist([r["llm"] for r in rows]))
    print("test correlation, lookup baseline: " + _dist([r["baseline"] for r in rows]))
    print("test correlation, lookup table:    " + _dist([r["table"] for r in rows]))
    if mismatch is not None:
        print("test correlation, wrong class:     " + _dist([r.get("mismatched") for r in rows]))
    print(count_verdicts([Verdict.from_dict(r["verdict"]) for r in rows]))
    print(f"named the planted class: {sum(r['named_right'] for r in rows)}/{len(rows)}")
    if args.revise:
        # oracle: start from the wrong class name and let the honest oracle revise it;
        # another LLM: revise its own explanation.
        starts = [r.get("mismatched_explanation") if oracle else r["explanation"] for r in rows]
        t1 = time.perf_counter()
        rev = run_sync(arevision_effect(units, starts, llm, args.revise, few_shot=not args.no_few_shot,
                                        classes=classes))
        print(f"\nrevision ({args.revise} round(s) on the calibration split, {time.perf_counter() - t1:.1f} s), "
              "test correlation before -> after:")
        for r in rev:
            if r["status"] != "ok":
                print(f"{r['class']:<8} {r['status']}")
                continue
            print(f"{r['class']:<8} {f(r['test_before'])} -> {f(r['test_after'])}  kept {r['kept']}  "
                  f"{(r['start'] or '')[:40]!r} -> {(r['final'] or '')[:40]!r}")
        ok = [r for r in rev if r["status"] == "ok" and r["test_before"] is not None and r["test_after"] is not None]
        if ok:
            d = np.array([r["test_after"] - r["test_before"] for r in ok])
            print(f"mean test-correlation change {d.mean():+.3f} over {len(ok)} units; "
                  f"revisions kept on {sum(r['kept'] > 0 for r in ok)}/{len(ok)}")
        for row, r in zip(rows, rev):
            row["revision"] = r
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


def part_concepts(args: argparse.Namespace) -> None:
    try:
        from truth_concepts import planted_concept_accuracy  # written by the concepts work
    except ImportError:
        print("planted concepts: benchmarks/truth_concepts.py (planted_concept_accuracy) is not there yet")
        return
    print(planted_concept_accuracy(llm=args.llm))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="oracle", help="oracle, or a get_llm spec (e.g. in-process)")
    ap.add_argument("--part", choices=["units", "concepts", "all"], default="units")
    ap.add_argument("--classes", default="", help="comma-separated class keys (default: all)")
    ap.add_argument("--mismatch", action="store_true", help="also score a wrong class name (always with oracle)")
    ap.add_argument("--revise", type=int, default=0, help="also measure N revision rounds (test score before/after)")
    ap.add_argument("--no-few-shot", action="store_true", help="short prompts without the few-shot neurons")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="output folder of the explain runs (default: a temp dir)")
    ap.add_argument("--json", default="", help="write the per-unit rows here")
    args = ap.parse_args(argv)
    rows: list[dict] = []
    if args.part in ("concepts", "all"):
        part_concepts(args)
    if args.part in ("units", "all"):
        rows = part_units(args)
        print(f"recovered {sum(r['recovered'] for r in rows)}/{len(rows)} planted units")


if __name__ == "__main__":
    main()
