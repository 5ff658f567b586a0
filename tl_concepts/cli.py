"""``tl-concepts`` command line.

Example:
    tl-concepts capture --model minilm --corpus lee --hooks blocks.3.mlp.hook_post --out runs/x
    tl-concepts explain --model smollm2-135m --hook blocks.5.mlp.hook_post --units 0:50
    tl-concepts concepts --store runs/x --layer 3 -k 200 --label
    tl-concepts probe --store runs/x --hook blocks.3.hook_resid_post --labels pos
    tl-concepts rank --store runs/x --hook blocks.3.mlp.hook_post --labels pos --method probeless
    tl-concepts descriptors --store runs/x --hook blocks.3.mlp.hook_post --out runs/x/descriptors
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Sequence


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _add_capture(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help="capture activations from hook points into a store",
                       description="Capture activations of hook points over a corpus into an on-disk "
                                   "store and mine exemplars for every unit, in one pass.")
    p.add_argument("--model", default="minilm",
                   help="minilm | smollm2-135m | a Hugging Face name or local folder (default: minilm)")
    p.add_argument("--corpus", default="lee",
                   help="lee | a .txt/.jsonl/.parquet file | a datasets name or folder (default: lee)")
    p.add_argument("--text-column", default="text", help="text column of jsonl/parquet/datasets corpora")
    p.add_argument("--encoding", default="utf-8",
                   help="text encoding of a .txt/.jsonl corpus (default utf-8; an undecodable byte is an error)")
    p.add_argument("--max-docs", type=int, default=None, help="use only the first N documents")
    p.add_argument("--hooks", required=True, nargs="+",
                   help="hook point names, e.g. blocks.3.mlp.hook_post (comma- or space-separated)")
    p.add_argument("--out", required=True, help="store directory to create or resume")
    p.add_argument("--context-tokens", type=int, default=64, help="corpus tokens per context (default 64)")
    p.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass (default 16)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage dtype")
    p.add_argument("--negative", type=int, default=0, help="also keep the N most negative contexts per unit")
    p.add_argument("--exemplars", choices=["default", "bills"], default="default",
                   help="exemplar split per unit: default (10 top to explain; 5 top + 5 random calibration; "
                        "5 top + 10 random test) or bills (Bills et al. 2023: 5 top to explain; 5 top + 5 "
                        "random in calibration and in test)")
    p.add_argument("--nonfinite", choices=["error", "zero"], default="error",
                   help="a NaN/inf activation stops the capture (error, default) or is stored as 0 and "
                        "counted in the manifest (zero)")
    p.add_argument("--device", default="cpu", help="device to run the model on (default cpu)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a capture of other inputs (or a damaged one) in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_capture)


def _cmd_capture(args: argparse.Namespace) -> int:
    from tl_concepts import models
    from tl_concepts.capture import ExemplarConfig, capture
    from tl_concepts.corpus import load_corpus
    from tl_concepts.errors import TLConceptsError

    hooks = [h for item in args.hooks for h in item.split(",") if h]
    t0 = time.time()
    try:
        corpus = load_corpus(args.corpus, text_column=args.text_column, max_docs=args.max_docs,
                             encoding=args.encoding)
        model = models.load(args.model, device=args.device)
        store = capture(model, corpus, hooks, args.out, context_tokens=args.context_tokens,
                        batch_size=args.batch_size, dtype=args.dtype, overwrite=args.overwrite,
                        exemplars=ExemplarConfig.preset(args.exemplars, n_negative=args.negative),
                        nonfinite=args.nonfinite, progress=not args.no_progress,
                        model_name=args.model, device=args.device)
    except TLConceptsError as e:  # one line for a user error; anything else keeps its traceback
        print(f"tl-concepts: error: {e}", file=sys.stderr)
        return e.exit_code
    s = store.summary()
    print(f"\nstore     {store.path}")
    print(f"model     {store.manifest['model']['id']}")
    print(f"corpus    {store.manifest['corpus']['name']} ({store.manifest['corpus']['n_docs']} docs, "
          f"fingerprint {store.manifest['corpus']['fingerprint']})")
    print(f"tokens    {s['tokens']:,} in {s['contexts']:,} contexts")
    for h, d in s["units"].items():
        print(f"units     {h}: {d:,}")
    zeroed = {h: i.get("nonfinite_zeroed", 0) for h, i in store.manifest["hooks"].items()}
    for h, n in zeroed.items():
        if n:
            print(f"nonfinite {h}: {n:,} values stored as 0 (--nonfinite zero)")
    print(f"time      {time.time() - t0:.1f} s (capture {s['seconds']:.1f} s)")
    print(f"disk      {_human_bytes(s['disk_bytes'])}")
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job: every stage on the embedded defaults",
                       description="capture -> concepts -> labels -> explanations -> scores -> probes -> "
                                   "datasets with cards -> HTML report (-> the Hub). Offline by default; "
                                   "rerun to resume.")
    p.add_argument("--out", default="runs/main", help="run folder (default runs/main)")
    p.add_argument("--model", default="minilm", help="model to interpret (default minilm)")
    p.add_argument("--corpus", default="lee", help="corpus (default lee)")
    p.add_argument("--max-docs", type=int, default=100, help="documents used (default 100)")
    p.add_argument("--layer", type=int, default=3, help="block to interpret (default 3)")
    p.add_argument("-k", "--k", type=int, default=40, help="concepts (default 40)")
    p.add_argument("--units", type=int, default=3, help="MLP neurons to explain (default 3)")
    p.add_argument("--fuzzing", action="store_true", help="also run the fuzzing scorer")
    p.add_argument("--llm", default=None, help="LLM spec (default: $TL_CONCEPTS_LLM or in-process SmolLM2)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for --llm openai:MODEL")
    p.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="publish the datasets to <REPO>-<kind> (token: $HF_TOKEN or the stored login)")
    p.add_argument("--private", action="store_true", help="create the Hub repos private")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute a run folder whose capture holds other inputs or cannot be resumed")
    p.add_argument("--retry-failed", action="store_true",
                   help="also retry labels and explanations that failed for a permanent reason")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from tl_concepts.pipeline import RunConfig, run

    result = run(RunConfig(out=args.out, model=args.model, corpus=args.corpus, max_docs=args.max_docs,
                  layer=args.layer, k=args.k, n_units=args.units, fuzzing=args.fuzzing, llm=args.llm, base_url=args.base_url,
                  push_to_hub=args.push_to_hub, private=args.private, progress=not args.no_progress,
                  overwrite=args.overwrite, retry_failed=args.retry_failed))
    print(result["summary"])
    return 0


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain, simulate and score units (Bills et al. 2023)",
                       description="Explain units with an LLM, simulate their activations from the "
                                   "explanation and score the simulation on held-out contexts, beside a "
                                   "token-lookup baseline. Resumable per unit.")
    p.add_argument("--model", default="smollm2-135m", help="model whose units are explained (default smollm2-135m)")
    p.add_argument("--hook", required=True, help="hook point, e.g. blocks.5.mlp.hook_post")
    p.add_argument("--units", default="0:50", help="units: '0:50', '3,7,9' or both (default 0:50)")
    p.add_argument("--store", default=None, help="existing capture store (default: capture into OUT/store)")
    p.add_argument("--corpus", default="lee", help="corpus when capturing (default lee)")
    p.add_argument("--max-docs", type=int, default=None, help="documents when capturing")
    p.add_argument("--out", default="runs/explain", help="output folder (default runs/explain)")
    p.add_argument("--llm", default=None, help="LLM spec (default: $TL_CONCEPTS_LLM or in-process SmolLM2)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for --llm openai:MODEL")
    p.add_argument("--n-explanations", type=int, default=1, help="best-of-n on the calibration split")
    p.add_argument("--no-few-shot", action="store_true", help="shorter prompts without few-shot examples")
    p.add_argument("--no-detection", action="store_true", help="skip the detection and fuzzing scorers")
    p.add_argument("--concurrency", type=int, default=None,
                   help="LLM requests in flight for an OpenAI-compatible endpoint (default 16)")
    p.add_argument("--retry-failed", action="store_true",
                   help="also retry units whose LLM answer failed for a permanent reason (unparseable, "
                        "truncated, refused); transient failures are always retried")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tl_concepts import models
    from tl_concepts.capture import ActivationStore, capture
    from tl_concepts.corpus import load_corpus
    from tl_concepts.explain import ExplainConfig, explain_store, parse_units, summary_table
    from tl_concepts.explain.runner import check_units, check_units_for_model
    from tl_concepts.llm import get_llm

    out = Path(args.out)
    units = parse_units(args.units)
    llm_kw = {k: v for k, v in (("base_url", args.base_url), ("max_concurrency", args.concurrency)) if v}
    llm = get_llm(args.llm, **llm_kw)
    if args.store:
        store = ActivationStore.open(args.store)
        check_units(store, args.hook, units)  # before any work
    else:
        model = models.load(args.model)
        check_units_for_model(model, args.hook, units)
        corpus = load_corpus(args.corpus, max_docs=args.max_docs)
        store = capture(model, corpus, [args.hook], out / "store", model_name=args.model,
                        progress=not args.no_progress)
    cfg = ExplainConfig(out_dir=str(out / "explain"), n_explanations=args.n_explanations,
                        few_shot=not args.no_few_shot, detection=not args.no_detection,
                        fuzzing=not args.no_detection,
                        progress=not args.no_progress)
    res = explain_store(store, args.hook, units, llm, cfg, retry_failed=args.retry_failed)
    print(summary_table(res))
    print(llm.ledger.summary_table())
    crashed = [u.id for u in res if u.status == "error"]
    if crashed:
        print(f"tl-concepts: {len(crashed)} unit(s) hit an error (details in {cfg.out_dir}/errors/); "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tl_concepts import __version__

    parser = argparse.ArgumentParser(prog="tl-concepts", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tl-concepts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_capture(sub)
    _add_explain(sub)
    from tl_concepts.concepts.cli import add_concepts_parser
    from tl_concepts.descriptors.cli import add_descriptors_parser
    from tl_concepts.probing.cli import add_probe_parser, add_rank_parser

    add_concepts_parser(sub)
    add_probe_parser(sub)
    add_rank_parser(sub)
    add_descriptors_parser(sub)
    return parser


def _is_user_error(e: BaseException) -> bool:
    """Errors raised on purpose for bad input: ours (``TLConceptsError``, and the stages'
    ``ValueError`` subclasses), or a file the user named that is missing or in the way."""
    from tl_concepts.errors import TLConceptsError

    if isinstance(e, TLConceptsError):
        return True
    if isinstance(e, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                      PermissionError)):
        return True
    return isinstance(e, ValueError) and type(e).__module__.startswith("tl_concepts")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI. A user error prints one line and exits 2 (bad input) or 1 (a failed run, e.g.
    a wrong API key); a bug prints its full traceback and exits 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:  # the library logs; the CLI shows its progress notes
        logging.basicConfig(format="[tl-concepts] %(message)s", level=logging.WARNING)
        logging.getLogger("tl_concepts").setLevel(
            logging.WARNING if getattr(args, "no_progress", False) else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("tl-concepts: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:
        if not _is_user_error(e):
            raise  # a bug: the traceback is the report
        print(f"tl-concepts: error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    sys.exit(main())
