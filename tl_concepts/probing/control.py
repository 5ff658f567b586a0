"""Control tasks (Hewitt and Liang 2019): one random label per word type.

A control task keeps the label distribution of the real task but gives every word type a
label drawn at random, so a probe can only solve it by memorising word identity.
*Selectivity* = task accuracy - control accuracy: a high-accuracy probe with low
selectivity says more about the probe than about the representation.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1, 1])
    >>> c = control_labels(["a", "a", "b", "c", "b"], y, n_classes=2, seed=0)
    >>> bool(c[0] == c[1]) and bool(c[2] == c[4])     # same type -> same label
    True
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def control_labels(types: Sequence[Any] | np.ndarray, y: np.ndarray, *, n_classes: int, seed: int = 0) -> np.ndarray:
    """[n] control labels: each distinct type gets a class drawn from the empirical class
    distribution of ``y`` (fixed ``seed``); every occurrence of the type shares it."""
    y = np.asarray(y)
    if len(types) != len(y):
        raise ValueError(f"{len(types)} types for {len(y)} labels")
    uniq, inv = np.unique(np.asarray([str(t) for t in types], dtype=object), return_inverse=True)
    prior = np.bincount(y, minlength=n_classes).astype(np.float64)
    prior /= prior.sum()
    rng = np.random.default_rng(seed)
    per_type = rng.choice(n_classes, size=len(uniq), p=prior)
    return per_type[inv].astype(np.int64)


def selectivity(accuracy: float, control_accuracy: float) -> float:
    """Task accuracy minus control-task accuracy (Hewitt and Liang)."""
    return float(accuracy) - float(control_accuracy)
