"""The ``descriptors`` subcommand, ready to be mounted on the ``tl-concepts`` parser.

    tl-concepts descriptors --store runs/x --hook blocks.3.mlp.hook_post --out runs/x/descriptors \
        --llm openai:gpt-4o-mini

Wiring (in ``tl_concepts/cli.py``)::

    from tl_concepts.descriptors.cli import add_descriptors_parser
    add_descriptors_parser(sub)

The parser sets ``func`` to :func:`cmd_descriptors`, which returns an exit code.
"""
from __future__ import annotations

import argparse

from .prompts import TEMPLATES


def add_descriptors_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``descriptors`` to a subparsers object; returns the new parser."""
    p = sub.add_parser("descriptors", help="LLM sentence descriptors -> vocabulary -> neuron descriptors",
                       description="Ask an LLM for short descriptors of every sentence (resumable), cluster them "
                                   "into a vocabulary with MiniLM embeddings, map each neuron to the descriptors "
                                   "over-represented among its top sentences (Mondal et al.), and report "
                                   "calibration/validation Jaccard and precision/recall@k.")
    p.add_argument("--store", required=True, help="capture store directory")
    p.add_argument("--hook", required=True, help="hook whose neurons are described")
    p.add_argument("--out", required=True, help="output directory (a rerun resumes from it)")
    p.add_argument("--llm", default=None, help="LLM spec for tl_concepts.llm.get_llm (default: $TL_CONCEPTS_LLM or in-process)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for --llm openai:MODEL")
    p.add_argument("--template", choices=sorted(TEMPLATES), default="descriptors", help="prompt template")
    p.add_argument("--max-sentences", type=int, default=None, help="only the first N sentences")
    p.add_argument("--batch-size", type=int, default=16, help="concurrent LLM requests (default 16)")
    p.add_argument("--distance-threshold", type=float, default=0.3, help="cosine distance cut of the clustering")
    p.add_argument("--top-k", type=int, default=20, help="exemplar sentences per neuron and half (default 20)")
    p.add_argument("--composition-threshold", type=float, default=0.3, help="min share of exemplars (default 0.3)")
    p.add_argument("--min-lift", type=float, default=2.0, help="min composition / base rate (default 2)")
    p.add_argument("--min-support", type=int, default=3, help="min sentences per descriptor and half (default 3)")
    p.add_argument("--gold", default=None, help="JSON {neuron: [descriptor, ...]} for precision/recall@k")
    p.add_argument("--k", type=int, default=2, help="k of precision/recall@k (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/validation split")
    p.add_argument("--retry-failed", action="store_true",
                   help="also ask again for sentences whose answer failed for a permanent reason (unparseable, "
                        "refusal, truncated); transient failures are always asked again")
    p.add_argument("--no-progress", action="store_true", help="hide progress output")
    p.set_defaults(func=cmd_descriptors)
    return p


def cmd_descriptors(args: argparse.Namespace) -> int:
    """Run the stage and print the summary."""
    from .runner import DescriptorsConfig, run_descriptors, summary_table

    cfg = DescriptorsConfig(store=args.store, hook=args.hook, out=args.out, llm=args.llm, template=args.template,
                            max_sentences=args.max_sentences, batch_size=args.batch_size,
                            distance_threshold=args.distance_threshold, top_k=args.top_k,
                            composition_threshold=args.composition_threshold, min_lift=args.min_lift,
                            min_support=args.min_support, seed=args.seed, gold=args.gold, k=args.k,
                            retry_failed=args.retry_failed)
    cfg.check()  # bad settings fail before the LLM is set up
    from tl_concepts.llm import get_llm

    llm = get_llm(args.llm, **({"base_url": args.base_url} if args.base_url else {}))
    res = run_descriptors(cfg, llm=llm, progress=not args.no_progress)
    print(summary_table(res))
    print(f"written to {args.out}")  # a CLI: printing is its job
    return 0
