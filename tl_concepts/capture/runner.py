"""Capture activations from hook points of a live TransformerLens model into a store.

One streaming pass over the corpus: windows are batched, temporary forward hooks keep
only the requested hook points, the pass stops right after the deepest requested hook
fired (no later layer runs), and each finished shard is written atomically. Exemplars for
every unit are selected from per-context summaries written in the same pass.

Resuming and keying. A store is keyed by its exact inputs: a fingerprint of *all* the
model's weights (blake2b over every parameter and buffer), the tokenizer, the corpus and
the capture settings (hooks, context size, dtype, non-finite policy). Rerunning the same
capture resumes after the last finished shard (or, after a crash before the first
``manifest.json``, restarts cleanly); a finished one returns at once. A folder holding a
capture of other inputs is refused with a :class:`~tl_concepts.errors.StaleResultError`
naming what changed (model weights / tokenizer / corpus / settings), or recomputed with
``overwrite=True``. A refused input (a bad hook, a non-finite activation) leaves nothing
behind; a second concurrent capture into the same folder gets
:class:`~tl_concepts.errors.FolderLockedError`. The caller's config is never modified.

Distributed capture. ``executor="ray"`` (``pip install 'tl-concepts[ray]'``) cuts the
windows into the same shards of whole batches a local pass writes (:func:`plan_shards`) and
runs them as Ray tasks on workers that each hold their own model replica (see
:class:`RayCapture`: a model name/recipe loaded by each worker, or the live model's exact
weights; every replica is fingerprint-checked against this process's model). Workers return
one shard's arrays at a time; this process writes them to the store in order and mines the
exemplars from the stored per-context summaries, as locally. So the files equal a local
capture's (the manifest's ``executor`` and ``seconds`` aside), the key ignores the executor,
and a capture interrupted under one executor resumes under the other.

Non-finite activations. ``nonfinite="error"`` (default) stops at the first NaN/inf with a
message naming the hook, units and context; ``nonfinite="zero"`` stores them as 0 and
counts them in the manifest (``hooks[<hook>]["nonfinite_zeroed"]``).

Example:
    >>> from tl_concepts.capture import capture
    >>> store = capture(model, ["Some text.", "More text."],            # doctest: +SKIP
    ...                 hooks=["blocks.0.mlp.hook_post"], out="runs/x")
    >>> store.unit_records("blocks.0.mlp.hook_post", 3).test_top       # doctest: +SKIP
"""
from __future__ import annotations

import copy
import errno
import hashlib
import logging
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from tl_concepts.atomic import folder_lock
from tl_concepts.capture.exemplars import ExemplarConfig, select_exemplars
from tl_concepts.capture.safetensors_io import check_tensors, write_json, write_tensors
from tl_concepts.capture.store import (LOCK, MARKER, STORE_FORMAT, ActivationStore, hook_file_name,
                                       read_manifest)
from tl_concepts.corpus import Corpus, load_corpus
from tl_concepts.corpus.windows import Windows, make_windows
from tl_concepts.crash import crashpoint
from tl_concepts.errors import ConfigError, InputError, StaleResultError, StoreError
from tl_concepts.fingerprint import fingerprint
from tl_concepts.models import adapters

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("error", "zero")
BASE_FILES = ("windows.safetensors", "words.parquet", "sentences.parquet", "token_text.json")


@dataclass
class CaptureConfig:
    """Settings of one capture run.

    Example:
        >>> CaptureConfig(hooks=["blocks.3.mlp.hook_post"], context_tokens=128).key()["context_tokens"]
        128
    """

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
    """Exemplar selection per unit: a preset (``default``, ``bills``) or, from Python, an
    exemplar config with its own sizes."""
    device: str | None = None
    """Device the model runs on: input tensors go there (None: the model's own; the command
    line loads the model there, on cpu when None)."""
    nonfinite: str = "error"
    """What a NaN/inf activation does: ``"error"`` stops the capture naming hook, units and
    context; ``"zero"`` stores 0 and counts the zeroed values in the manifest."""
    executor: str = "local"
    """Where forward passes over corpus windows run: ``local`` (this process) or ``ray`` (Ray tasks; ``pip install
    tl-concepts[ray]``). A Ray run writes the same files with the same keys as a local one,
    so either resumes the other."""
    ray_address: str | None = None
    """Ray cluster to join when the executor is ``ray`` (e.g. ``ray://head:10001`` or ``auto``;
    none starts a local Ray instance)."""

    def key(self) -> dict[str, Any]:
        """Settings that determine the captured numbers (exemplar choice excluded)."""
        return {"hooks": list(self.hooks), "context_tokens": self.context_tokens, "dtype": self.dtype,
                "nonfinite": self.nonfinite}


class _Stop(Exception):
    """Raised from the last needed hook to end the forward pass early."""


def _tensor_digest(item: tuple[str, torch.Tensor]) -> bytes:
    name, t = item
    h = hashlib.blake2b(f"{name}:{t.dtype}:{tuple(t.shape)};".encode(), digest_size=16)
    flat = t.detach().reshape(-1)
    if flat.numel() and flat.device.type != "meta":
        # hashlib releases the GIL here; numpy arrays are buffers, which these numpy stubs do not declare
        h.update(flat.contiguous().cpu().view(torch.uint8).numpy())  # type: ignore[arg-type]
    return h.digest()


def model_fingerprint(model: Any) -> str:
    """Fingerprint of every weight of ``model``: blake2b over each parameter's and buffer's
    name, dtype, shape and bytes, in module order. Any changed byte changes it.

    Tensors are hashed on a few threads: about 2 s for SmolLM2-135M's 538 MB on a shared
    2-core machine.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> a = model_fingerprint(m)
        >>> with torch.no_grad():
        ...     m.bias[1] += 1
        >>> a == model_fingerprint(m)
        False
    """
    import os

    items = [(f"param:{n}", t) for n, t in model.named_parameters()]
    items += [(f"buffer:{n}", t) for n, t in model.named_buffers()]
    h = hashlib.blake2b(digest_size=16)
    with torch.no_grad(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for digest in pool.map(_tensor_digest, items):
            h.update(digest)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Fingerprint of a tokenizer's full definition (vocabulary, merges, normalisation,
    special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        spec = backend.to_str()
    else:
        spec = repr(sorted(tokenizer.get_vocab().items()))
    return fingerprint({"class": type(tokenizer).__name__, "spec": hashlib.sha256(spec.encode()).hexdigest(),
                        "special": getattr(tokenizer, "special_tokens_map", {})})


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


def _settings(config: CaptureConfig | None, hooks: list[str], overrides: dict[str, Any]) -> CaptureConfig:
    """A checked copy of ``config`` with ``hooks`` and ``overrides`` set (the caller's object is
    never modified)."""
    cfg = copy.deepcopy(config) if config is not None else CaptureConfig(hooks=list(hooks))
    cfg.hooks = list(hooks)
    names = [f.name for f in fields(CaptureConfig)]
    for k, v in overrides.items():
        if k not in names or k == "hooks":
            raise ConfigError(f"unknown capture setting '{k}'; settings are: "
                              f"{', '.join(n for n in names if n != 'hooks')}")
        setattr(cfg, k, copy.deepcopy(v))
    if isinstance(cfg.exemplars, str):
        cfg.exemplars = ExemplarConfig.preset(cfg.exemplars)
    if not isinstance(cfg.exemplars, ExemplarConfig):
        raise ConfigError("exemplars must be an ExemplarConfig or a preset name ('default', 'bills')")
    if cfg.dtype not in ("float32", "float16"):
        raise ConfigError(f"dtype must be 'float32' or 'float16', got {cfg.dtype!r}")
    if cfg.nonfinite not in NONFINITE_POLICIES:
        raise ConfigError(f"nonfinite must be 'error' or 'zero', got {cfg.nonfinite!r}")
    from tl_concepts.executor import check_executor

    check_executor(cfg.executor)
    if cfg.executor == "ray":
        from tl_concepts.executor import _import_ray

        _import_ray()  # no Ray: a ConfigError saying what to install, before anything is written
    for name, low in (("context_tokens", 2), ("batch_size", 1), ("shard_tokens", 1)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{name} must be a whole number >= {low}, got {v!r}")
    return cfg


def _folder_state(out: Path) -> str:
    """``missing`` | ``file`` | ``empty`` | ``store`` (has a manifest) | ``partial`` (a capture
    that stopped before its first manifest) | ``foreign`` (someone else's files)."""
    if not out.exists():
        return "missing"
    if not out.is_dir():
        return "file"
    names = {p.name for p in out.iterdir()} - {LOCK}
    if not names:
        return "empty"
    if "manifest.json" in names:
        return "store"
    return "partial" if MARKER in names else "foreign"


def _clear(out: Path) -> None:
    """Remove everything in ``out`` but the lock file (held by this process)."""
    for p in out.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the inputs of two manifests, in words (empty: the same inputs)."""
    ok = old.get("key")
    if not isinstance(ok, dict):
        return ["inputs unknown (the store was written by an older tl-concepts that did not record "
                "its input key)"]
    nk = new["key"]
    out = []
    if ok.get("model") != nk["model"]:
        om = old.get("model") or {}
        out.append(f"model weights (fingerprint {om.get('fingerprint')} -> {new['model']['fingerprint']})")
    if ok.get("tokenizer") != nk["tokenizer"]:
        ot = old.get("tokenizer") or {}
        out.append(f"tokenizer ({ot.get('class')} {ot.get('fingerprint')} -> "
                   f"{new['tokenizer']['class']} {new['tokenizer']['fingerprint']})")
    if ok.get("corpus") != nk["corpus"]:
        oc = old.get("corpus") or {}
        out.append(f"corpus ({oc.get('name')}, fingerprint {oc.get('fingerprint')}, {oc.get('n_docs')} docs -> "
                   f"{new['corpus']['name']}, fingerprint {new['corpus']['fingerprint']}, "
                   f"{new['corpus']['n_docs']} docs)")
    if ok.get("settings") != nk["settings"]:
        os_, ns = old.get("settings") or {}, new["settings"]
        diffs = [f"{k} {os_.get(k)!r} -> {ns[k]!r}" for k in _KEY_SETTINGS if os_.get(k) != ns.get(k)]
        out.append(f"settings ({'; '.join(diffs) or 'changed'})")
    return out


_KEY_SETTINGS = ("hooks", "context_tokens", "dtype", "nonfinite", "context_tokens_effective")


def _base_files_ok(out: Path) -> bool:
    return all((out / f).is_file() for f in BASE_FILES) and check_tensors(out / "windows.safetensors") is None


def _good_shards(out: Path, manifest: dict[str, Any]) -> int:
    """How many of the listed shards are present and whole (a damaged one and all after it
    are captured again)."""
    for i, sh in enumerate(manifest["shards"]):
        problem = check_tensors(out / "shards" / sh["file"])
        if problem:
            log.warning("%s: %s; capturing from shard %d again", out, problem, i)
            return i
    return len(manifest["shards"])


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
    encoding: str = "utf-8",
    ray: RayCapture | None = None,
    **overrides: Any,
) -> ActivationStore:
    """Capture ``hooks`` of ``model`` over ``corpus`` into the store directory ``out``.

    ``model`` is a live TransformerLens model, or a model name / :class:`~tl_concepts.models.ModelRecipe`
    that is loaded here (and, with ``executor="ray"``, by every worker).

    ``corpus`` is a :class:`Corpus`, ``"lee"``, a list of strings or a file path (text files
    are read with ``encoding``, UTF-8 by default). Keyword overrides set
    :class:`CaptureConfig` fields (``context_tokens=128``, ``nonfinite="zero"``,
    ``exemplars="bills"``, ...); ``config`` itself is not modified. The model is used as it
    is: only temporary hooks are added, and they are removed on return and on error.

    Rerunning the same call resumes (or returns the finished store at once); a folder that
    holds a capture of other inputs raises :class:`StaleResultError` naming what changed,
    unless ``overwrite=True``. Returns the opened :class:`ActivationStore`.

    ``executor="ray"`` (with ``ray_address``) runs the shards on Ray workers, each with its
    own model replica (``ray``: a :class:`RayCapture` with the workers' count, CPUs, GPUs
    and model recipe); this process writes the shards to the store in order and mines the
    exemplars, so the store equals a local capture's (on the same kind of device) and
    either executor resumes the other. The executor is not part of the store's key.

    Example:
        >>> store = capture(model, "lee", ["blocks.3.mlp.hook_post"], "runs/x",   # doctest: +SKIP
        ...                 exemplars="bills", nonfinite="zero")
        >>> store = capture("minilm", "lee", ["blocks.3.mlp.hook_post"], "runs/x",  # doctest: +SKIP
        ...                 executor="ray", ray=RayCapture(num_workers=2))
    """
    from tl_concepts.models import ModelRecipe

    ray_opts = ray if ray is not None else RayCapture()
    if isinstance(model, (str, ModelRecipe)):
        _settings(config, [], overrides)  # refuse bad settings (no Ray, ...) before loading the model
        recipe = ModelRecipe(model) if isinstance(model, str) else model
        model = recipe.build()
        if ray_opts.replica is None:
            ray_opts = RayCapture(ray_opts.num_workers, ray_opts.num_cpus, ray_opts.num_gpus, recipe)
    adapters.check_model(model)
    hooks = adapters.resolve_hooks(model, hooks)
    cfg = _settings(config, hooks, overrides)
    corpus = load_corpus(corpus, encoding=encoding)
    prefix, suffix = adapters.special_tokens(model)
    ctx = min(cfg.context_tokens, adapters.max_context(model) - len(prefix) - len(suffix))
    windows = make_windows(corpus, model.tokenizer, ctx)
    if windows.n_tokens == 0:
        raise InputError("the corpus produced no tokens")

    fw = _Forward(model, cfg, prefix, suffix, ray_opts)
    dims = fw.probe(windows)  # refuses a hook that does not fire or is not per-token, before any write

    out = Path(out)
    name = model_name or adapters.model_id(model)
    manifest: dict[str, Any] = {
        "format": STORE_FORMAT,
        "status": "capturing",
        "model": {"id": name, "class": type(model).__name__, "fingerprint": model_fingerprint(model),
                  "n_layers": int(getattr(model.cfg, "n_layers", 0) or 0),
                  "d_model": int(getattr(model.cfg, "d_model", 0) or 0)},
        "transformer_lens_version": adapters.tl_version(),
        "tokenizer": {"class": type(model.tokenizer).__name__,
                      "name": str(getattr(model.tokenizer, "name_or_path", "")),
                      "fingerprint": tokenizer_fingerprint(model.tokenizer),
                      "prefix_ids": prefix, "suffix_ids": suffix},
        "corpus": {"name": corpus.name, "fingerprint": corpus.fingerprint(), "n_docs": corpus.n_docs,
                   "n_sentences": len(corpus.sentences), "n_words": corpus.n_words, "tagged": corpus.tagged},
        "settings": {**cfg.key(), "context_tokens_effective": ctx, "batch_size": cfg.batch_size,
                     "shard_tokens": cfg.shard_tokens},
        "exemplars": cfg.exemplars.to_dict(),
        "hooks": {h: {"d": dims[h], "dtype": cfg.dtype} for h in hooks},
        "n_windows": windows.n_windows,
        "n_tokens": windows.n_tokens,
        "shards": [],
    }
    manifest["key"] = {
        "model": fingerprint({"class": manifest["model"]["class"], "weights": manifest["model"]["fingerprint"]}),
        "tokenizer": fingerprint({k: manifest["tokenizer"][k] for k in ("class", "fingerprint", "prefix_ids",
                                                                        "suffix_ids")}),
        "corpus": manifest["corpus"]["fingerprint"],
        "settings": fingerprint({k: manifest["settings"][k] for k in _KEY_SETTINGS}),
    }
    manifest["settings_key"] = fingerprint(manifest["key"])

    state = _folder_state(out)
    if state == "file":
        raise StoreError(f"{out} is a file; pass a folder as the capture's output")
    if state == "foreign" and not overwrite:  # checked before the lock file is put into it
        raise StoreError(f"{out} is not empty and is not a tl-concepts store; choose another output "
                         "folder or pass overwrite=True / --overwrite to replace its contents")
    created = state in ("missing", "empty")
    try:
        with folder_lock(out, "this capture"):
            _capture_locked(model, fw, windows, corpus, cfg, out, manifest, overwrite, progress)
    except (InputError, ConfigError):
        if created:  # a refused input leaves nothing behind
            if state == "missing":
                shutil.rmtree(out, ignore_errors=True)
            elif out.is_dir():
                _clear(out)
                (out / LOCK).unlink(missing_ok=True)
        raise
    return ActivationStore(out)


def _capture_locked(model: Any, fw: "_Forward", windows: Windows, corpus: Corpus, cfg: CaptureConfig, out: Path,
                    manifest: dict[str, Any], overwrite: bool, progress: bool) -> None:
    state = _folder_state(out)  # again, now that this process holds the lock
    old: dict[str, Any] | None = None
    if state == "store":
        try:
            old = read_manifest(out)
        except StoreError:
            if not (overwrite or (out / MARKER).exists()):
                raise
            log.warning("%s: damaged manifest.json of an earlier capture; capturing again", out)
        if old is not None:
            changes = _changes(old, manifest)
            if changes and not overwrite:
                raise StaleResultError(
                    f"{out} holds a capture of other inputs: {'; '.join(changes)}. Its activations do not "
                    "belong to this call: choose another output folder, or pass overwrite=True / "
                    "--overwrite to capture again")
            if changes or not _base_files_ok(out):
                old = None
    elif state == "foreign" and not overwrite:
        raise StoreError(f"{out} is not empty and is not a tl-concepts store; choose another output "
                         "folder or pass overwrite=True / --overwrite to replace its contents")

    old_exemplars = old.get("exemplars") if old is not None else None
    if old is not None:
        n_good = _good_shards(out, old)
        if n_good < len(old["shards"]):
            del old["shards"][n_good:]
            old["status"] = "capturing"
        old["exemplars"] = cfg.exemplars.to_dict()
        old["settings"].update(batch_size=cfg.batch_size, shard_tokens=cfg.shard_tokens)
        manifest = old
        for f in (out / "shards").glob(".*.tmp"):  # half-written shards of a killed run
            f.unlink()
        known = {s["file"] for s in manifest["shards"]}
        for f in (out / "shards").glob("shard-*.safetensors"):
            if f.name not in known:
                f.unlink()
    else:
        if state != "empty" and state != "missing":
            log.info("%s: starting the capture afresh", out)
        _clear(out)
        write_json(out / MARKER, {"format": STORE_FORMAT})
        write_tensors(out / "windows.safetensors", {
            "window_start": windows.window_start, "token_id": windows.token_id, "doc": windows.doc,
            "sentence": windows.sentence, "word_id": windows.word_id, "position": windows.position})
        _words_tables(corpus, out)
        uniq = np.unique(windows.token_id)
        write_json(out / "token_text.json", dict(zip(map(int, uniq), token_texts(model.tokenizer, uniq.tolist()))))
        crashpoint("capture.before_manifest")
        write_json(out / "manifest.json", manifest)

    t0 = time.time()
    before = copy.deepcopy(manifest) if old is not None else None
    worked = False
    done = manifest["shards"][-1]["windows"][1] if manifest["shards"] else 0
    if done < windows.n_windows:
        manifest["status"] = "capturing"
        manifest["executor"] = cfg.executor  # of the last run that captured shards; not part of the key
        _run_pass(fw, windows, cfg, out, manifest, done, progress)
        worked = True
    for h in cfg.hooks:
        n_bad = sum(int((s.get("nonfinite") or {}).get(h, 0)) for s in manifest["shards"])
        manifest["hooks"][h]["nonfinite_zeroed"] = n_bad
    ids_written = all((out / "exemplars" / f"{hook_file_name(h)}.safetensors").exists() for h in cfg.hooks)
    if manifest["status"] != "complete" or not ids_written or old_exemplars != cfg.exemplars.to_dict():
        _mine(out, manifest, cfg)
        worked = True
    manifest["status"] = "complete"
    if not worked and manifest == before:
        return  # a finished capture of the same inputs: nothing was done, nothing is rewritten
    manifest["seconds"] = round(float(manifest.get("seconds") or 0) + time.time() - t0, 3)
    write_json(out / "manifest.json", manifest)


class _Forward:
    """Runs batches of windows through the model and returns the hooks' rows as float32."""

    def __init__(self, model: Any, cfg: CaptureConfig, prefix: list[int], suffix: list[int],
                 ray_opts: RayCapture | None = None):
        self.model, self.cfg, self.prefix, self.suffix = model, cfg, prefix, suffix
        self.ray_opts = ray_opts if ray_opts is not None else RayCapture()  # workers, with executor="ray"
        tok = model.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.device = cfg.device or getattr(model.cfg, "device", None) or "cpu"
        self.captured: dict[str, torch.Tensor] = {}

    def _make_hook(self, name: str):
        def fn(tensor: torch.Tensor, hook: Any = None) -> None:
            self.captured[name] = tensor.detach()
            if len(self.captured) == len(self.cfg.hooks):
                raise _Stop()
        return fn

    def hooked(self):
        """Context in which the temporary capture hooks are attached."""
        return self.model.hooks(fwd_hooks=[(h, self._make_hook(h)) for h in self.cfg.hooks])

    def run(self, windows: Windows, b0: int, b1: int) -> tuple[dict[str, np.ndarray], list[int]]:
        """Rows [tokens of windows b0..b1, d] per hook (windows in order) and the window lengths."""
        n_pre, suffix = len(self.prefix), self.suffix
        lens = [int(windows.window_start[i + 1] - windows.window_start[i]) for i in range(b0, b1)]
        T = n_pre + max(lens) + len(suffix)
        ids = torch.full((b1 - b0, T), self.pad, dtype=torch.long)
        mask = torch.zeros((b1 - b0, T), dtype=torch.long)
        keep = torch.zeros((b1 - b0, T), dtype=torch.bool)
        for j, i in enumerate(range(b0, b1)):
            seq = self.prefix + windows.token_id[windows.window(i)].tolist() + suffix
            ids[j, : len(seq)] = torch.tensor(seq)
            mask[j, : len(seq)] = 1
            keep[j, n_pre: n_pre + lens[j]] = True
        self.captured.clear()
        try:
            adapters.forward_for_hooks(self.model, ids.to(self.device), mask.to(self.device))
        except _Stop:
            pass
        missing = [h for h in self.cfg.hooks if h not in self.captured]
        if missing:
            raise InputError(f"hook(s) {missing} did not fire in the forward pass; they are not "
                             "reachable for this model's input (use a per-token hook point)")
        rows = {}
        for h in self.cfg.hooks:
            t = self.captured[h]
            if t.dim() != 3 or tuple(t.shape[:2]) != (b1 - b0, T):
                raise InputError(f"hook '{h}' gives a tensor of shape {tuple(t.shape)}, not per-token "
                                 f"[batch, pos, d] = [{b1 - b0}, {T}, d]; pick a per-token hook such as "
                                 "blocks.L.mlp.hook_post or blocks.L.hook_resid_post")
            rows[h] = t[keep.to(t.device)].float().cpu().numpy()
        self.captured.clear()
        return rows, lens

    def probe(self, windows: Windows) -> dict[str, int]:
        """Run the first window once: check every hook fires per token; return each hook's width."""
        with torch.inference_mode(), self.hooked():
            rows, _ = self.run(windows, 0, 1)
        return {h: int(r.shape[-1]) for h, r in rows.items()}


def _nonfinite_error(hook: str, stored: np.ndarray, raw: np.ndarray, windows: Windows, b0: int,
                     offsets: np.ndarray, tokenizer: Any) -> InputError:
    bad = ~np.isfinite(stored)
    r, u = np.nonzero(bad)
    units = sorted(set(u.tolist()))
    j = int(np.searchsorted(offsets, r[0], side="right") - 1)
    ctx = b0 + j
    row = int(windows.window_start[ctx]) + int(r[0] - offsets[j])
    token = tokenizer.decode([int(windows.token_id[row])])
    shown = ", ".join(map(str, units[:10])) + (f" and {len(units) - 10} more" if len(units) > 10 else "")
    overflow = bool(np.isfinite(raw[bad]).all())
    why = ("the values exceed the float16 range; capture with dtype='float32' (--dtype float32)"
           if overflow else "check the model (weights, dtype) and its inputs")
    return InputError(
        f"non-finite activation (nan/inf) at hook {hook}, unit(s) {shown}, in context {ctx} (document "
        f"{int(windows.doc[row])}, token {int(r[0] - offsets[j])} {token!r}); {int(bad.sum())} values in this "
        f"batch. {why.capitalize()}, or pass nonfinite='zero' (--nonfinite zero) to store them as 0 "
        "(the manifest counts them)")


@dataclass
class _Shard:
    """One unit of capture work: corpus windows ``[first, last)``, written as shard ``index``."""

    index: int
    first: int
    last: int


@dataclass
class _ShardRows:
    """A captured shard as a worker returns it: the shard file's tensors (activations in the
    store dtype, per-window max/min in float32) and the non-finite values zeroed per hook."""

    index: int
    first: int
    last: int
    tensors: dict[str, np.ndarray]
    nonfinite: dict[str, int]
    n_tokens: int


def plan_shards(windows: Windows, batch_size: int, shard_tokens: int, start_window: int = 0,
                first_index: int = 0) -> list[_Shard]:
    """Split windows ``start_window..`` into shards of whole batches, each closed once it holds
    ``shard_tokens`` rows: the same batches and shards whoever runs them, so every executor
    writes the same files.

    Example:
        >>> from tl_concepts.corpus.windows import Windows
        >>> w = Windows(np.array([0, 3, 6, 9]), *[np.zeros(9, np.int64)] * 4)
        >>> [(s.first, s.last) for s in plan_shards(w, batch_size=1, shard_tokens=5)]
        [(0, 2), (2, 3)]
    """
    plan: list[_Shard] = []
    n_win = windows.n_windows
    first, rows = start_window, 0
    for b0 in range(start_window, n_win, batch_size):
        b1 = min(b0 + batch_size, n_win)
        rows += int(windows.window_start[b1] - windows.window_start[b0])
        if rows >= shard_tokens:
            plan.append(_Shard(first_index + len(plan), first, b1))
            first, rows = b1, 0
    if first < n_win:
        plan.append(_Shard(first_index + len(plan), first, n_win))
    return plan


class _LocalContext:
    """The capture's own model and windows, for shards run in this process."""

    def __init__(self, fw: _Forward, windows: Windows, on_batch: Any = None) -> None:
        self.fw, self.windows, self.on_batch = fw, windows, on_batch

    def get(self) -> tuple[_Forward, Windows]:
        return self.fw, self.windows


def _capture_shard(job: _Shard, ctx: Any) -> _ShardRows:
    """Run the batches of one shard and return its tensors (module-level: Ray workers run it).

    ``ctx`` is a :class:`_LocalContext` or a worker's :class:`_Replica`."""
    fw, windows = ctx.get()
    cfg = fw.cfg
    store_dtype = np.float16 if cfg.dtype == "float16" else np.float32
    parts: dict[str, list[np.ndarray]] = {}
    bad_counts: dict[str, int] = {}
    n_tokens = 0
    with torch.inference_mode(), fw.hooked():
        for b0 in range(job.first, job.last, cfg.batch_size):
            b1 = min(b0 + cfg.batch_size, job.last)
            batch, lens = fw.run(windows, b0, b1)
            offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)  # first row per window
            for h in cfg.hooks:
                rows = batch[h]  # [tokens of the batch, d], windows in order
                stored = rows.astype(store_dtype, copy=False)
                if not np.isfinite(stored).all():
                    if cfg.nonfinite == "error":
                        raise _nonfinite_error(h, stored, rows, windows, b0, offsets, fw.model.tokenizer)
                    bad = ~np.isfinite(stored)
                    bad_counts[h] = bad_counts.get(h, 0) + int(bad.sum())
                    stored = np.where(bad, 0, stored).astype(store_dtype)
                    rows = np.where(bad, 0, rows).astype(np.float32)
                parts.setdefault(f"act.{h}", []).append(stored)
                parts.setdefault(f"max.{h}", []).append(np.maximum.reduceat(rows, offsets, axis=0))
                parts.setdefault(f"min.{h}", []).append(np.minimum.reduceat(rows, offsets, axis=0))
            n_tokens += sum(lens)
            if ctx.on_batch is not None:
                ctx.on_batch(sum(lens))
    return _ShardRows(job.index, job.first, job.last, {k: np.concatenate(v) for k, v in parts.items()},
                      bad_counts, n_tokens)


@dataclass
class RayCapture:
    """Where and how a capture runs on Ray (``executor="ray"``): the workers' model recipe
    and the resources of each worker.

    Every worker holds its own model replica, on ``cuda`` when ``num_gpus > 0``:

    * ``replica`` given (a model name or a :class:`~tl_concepts.models.ModelRecipe`; the
      default when ``capture`` itself got a name): each worker loads the model itself.
      Best for GPU workers and clusters: only the recipe crosses the wire.
    * else, a live ``TransformerBridge`` is booted on each worker from the folder or Hub
      name it came from, then given the driver's exact weights (its ``state_dict``, put
      once in the Ray object store), so weights edited after loading are kept. The folder
      must exist on the workers (true on one machine). Other models (3.x
      ``HookedTransformer``) are pickled whole.

    Either way each worker checks that its replica's weights and tokenizer have the
    fingerprint of the driver's model and refuses to capture otherwise, so the store
    always matches its manifest. Hooks a user attached to the live model (an ablation, a
    patch) are not carried: a capture of such a model on Ray is refused (run it locally). The values equal a local capture's when the workers run
    on the same kind of device (CPU vs GPU kernels differ in the last bits).

    Example:
        >>> RayCapture(num_workers=4, num_gpus=1, replica="minilm").num_gpus
        1
    """

    num_workers: int | None = None
    """Ray workers, each with one model replica (None: the cluster's CPUs / ``num_cpus``)."""
    num_cpus: float = 1
    """CPUs per worker (also the worker's torch threads, as Ray sets them)."""
    num_gpus: float = 0
    """GPUs per worker; > 0 runs the worker's replica on ``cuda``."""
    replica: Any = None
    """How workers build their model: None (ship the live model), a model name or a
    :class:`~tl_concepts.models.ModelRecipe`."""


class _Replica:
    """A Ray worker's model replica, forward runner and windows, built on first use (so a
    failure to build is the shard's error, re-raised in the driver as it is)."""

    def __init__(self, setup: "_ReplicaSetup") -> None:
        self.setup = setup
        self.on_batch = None
        self._built: tuple[_Forward, Windows] | None = None

    def get(self) -> tuple[_Forward, Windows]:
        if self._built is None:
            self._built = self.setup.build()
        return self._built


@dataclass
class _ShippedBridge:
    """A live ``TransformerBridge`` for a Ray worker: booted there from the model's own
    folder or Hub name, then given the driver's exact weights (its ``state_dict``, sent once
    through the Ray object store). A bridge that has run a forward pass holds
    TransformerLens's internal hooks, which cannot be pickled, so the object itself is
    never sent."""

    source: str
    """The Hugging Face folder or name the bridge was booted from."""
    state: Any
    """Ray object ref of the driver's ``state_dict`` (CPU tensors)."""

    def build(self, device: str | None = None) -> Any:
        import ray
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_transformers(self.source, device=device)
        model.eval()
        try:
            model.load_state_dict(ray.get(self.state), strict=True)
        except RuntimeError as e:
            raise InputError(f"the model a Ray worker booted from {self.source!r} does not take the capture "
                             f"model's weights ({str(e).splitlines()[0]}); give the workers the model with "
                             "RayCapture(replica=...)") from None
        return model


def _hooks_attached(model: Any) -> dict[str, int]:
    """Forward hooks per TransformerLens hook point (a freshly loaded bridge has internal
    ones; a user's added hooks show up as more than a fresh replica has)."""
    names: dict[int, list[str]] = {}
    points: dict[int, Any] = {}
    for name, hp in getattr(model, "hook_dict", {}).items():  # aliases name the same point
        names.setdefault(id(hp), []).append(name)
        points[id(hp)] = hp
    out = {}
    for key, hp in points.items():
        n = len(getattr(hp, "fwd_hooks", None) or [])
        if n:
            out[" = ".join(sorted(names[key], key=lambda x: (len(x), x), reverse=True))] = n
    return out


def _ship_live_model(ray: Any, model: Any) -> Any:
    """What a worker needs to rebuild the driver's live ``model`` with its exact weights."""
    source = str(getattr(getattr(getattr(model, "original_model", None), "config", None), "_name_or_path", "") or "")
    if source:  # a TransformerBridge
        return _ShippedBridge(source, ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()}))
    try:  # e.g. a 3.x HookedTransformer: the object itself
        return ray.put(model)
    except TypeError as e:
        raise ConfigError(f"this {type(model).__name__} cannot be sent to Ray workers ({str(e).splitlines()[0]}); "
                          "give the workers a model to load: RayCapture(replica='<name or folder>')") from None


@dataclass
class _ReplicaSetup:
    """Picklable per-worker setup: what a worker needs to build its :class:`_Replica`."""

    model: Any
    """A :class:`ModelRecipe`, a :class:`_ShippedBridge`, or the Ray object ref of the driver's live model."""
    windows: Any
    """Ray object ref of the corpus :class:`Windows`."""
    cfg: CaptureConfig
    prefix: list[int]
    suffix: list[int]
    model_fingerprint: str
    tokenizer_fingerprint: str
    hooks_attached: dict[str, int]
    """Forward hooks per hook point on the driver's model (see :func:`_hooks_attached`)."""
    device: str | None
    """``cuda`` for a worker with GPUs, else None (the model's own device)."""

    def __call__(self) -> _Replica:
        return _Replica(self)

    def build(self) -> tuple[_Forward, Windows]:
        import ray

        from tl_concepts.models import ModelRecipe

        if isinstance(self.model, (ModelRecipe, _ShippedBridge)):
            model = self.model.build(device=self.device)
        else:
            model = ray.get(self.model)
            if self.device is not None:
                model = model.to(self.device)
        got_model, got_tok = model_fingerprint(model), tokenizer_fingerprint(model.tokenizer)
        if (got_model, got_tok) != (self.model_fingerprint, self.tokenizer_fingerprint):
            what = "weights" if got_model != self.model_fingerprint else "tokenizer"
            raise InputError(
                f"the model a Ray worker built differs from the capture's model ({what}: fingerprint "
                f"{got_model if what == 'weights' else got_tok} on the worker, "
                f"{self.model_fingerprint if what == 'weights' else self.tokenizer_fingerprint} here); "
                "give the workers the same model (leave the replica out to ship the live model)")
        extra = sorted(h for h, n in self.hooks_attached.items() if n > _hooks_attached(model).get(h, 0))
        if extra:
            raise InputError(f"the capture's model has hooks attached at {', '.join(extra[:5])}"
                             f"{' and more' if len(extra) > 5 else ''}, which Ray workers do not get (only weights "
                             "travel); remove them (model.reset_hooks()) or capture with executor='local'")
        cfg = copy.deepcopy(self.cfg)
        if self.device is not None:
            cfg.device = self.device
        return _Forward(model, cfg, self.prefix, self.suffix), ray.get(self.windows)


def _shard_results(fw: _Forward, windows: Windows, cfg: CaptureConfig, plan: list[_Shard], manifest: dict[str, Any],
                   ray_opts: RayCapture, on_batch: Any) -> Iterator[tuple[int, _ShardRows]]:
    """Captured shards in order, run here (``executor="local"``) or on Ray workers."""
    from tl_concepts.executor import ensure_ray, imap_items
    from tl_concepts.models import ModelRecipe

    if cfg.executor == "local":
        ctx = _LocalContext(fw, windows, on_batch)
        return imap_items(_capture_shard, plan, setup=lambda: ctx, executor="local")
    ray = ensure_ray(cfg.ray_address)
    replica = ray_opts.replica
    if isinstance(replica, str):
        replica = ModelRecipe(replica)
    if replica is not None and not isinstance(replica, ModelRecipe):
        raise ConfigError(f"replica must be a model name or a ModelRecipe, got {type(replica).__name__}")
    setup = _ReplicaSetup(
        model=replica if replica is not None else _ship_live_model(ray, fw.model), windows=ray.put(windows), cfg=cfg,
        prefix=fw.prefix, suffix=fw.suffix, model_fingerprint=manifest["model"]["fingerprint"],
        tokenizer_fingerprint=manifest["tokenizer"]["fingerprint"], hooks_attached=_hooks_attached(fw.model),
        device="cuda" if ray_opts.num_gpus > 0 else None)
    log.info("capture: %d shards on Ray (%s workers, %s CPUs and %s GPUs each)", len(plan),
             ray_opts.num_workers or "auto", ray_opts.num_cpus, ray_opts.num_gpus)
    return imap_items(_capture_shard, plan, setup=setup, executor="ray", ray_address=cfg.ray_address,
                      num_workers=ray_opts.num_workers, num_cpus=ray_opts.num_cpus, num_gpus=ray_opts.num_gpus,
                      ordered=True)


def _run_pass(fw: _Forward, windows: Windows, cfg: CaptureConfig, out: Path, manifest: dict[str, Any],
              start_window: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    plan = plan_shards(windows, cfg.batch_size, cfg.shard_tokens, start_window, len(manifest["shards"]))
    bar = tqdm(total=windows.n_tokens, initial=int(windows.window_start[start_window]), unit="tok",
               desc=f"capture ({cfg.executor})", disable=not progress)

    # Shards are written in order by one background thread while the next ones are captured
    # (here or on the Ray workers); at most one write is in flight.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tl-concepts-shard-writer")
    pending: list[Future] = []

    def write_shard(res: _ShardRows) -> None:
        fname = f"shard-{res.index:05d}.safetensors"
        try:
            write_tensors(out / "shards" / fname, res.tensors, metadata={"windows": f"{res.first},{res.last}"})
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(e.errno, f"disk full while writing {fname}: the store in {out} keeps its "
                              f"{res.index} finished shards; free space and rerun the same capture to "
                              "resume") from e
            raise
        crashpoint("capture.after_shard")
        rows = [int(windows.window_start[res.first]), int(windows.window_start[res.last])]
        entry: dict[str, Any] = {"file": fname, "windows": [res.first, res.last], "rows": rows}
        if any(res.nonfinite.values()):
            entry["nonfinite"] = {h: n for h, n in res.nonfinite.items() if n}
        manifest["shards"].append(entry)
        write_json(out / "manifest.json", manifest)

    def wait_pending() -> None:
        while pending:
            pending.pop(0).result()  # re-raises a failed write here, in the capture thread

    local = cfg.executor == "local"
    results = _shard_results(fw, windows, cfg, plan, manifest, fw.ray_opts, bar.update if local else None)
    try:
        for _, res in results:
            if not local:
                bar.update(res.n_tokens)
            wait_pending()
            pending.append(writer.submit(write_shard, res))
        wait_pending()
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stops the Ray workers when a shard failed
        writer.shutdown(wait=True)
        bar.close()


def _mine(out: Path, manifest: dict[str, Any], cfg: CaptureConfig) -> None:
    manifest["status"] = "mining"
    write_json(out / "manifest.json", manifest)
    store = ActivationStore(out, allow_incomplete=True)
    store.manifest["status"] = "complete"  # let the reader serve the finished shards
    for h in cfg.hooks:
        mx = store.context_summary(h, "max")
        mn = store.context_summary(h, "min") if cfg.exemplars.n_negative else None
        sel = select_exemplars(mx, mn, cfg.exemplars)
        finite = np.where(np.isfinite(mx), mx, -np.inf)
        top = finite.max(0) if len(mx) else np.zeros(mx.shape[1], np.float32)
        sel["max_activation"] = np.where(np.isfinite(top), top, 0.0).astype(np.float32)
        write_tensors(out / "exemplars" / f"{hook_file_name(h)}.safetensors", sel)
