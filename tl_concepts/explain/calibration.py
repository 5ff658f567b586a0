"""Calibration: a linear map from simulated (0..10) to true activation units.

Bills et al. regress true activations on simulated ones; the fit is made on the
calibration split only and applied to the test split, so the reported r-squared and
absolute deviation explained never see the test data twice. Correlation is unchanged by
a calibration with positive slope.

Example:
    >>> cal = LinearCalibration.fit([[0.0, 10.0]], [[0.0, 5.0]])
    >>> cal.slope, cal.intercept, cal.apply([2.5])
    (2.0, 0.0, [5.0])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from tl_concepts.explain.scoring import RecordLike, _as_array
from tl_concepts.explain.simulators import Simulation, Simulator


@dataclass
class LinearCalibration:
    """``true ~= slope * simulated + intercept``."""

    slope: float = 1.0
    """Multiplier of the simulated value."""
    intercept: float = 0.0
    """Added after scaling."""
    n_tokens: int = 0
    """Tokens the fit was made on (0 for the identity)."""

    @classmethod
    def fit(cls, true_records: Sequence[RecordLike], simulated_records: Sequence[RecordLike]) -> "LinearCalibration":
        """Least-squares fit over all tokens of the given (calibration) records.

        A constant simulation gets slope 0 and the mean true activation as intercept.
        """
        if len(true_records) != len(simulated_records):
            raise ValueError("calibration needs as many simulated records as true ones")
        if not true_records:
            raise ValueError("calibration needs at least one record; the calibration split is empty")
        t = np.concatenate([_as_array(r) for r in true_records])
        s = np.concatenate([_as_array(r) for r in simulated_records])
        if t.shape != s.shape:
            raise ValueError("true and simulated calibration records differ in length")
        var = float(((s - s.mean()) ** 2).sum())
        if var == 0.0:
            return cls(0.0, float(t.mean()), int(t.size))
        slope = float(((s - s.mean()) * (t - t.mean())).sum()) / var
        return cls(slope, float(t.mean() - slope * s.mean()), int(t.size))

    def apply(self, values: Sequence[float]) -> list[float]:
        """Calibrated values."""
        return [self.slope * float(v) + self.intercept for v in values]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CalibratedSimulator(Simulator):
    """Wraps any simulator and maps its output through a :class:`LinearCalibration`.

    Call :meth:`afit` with the calibration split before simulating the test split.

    Example:
        >>> sim = CalibratedSimulator(base)                                   # doctest: +SKIP
        >>> await sim.afit("days of the week", unit.calibration_top + unit.calibration_random)  # doctest: +SKIP
        >>> sims = await sim.asimulate_many("days of the week", [r.tokens for r in unit.test_top])  # doctest: +SKIP
    """

    def __init__(self, base: Simulator, calibration: LinearCalibration | None = None) -> None:
        self.base = base
        self.calibration = calibration
        self.name = f"calibrated:{base.name}"

    async def afit(self, explanation: str, records: Sequence[Any]) -> list[Simulation]:
        """Simulate the calibration ``records`` (ActivationRecords) and fit; returns the raw
        simulations. Raises ``RuntimeError`` when any of them failed."""
        sims = await self.base.asimulate_many(explanation, [r.tokens for r in records])
        bad = [s for s in sims if not s.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(sims)} calibration simulations failed: {bad[0].failure}")
        self.calibration = LinearCalibration.fit(records, [s.activations for s in sims if s.activations is not None])
        return sims

    def _wrap(self, s: Simulation) -> Simulation:
        if self.calibration is None:
            raise RuntimeError("CalibratedSimulator used before afit(); fit it on the calibration split first")
        if not s.ok:
            return s
        return Simulation(self.calibration.apply(s.activations or []), method=f"calibrated:{s.method}",
                          template=s.template)

    async def asimulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        return self._wrap(await self.base.asimulate(explanation, tokens))

    async def asimulate_many(self, explanation: str, records: Sequence[Sequence[str]]) -> list[Simulation]:
        return [self._wrap(s) for s in await self.base.asimulate_many(explanation, records)]
