"""Labelled word sets from a capture store: POS / NER tags, concepts, or a user's file.

:func:`load_labelled` returns :class:`LabelledWords`: word representations at one hook,
one label per row ("" = unlabelled; such rows only serve as negatives) and the word type
of each row (for control tasks).

Label sources (``source``):

* ``pos`` / ``ner``: the store's tags (spaCy tags of the embedded corpus);
* ``concepts:<dir>``: a saved :class:`~tl_concepts.concepts.ConceptSet` (its points are
  the rows; label = concept node id; cut at ``k`` when given);
* a path to a ``.tsv`` / ``.csv`` file with columns ``word_id`` and ``label``.

Example:
    >>> lw = load_labelled("runs/x", "blocks.3.hook_resid_post", "pos")   # doctest: +SKIP
    >>> lw.label_counts(min_size=10)                                      # doctest: +SKIP
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tl_concepts.fingerprint import fingerprint

from .data import ProbingInputError


@dataclass
class LabelledWords:
    """Word representations with labels, ready for probes and rankers."""

    x: np.ndarray
    """[n, d] representations."""
    labels: list[str]
    """[n] label per row; "" for unlabelled rows."""
    types: list[str]
    """[n] word text per row."""
    hook: str
    """Hook the representations come from."""
    source: str
    """Where the labels came from."""
    names: dict[str, str] = field(default_factory=dict)
    """Label -> display name (e.g. a concept's LLM label)."""
    concepts: Any = None
    """The ConceptSet, for ``concepts:`` sources (for super/sub-concept alignment)."""
    store_fingerprint: str = ""
    """Fingerprint of the store the representations come from (:func:`store_fingerprint`)."""

    def label_counts(self, min_size: int = 1) -> dict[str, int]:
        """Labels with at least ``min_size`` rows, largest first."""
        c = Counter(lab for lab in self.labels if lab != "")
        return {k: v for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])) if v >= min_size}


def store_fingerprint(store: Any) -> str:
    """Fingerprint of what a capture store holds (model, corpus, capture settings, hooks, size).

    Example:
        >>> from types import SimpleNamespace
        >>> len(store_fingerprint(SimpleNamespace(manifest={"model": {"id": "m"}})))
        16
    """
    m = store.manifest
    return fingerprint({k: m.get(k) for k in ("model", "tokenizer", "corpus", "settings_key", "n_tokens",
                                              "n_windows")} | {"hooks": sorted(m.get("hooks", {}))})


def _read_user_labels(path: Path) -> dict[int, str]:
    delim = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    out: dict[int, str] = {}
    with path.open(newline="", encoding="utf-8") as f:
        rd = csv.DictReader(f, delimiter=delim)
        if not rd.fieldnames or not {"word_id", "label"} <= set(rd.fieldnames):
            got = ", ".join(rd.fieldnames or []) or "no header"
            raise ProbingInputError(f"{path} needs a header with columns word_id and label; got {got}")
        for n, row in enumerate(rd, start=2):
            try:
                out[int(row["word_id"])] = str(row["label"])
            except (TypeError, ValueError):
                raise ProbingInputError(f"{path} line {n}: word_id {row['word_id']!r} is not a whole number") from None
    return out


def load_labelled(store: Any, hook: str, source: str, *, agg: str = "mean", k: int | None = None) -> LabelledWords:
    """Representations at ``hook`` and labels from ``source`` (see the module docstring)."""
    from tl_concepts.capture import ActivationStore

    if isinstance(store, ActivationStore):
        st = store
    else:
        try:
            st = ActivationStore.open(store)
        except FileNotFoundError as e:
            raise ProbingInputError(str(e)) from None
    if hook not in st.hooks:
        raise ProbingInputError(f"hook {hook} was not captured in {st.path}; captured: {', '.join(st.hooks)}")
    if source.startswith("concepts:") and not Path(source.split(":", 1)[1]).is_dir():
        raise ProbingInputError(f"concept set folder {source.split(':', 1)[1]} does not exist; make one with "
                                "tl-concepts concepts --out DIR and pass --labels concepts:DIR")
    reps = st.word_representations(hook, agg=agg)
    words = st.words()
    text = list(words["text"])
    if source.startswith("concepts:"):
        from tl_concepts.concepts import ConceptSet

        cs = ConceptSet.load(source.split(":", 1)[1], k=k)
        wid = np.asarray(cs.points["word_id"], np.int64)
        if wid.size and wid.max() >= reps.shape[0]:
            raise ProbingInputError(f"concept set {source} refers to word ids beyond this store's "
                                    f"{reps.shape[0]} words: it was made from another capture")
        x = reps[wid]
        labels = [str(a) for a in cs.assignment.tolist()]
        names = {}
        for cid, labs in cs.labels.items():
            ok = [lab.label for lab in labs if lab.label]
            if ok:
                names[str(cid)] = ok[-1]
        lw = LabelledWords(x=x, labels=labels, types=[str(t) for t in cs.points["text"]], hook=hook,
                           source=source, names=names, concepts=cs)
    else:
        if source in ("pos", "ner"):
            labels = [str(v or "") for v in words[source]]
            if not any(labels):
                raise ProbingInputError(f"the store's words have no {source} tags (an untagged corpus); "
                                        "use concepts:<dir> or a word_id,label file")
        else:
            path = Path(source)
            if not path.exists():
                raise ProbingInputError(f"unknown label source {source!r}: use pos, ner, concepts:<dir> "
                                        "or an existing .tsv/.csv file with word_id,label")
            user = _read_user_labels(path)
            bad = [w for w in user if not 0 <= w < reps.shape[0]]
            if bad:
                raise ProbingInputError(f"{len(bad)} word_ids in {path} are not words of this store "
                                        f"(0..{reps.shape[0] - 1}), e.g. {bad[:3]}")
            labels = [user.get(i, "") for i in range(reps.shape[0])]
        lw = LabelledWords(x=reps, labels=labels, types=text, hook=hook, source=source)
    lw.store_fingerprint = store_fingerprint(st)
    keep = np.isfinite(lw.x).all(axis=1)
    if not keep.all() and lw.concepts is not None:
        raise ProbingInputError(f"{int((~keep).sum())} concept points have no captured representation at {hook}; "
                                "rebuild the concept set from this store (tl-concepts concepts leaves such words out)")
    if not keep.all():  # words without captured tokens (a capture cut short by its window)
        idx = np.flatnonzero(keep)
        lw.x = lw.x[idx]
        lw.labels = [lw.labels[i] for i in idx]
        lw.types = [lw.types[i] for i in idx]
    return lw
