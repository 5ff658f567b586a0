"""Pure scoring on arrays: how well simulated activations match true ones.

``score(true_records, simulated_records)`` takes per-record sequences of numbers (from
this package's simulators or from anywhere) and returns, over all records concatenated:

* ``correlation``: Pearson r between true and simulated activations (Bills et al.'s
  main score). It is invariant to any positive affine map of the simulation, so it is
  computed on raw simulations (expected values on the 0..10 scale).
* ``r_squared``: ``1 - sum((t - s)^2) / sum((t - mean t)^2)``; may be negative. Only
  meaningful when the simulation is in the units of the true activations, i.e. after
  calibration (:mod:`tl_concepts.explain.calibration`).
* ``abs_dev_explained``: ``1 - sum|t - s| / sum|t - mean t|``; same caveat.

Each comes with a percentile bootstrap confidence interval that resamples whole records
(tokens inside a record are not independent). An undefined value (a constant true or
simulated vector) is ``nan``, never 0.

Also here: ``balanced_accuracy`` and ``auroc`` for the detection and fuzzing scorers.

Example:
    >>> s = score([[0, 1, 2], [0, 0, 3]], [[0, 1, 2], [0, 0, 3]], n_bootstrap=50)
    >>> round(s.correlation.value, 6), round(s.r_squared.value, 6)
    (1.0, 1.0)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from tl_concepts.capture.records import ActivationRecord

RecordLike = ActivationRecord | Sequence[float] | np.ndarray


@dataclass
class Interval:
    """A statistic with its bootstrap confidence interval."""

    value: float
    """Point estimate on all data (nan when undefined)."""
    low: float
    """Lower end of the interval (nan when no bootstrap or undefined)."""
    high: float
    """Upper end of the interval."""
    level: float = 0.95
    """Coverage of the interval."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Interval":
        f = lambda x: float("nan") if x is None else float(x)  # noqa: E731
        return cls(f(d["value"]), f(d["low"]), f(d["high"]), float(d.get("level", 0.95)))


@dataclass
class SimulationScores:
    """Scores of one simulation against the truth, over concatenated records."""

    correlation: Interval
    """Pearson correlation of true and simulated activations."""
    r_squared: Interval
    """Fraction of variance explained (may be negative)."""
    abs_dev_explained: Interval
    """Fraction of absolute deviation from the mean explained (may be negative)."""
    n_records: int
    """Number of records scored."""
    n_tokens: int
    """Number of tokens scored."""

    def to_dict(self) -> dict[str, Any]:
        return {"correlation": self.correlation.to_dict(), "r_squared": self.r_squared.to_dict(),
                "abs_dev_explained": self.abs_dev_explained.to_dict(),
                "n_records": self.n_records, "n_tokens": self.n_tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SimulationScores":
        return cls(Interval.from_dict(d["correlation"]), Interval.from_dict(d["r_squared"]),
                   Interval.from_dict(d["abs_dev_explained"]), int(d["n_records"]), int(d["n_tokens"]))


def _as_array(r: RecordLike) -> np.ndarray:
    if isinstance(r, ActivationRecord):
        r = r.activations
    return np.asarray(r, dtype=np.float64).reshape(-1)


def correlation(t: np.ndarray, s: np.ndarray) -> float:
    """Pearson r; nan when either side is constant or empty."""
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if t.size < 2:
        return float("nan")
    tc, sc = t - t.mean(), s - s.mean()
    den = math.sqrt(float((tc * tc).sum()) * float((sc * sc).sum()))
    if den == 0.0:
        return float("nan")
    return float((tc * sc).sum() / den)


def r_squared(t: np.ndarray, s: np.ndarray) -> float:
    """``1 - SSE / SST``; nan when the truth is constant."""
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    sst = float(((t - t.mean()) ** 2).sum()) if t.size else 0.0
    if sst == 0.0:
        return float("nan")
    return 1.0 - float(((t - s) ** 2).sum()) / sst


def abs_dev_explained(t: np.ndarray, s: np.ndarray) -> float:
    """``1 - sum|t - s| / sum|t - mean t|``; nan when the truth is constant."""
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    sad = float(np.abs(t - t.mean()).sum()) if t.size else 0.0
    if sad == 0.0:
        return float("nan")
    return 1.0 - float(np.abs(t - s).sum()) / sad


def score(
    true_records: Sequence[RecordLike],
    simulated_records: Sequence[RecordLike],
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> SimulationScores:
    """Score simulated against true activations over all records concatenated.

    ``true_records[i]`` and ``simulated_records[i]`` must have the same length. Use
    ``n_bootstrap=0`` to skip the intervals (they are then nan).

    Example:
        >>> s = score([[0.0, 2.0], [1.0, 0.0]], [[0.0, 4.0], [2.0, 0.0]], n_bootstrap=0)
        >>> round(s.correlation.value, 6), round(s.r_squared.value, 3)
        (1.0, -0.818)
    """
    if len(true_records) != len(simulated_records):
        raise ValueError(f"got {len(true_records)} true records and {len(simulated_records)} simulated ones")
    ts = [_as_array(r) for r in true_records]
    ss = [_as_array(r) for r in simulated_records]
    for i, (t, s) in enumerate(zip(ts, ss)):
        if t.shape != s.shape:
            raise ValueError(f"record {i}: {t.size} true activations but {s.size} simulated ones")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"record {i}: simulated activations contain nan/inf; a failed simulation "
                             "must be reported as a failure, not scored")
    t_all = np.concatenate(ts) if ts else np.zeros(0)
    s_all = np.concatenate(ss) if ss else np.zeros(0)
    fns = (correlation, r_squared, abs_dev_explained)
    points = [f(t_all, s_all) for f in fns]
    lows = [float("nan")] * 3
    highs = [float("nan")] * 3
    if n_bootstrap > 0 and len(ts) >= 2:
        boots = _bootstrap(ts, t_all, s_all, n_bootstrap, seed)
        alpha = (1.0 - level) / 2.0
        for k in range(3):
            b = boots[k][np.isfinite(boots[k])]
            if b.size:
                lows[k] = float(np.quantile(b, alpha))
                highs[k] = float(np.quantile(b, 1.0 - alpha))
    iv = [Interval(points[k], lows[k], highs[k], level) for k in range(3)]
    return SimulationScores(iv[0], iv[1], iv[2], n_records=len(ts), n_tokens=int(t_all.size))


def _bootstrap(ts: list[np.ndarray], t: np.ndarray, s: np.ndarray, n_bootstrap: int,
               seed: int) -> list[np.ndarray]:
    """The three statistics on ``n_bootstrap`` resamples of whole records, vectorised.

    A resample draws ``len(ts)`` records with replacement; record ``i`` drawn ``c_i``
    times weighs each of its tokens by ``c_i``, so every statistic is a weighted sum over
    the concatenated tokens (the same numbers as concatenating the drawn records).
    """
    n = len(ts)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap).astype(np.float64)  # [B, n]
    rec_of_token = np.repeat(np.arange(n), [x.size for x in ts])
    w = counts[:, rec_of_token]                                                             # [B, N]
    m = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mt = (w @ t) / m
        ms = (w @ s) / m
        dt = t[None, :] - mt[:, None]
        ds = s[None, :] - ms[:, None]
        stt = (w * dt * dt).sum(1)
        sss = (w * ds * ds).sum(1)
        sts = (w * dt * ds).sum(1)
        corr = np.where((stt > 0) & (sss > 0), sts / np.sqrt(stt * sss), np.nan)
        sse = w @ ((t - s) ** 2)
        r2 = np.where(stt > 0, 1.0 - sse / stt, np.nan)
        sad = (w * np.abs(dt)).sum(1)
        ade = np.where(sad > 0, 1.0 - (w @ np.abs(t - s)) / sad, np.nan)
    return [corr, r2, ade]


def balanced_accuracy(labels: Sequence[bool | int], predictions: Sequence[bool | int]) -> float:
    """Mean of true-positive rate and true-negative rate; nan without both classes.

    Example:
        >>> balanced_accuracy([1, 1, 0, 0], [1, 0, 0, 0])
        0.75
    """
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(predictions, dtype=bool)
    if y.shape != p.shape:
        raise ValueError("labels and predictions differ in length")
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    tpr = float((p & y).sum()) / npos
    tnr = float((~p & ~y).sum()) / nneg
    return (tpr + tnr) / 2.0


def auroc(labels: Sequence[bool | int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); nan without both classes.

    Example:
        >>> auroc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1])
        0.875
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError("labels and scores differ in length")
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float(greater + 0.5 * ties) / (pos.size * neg.size)
