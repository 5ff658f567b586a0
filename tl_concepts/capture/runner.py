"""Capture activations from hook points of a live TransformerLens model into a store.

One streaming pass over the corpus: windows are batched, temporary forward hooks keep
only the requested hook points, the pass stops right after the deepest requested hook
fired (no later layer runs), and each finished shard is written atomically. Rerunning
the same capture resumes after the last finished shard; exemplars for every unit are
selected from per-context summaries written in the same pass.

Example:
    >>> from tl_concepts.capture import capture
    >>> store = capture(model, ["Some text.", "More text."],            # doctest: +SKIP
    ...                 hooks=["blocks.0.mlp.hook_post"], out="runs/x")
    >>> store.unit_records("blocks.0.mlp.hook_post", 3).test_top       # doctest: +SKIP
"""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tl_concepts.capture.exemplars import ExemplarConfig, select_exemplars
from tl_concepts.capture.safetensors_io import write_json, write_tensors
from tl_concepts.capture.store import STORE_FORMAT, ActivationStore, hook_file_name
from tl_concepts.corpus import Corpus, load_corpus
from tl_concepts.corpus.windows import Windows, make_windows
from tl_concepts.models import adapters


@dataclass
class CaptureConfig:
    """Settings of one capture run."""

    hooks: list[str]
    """Hook point names to keep, e.g. ``["blocks.3.mlp.hook_post"]``."""
    context_tokens: int = 64
    """Corpus tokens per context window (BOS/CLS/SEP come on top); capped by the model's n_ctx."""
    batch_size: int = 16
    """Windows per forward pass."""
    dtype: str = "float32"
    """Storage dtype of activations: ``float32`` or ``float16``."""
    shard_tokens: int = 32768
    """Token rows per shard file (the unit of resumption)."""
    exemplars: ExemplarConfig = field(default_factory=ExemplarConfig)
    """Exemplar selection per unit."""
    device: str | None = None
    """Device of the input tensors (default: the model's)."""

    def key(self) -> dict[str, Any]:
        """Settings that determine the captured numbers (exemplar choice excluded)."""
        return {"hooks": list(self.hooks), "context_tokens": self.context_tokens, "dtype": self.dtype}


class _Stop(Exception):
    """Raised from the last needed hook to end the forward pass early."""


def _model_fingerprint(model: Any) -> str:
    h = hashlib.sha256()
    for i, (name, p) in enumerate(model.named_parameters()):
        if i >= 4:
            break
        h.update(name.encode())
        h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _words_tables(corpus: Corpus, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list] = {k: [] for k in ("word_id", "doc", "sentence", "index", "text", "pos", "ner")}
    wid = 0
    for si, s in enumerate(corpus.sentences):
        for j, w in enumerate(s.words):
            cols["word_id"].append(wid)
            cols["doc"].append(s.doc)
            cols["sentence"].append(si)
            cols["index"].append(j)
            cols["text"].append(w)
            cols["pos"].append(s.pos[j] if s.pos else "")
            cols["ner"].append(s.ner[j] if s.ner else "")
            wid += 1
    for name, table in (("words", pa.table(cols)),
                        ("sentences", pa.table({"sentence": list(range(len(corpus.sentences))),
                                                "doc": [s.doc for s in corpus.sentences],
                                                "text": [s.text for s in corpus.sentences]}))):
        tmp = out / f".{name}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.replace(out / f"{name}.parquet")


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Display text of single tokens, with the space before a word kept and continuation
    pieces joined: WordPiece ``##s`` -> ``s`` and ``cat`` -> `` cat``; SentencePiece ``▁cat``
    -> `` cat``; byte-level BPE decodes as it is (``Ġcat`` -> `` cat``)."""
    ids = [int(i) for i in ids]
    backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    if type(backend).__name__ == "WordPiece":
        prefix = getattr(backend, "continuing_subword_prefix", "##") or "##"
        return [p[len(prefix):] if p.startswith(prefix) else f" {p}" for p in pieces]
    if any(isinstance(p, str) and "\u2581" in p for p in pieces):
        return [p.replace("\u2581", " ") for p in pieces]
    return tokenizer.batch_decode([[i] for i in ids])


def _prepare_dir(out: Path, manifest: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Return the existing manifest to resume from, or None for a fresh start."""
    mf = out / "manifest.json"
    if mf.exists():
        old = json.loads(mf.read_text(encoding="utf-8"))
        same = old.get("settings_key") == manifest["settings_key"]
        if same:
            return old
        if not overwrite:
            raise FileExistsError(
                f"{out} holds a different capture (model {old.get('model', {}).get('id')}, hooks "
                f"{list(old.get('hooks', {}))}, corpus {old.get('corpus', {}).get('fingerprint')}); "
                "choose another --out or pass overwrite=True / --overwrite to replace it")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty and is not a tl-concepts store; choose another "
                              "output directory or pass overwrite=True / --overwrite")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return None


def capture(
    model: Any,
    corpus: Corpus | str | Sequence[str],
    hooks: Sequence[str],
    out: str | Path,
    *,
    config: CaptureConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    model_name: str | None = None,
    **overrides: Any,
) -> ActivationStore:
    """Capture ``hooks`` of ``model`` over ``corpus`` into the store directory ``out``.

    ``corpus`` is a :class:`Corpus`, ``"lee"``, a list of strings or a file path.
    Keyword overrides set :class:`CaptureConfig` fields (``context_tokens=128``, ...).
    The model is used as it is: only temporary hooks are added, and they are removed on
    return and on error. Returns the opened :class:`ActivationStore`.
    """
    adapters.check_model(model)
    hooks = adapters.resolve_hooks(model, hooks)
    cfg = config or CaptureConfig(hooks=hooks)
    cfg.hooks = hooks
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise TypeError(f"unknown capture setting '{k}'")
        setattr(cfg, k, v)
    if cfg.dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {cfg.dtype!r}")
    corpus = load_corpus(corpus)
    prefix, suffix = adapters.special_tokens(model)
    ctx = min(cfg.context_tokens, adapters.max_context(model) - len(prefix) - len(suffix))
    windows = make_windows(corpus, model.tokenizer, ctx)
    if windows.n_tokens == 0:
        raise ValueError("the corpus produced no tokens")

    out = Path(out)
    name = model_name or adapters.model_id(model)
    manifest: dict[str, Any] = {
        "format": STORE_FORMAT,
        "status": "capturing",
        "model": {"id": name, "class": type(model).__name__, "fingerprint": _model_fingerprint(model),
                  "n_layers": int(getattr(model.cfg, "n_layers", 0) or 0),
                  "d_model": int(getattr(model.cfg, "d_model", 0) or 0)},
        "transformer_lens_version": adapters.tl_version(),
        "tokenizer": {"class": type(model.tokenizer).__name__,
                      "name": str(getattr(model.tokenizer, "name_or_path", "")),
                      "prefix_ids": prefix, "suffix_ids": suffix},
        "corpus": {"name": corpus.name, "fingerprint": corpus.fingerprint(), "n_docs": corpus.n_docs,
                   "n_sentences": len(corpus.sentences), "n_words": corpus.n_words, "tagged": corpus.tagged},
        "settings": {**cfg.key(), "context_tokens_effective": ctx, "batch_size": cfg.batch_size,
                     "shard_tokens": cfg.shard_tokens},
        "exemplars": cfg.exemplars.to_dict(),
        "hooks": {},
        "n_windows": windows.n_windows,
        "n_tokens": windows.n_tokens,
        "shards": [],
    }
    key_src = {"model": manifest["model"], "corpus": manifest["corpus"]["fingerprint"],
               "settings": cfg.key(), "ctx": ctx, "prefix": prefix, "suffix": suffix}
    manifest["settings_key"] = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]

    old = _prepare_dir(out, manifest, overwrite)
    if old is not None:
        manifest = old
        manifest["exemplars"] = cfg.exemplars.to_dict()
        for f in (out / "shards").glob(".*.tmp"):  # half-written shards of a killed run
            f.unlink()
        known = {s["file"] for s in manifest["shards"]}
        for f in (out / "shards").glob("shard-*.safetensors"):
            if f.name not in known:
                f.unlink()
    else:
        write_tensors(out / "windows.safetensors", {
            "window_start": windows.window_start, "token_id": windows.token_id, "doc": windows.doc,
            "sentence": windows.sentence, "word_id": windows.word_id, "position": windows.position})
        _words_tables(corpus, out)
        uniq = np.unique(windows.token_id)
        write_json(out / "token_text.json", dict(zip(map(int, uniq), token_texts(model.tokenizer, uniq))))
        write_json(out / "manifest.json", manifest)

    t0 = time.time()
    done = manifest["shards"][-1]["windows"][1] if manifest["shards"] else 0
    if done < windows.n_windows:
        _run_pass(model, windows, cfg, prefix, suffix, out, manifest, done, progress)
    ids_written = all((out / "exemplars" / f"{hook_file_name(h)}.safetensors").exists() for h in hooks)
    if manifest["status"] != "complete" or not ids_written or old is None or \
            old.get("exemplars") != cfg.exemplars.to_dict():
        _mine(out, manifest, cfg)
    manifest["status"] = "complete"
    manifest["seconds"] = round(float(manifest.get("seconds") or 0) + time.time() - t0, 3)
    write_json(out / "manifest.json", manifest)
    return ActivationStore(out)


def _run_pass(model: Any, windows: Windows, cfg: CaptureConfig, prefix: list[int], suffix: list[int],
              out: Path, manifest: dict[str, Any], start_window: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    device = cfg.device or getattr(model.cfg, "device", None) or "cpu"
    store_dtype = np.float16 if cfg.dtype == "float16" else np.float32
    hooks = cfg.hooks
    n_pre = len(prefix)

    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def fn(tensor: torch.Tensor, hook: Any = None) -> None:
            captured[name] = tensor.detach()
            if len(captured) == len(hooks):
                raise _Stop()
        return fn

    buf: dict[str, list[np.ndarray]] = {}
    buf_rows = 0
    shard_first = start_window
    n_win = windows.n_windows
    bar = tqdm(total=windows.n_tokens, initial=int(windows.window_start[start_window]), unit="tok",
               desc="capture", disable=not progress)

    # Shards are written by one background thread while the model runs the next batches;
    # at most one write is in flight, and shards are listed in the manifest in order.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tl-concepts-shard-writer")
    pending: list[Future] = []
    n_shards = len(manifest["shards"])

    def write_shard(i: int, parts: dict[str, list[np.ndarray]], first: int, last: int) -> None:
        fname = f"shard-{i:05d}.safetensors"
        tensors = {k: np.concatenate(v) for k, v in parts.items()}
        try:
            write_tensors(out / "shards" / fname, tensors, metadata={"windows": f"{first},{last}"})
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(e.errno, f"disk full while writing {fname}: the store in {out} keeps its "
                              f"{i} finished shards; free space and rerun the same capture to resume") from e
            raise
        rows = [int(windows.window_start[first]), int(windows.window_start[last])]
        manifest["shards"].append({"file": fname, "windows": [first, last], "rows": rows})
        write_json(out / "manifest.json", manifest)

    def wait_pending() -> None:
        while pending:
            pending.pop(0).result()  # re-raises a failed write here, in the capture thread

    def flush(last_window: int) -> None:
        nonlocal buf, buf_rows, shard_first, n_shards
        if shard_first >= last_window:
            return
        wait_pending()
        pending.append(writer.submit(write_shard, n_shards, buf, shard_first, last_window))
        n_shards += 1
        buf, buf_rows, shard_first = {}, 0, last_window

    fwd_hooks = [(h, make_hook(h)) for h in hooks]
    try:
        with torch.inference_mode(), model.hooks(fwd_hooks=fwd_hooks):
            for b0 in range(start_window, n_win, cfg.batch_size):
                b1 = min(b0 + cfg.batch_size, n_win)
                lens = [int(windows.window_start[i + 1] - windows.window_start[i]) for i in range(b0, b1)]
                T = n_pre + max(lens) + len(suffix)
                ids = torch.full((b1 - b0, T), pad, dtype=torch.long)
                mask = torch.zeros((b1 - b0, T), dtype=torch.long)
                keep = torch.zeros((b1 - b0, T), dtype=torch.bool)
                for j, i in enumerate(range(b0, b1)):
                    seq = prefix + windows.token_id[windows.window(i)].tolist() + suffix
                    ids[j, : len(seq)] = torch.tensor(seq)
                    mask[j, : len(seq)] = 1
                    keep[j, n_pre: n_pre + lens[j]] = True
                offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])  # first row of each window
                captured.clear()
                try:
                    adapters.forward_for_hooks(model, ids.to(device), mask.to(device))
                except _Stop:
                    pass
                missing = [h for h in hooks if h not in captured]
                if missing:
                    raise RuntimeError(f"hook(s) {missing} did not fire in the forward pass; they are not "
                                       "reachable for this model's input (use a per-token hook point)")
                for h in hooks:
                    t = captured[h]
                    if t.dim() != 3 or tuple(t.shape[:2]) != (b1 - b0, T):
                        raise ValueError(f"hook '{h}' gives a tensor of shape {tuple(t.shape)}, not per-token "
                                         f"[batch, pos, d] = [{b1 - b0}, {T}, d]; pick a per-token hook such as "
                                         "blocks.L.mlp.hook_post or blocks.L.hook_resid_post")
                    rows = t[keep].float().cpu().numpy()  # [tokens of the batch, d], windows in order
                    buf.setdefault(f"act.{h}", []).append(rows.astype(store_dtype, copy=False))
                    buf.setdefault(f"max.{h}", []).append(np.maximum.reduceat(rows, offsets, axis=0))
                    buf.setdefault(f"min.{h}", []).append(np.minimum.reduceat(rows, offsets, axis=0))
                    manifest["hooks"].setdefault(h, {"d": int(t.shape[-1]), "dtype": cfg.dtype})
                buf_rows += sum(lens)
                bar.update(sum(lens))
                if buf_rows >= cfg.shard_tokens:
                    flush(b1)
            flush(n_win)
        wait_pending()
    finally:
        writer.shutdown(wait=True)
        bar.close()


def _mine(out: Path, manifest: dict[str, Any], cfg: CaptureConfig) -> None:
    manifest["status"] = "mining"
    write_json(out / "manifest.json", manifest)
    store = ActivationStore(out)
    store.manifest["status"] = "complete"  # let the reader serve the finished shards
    for h in cfg.hooks:
        mx = store.context_summary(h, "max")
        mn = store.context_summary(h, "min") if cfg.exemplars.n_negative else None
        sel = select_exemplars(mx, mn, cfg.exemplars)
        sel["max_activation"] = mx.max(0) if len(mx) else np.zeros(mx.shape[1], np.float32)
        write_tensors(out / "exemplars" / f"{hook_file_name(h)}.safetensors", sel)
