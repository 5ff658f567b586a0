"""Checked (representations, labels) pairs: the input of every probe and ranker.

Example:
    >>> import numpy as np
    >>> d = LabelledData.make(np.eye(4, dtype=np.float32), ["a", "b", "a", "b"])
    >>> d.classes, d.y.tolist(), d.n, d.dim
    (['a', 'b'], [0, 1, 0, 1], 4, 4)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tl_concepts.errors import InputError


class ProbingInputError(InputError):
    """Representations and labels cannot be probed or ranked; the message says what to fix."""


@dataclass
class LabelledData:
    """Representations with one class label per row."""

    x: np.ndarray
    """[n, d] float32 representations."""
    y: np.ndarray
    """[n] class index per row (into ``classes``)."""
    classes: list[Any]
    """Class names, sorted; ``y`` indexes into it."""
    types: np.ndarray | None = None
    """[n] word type per row (for control tasks), or None."""

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        """Number of neurons / features."""
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def constant_neurons(self, atol: float = 0.0) -> np.ndarray:
        """Indices of neurons whose value is the same on every row."""
        return np.flatnonzero(np.ptp(self.x, axis=0) <= atol)

    @classmethod
    def make(cls, representations: Any, labels: Sequence[Any], *, types: Sequence[Any] | None = None,
             min_class_size: int = 2) -> "LabelledData":
        """Validate and index ``labels``.

        Raises :class:`ProbingInputError` when the shapes disagree, a row is NaN/inf, there
        are fewer than two classes, or a class has fewer than ``min_class_size`` rows.
        """
        x = np.asarray(representations)
        if x.ndim != 2:
            raise ProbingInputError(f"representations must be [n, d]; got shape {x.shape}")
        x = x.astype(np.float32, copy=False)
        labels = list(labels)
        if len(labels) != x.shape[0]:
            raise ProbingInputError(
                f"labels are misaligned with representations: {len(labels)} labels for {x.shape[0]} rows; "
                "pass one label per representation row (e.g. index word_representations by the "
                "labelled words' word_id)")
        if types is not None and len(types) != x.shape[0]:
            raise ProbingInputError(f"{len(types)} word types for {x.shape[0]} rows; pass one type per row")
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise ProbingInputError(
                f"{int(bad.sum())} representation rows contain NaN/inf (first: row {int(np.flatnonzero(bad)[0])}); "
                "drop them (words without captured tokens) before probing")
        counts = Counter(labels)
        if len(counts) < 2:
            raise ProbingInputError(f"need at least two classes; all {len(labels)} rows are {labels[0] if labels else '-'!r}")
        small = sorted((str(c), k) for c, k in counts.items() if k < min_class_size)
        if small:
            shown = ", ".join(f"{c!r} ({k})" for c, k in small[:5])
            raise ProbingInputError(
                f"{len(small)} class(es) have fewer than {min_class_size} members: {shown}"
                f"{' ...' if len(small) > 5 else ''}; drop or merge them (e.g. a min_size filter)")
        classes = sorted(counts, key=lambda c: (str(type(c)), c))
        index = {c: i for i, c in enumerate(classes)}
        y = np.fromiter((index[v] for v in labels), dtype=np.int64, count=len(labels))
        return cls(x=x, y=y, classes=classes, types=None if types is None else np.asarray(types, dtype=object))


def binary_task(x: np.ndarray, member: np.ndarray, *, negatives: float | None = 1.0, seed: int = 0,
                types: Sequence[Any] | None = None, min_class_size: int = 2) -> LabelledData:
    """A concept-vs-rest task: rows in ``member`` (bool [n] or indices) are class 1.

    ``negatives``: non-members sampled per member (1.0: balanced, as ConceptX probes);
    None keeps every non-member.
    """
    x = np.asarray(x)
    mask = np.zeros(x.shape[0], bool)
    mask[np.asarray(member)] = True
    pos = np.flatnonzero(mask)
    neg = np.flatnonzero(~mask)
    if negatives is not None:
        rng = np.random.default_rng(seed)
        k = min(len(neg), max(1, int(round(negatives * len(pos)))))
        neg = np.sort(rng.choice(neg, size=k, replace=False))
    rows = np.concatenate([pos, neg])
    lab = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    t = None if types is None else [types[i] for i in rows]
    return LabelledData.make(x[rows], lab.tolist(), types=t, min_class_size=min_class_size)
