"""The ``concepts`` subcommand, ready to be mounted on the ``tl-concepts`` parser.

    tl-concepts concepts --store runs/x --layer 3 -k 200 --label
    tl-concepts concepts --store runs/x --layer 3 -k 200 --label --retry-failed --export-tcn release/

Wiring (in ``tl_concepts/cli.py``)::

    from tl_concepts.concepts.cli import add_concepts_parser
    add_concepts_parser(sub)          # sub = parser.add_subparsers(...)

The parser sets ``func`` to :func:`cmd_concepts`, which returns an exit code.
"""
from __future__ import annotations

import argparse
import os

from .filters import FilterConfig
from .labelling import LabelOptions
from .prompts import TEMPLATES


def add_concepts_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``concepts`` to a subparsers object; returns the new parser."""
    p = sub.add_parser(
        "concepts", help="discover latent concepts (Ward clustering), label them with an LLM, evaluate",
        description="Cluster the word representations of one layer of a capture store into K latent "
                    "concepts (Ward; ConceptX / Mousi et al. 2023), optionally label them with an LLM, "
                    "and report alignment with POS/NER/gold tags.")
    p.add_argument("--store", required=True, help="capture store directory (tl-concepts capture --out)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--layer", type=int, help="block index L (uses blocks.L.hook_resid_post)")
    g.add_argument("--hook", help="hook name to cluster")
    p.add_argument("-k", "--k", type=int, default=None,
                   help="number of concepts (default: one per ~40 clustered words, at most 600; paper: 600)")
    p.add_argument("--agg", choices=["mean", "first", "last"], default="mean", help="subword -> word aggregation")
    p.add_argument("--min-count", type=int, default=10, help="drop word types seen fewer times (default 10)")
    p.add_argument("--max-per-type", type=int, default=10, help="keep at most N occurrences per type (default 10; 0: all)")
    p.add_argument("--max-count", type=int, default=None, help="drop word types seen more often than this")
    p.add_argument("--mode", choices=["auto", "exact", "micro"], default="auto", help="Ward mode (default auto)")
    p.add_argument("--n-micro", type=int, default=None, help="micro-clusters in micro mode")
    p.add_argument("--out", default=None, help="output directory (default <store>/concepts/layer<L>)")
    p.add_argument("--label", action="store_true", help="label the concepts with an LLM")
    p.add_argument("--llm", default=None, help="LLM spec for tl_concepts.llm.get_llm (default: $TL_CONCEPTS_LLM or in-process)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for --llm openai:MODEL")
    p.add_argument("--template", choices=sorted(TEMPLATES), default=None,
                   help="label prompt (default: label-fewshot for the embedded SmolLM2, else label-general)")
    p.add_argument("--words-as", choices=["tokens", "types"], default="tokens")
    p.add_argument("--context", type=int, default=0, help="context sentences per concept in the prompt")
    p.add_argument("--retry-failed", action="store_true",
                   help="ask again for labels that were not accepted (refused, unparseable, rejected by the "
                        "label gate); transient failures are always retried")
    p.add_argument("--judge", action="store_true", help="rate the accepted labels with the LLM as judge")
    p.add_argument("--export-tcn", metavar="DIR", default=None,
                   help="also write the concepts and labels in the Transformers Concept Net layout under DIR")
    p.add_argument("--theta", type=float, default=0.9, help="alignment threshold (default 0.9)")
    p.add_argument("--no-progress", action="store_true", help="hide progress output")
    p.set_defaults(func=cmd_concepts)
    return p


def cmd_concepts(args: argparse.Namespace) -> int:
    """Run discovery (+ labels, + evaluation) and print the summary."""
    from .runner import ConceptsConfig, discover_concepts, evaluate, label, labels_path, summary

    cfg = ConceptsConfig(
        store=args.store, layer=args.layer, hook=args.hook, agg=args.agg, k=args.k,
        filters=FilterConfig(min_count=args.min_count, max_per_type=args.max_per_type or None,
                             max_count=args.max_count),
        mode=args.mode, n_micro=args.n_micro, out=args.out, theta=args.theta,
        label=LabelOptions(template=args.template, words_as=args.words_as, n_context=args.context))
    progress = not args.no_progress
    cs = discover_concepts(cfg, progress=progress)
    labels, llm = [], None
    if args.label or args.judge:
        from tl_concepts.llm import get_llm

        kw = {"base_url": args.base_url} if args.base_url else {}
        llm = get_llm(args.llm, **kw)
        if args.label or os.path.exists(labels_path(cfg, cs, llm)):
            labels = label(cs, cfg, llm, retry_failed=args.retry_failed, progress=progress)
    report = evaluate(cs, cfg, labels=labels, judge=llm if args.judge else None)
    print(summary(cs, labels, report, llm))
    print(f"written to {cfg.out_dir(cs.layer)}")
    if args.export_tcn:
        from .tcn import write_tcn

        print(f"TCN release written to {write_tcn(cs, args.export_tcn).parent.parent}")
    return 0
