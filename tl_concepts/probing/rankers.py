"""Neuron rankings: (representations, labels) -> neurons ordered by relevance.

Three rankers with one signature (``rank(x, labels, ...) -> NeuronRanking``):

* :func:`probeless` (Antverg and Belinkov 2022, as used by Mousi et al. 2023): with q(z)
  the mean activation of the rows of class z, a class c scores each neuron with
  ``sum_{z != c} |q(c) - q(z)|``; the overall score sums ``|q(z) - q(z')|`` over unordered
  class pairs. No training, one pass over the data.
* :func:`probe_weights`: an elastic-net logistic probe on standardised features; per class
  the neurons with the largest ``|w|`` that together hold ``mass`` of the class's weight
  mass; overall, neurons by their largest share of any class's weight mass.
* :func:`average_precision`: each neuron as a detector of a class (its activation as the
  score), ranked by average precision; overall, the mean over classes.

Constant neurons carry no information: every ranker scores them 0 (AP: the base rate)
and puts them last; ``NeuronRanking.constant`` lists them.

Example:
    >>> import numpy as np
    >>> x = np.array([[0., 1.], [0., 3.], [1., 1.], [1., 3.]], dtype=np.float32)
    >>> r = probeless(x, ["a", "a", "b", "b"])
    >>> r.order.tolist(), r.scores.tolist()
    ([0, 1], [1.0, 0.0])
"""
from __future__ import annotations

from tl_concepts.errors import ConfigError

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .data import LabelledData


@dataclass
class NeuronRanking:
    """Neurons ordered by relevance to a labelling, overall and per class."""

    method: str
    """``probeless``, ``probe_weights`` or ``average_precision``."""
    order: np.ndarray
    """[d] neuron indices, most relevant first (constant neurons last)."""
    scores: np.ndarray
    """[d] overall score per neuron (indexed by neuron, not by rank)."""
    classes: list[str]
    """Class names."""
    per_class: dict[str, np.ndarray] = field(default_factory=dict)
    """Class -> [d] neuron indices, most relevant to that class first."""
    per_class_scores: dict[str, np.ndarray] = field(default_factory=dict)
    """Class -> [d] score per neuron."""
    constant: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Indices of constant neurons."""
    selected: dict[str, np.ndarray] = field(default_factory=dict)
    """``probe_weights`` only: class -> neurons covering ``mass`` of its weight mass."""
    info: dict[str, Any] = field(default_factory=dict)
    """Settings and timing."""

    def top(self, n: int, cls: str | None = None) -> np.ndarray:
        """The ``n`` most relevant neurons (overall, or for class ``cls``)."""
        if cls is None:
            return self.order[:n]
        if str(cls) not in self.per_class:
            raise KeyError(f"no class {cls!r}; classes: {self.classes}")
        return self.per_class[str(cls)][:n]

    def rank_of(self, neuron: int) -> int:
        """0-based overall rank of ``neuron``."""
        return int(np.flatnonzero(self.order == neuron)[0])


def _order(scores: np.ndarray, constant: np.ndarray) -> np.ndarray:
    s = np.where(np.isfinite(scores), scores, -np.inf).astype(np.float64)
    s[constant] = -np.inf
    return np.lexsort((np.arange(len(s)), -s))  # highest first, ties by index


def _ranking(method: str, data: LabelledData, overall: np.ndarray, per: dict[str, np.ndarray],
             **kw: Any) -> NeuronRanking:
    const = data.constant_neurons()
    return NeuronRanking(method=method, order=_order(overall, const), scores=overall.astype(np.float64),
                         classes=[str(c) for c in data.classes],
                         per_class={c: _order(s, const) for c, s in per.items()},
                         per_class_scores={c: s.astype(np.float64) for c, s in per.items()},
                         constant=const, **kw)


def class_means(data: LabelledData) -> np.ndarray:
    """[n_classes, d] mean activation per class (float64)."""
    sums = np.stack([data.x[data.y == c].sum(axis=0, dtype=np.float64) for c in range(data.n_classes)])
    return sums / np.bincount(data.y, minlength=data.n_classes)[:, None]


def probeless(representations: Any, labels: Sequence[Any], *, data: LabelledData | None = None) -> NeuronRanking:
    """Probeless ranking (no training): see the module docstring for the formula."""
    t0 = time.perf_counter()
    data = data or LabelledData.make(representations, labels)
    q = class_means(data)
    diff = np.abs(q[:, None, :] - q[None, :, :])  # [C, C, d]
    per = {str(c): diff[i].sum(axis=0) for i, c in enumerate(data.classes)}
    overall = np.triu(np.ones((data.n_classes, data.n_classes), bool), 1)
    overall_scores = diff[overall].sum(axis=0)
    return _ranking("probeless", data, overall_scores, per, info={"seconds": time.perf_counter() - t0})


def probe_weights(representations: Any, labels: Sequence[Any], *, mass: float = 0.5, l1_ratio: float = 0.5,
                  c: float = 0.1, max_iter: int = 200, seed: int = 0,
                  data: LabelledData | None = None) -> NeuronRanking:
    """Elastic-net probe-weight ranking.

    Args:
        mass: share of a class's total ``|w|`` its selected neurons must cover.
        l1_ratio: elastic-net mixing (0 = L2, 1 = L1).
        c: inverse regularisation strength.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if not 0 < mass <= 1:
        raise ConfigError(f"mass must be in (0, 1]; got {mass}")
    t0 = time.perf_counter()
    data = data or LabelledData.make(representations, labels)
    x = data.x.astype(np.float64)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    x = (x - x.mean(axis=0)) / sd
    clf = LogisticRegression(l1_ratio=l1_ratio, C=c, solver="saga", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(x, data.y)
    w = np.abs(clf.coef_)
    if w.shape[0] == 1:  # binary: one weight vector serves both classes
        w = np.vstack([w, w])
    per: dict[str, np.ndarray] = {}
    selected: dict[str, np.ndarray] = {}
    shares = []
    for i, cname in enumerate(data.classes):
        total = w[i].sum()
        share = w[i] / total if total > 0 else np.zeros_like(w[i])
        shares.append(share)
        per[str(cname)] = share
        order = np.lexsort((np.arange(len(share)), -share))
        cum = np.cumsum(share[order])
        k = int(np.searchsorted(cum, mass - 1e-12) + 1) if total > 0 else 0
        selected[str(cname)] = order[:k]
    overall = np.max(np.vstack(shares), axis=0)
    return _ranking("probe_weights", data, overall, per, selected=selected,
                    info={"mass": mass, "l1_ratio": l1_ratio, "c": c, "seconds": time.perf_counter() - t0,
                          "train_accuracy": float(clf.score(x, data.y))})


def _average_precision_columns(x: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AP of every column of ``x`` as a score for ``positive`` (ties broken pessimistically)."""
    n, d = x.shape
    n_pos = int(positive.sum())
    out = np.empty(d, np.float64)
    for j in range(d):
        # sort descending by score; among ties, negatives first (no credit for ties)
        order = np.lexsort((positive, -x[:, j]))
        hits = positive[order]
        tp = np.cumsum(hits)
        prec = tp / np.arange(1, n + 1)
        out[j] = prec[hits].sum() / n_pos
    return out


def average_precision(representations: Any, labels: Sequence[Any], *, both_signs: bool = False,
                      positive: Any = None, data: LabelledData | None = None) -> NeuronRanking:
    """Average-precision ranking: neuron j's activation as a detector of each class.

    Overall score: the mean AP over classes; for two classes, the AP of the ``positive``
    class (default: the last class in sorted order, i.e. ``1`` / ``True`` of a
    concept-vs-rest task). ``both_signs`` also tries ``-activation`` and keeps the better
    AP (for neurons that switch off on the class).
    """
    t0 = time.perf_counter()
    data = data or LabelledData.make(representations, labels)
    per: dict[str, np.ndarray] = {}
    for i, cname in enumerate(data.classes):
        pos = data.y == i
        ap = _average_precision_columns(data.x, pos)
        if both_signs:
            ap = np.maximum(ap, _average_precision_columns(-data.x, pos))
        per[str(cname)] = ap
    if data.n_classes == 2:
        pos_name = str(data.classes[-1] if positive is None else positive)
        if pos_name not in per:
            raise ConfigError(f"positive class {positive!r} is not one of {data.classes}")
        overall = per[pos_name]
    else:
        pos_name = None
        overall = np.mean(np.vstack(list(per.values())), axis=0)
    return _ranking("average_precision", data, overall, per,
                    info={"both_signs": both_signs, "positive": pos_name, "seconds": time.perf_counter() - t0})


RANKERS: dict[str, Callable[..., NeuronRanking]] = {
    "probeless": probeless, "probe_weights": probe_weights, "average_precision": average_precision,
}
"""Ranker name -> function."""


def rank_neurons(representations: Any, labels: Sequence[Any], method: str = "probeless",
                 **kw: Any) -> NeuronRanking:
    """Dispatch to a ranker by name (see :data:`RANKERS`)."""
    if method not in RANKERS:
        from tl_concepts.errors import ConfigError

        raise ConfigError(f"unknown ranking method {method!r}; choose one of {', '.join(sorted(RANKERS))}")
    return RANKERS[method](representations, labels, **kw)
