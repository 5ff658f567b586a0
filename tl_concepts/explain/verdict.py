"""A verdict on every explanation, from paired bootstrap intervals on the same test records.

A point estimate says little when the interval is +-0.1: "LLM better on 2/3" on gaps of
0.001 is noise. :func:`verdict` resamples the **test records** (whole records, with
replacement), recomputes on every resample the correlation of the LLM explanation's
simulation and of the baseline's simulation (the same resampled records for both), and
takes the difference. From those paired resamples:

* ``beats_chance``: the lower end of the LLM correlation's interval is above 0;
* ``beats_baseline``: the lower end of the interval of ``llm - baseline`` is above 0;
* ``vs_lookup_table``: the interval of ``llm - lookup table`` (the baseline's own
  prediction without an LLM), when given.

A simulation that is constant on a resample predicts nothing: its correlation counts as 0
in the differences (a resample where the truth itself is constant is dropped).

Labels, in order: ``not scored`` (no LLM simulation, or too few records for an interval),
``beats baseline`` (beats the baseline *and* chance: beating a baseline that is itself
below chance is no achievement), ``above chance``, ``not above chance``.

Example:
    >>> v = verdict([[0, 5, 0], [0, 0, 9], [1, 0, 0]], [[0, 4, 0], [0, 0, 8], [1, 0, 0]],
    ...             [[0, 0, 1], [1, 0, 0], [0, 1, 0]], n_bootstrap=200)
    >>> v.label, v.beats_chance
    ('beats baseline', True)
    >>> count_verdicts([v])
    '1 of 1 explanations beat the baseline at 95%; 1 of 1 above chance'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tl_concepts.explain.scoring import (
    Interval,
    RecordLike,
    _as_array,
    check_true_records,
    correlation,
    percentile_interval,
    record_resample_counts,
    token_weights,
    weighted_correlation,
)

LABELS = ("beats baseline", "above chance", "not above chance", "not scored")
"""Every verdict label, strongest first."""


@dataclass
class Verdict:
    """What the paired bootstrap says about one explanation on its test records."""

    label: str
    """One of :data:`LABELS`."""
    beats_chance: bool
    """The LLM correlation's interval lies above 0."""
    beats_baseline: bool
    """The interval of (LLM - baseline) correlation lies above 0."""
    correlation: Interval
    """The LLM explanation's test correlation with its (percentile) interval."""
    delta_vs_baseline: Interval
    """LLM minus baseline correlation (paired over the same resamples); nan without a baseline."""
    vs_lookup_table: Interval | None
    """LLM minus lookup-table correlation; None when no table simulation was given."""
    level: float
    """Coverage of every interval (e.g. 0.95)."""
    n_records: int
    """Test records resampled."""
    n_bootstrap: int
    """Resamples drawn."""
    reason: str = ""
    """Why the verdict is ``not scored`` (empty otherwise)."""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "beats_chance": self.beats_chance, "beats_baseline": self.beats_baseline,
                "correlation": self.correlation.to_dict(), "delta_vs_baseline": self.delta_vs_baseline.to_dict(),
                "vs_lookup_table": None if self.vs_lookup_table is None else self.vs_lookup_table.to_dict(),
                "level": self.level, "n_records": self.n_records, "n_bootstrap": self.n_bootstrap,
                "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Verdict":
        t = d.get("vs_lookup_table")
        return cls(d["label"], bool(d["beats_chance"]), bool(d["beats_baseline"]),
                   Interval.from_dict(d["correlation"]), Interval.from_dict(d["delta_vs_baseline"]),
                   None if t is None else Interval.from_dict(t), float(d["level"]), int(d["n_records"]),
                   int(d["n_bootstrap"]), d.get("reason", ""))


def _nan_interval(level: float) -> Interval:
    return Interval(float("nan"), float("nan"), float("nan"), level)


def _point(t: np.ndarray, s: np.ndarray) -> float:
    """Correlation with a constant simulation counted as 0 (nan only for a constant truth)."""
    r = correlation(t, s)
    if math.isnan(r) and t.size >= 2 and np.ptp(t) > 0:
        return 0.0
    return r


def _sims(name: str, sims: Sequence[RecordLike] | None, ts: list[np.ndarray]) -> np.ndarray | None:
    if sims is None:
        return None
    if len(sims) != len(ts):
        raise ValueError(f"{name}: {len(sims)} simulated records for {len(ts)} test records")
    arrs = [_as_array(s) for s in sims]
    for i, (a, t) in enumerate(zip(arrs, ts)):
        if a.shape != t.shape:
            raise ValueError(f"{name}: record {i} has {a.size} simulated values for {t.size} tokens")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: record {i} has nan/inf simulated values; a failed simulation is not scored")
    return np.concatenate(arrs) if arrs else np.zeros(0)


def verdict(
    test_records: Sequence[RecordLike],
    llm_sim: Sequence[RecordLike] | None,
    baseline_sim: Sequence[RecordLike] | None,
    table_sim: Sequence[RecordLike] | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Verdict:
    """Paired-bootstrap verdict on one explanation (see the module docstring).

    Args:
        test_records: true activations per test record (ActivationRecords or arrays).
        llm_sim: the LLM explanation's simulation of each record (raw 0..10 values are
            fine: correlation ignores positive affine maps); None when it failed.
        baseline_sim: the baseline explanation's simulation through the same simulator;
            None when there is none (then ``beats_baseline`` is False).
        table_sim: the lookup table's own prediction, for ``vs_lookup_table``.
        n_bootstrap, seed, level: resamples, their seed, interval coverage.

    Example:
        >>> verdict([[0, 1], [1, 0]], None, None).label
        'not scored'
    """
    ts = check_true_records(test_records, "true test activations")
    nan = _nan_interval(level)
    if llm_sim is None:
        return Verdict("not scored", False, False, nan, nan, None, level, len(ts), 0,
                       reason="the explanation has no simulation (failed or missing)")
    t = np.concatenate(ts) if ts else np.zeros(0)
    sims = {"llm": _sims("llm_sim", llm_sim, ts), "baseline": _sims("baseline_sim", baseline_sim, ts),
            "table": _sims("table_sim", table_sim, ts)}
    points = {k: (_point(t, s) if s is not None else float("nan")) for k, s in sims.items()}
    if len(ts) < 2 or n_bootstrap <= 0:
        corr = Interval(points["llm"], float("nan"), float("nan"), level)
        return Verdict("not scored", False, False, corr, nan, None if table_sim is None else nan, level,
                       len(ts), 0, reason="an interval needs at least 2 test records and n_bootstrap > 0")
    w = token_weights(ts, record_resample_counts(len(ts), n_bootstrap, seed))
    boots = {k: weighted_correlation(w, t, s, constant_sim=0.0) for k, s in sims.items() if s is not None}
    corr = Interval(points["llm"], *percentile_interval(boots["llm"], level), level)

    def delta(other: str) -> Interval:
        if other not in boots:
            return nan
        return Interval(points["llm"] - points[other], *percentile_interval(boots["llm"] - boots[other], level),
                        level)

    d_base = delta("baseline")
    d_table = delta("table") if table_sim is not None else None
    beats_chance = bool(corr.low > 0)  # nan compares False
    beats_baseline = bool(d_base.low > 0)
    if math.isnan(corr.value):
        label, reason = "not scored", "the true test activations are constant: correlation is undefined"
    else:
        label = ("beats baseline" if beats_baseline and beats_chance else
                 "above chance" if beats_chance else "not above chance")
        reason = ""
    return Verdict(label, beats_chance, beats_baseline, corr, d_base, d_table, level, len(ts), n_bootstrap, reason)


def count_verdicts(verdicts: Sequence[Verdict | dict[str, Any] | None]) -> str:
    """One line counting verdicts, e.g. ``0 of 3 explanations beat the baseline at 95%;
    1 of 3 above chance`` (the first count is the label ``beats baseline``; ``above
    chance`` counts every explanation whose correlation interval lies above 0, those
    beating the baseline included; ``; 1 not scored`` is
    added when some are not scored). Accepts :class:`Verdict`, their dicts, or None
    (not scored).

    Example:
        >>> count_verdicts([])
        'no explanations to count'
    """
    vs = [Verdict.from_dict(v) if isinstance(v, dict) else v for v in verdicts]
    n = len(vs)
    if not n:
        return "no explanations to count"
    level = next((v.level for v in vs if v is not None), 0.95)
    beat = sum(1 for v in vs if v is not None and v.label == "beats baseline")
    chance = sum(1 for v in vs if v is not None and v.beats_chance)
    unscored = sum(1 for v in vs if v is None or v.label == "not scored")
    pct = f"{100 * level:g}%"
    line = f"{beat} of {n} explanations beat the baseline at {pct}; {chance} of {n} above chance"
    if unscored:
        line += f"; {unscored} not scored"
    return line
