"""``ActivationStore``: a captured run on disk, opened lazily.

Layout of a store directory::

    manifest.json           model (with a fingerprint of all its weights), TL version,
                            tokenizer, hooks + shapes + dtype, corpus fingerprint, settings,
                            the input key, status ("capturing" | "mining" | "complete"),
                            finished shards
    .tl-concepts-capture    marker written first: the folder is a capture (also before
                            the first manifest.json exists)
    .lock                   writer lock of a running capture (see ``folder_lock``)
    windows.safetensors     token table: window offsets, token id, doc, sentence, word id, position
    words.parquet           one row per whitespace word: word_id, doc, sentence, index, text, pos, ner
    sentences.parquet       one row per sentence: sentence, doc, text
    token_text.json         token id -> decoded string (for records, no tokenizer needed)
    shards/shard-NNNNN.safetensors
                            per hook: ``act.<hook>`` [rows, d], ``max.<hook>``/``min.<hook>``
                            [windows, d] for a contiguous range of windows
    exemplars/<hook>.safetensors
                            selected exemplar context ids per unit (see ``exemplars.py``)

A shard is listed in the manifest only after it was written completely and renamed into
place, so a half-written shard is never read.

Opening checks the folder before any work starts: a missing folder, a folder that is not a
store, a corrupt or incomplete ``manifest.json``, and an interrupted capture each raise a
:class:`~tl_concepts.errors.StoreError` that says what to do; an unknown hook or an
out-of-range unit raise :class:`~tl_concepts.errors.InputError` naming the valid choices.

Example:
    >>> store = ActivationStore.open("runs/x")                        # doctest: +SKIP
    >>> acts = store.activations("blocks.3.mlp.hook_post")   # [n_tokens, 1536]  # doctest: +SKIP
    >>> recs = store.unit_records("blocks.3.mlp.hook_post", 7)  # UnitRecords   # doctest: +SKIP
"""
from __future__ import annotations

import json
import operator
import struct
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.capture.safetensors_io import read_tensors
from tl_concepts.errors import ConfigError, InputError, StoreError

STORE_FORMAT = "tl-concepts-store/1"
MARKER = ".tl-concepts-capture"
"""File written first into a capture folder: marks it as a (maybe unfinished) capture."""
LOCK = ".lock"

_RERUN = "rerun the capture (same command) or pass --overwrite (overwrite=True)"


def hook_file_name(hook: str) -> str:
    return hook.replace("/", "_")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a store folder, checked for the fields readers need.

    Raises :class:`StoreError` naming the file when it is unreadable, not JSON, or lacks a
    field (a corrupt or incomplete manifest).
    """
    mf = Path(path) / "manifest.json"
    try:
        data = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StoreError(f"{mf} is corrupt or unreadable ({type(e).__name__}: {e}); {_RERUN}") from None
    problem = _manifest_problem(data)
    if problem:
        raise StoreError(f"{mf} is incomplete or corrupt ({problem}); {_RERUN}")
    return data


def _manifest_problem(m: Any) -> str | None:
    if not isinstance(m, dict):
        return "not a JSON object"
    for key, typ in (("format", str), ("status", str), ("hooks", dict), ("shards", list), ("n_windows", int),
                     ("n_tokens", int)):
        if key not in m:
            return f"no '{key}' field"
        if not isinstance(m[key], typ):
            return f"'{key}' is not a {typ.__name__}"
    for h, info in m["hooks"].items():
        if not isinstance(info, dict) or not isinstance(info.get("d"), int):
            return f"hook '{h}' has no width 'd'"
    for i, sh in enumerate(m["shards"]):
        if not (isinstance(sh, dict) and isinstance(sh.get("file"), str)
                and isinstance(sh.get("windows"), list) and len(sh["windows"]) == 2
                and isinstance(sh.get("rows"), list) and len(sh["rows"]) == 2):
            return f"shard entry {i} is malformed"
    return None


def _read(path: Path) -> dict[str, np.ndarray]:
    """read_tensors with a StoreError naming the file when it is missing or damaged."""
    try:
        return read_tensors(path)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing from the store; {_RERUN}") from None
    except (OSError, ValueError, KeyError, struct.error) as e:
        raise StoreError(f"{path} is damaged ({type(e).__name__}: {e}); {_RERUN}") from None


class ActivationStore:
    """Read access to a capture directory. Arrays are memory-mapped and read on use."""

    def __init__(self, path: str | Path, *, allow_incomplete: bool = False):
        """Open the store in ``path``; see :meth:`open`."""
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"there is no capture at {self.path}: run `tl-concepts capture --out {self.path} "
                             "--hooks ...` (or tl_concepts.capture.capture) first")
        if not self.path.is_dir():
            raise StoreError(f"{self.path} is a file, not a capture folder; pass the folder that "
                             "`tl-concepts capture --out` wrote")
        mf = self.path / "manifest.json"
        if not mf.exists():
            if (self.path / MARKER).exists():
                raise StoreError(f"capture of {self.path} was interrupted: rerun it (the same "
                                 "`tl-concepts capture` command) to finish it")
            raise StoreError(f"{self.path} is not a tl-concepts store (no manifest.json); make one with "
                             f"`tl-concepts capture --out {self.path} --hooks ...`")
        self.manifest: dict[str, Any] = read_manifest(self.path)
        if self.manifest["format"] != STORE_FORMAT:
            raise StoreError(f"{mf} has format {self.manifest['format']!r}, not {STORE_FORMAT!r}: it was "
                             f"written by another tl-concepts version; {_RERUN}")
        if not allow_incomplete and self.manifest["status"] != "complete":
            done = self.manifest["shards"][-1]["windows"][1] if self.manifest["shards"] else 0
            writer = _running_writer(self.path)
            if writer:
                raise StoreError(f"capture of {self.path} is still running ({writer}; {done} of "
                                 f"{self.manifest['n_windows']} contexts so far): wait for it to finish")
            raise StoreError(f"capture of {self.path} was interrupted: rerun it (the same `tl-concepts "
                             f"capture` command) to finish it ({done} of {self.manifest['n_windows']} "
                             "contexts were captured)")

    @classmethod
    def open(cls, path: str | Path, *, allow_incomplete: bool = False) -> "ActivationStore":
        """Open a finished store directory.

        Raises :class:`StoreError` (with what to do) for a missing folder, a folder that is
        not a store, a corrupt or incomplete ``manifest.json`` and an interrupted capture;
        ``allow_incomplete=True`` opens an interrupted capture for inspection (its arrays
        still refuse to load).

        Example:
            >>> ActivationStore.open("runs/x").hooks          # doctest: +SKIP
            ['blocks.3.mlp.hook_post']
        """
        return cls(path, allow_incomplete=allow_incomplete)

    # ---- basic facts -------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """True once every window was captured and exemplars were mined."""
        return self.manifest.get("status") == "complete"

    @property
    def hooks(self) -> list[str]:
        """Captured hook point names."""
        return list(self.manifest["hooks"])

    def d(self, hook: str) -> int:
        """Width (number of units) of a hook."""
        return int(self.manifest["hooks"][self._hook(hook)]["d"])

    @property
    def n_tokens(self) -> int:
        return int(self._windows["window_start"][-1])

    @property
    def n_windows(self) -> int:
        return len(self._windows["window_start"]) - 1

    def _hook(self, hook: str) -> str:
        if not isinstance(hook, str) or hook not in self.manifest["hooks"]:
            raise InputError(f"hook '{hook}' was not captured in {self.path}; its hooks are: "
                             f"{', '.join(self.hooks) or 'none'}")
        return hook

    def _unit(self, hook: str, unit: Any) -> int:
        d = self.d(hook)
        try:
            u = operator.index(unit)
        except TypeError:
            raise InputError(f"unit {unit!r} is not a whole number; {hook} has units 0..{d - 1}") from None
        if not 0 <= u < d:
            raise InputError(f"unit {u} is out of range for {hook}: valid units are 0..{d - 1} ({d} units)")
        return u

    def _context(self, context: Any) -> int:
        try:
            c = operator.index(context)
        except TypeError:
            raise InputError(f"context {context!r} is not a whole number") from None
        if not 0 <= c < self.n_windows:
            raise InputError(f"context {c} is out of range: valid contexts are 0..{self.n_windows - 1}")
        return c

    # ---- token table -------------------------------------------------------------------
    @cached_property
    def _windows(self) -> dict[str, np.ndarray]:
        return _read(self.path / "windows.safetensors")

    def tokens(self) -> dict[str, np.ndarray]:
        """Token table columns, one row per corpus token: context, doc, sentence, position,
        token_id, word_id."""
        w = self._windows
        ctx = np.repeat(np.arange(self.n_windows), np.diff(w["window_start"]))
        return {"context": ctx, "doc": np.asarray(w["doc"]), "sentence": np.asarray(w["sentence"]),
                "position": np.asarray(w["position"]), "token_id": np.asarray(w["token_id"]),
                "word_id": np.asarray(w["word_id"])}

    @cached_property
    def _token_text(self) -> dict[int, str]:
        path = self.path / "token_text.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return {int(k): v for k, v in raw.items()}
        except (OSError, ValueError, AttributeError) as e:
            raise StoreError(f"{path} is missing or damaged ({type(e).__name__}); {_RERUN}") from None

    def context_rows(self, context: int) -> slice:
        """Rows of the token table that belong to one context (window)."""
        context = self._context(context)
        ws = self._windows["window_start"]
        return slice(int(ws[context]), int(ws[context + 1]))

    def context_tokens(self, context: int) -> list[str]:
        """Decoded tokens of one context."""
        ids = self._windows["token_id"][self.context_rows(context)]
        return [self._token_text[int(i)] for i in ids]

    # ---- words and sentences -------------------------------------------------------------
    @cached_property
    def _words(self) -> dict[str, list]:
        return _read_parquet(self.path / "words.parquet").to_pydict()

    def words(self) -> dict[str, np.ndarray | list]:
        """Word table: word_id, doc, sentence, index (in sentence), text, pos, ner."""
        w = self._words
        return {k: (np.asarray(v, np.int64) if k in ("word_id", "doc", "sentence", "index") else list(v))
                for k, v in w.items()}

    def sentence_texts(self) -> list[str]:
        """Sentence texts by global sentence id."""
        return _read_parquet(self.path / "sentences.parquet").column("text").to_pylist()

    # ---- activations ----------------------------------------------------------------------
    def _shards(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("shards", []))

    def _shard(self, i: int) -> dict[str, np.ndarray]:
        cache = self.__dict__.setdefault("_shard_cache", {})
        if i not in cache:
            shard = _read(self.path / "shards" / self._shards()[i]["file"])
            for h in self.hooks:
                if f"act.{h}" not in shard:
                    raise StoreError(f"{self.path / 'shards' / self._shards()[i]['file']} has no activations of "
                                     f"{h}; {_RERUN}")
            cache[i] = shard
        return cache[i]

    def _check_complete(self) -> None:
        done = self._shards()[-1]["windows"][1] if self._shards() else 0
        if done < self.n_windows:
            raise StoreError(f"capture of {self.path} was interrupted: rerun it (the same `tl-concepts "
                             f"capture` command) to finish it ({done} of {self.n_windows} contexts were captured)")

    def activations(self, hook: str, rows: slice | None = None) -> np.ndarray:
        """Activations [n_tokens, d] of a hook (or a row slice), as float32."""
        hook = self._hook(hook)
        self._check_complete()
        start, stop, _ = (rows or slice(None)).indices(self.n_tokens)
        parts = []
        for i, sh in enumerate(self._shards()):
            r0, r1 = sh["rows"]
            if r1 <= start or r0 >= stop:
                continue
            a = self._shard(i)[f"act.{hook}"]
            parts.append(a[max(start, r0) - r0: min(stop, r1) - r0])
        if not parts:
            return np.zeros((0, self.d(hook)), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def context_summary(self, hook: str, which: str = "max") -> np.ndarray:
        """Per-context max (or min) activation of every unit, [n_contexts, d]."""
        hook = self._hook(hook)
        self._check_complete()
        return np.concatenate([self._shard(i)[f"{which}.{hook}"] for i in range(len(self._shards()))]
                              ).astype(np.float32, copy=False)

    def word_representations(self, hook: str, agg: str = "mean") -> np.ndarray:
        """Word-level representations [n_words, d] aggregated over each word's subword
        tokens: ``first``, ``last`` or ``mean`` (ConceptX uses the last subword).

        A word split across two contexts uses its tokens from both. Words with no token
        (never, for corpora made by this package) get a row of NaN.
        """
        if agg not in ("first", "last", "mean"):
            raise ConfigError(f"agg must be 'first', 'last' or 'mean', got {agg!r}")
        acts = self.activations(hook)
        wid = np.asarray(self._windows["word_id"])
        n_words = len(self._words["word_id"])
        out = np.full((n_words, acts.shape[1]), np.nan, np.float32)
        has = wid >= 0
        rows = np.nonzero(has)[0]
        w = wid[has]
        if agg == "first":
            uniq, idx = np.unique(w, return_index=True)
            out[uniq] = acts[rows[idx]]
        elif agg == "last":
            uniq, idx = np.unique(w[::-1], return_index=True)
            out[uniq] = acts[rows[::-1][idx]]
        else:
            sums = np.zeros((n_words, acts.shape[1]), np.float64)
            np.add.at(sums, w, acts[rows])
            counts = np.bincount(w, minlength=n_words)
            ok = counts > 0
            out[ok] = (sums[ok] / counts[ok, None]).astype(np.float32)
        return out

    # ---- exemplars ----------------------------------------------------------------------------
    def exemplar_ids(self, hook: str) -> dict[str, np.ndarray]:
        """Selected context ids per unit (see :func:`select_exemplars`)."""
        path = self.path / "exemplars" / f"{hook_file_name(self._hook(hook))}.safetensors"
        if not path.exists():
            raise StoreError(f"{path} is missing: the capture of {self.path} did not finish mining "
                             "exemplars; rerun it (the same `tl-concepts capture` command)")
        return _read(path)

    def record(self, hook: str, unit: int, context: int) -> ActivationRecord:
        """One context with one unit's activations."""
        unit = self._unit(hook, unit)
        rows = self.context_rows(context)
        acts = self.activations(hook, rows)[:, unit]
        return ActivationRecord(tokens=self.context_tokens(context), activations=acts.tolist(),
                                doc=int(self._windows["doc"][rows.start]), start=rows.start)

    def unit_records(self, hook: str, unit: int) -> UnitRecords:
        """The exemplars of one unit as records, in disjoint splits.

        Raises :class:`InputError` for a hook the store lacks (listing its hooks) or a unit
        outside ``0..d-1``.
        """
        unit = self._unit(hook, unit)
        ids = self.exemplar_ids(hook)
        recs = lambda arr: [self.record(hook, unit, int(c)) for c in arr if c >= 0]  # noqa: E731
        split = lambda name: recs(ids[name][unit])  # noqa: E731
        ur = UnitRecords(hook=hook, unit=unit, train_top=split("train_top"), train_random=split("train_random"),
                         calibration_top=split("calibration_top"), calibration_random=split("calibration_random"),
                         test_top=split("test_top"), test_random=split("test_random"), negative=split("negative"))
        ur.quantile = {b: recs(ids["quantile"][unit, b]) for b in range(ids["quantile"].shape[1])}
        ur.max_activation = float(np.asarray(ids["max_activation"])[unit])
        ur.n_contexts = self.n_windows
        return ur

    def summary(self) -> dict[str, Any]:
        """Counts for printing: tokens, contexts, units, disk size."""
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {"tokens": self.n_tokens, "contexts": self.n_windows,
                "units": {h: self.d(h) for h in self.hooks}, "disk_bytes": size,
                "seconds": self.manifest.get("seconds")}


def _running_writer(folder: Path) -> str | None:
    """Who holds the capture's writer lock right now (e.g. ``"pid 123"``), or None."""
    import fcntl

    try:
        f = open(folder / LOCK, encoding="utf-8")
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        except OSError:
            return None
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


def _read_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing from the store; {_RERUN}") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{path} is damaged ({type(e).__name__}: {e}); {_RERUN}") from None
