"""The ``probe`` and ``rank`` subcommands, ready to be mounted on the ``tl-concepts`` parser.

    tl-concepts probe --store runs/x --hook blocks.3.hook_resid_post --labels concepts:runs/x/concepts/layer3
    tl-concepts rank --store runs/x --hook blocks.3.mlp.hook_post --labels pos --method probeless probe_weights

Wiring (in ``tl_concepts/cli.py``)::

    from tl_concepts.probing.cli import add_probe_parser, add_rank_parser
    add_probe_parser(sub)
    add_rank_parser(sub)

Each parser sets ``func``, which returns an exit code.
"""
from __future__ import annotations

import argparse

from .rankers import RANKERS

_LABELS_HELP = ("label source: pos | ner | concepts:<dir> (a saved concept set) | a .tsv/.csv file with "
                "columns word_id,label (default: pos)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="capture store directory (tl-concepts capture --out)")
    p.add_argument("--hook", required=True, help="hook whose word representations are used")
    p.add_argument("--labels", default="pos", help=_LABELS_HELP)
    p.add_argument("-k", "--k", type=int, default=None, help="cut a concept set at K (default: its saved K)")
    p.add_argument("--agg", choices=["mean", "first", "last"], default="mean", help="subword -> word aggregation")
    p.add_argument("--min-size", type=int, default=10, help="skip labels with fewer rows (default 10)")
    p.add_argument("--max-labels", type=int, default=None, help="only the N largest labels")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, negative sampling and control tasks")
    p.add_argument("--out", default=None,
                   help="directory for the results (default: <store>/probing/<hook>/<labels>)")
    p.add_argument("--no-progress", action="store_true", help="hide progress output")


def add_probe_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``probe`` to a subparsers object; returns the new parser."""
    p = sub.add_parser("probe", help="linear probes with control tasks for every label of a source",
                       description="Train one binary probe per label (label vs a balanced sample of the rest) "
                                   "and a multi-class probe over all labels, 60/20/20 split, with a control "
                                   "task (random label per word type) and selectivity.")
    _common(p)
    p.add_argument("--negatives", type=float, default=1.0, help="sampled non-members per member (default 1.0)")
    p.add_argument("--c-grid", type=float, nargs="+", default=[0.01, 0.1, 1.0],
                   help="inverse L2 strengths tried, best on dev (default 0.01 0.1 1)")
    p.add_argument("--no-control", action="store_true", help="skip the control tasks")
    p.add_argument("--no-multiclass", action="store_true", help="skip the multi-class probe")
    p.set_defaults(func=cmd_probe)
    return p


def add_rank_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``rank`` to a subparsers object; returns the new parser."""
    p = sub.add_parser("rank", help="rank neurons for every label (Probeless, probe weights, average precision)",
                       description="Rank the neurons of a hook for every label of a source (label vs rest) and "
                                   "over all labels; with a concept set, also the super/sub-concept top-n "
                                   "alignment.")
    _common(p)
    p.add_argument("--method", nargs="+", choices=sorted(RANKERS), default=["probeless"], help="rankers to run")
    p.add_argument("--top-n", type=int, default=20, help="neurons kept per label and method (default 20)")
    p.add_argument("--mass", type=float, default=0.5, help="probe_weights: share of weight mass per class")
    p.add_argument("--align-n", type=int, default=10, help="top-n of the super/sub-concept alignment")
    p.set_defaults(func=cmd_rank)
    return p


def cmd_probe(args: argparse.Namespace) -> int:
    """Run the probes and print the summary table."""
    from .probes import ProbeOptions
    from .runner import ProbeConfig, probe_summary_table, run_probes

    cfg = ProbeConfig(store=args.store, hook=args.hook, labels=args.labels, k=args.k, agg=args.agg,
                      min_size=args.min_size, max_labels=args.max_labels, negatives=args.negatives,
                      multiclass=not args.no_multiclass, out=args.out,
                      options=ProbeOptions(seed=args.seed, c_grid=tuple(args.c_grid), control=not args.no_control))
    from .runner import default_out

    ds = run_probes(cfg, progress=not args.no_progress)
    print(probe_summary_table(ds))
    print(f"written to {args.out or default_out(cfg.store, cfg.hook, cfg.labels)}")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    """Run the rankings and print the summary table."""
    from .runner import RankConfig, rank_summary_table, run_rankings

    cfg = RankConfig(store=args.store, hook=args.hook, labels=args.labels, methods=tuple(args.method), k=args.k,
                     agg=args.agg, min_size=args.min_size, max_labels=args.max_labels, top_n=args.top_n,
                     mass=args.mass, align_n=args.align_n, seed=args.seed, out=args.out)
    from .runner import default_out

    out = run_rankings(cfg, progress=not args.no_progress)
    print(rank_summary_table(out))
    if out.resumed:
        print(f"{out.resumed} rankings read back from an earlier run")
    print(f"written to {args.out or default_out(cfg.store, cfg.hook, cfg.labels)}")
    return 0
