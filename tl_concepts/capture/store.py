"""``ActivationStore``: a captured run on disk, opened lazily.

Layout of a store directory::

    manifest.json           model, TL version, hooks + shapes + dtype, corpus fingerprint,
                            settings, status ("capturing" | "complete"), finished shards
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

Example:
    >>> store = ActivationStore.open("runs/x")                        # doctest: +SKIP
    >>> acts = store.activations("blocks.3.mlp.hook_post")            # [n_tokens, 1536]
    >>> recs = store.unit_records("blocks.3.mlp.hook_post", 7)         # UnitRecords
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.capture.safetensors_io import read_tensors

STORE_FORMAT = "tl-concepts-store/1"


def hook_file_name(hook: str) -> str:
    return hook.replace("/", "_")


class ActivationStore:
    """Read access to a capture directory. Arrays are memory-mapped and read on use."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.exists():
            raise FileNotFoundError(f"{self.path} is not a tl-concepts store (no manifest.json); "
                                    "create one with tl_concepts.capture.capture(...) or `tl-concepts capture`")
        self.manifest: dict[str, Any] = json.loads(mf.read_text(encoding="utf-8"))
        if self.manifest.get("format") != STORE_FORMAT:
            raise ValueError(f"{mf} has format {self.manifest.get('format')!r}, expected {STORE_FORMAT!r}")

    @classmethod
    def open(cls, path: str | Path) -> "ActivationStore":
        """Open a store directory."""
        return cls(path)

    # ---- basic facts -------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """True once every window was captured and exemplars were mined."""
        return self.manifest.get("status") == "complete"

    @property
    def hooks(self) -> list[str]:
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
        if hook not in self.manifest["hooks"]:
            raise KeyError(f"hook '{hook}' was not captured in {self.path}; captured: {', '.join(self.hooks)}")
        return hook

    # ---- token table -------------------------------------------------------------------
    @cached_property
    def _windows(self) -> dict[str, np.ndarray]:
        return read_tensors(self.path / "windows.safetensors")

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
        raw = json.loads((self.path / "token_text.json").read_text(encoding="utf-8"))
        return {int(k): v for k, v in raw.items()}

    def context_rows(self, context: int) -> slice:
        """Rows of the token table that belong to one context (window)."""
        ws = self._windows["window_start"]
        return slice(int(ws[context]), int(ws[context + 1]))

    def context_tokens(self, context: int) -> list[str]:
        """Decoded tokens of one context."""
        ids = self._windows["token_id"][self.context_rows(context)]
        return [self._token_text[int(i)] for i in ids]

    # ---- words and sentences -------------------------------------------------------------
    @cached_property
    def _words(self) -> dict[str, list]:
        import pyarrow.parquet as pq

        return pq.read_table(self.path / "words.parquet").to_pydict()

    def words(self) -> dict[str, np.ndarray | list]:
        """Word table: word_id, doc, sentence, index (in sentence), text, pos, ner."""
        w = self._words
        return {k: (np.asarray(v, np.int64) if k in ("word_id", "doc", "sentence", "index") else list(v))
                for k, v in w.items()}

    def sentence_texts(self) -> list[str]:
        """Sentence texts by global sentence id."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path / "sentences.parquet").column("text").to_pylist()

    # ---- activations ----------------------------------------------------------------------
    def _shards(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("shards", []))

    def _shard(self, i: int) -> dict[str, np.ndarray]:
        cache = self.__dict__.setdefault("_shard_cache", {})
        if i not in cache:
            cache[i] = read_tensors(self.path / "shards" / self._shards()[i]["file"])
        return cache[i]

    def _check_complete(self) -> None:
        done = self._shards()[-1]["windows"][1] if self._shards() else 0
        if done < self.n_windows:
            raise RuntimeError(f"{self.path} holds {done} of {self.n_windows} contexts: the capture was "
                               "interrupted; rerun the same capture to resume it")

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
            raise ValueError(f"agg must be 'first', 'last' or 'mean', got {agg!r}")
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
            raise FileNotFoundError(f"no exemplars for {hook} in {self.path}; the capture did not finish")
        return read_tensors(path)

    def record(self, hook: str, unit: int, context: int) -> ActivationRecord:
        """One context with one unit's activations."""
        rows = self.context_rows(context)
        acts = self.activations(hook, rows)[:, unit]
        return ActivationRecord(tokens=self.context_tokens(context), activations=acts.tolist(),
                                doc=int(self._windows["doc"][rows.start]), start=rows.start)

    def unit_records(self, hook: str, unit: int) -> UnitRecords:
        """The exemplars of one unit as records, in disjoint splits."""
        d = self.d(hook)
        if not 0 <= unit < d:
            raise IndexError(f"unit {unit} is out of range for {hook} (0..{d - 1})")
        ids = self.exemplar_ids(hook)
        recs = lambda arr: [self.record(hook, unit, int(c)) for c in arr if c >= 0]  # noqa: E731
        ur = UnitRecords(hook=hook, unit=unit,
                         **{name: recs(ids[name][unit]) for name in
                            ("train_top", "train_random", "calibration_top", "calibration_random",
                             "test_top", "test_random", "negative")})
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
