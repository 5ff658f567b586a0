"""Pure scoring on arrays: how well simulated activations match true ones.

``score(true_records, simulated_records)`` takes per-record sequences of numbers (from
this package's simulators or from anywhere) and returns, over all records concatenated:

* ``correlation``: Pearson r between true and simulated activations (Bills et al.'s
  main score). It is invariant to any positive affine map of the simulation, so it is
  computed on raw simulations (expected values on the 0..10 scale).
* ``rsquared``: ``1 - mean((t - s)^2) / mean(t^2)`` and ``absolute_dev_explained``:
  ``1 - mean|t - s| / mean|t|``: neuron-explainer's definitions (uncentred: the
  reference is "predict 0 everywhere", not "predict the mean"); may be negative.
* ``rsquared_centred`` (``1 - sum((t - s)^2) / sum((t - mean t)^2)``) and
  ``absolute_dev_explained_centred`` (``1 - sum|t - s| / sum|t - mean t|``): the textbook
  centred variants, under their own names.

All but the correlation are only meaningful when the simulation is in the units of the
true activations, i.e. after calibration (:mod:`tl_concepts.explain.calibration`).

Each comes with a percentile bootstrap confidence interval that resamples whole records
(tokens inside a record are not independent). An undefined value (a constant true or
simulated vector) is ``nan``, never 0.

Also here: ``balanced_accuracy`` and ``auroc`` for the detection and fuzzing scorers.

Example:
    >>> s = score([[0, 1, 2], [0, 0, 3]], [[0, 1, 2], [0, 0, 3]], n_bootstrap=50)
    >>> round(s.correlation.value, 6), round(s.rsquared.value, 6)
    (1.0, 1.0)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from tl_concepts.capture.records import ActivationRecord
from tl_concepts.errors import InputError

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
    """Scores of one simulation against the truth, over concatenated records.

    ``rsquared`` and ``absolute_dev_explained`` are neuron-explainer's (uncentred)
    definitions; the ``*_centred`` fields are the textbook (centred) ones.
    """

    correlation: Interval
    """Pearson correlation of true and simulated activations (Bills et al.'s score)."""
    rsquared: Interval
    """``1 - mean((t - s)^2) / mean(t^2)``, neuron-explainer's uncentred r-squared (may be negative)."""
    absolute_dev_explained: Interval
    """``1 - mean|t - s| / mean|t|``, neuron-explainer's uncentred score (may be negative)."""
    rsquared_centred: Interval
    """``1 - sum((t - s)^2) / sum((t - mean t)^2)``, the centred r-squared (may be negative)."""
    absolute_dev_explained_centred: Interval
    """``1 - sum|t - s| / sum|t - mean t|`` (may be negative)."""
    n_records: int
    """Number of records scored."""
    n_tokens: int
    """Number of tokens scored."""

    @property
    def r_squared(self) -> Interval:
        """Deprecated name of :attr:`rsquared_centred` (what ``r_squared`` used to hold)."""
        return self.rsquared_centred

    @property
    def abs_dev_explained(self) -> Interval:
        """Deprecated name of :attr:`absolute_dev_explained_centred`."""
        return self.absolute_dev_explained_centred

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k).to_dict() for k in SCORE_NAMES}
        out.update(n_records=self.n_records, n_tokens=self.n_tokens)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SimulationScores":
        return cls.from_intervals([Interval.from_dict(d[k]) for k in SCORE_NAMES], int(d["n_records"]),
                                  int(d["n_tokens"]))

    @classmethod
    def from_intervals(cls, iv: Sequence[Interval], n_records: int, n_tokens: int) -> "SimulationScores":
        """Build from the intervals of :data:`SCORE_NAMES`, in that order."""
        if len(iv) != len(SCORE_NAMES):
            raise ValueError(f"expected {len(SCORE_NAMES)} intervals ({', '.join(SCORE_NAMES)}), got {len(iv)}")
        return cls(correlation=iv[0], rsquared=iv[1], absolute_dev_explained=iv[2], rsquared_centred=iv[3],
                   absolute_dev_explained_centred=iv[4], n_records=n_records, n_tokens=n_tokens)


SCORE_NAMES: tuple[str, ...] = ("correlation", "rsquared", "absolute_dev_explained", "rsquared_centred",
                                "absolute_dev_explained_centred")
"""The statistics :func:`score` reports, in the order of :class:`SimulationScores`' fields."""


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


def rsquared(t: np.ndarray, s: np.ndarray) -> float:
    """neuron-explainer's r-squared: ``1 - mean((t - s)^2) / mean(t^2)`` (uncentred);
    nan when every true activation is 0.

    Example:
        >>> rsquared([0.0, 2.0], [0.0, 1.0])
        0.75
    """
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    den = float((t * t).sum()) if t.size else 0.0
    if den == 0.0:
        return float("nan")
    return 1.0 - float(((t - s) ** 2).sum()) / den


def absolute_dev_explained(t: np.ndarray, s: np.ndarray) -> float:
    """neuron-explainer's absolute deviation explained: ``1 - mean|t - s| / mean|t|``
    (uncentred); nan when every true activation is 0.

    Example:
        >>> absolute_dev_explained([0.0, 2.0], [0.0, 1.0])
        0.5
    """
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    den = float(np.abs(t).sum()) if t.size else 0.0
    if den == 0.0:
        return float("nan")
    return 1.0 - float(np.abs(t - s).sum()) / den


def rsquared_centred(t: np.ndarray, s: np.ndarray) -> float:
    """``1 - SSE / SST`` (centred); nan when the truth is constant."""
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    sst = float(((t - t.mean()) ** 2).sum()) if t.size else 0.0
    if sst == 0.0:
        return float("nan")
    return 1.0 - float(((t - s) ** 2).sum()) / sst


def absolute_dev_explained_centred(t: np.ndarray, s: np.ndarray) -> float:
    """``1 - sum|t - s| / sum|t - mean t|`` (centred); nan when the truth is constant."""
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    sad = float(np.abs(t - t.mean()).sum()) if t.size else 0.0
    if sad == 0.0:
        return float("nan")
    return 1.0 - float(np.abs(t - s).sum()) / sad


r_squared = rsquared_centred
"""Deprecated name of :func:`rsquared_centred`."""
abs_dev_explained = absolute_dev_explained_centred
"""Deprecated name of :func:`absolute_dev_explained_centred`."""

_POINT = (correlation, rsquared, absolute_dev_explained, rsquared_centred, absolute_dev_explained_centred)


def check_true_records(true_records: Sequence[RecordLike], what: str = "true activations") -> list[np.ndarray]:
    """The records as float arrays; raises :class:`~tl_concepts.errors.InputError` naming
    the first record with a NaN or infinite value (a score over them would be meaningless)."""
    out = [_as_array(r) for r in true_records]
    for i, t in enumerate(out):
        if not np.all(np.isfinite(t)):
            bad = int(np.flatnonzero(~np.isfinite(t))[0])
            raise InputError(f"record {i}: {what} contain NaN/inf (token {bad}); recapture the unit "
                             "(or drop such contexts) before scoring")
    return out


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
    ``n_bootstrap=0`` to skip the intervals (they are then nan). NaN/inf true
    activations raise :class:`~tl_concepts.errors.InputError`; NaN/inf simulated ones a
    ``ValueError`` (a failed simulation is reported as a failure, never scored).

    Example:
        >>> s = score([[0.0, 2.0], [1.0, 0.0]], [[0.0, 4.0], [2.0, 0.0]], n_bootstrap=0)
        >>> round(s.correlation.value, 6), round(s.rsquared_centred.value, 3), round(s.rsquared.value, 3)
        (1.0, -0.818, 0.0)
    """
    if len(true_records) != len(simulated_records):
        raise ValueError(f"got {len(true_records)} true records and {len(simulated_records)} simulated ones")
    ts = check_true_records(true_records)
    ss = [_as_array(r) for r in simulated_records]
    for i, (t, s) in enumerate(zip(ts, ss)):
        if t.shape != s.shape:
            raise ValueError(f"record {i}: {t.size} true activations but {s.size} simulated ones")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"record {i}: simulated activations contain nan/inf; a failed simulation "
                             "must be reported as a failure, not scored")
    t_all = np.concatenate(ts) if ts else np.zeros(0)
    s_all = np.concatenate(ss) if ss else np.zeros(0)
    k_stats = len(_POINT)
    points = [f(t_all, s_all) for f in _POINT]
    lows = [float("nan")] * k_stats
    highs = [float("nan")] * k_stats
    if n_bootstrap > 0 and len(ts) >= 2:
        counts = record_resample_counts(len(ts), n_bootstrap, seed)
        boots = _bootstrap(ts, t_all, s_all, counts)
        for k in range(k_stats):
            lows[k], highs[k] = percentile_interval(boots[k], level)
    iv = [Interval(points[k], lows[k], highs[k], level) for k in range(k_stats)]
    return SimulationScores.from_intervals(iv, n_records=len(ts), n_tokens=int(t_all.size))


def record_resample_counts(n_records: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``[n_bootstrap, n_records]``: how often each record is drawn in each resample
    (``n_records`` draws with replacement). The same seed gives the same resamples, so two
    simulations of the same records can be compared pairwise."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_records, np.full(n_records, 1.0 / n_records), size=n_bootstrap).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite ``values`` (nan, nan when there are none)."""
    b = np.asarray(values, dtype=np.float64)
    b = b[np.isfinite(b)]
    if not b.size:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(b, alpha)), float(np.quantile(b, 1.0 - alpha))


def token_weights(ts: Sequence[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Per-token weights ``[B, N]`` from per-record draw counts ``[B, n]``."""
    rec_of_token = np.repeat(np.arange(len(ts)), [x.size for x in ts])
    return counts[:, rec_of_token]


def weighted_correlation(w: np.ndarray, t: np.ndarray, s: np.ndarray, constant_sim: float = float("nan")) -> np.ndarray:
    """Pearson r of ``t`` and ``s`` under each row of weights ``w`` ``[B, N]``.

    nan where the truth is constant; ``constant_sim`` where only the simulation is.
    """
    m = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mt = (w @ t) / m
        ms = (w @ s) / m
        dt = t[None, :] - mt[:, None]
        ds = s[None, :] - ms[:, None]
        stt = (w * dt * dt).sum(1)
        sss = (w * ds * ds).sum(1)
        sts = (w * dt * ds).sum(1)
        # relative tolerance: a sum of squares that is rounding noise counts as 0
        st_ok = stt > 1e-12 * np.maximum((w @ (t * t)), 1e-300)
        ss_ok = sss > 1e-12 * np.maximum((w @ (s * s)), 1e-300)
        r = np.where(st_ok & ss_ok, sts / np.sqrt(stt * sss), np.nan)
    return np.where(st_ok & ~ss_ok, constant_sim, r)


def _bootstrap(ts: list[np.ndarray], t: np.ndarray, s: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """The statistics of :data:`_POINT` on resamples of whole records, vectorised.

    A resample draws ``len(ts)`` records with replacement; record ``i`` drawn ``c_i``
    times weighs each of its tokens by ``c_i``, so every statistic is a weighted sum over
    the concatenated tokens (the same numbers as concatenating the drawn records).
    """
    w = token_weights(ts, counts)                                                            # [B, N]
    m = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = weighted_correlation(w, t, s)
        mt = (w @ t) / m
        dt = t[None, :] - mt[:, None]
        stt = (w * dt * dt).sum(1)
        sse = w @ ((t - s) ** 2)
        sad_abs = w @ np.abs(t - s)
        tt = w @ (t * t)
        ta = w @ np.abs(t)
        r2 = np.where(tt > 0, 1.0 - sse / tt, np.nan)
        ade = np.where(ta > 0, 1.0 - sad_abs / ta, np.nan)
        r2c = np.where(stt > 0, 1.0 - sse / stt, np.nan)
        sadc = (w * np.abs(dt)).sum(1)
        adec = np.where(sadc > 0, 1.0 - sad_abs / sadc, np.nan)
    return [corr, r2, ade, r2c, adec]


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
