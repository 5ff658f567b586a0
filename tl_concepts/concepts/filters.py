"""ConceptX's word filters, applied before clustering.

Three filters, in this order, each counted:

1. ``min_count``: drop word types seen fewer than this many times in the corpus slice;
2. ``max_count``: drop word types seen more than this many times (very frequent types,
   e.g. function words; ``None`` keeps them);
3. ``max_per_type``: keep at most this many occurrences of every remaining type (a seeded
   random sample, so a type's contexts are spread over the corpus).

Mousi et al. used 10 / 10 (types with >= 10 occurrences, 10 contexts each).

Example:
    >>> rows, rep = apply_filters(["a", "a", "b", "a"], FilterConfig(min_count=2, max_per_type=3))
    >>> rows.tolist(), rep.n_points, rep.n_types
    ([0, 1, 3], 3, 1)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np


class TooFewPointsError(ValueError):
    """Filtering left too few word occurrences to cluster; the message names the filter."""


@dataclass
class FilterConfig:
    """Which word occurrences enter clustering."""

    min_count: int = 10
    """Drop word types with fewer occurrences than this (ConceptX/Mousi et al.: 10)."""
    max_per_type: int | None = 10
    """Keep at most this many occurrences per type (Mousi et al.: 10); None keeps all."""
    max_count: int | None = None
    """Drop word types with more occurrences than this; None keeps them."""
    lowercase: bool = False
    """Count types case-insensitively (ConceptX counts raw tokens: off)."""
    seed: int = 0
    """Seed of the per-type occurrence sample."""


@dataclass
class FilterStep:
    """Counts after one filter."""

    name: str
    """Filter name: ``input``, ``min_count``, ``max_count`` or ``max_per_type``."""
    n_points: int
    """Word occurrences left."""
    n_types: int
    """Word types left."""


@dataclass
class FilterReport:
    """What every filter did."""

    steps: list[FilterStep] = field(default_factory=list)
    """Counts after each filter, in order, starting with the input."""

    @property
    def n_points(self) -> int:
        return self.steps[-1].n_points if self.steps else 0

    @property
    def n_types(self) -> int:
        return self.steps[-1].n_types if self.steps else 0

    def to_dict(self) -> dict:
        return {"steps": [asdict(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, d: dict) -> "FilterReport":
        return cls(steps=[FilterStep(**s) for s in d.get("steps", [])])

    def describe(self) -> str:
        """One line per step, e.g. ``min_count: 5,120 occurrences of 412 types``."""
        return "\n".join(f"{s.name}: {s.n_points:,} occurrences of {s.n_types:,} types" for s in self.steps)


def apply_filters(texts: Sequence[str], config: FilterConfig | None = None, *,
                  min_points: int = 2) -> tuple[np.ndarray, FilterReport]:
    """Rows of ``texts`` kept by the filters (ascending), and the counts of each step.

    Raises :class:`TooFewPointsError` naming the first filter after which fewer than
    ``min_points`` occurrences remain.
    """
    cfg = config or FilterConfig()
    keys = [t.lower() if cfg.lowercase else t for t in texts]
    counts = Counter(keys)
    rows = np.arange(len(keys))
    report = FilterReport([FilterStep("input", len(keys), len(counts))])

    def check(name: str, what: str) -> None:
        if report.n_points < min_points:
            raise TooFewPointsError(
                f"only {report.n_points} word occurrence(s) left after the {name} filter ({what}); "
                f"clustering needs at least {min_points}. {report.describe()}. "
                f"Lower {name}, or capture a larger corpus.")

    check("input", "the corpus slice itself")
    if cfg.min_count > 1:
        rows = np.array([i for i in rows if counts[keys[i]] >= cfg.min_count], dtype=np.int64)
        report.steps.append(FilterStep("min_count", len(rows), len({keys[i] for i in rows})))
        check("min_count", f"types with >= {cfg.min_count} occurrences")
    if cfg.max_count is not None:
        rows = np.array([i for i in rows if counts[keys[i]] <= cfg.max_count], dtype=np.int64)
        report.steps.append(FilterStep("max_count", len(rows), len({keys[i] for i in rows})))
        check("max_count", f"types with <= {cfg.max_count} occurrences")
    if cfg.max_per_type is not None:
        rng = np.random.default_rng(cfg.seed)
        by_type: dict[str, list[int]] = {}
        for i in rows:
            by_type.setdefault(keys[i], []).append(int(i))
        kept: list[int] = []
        for key in sorted(by_type):
            occ = by_type[key]
            if len(occ) > cfg.max_per_type:
                occ = sorted(rng.choice(occ, size=cfg.max_per_type, replace=False).tolist())
            kept.extend(occ)
        rows = np.array(sorted(kept), dtype=np.int64)
        report.steps.append(FilterStep("max_per_type", len(rows), len(by_type)))
        check("max_per_type", f"at most {cfg.max_per_type} occurrences per type")
    return rows.astype(np.int64), report
