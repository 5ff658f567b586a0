"""Capture benchmarks: throughput against a plain truncated forward pass, early stop, memory.

Prints measured ratios (not a test). Usage:

    .venv/bin/python benchmarks/bench_capture.py [--docs 40] [--model smollm2-135m] [--layer 3]

1. capture of one MLP layer (exemplar mining and disk writes included) against a plain
   forward pass truncated at the same hook on the same batches: throughput ratio;
2. capture of layer L against a full forward pass of the model: speedup from early stop;
3. peak RSS of a capture subprocess for the corpus at 1x and 4x its length.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tl_concepts import models  # noqa: E402
from tl_concepts.capture import capture  # noqa: E402
from tl_concepts.capture.runner import _Stop  # noqa: E402
from tl_concepts.corpus import lee_corpus  # noqa: E402
from tl_concepts.corpus.windows import make_windows  # noqa: E402
from tl_concepts.models import adapters  # noqa: E402


def batches(model, corpus, ctx, bs):
    prefix, suffix = adapters.special_tokens(model)
    w = make_windows(corpus, model.tokenizer, ctx)
    pad = model.tokenizer.pad_token_id or 0
    out = []
    for b0 in range(0, w.n_windows, bs):
        seqs = [prefix + w.token_id[w.window(i)].tolist() + suffix for i in range(b0, min(b0 + bs, w.n_windows))]
        T = max(map(len, seqs))
        ids = torch.full((len(seqs), T), pad)
        mask = torch.zeros((len(seqs), T), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        out.append((ids, mask))
    return out, w.n_tokens


def plain_forward(model, bs_list, stop_hook: str | None) -> float:
    def stop(t, hook=None):
        raise _Stop()

    hooks = [(stop_hook, stop)] if stop_hook else []
    t0 = time.perf_counter()
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        for ids, mask in bs_list:
            try:
                adapters.forward_for_hooks(model, ids, mask)
            except _Stop:
                pass
    return time.perf_counter() - t0


def rss_child(model_name: str, docs: int, hook: str) -> float:
    code = f"""
import resource, sys, tempfile
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from tl_concepts import models
from tl_concepts.capture import capture
from tl_concepts.corpus import lee_corpus
m = models.load({model_name!r})
c = lee_corpus().head({docs})
with tempfile.TemporaryDirectory() as d:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    capture(m, c, [{hook!r}], d + '/s', progress=False, shard_tokens=8192)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-rss", action="store_true")
    args = ap.parse_args()
    hook = f"blocks.{args.layer}.mlp.hook_post"
    model = models.load(args.model)
    corpus = lee_corpus().head(args.docs)
    bl, n_tok = batches(model, corpus, 64, 16)
    print(f"model {args.model}, {args.docs} Lee docs, {n_tok} tokens, {len(bl)} batches, hook {hook}")
    plain_forward(model, bl[:2], hook)  # warm up
    t_plain, t_cap, t_full = [], [], []
    for r in range(args.repeats):  # interleave to share machine noise
        t_plain.append(plain_forward(model, bl, hook))
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            capture(model, corpus, [hook], Path(d) / "s", progress=False)
            t_cap.append(time.perf_counter() - t0)
        t_full.append(plain_forward(model, bl, None))
    tp, tc, tf = min(t_plain), min(t_cap), min(t_full)
    res = {
        "tokens": n_tok,
        "plain_truncated_s": round(tp, 2), "capture_s": round(tc, 2), "full_forward_s": round(tf, 2),
        "capture_throughput_tok_s": round(n_tok / tc),
        "throughput_ratio_capture_vs_truncated": round(tp / tc, 3),
        "speedup_capture_vs_full_forward": round(tf / tc, 2),
    }
    if not args.no_rss:
        r1 = rss_child(args.model, args.docs, hook)
        r4 = rss_child(args.model, args.docs * 4, hook)
        res.update({"peak_rss_mb_1x": round(r1), "peak_rss_mb_4x": round(r4), "rss_ratio_4x_vs_1x": round(r4 / r1, 3)})
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
