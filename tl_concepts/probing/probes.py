"""Linear probes on representations: binary and multi-class, 60/20/20 splits, fixed seeds.

The probe is a logistic regression on standardised features (statistics from the train
split); the inverse regularisation ``C`` is picked on the dev split from a small grid and
the test accuracy is reported. With word types, the same procedure runs on a control task
(:mod:`tl_concepts.probing.control`) and the result carries the selectivity.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> x = rng.normal(size=(200, 5)).astype(np.float32); x[:, 0] += 3 * y
    >>> r = train_probe(x, y.tolist(), name="demo")
    >>> r.test_accuracy > 0.9, (r.n_train, r.n_dev, r.n_test)
    (True, (120, 40, 40))
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .control import control_labels, selectivity
from .data import LabelledData, ProbingInputError


@dataclass
class ProbeOptions:
    """How probes are trained."""

    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Train / dev / test shares, per class (Mousi et al.: 60/20/20)."""
    seed: int = 0
    """Seed of the split, the control labels and negative sampling."""
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0)
    """Inverse L2 strengths tried; the best on dev is kept."""
    max_iter: int = 300
    """Optimiser iterations per fit."""
    control: bool = True
    """Also train on a control task (needs word types)."""


@dataclass
class ProbeResult:
    """One trained probe."""

    name: str
    """What was probed (a concept id, a tag, ...)."""
    task: str
    """``binary`` or ``multiclass``."""
    classes: list[str]
    """Class names."""
    n_train: int
    """Rows in the train split."""
    n_dev: int
    """Rows in the dev split."""
    n_test: int
    """Rows in the test split."""
    train_accuracy: float
    """Accuracy on the train split."""
    dev_accuracy: float
    """Accuracy on the dev split (used to pick ``c``)."""
    test_accuracy: float
    """Accuracy on the held-out test split: *the* probe accuracy."""
    majority_accuracy: float
    """Test accuracy of always predicting the most frequent train class."""
    c: float
    """Chosen inverse regularisation strength."""
    control_accuracy: float | None = None
    """Test accuracy of the same procedure on the control task (None without types)."""
    selectivity: float | None = None
    """``test_accuracy - control_accuracy``."""
    seconds: float = 0.0
    """Wall time of the fits."""
    seed: int = 0
    """Seed used."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else (e.g. the concept's label or size)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_indices(y: np.ndarray, split: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/dev/test row indices. Every class with >= 2 rows has a train and a
    test row; dev may be empty for classes with < 3 rows."""
    if len(split) != 3 or abs(sum(split) - 1) > 1e-6 or min(split) < 0:
        raise ValueError(f"split must be three non-negative shares summing to 1; got {split}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        n = len(rows)
        n_test = int(round(split[2] * n))
        n_dev = int(round(split[1] * n))
        if n >= 2:
            n_test = max(n_test, 1)
        if n >= 3 and split[1] > 0:
            n_dev = max(n_dev, 1)
        n_train = n - n_test - n_dev
        while n_train < 1 and (n_dev > 0 or n_test > 1):
            if n_dev > 0:
                n_dev -= 1
            else:
                n_test -= 1
            n_train = n - n_test - n_dev
        parts[0].append(rows[:n_train])
        parts[1].append(rows[n_train:n_train + n_dev])
        parts[2].append(rows[n_train + n_dev:])
    return tuple(np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts)  # type: ignore[return-value]


def _standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    mu = x[train].mean(axis=0)
    sd = x[train].std(axis=0)
    sd[sd == 0] = 1.0
    return (x - mu) / sd


def _fit_select(x: np.ndarray, y: np.ndarray, tr: np.ndarray, dv: np.ndarray, te: np.ndarray,
                opts: ProbeOptions) -> tuple[float, float, float, float]:
    """Fit over the C grid, keep the best dev accuracy; (train, dev, test accuracy, C)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y[tr])) < 2:
        const = np.bincount(y[tr]).argmax()
        acc = lambda rows: float(np.mean(y[rows] == const)) if len(rows) else float("nan")  # noqa: E731
        return acc(tr), acc(dv), acc(te), float("nan")
    best: tuple[float, float, float, float] | None = None
    for c in opts.c_grid:
        clf = LogisticRegression(C=c, max_iter=opts.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[tr], y[tr])
        acc = lambda rows: float(np.mean(clf.predict(x[rows]) == y[rows])) if len(rows) else float("nan")  # noqa: E731,B023
        dev = acc(dv) if len(dv) else acc(tr)
        if best is None or dev > best[1] + 1e-12:
            best = (acc(tr), dev, acc(te), c)
    assert best is not None
    return best


def train_probe(representations: Any, labels: Sequence[Any], *, name: str = "",
                types: Sequence[Any] | None = None, options: ProbeOptions | None = None,
                extra: dict[str, Any] | None = None) -> ProbeResult:
    """Train a linear probe predicting ``labels`` from ``representations``.

    Two classes give a ``binary`` probe, more a ``multiclass`` (multinomial) one. With
    ``types`` (the word of each row) and ``options.control``, a control task is trained the
    same way and ``selectivity`` is set. Raises :class:`ProbingInputError` on misaligned
    labels, NaN rows or a class with one member.
    """
    opts = options or ProbeOptions()
    data = LabelledData.make(representations, labels, types=types)
    return probe_data(data, name=name, options=opts, extra=extra)


def probe_data(data: LabelledData, *, name: str = "", options: ProbeOptions | None = None,
               extra: dict[str, Any] | None = None) -> ProbeResult:
    """:func:`train_probe` on already validated :class:`LabelledData`."""
    opts = options or ProbeOptions()
    t0 = time.perf_counter()
    tr, dv, te = split_indices(data.y, opts.split, opts.seed)
    if len(te) == 0 or len(tr) == 0:
        raise ProbingInputError(f"{data.n} rows are too few for a train/test split; give more labelled rows")
    x = _standardise(data.x.astype(np.float64), tr)
    a_tr, a_dv, a_te, c = _fit_select(x, data.y, tr, dv, te, opts)
    majority = float(np.mean(data.y[te] == np.bincount(data.y[tr]).argmax()))
    ctrl = sel = None
    if opts.control and data.types is not None:
        yc = control_labels(data.types, data.y, n_classes=data.n_classes, seed=opts.seed)
        ctrl = _fit_select(x, yc, tr, dv, te, opts)[2]
        sel = selectivity(a_te, ctrl)
    return ProbeResult(name=str(name), task="binary" if data.n_classes == 2 else "multiclass",
                       classes=[str(c_) for c_ in data.classes], n_train=len(tr), n_dev=len(dv),
                       n_test=len(te), train_accuracy=a_tr, dev_accuracy=a_dv, test_accuracy=a_te,
                       majority_accuracy=majority, c=c, control_accuracy=ctrl, selectivity=sel,
                       seconds=time.perf_counter() - t0, seed=opts.seed, extra=dict(extra or {}))
