"""Typed explanation results: what :func:`tl_concepts.explain` returns.

:class:`ExplanationResults` is a sequence of :class:`UnitExplanation`, one per unit, read
from the unit files the runner writes (``<out>/units/<unit id>.json``). Scores are
:class:`~tl_concepts.explain.scoring.Interval` attributes (value with its bootstrap
interval); :meth:`ExplanationResults.to_pandas` gives one flat row per unit.

Example:
    >>> res = ExplanationResults.load("runs/explain")        # doctest: +SKIP
    >>> res[0].explanation, res[0].correlation               # doctest: +SKIP
    ('days of the week', Interval(value=0.61, low=0.42, high=0.75, level=0.95))
    >>> res.to_pandas()[["unit", "correlation", "correlation_low"]]   # doctest: +SKIP
"""
from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence, overload

from tl_concepts.errors import StoreError
from tl_concepts.explain.scoring import Interval
from tl_concepts.ids import unit_id
from tl_concepts.results import ResultTable, json_default
from tl_concepts.resultstore import ResultStore


def _interval(d: Any) -> Interval | None:
    if not isinstance(d, dict) or "value" not in d:
        return None
    return Interval.from_dict({"low": None, "high": None, **d})


def _score(ev: dict[str, Any] | None, name: str, split: str = "all") -> Interval | None:
    scores = ((ev or {}).get("scores") or {}).get(split) or {}
    aliases = {"rsquared": ("rsquared", "r_squared"),
               "absolute_dev_explained": ("absolute_dev_explained", "abs_dev_explained")}
    for key in aliases.get(name, (name,)):
        if key in scores:
            return _interval(scores[key])
    return None


def _fmt(iv: Interval | None) -> str:
    if iv is None or math.isnan(iv.value):
        return "-"
    if math.isnan(iv.low):
        return f"{iv.value:+.3f}"
    return f"{iv.value:+.3f} [{iv.low:+.2f}, {iv.high:+.2f}]"


def failure_kinds(d: dict[str, Any]) -> list[str]:
    """The LLM failure kinds recorded in a unit file (explanation failures, then failed
    simulations), for the LLM explanation and the baseline."""
    kinds: list[str | None] = []
    for part in ("llm", "baseline"):
        ev = d.get(part) or {}
        kinds.append(((ev.get("explanation") or {}).get("failure") or {}).get("kind"))
        kinds += [x.get("kind") for x in ev.get("failures") or [] if isinstance(x, dict)]
    return [str(k) for k in kinds if k]


FAILED_STATUSES = frozenset({"explanation_failed", "simulation_failed"})
"""Statuses caused by an LLM failure: retried on the next run when the failure was transient,
kept (with its reason) otherwise unless ``retry_failed=True``."""


def explain_failed(d: dict[str, Any]) -> list[str] | None:
    """None for a unit file that is a final answer; else its LLM failure kinds (the
    :class:`~tl_concepts.resultstore.ResultStore` failure rule of explanations)."""
    return failure_kinds(d) if d.get("status") in FAILED_STATUSES else None


def unit_store(out_dir: str | os.PathLike[str], folder: str = "units") -> ResultStore:
    """The explanation results of ``out_dir``: ``<out_dir>/units/<unit id>.json`` (``folder="errors"``:
    the units that hit a bug, retried on the next run)."""
    return ResultStore(Path(out_dir) / folder, failed=explain_failed, layout="files", indent=1,
                       ensure_ascii=True, allow_nan=False, default=json_default)


def load_unit_dicts(out_dir: str | os.PathLike[str], ids: Sequence[str] | None = None, *,
                    with_errors: bool = False, strict: bool = False) -> list[dict[str, Any]]:
    """The one reader of unit files: result dicts in ``out_dir/units`` (all sorted by id, or
    those of ``ids`` that exist, in that order); ``with_errors``: units that hit a bug
    (``errors/``) in place; ``strict``: an unreadable file raises :class:`StoreError`."""
    store = unit_store(out_dir)
    if ids is None:
        return store.records(strict=strict)
    errors = unit_store(out_dir, "errors") if with_errors else None
    out = []
    for i in ids:
        got = store.records([i], strict=strict) or (errors.records([i]) if errors is not None else [])
        out.extend(got)
    return out


@dataclass
class SimulatedRecord:
    """One held-out context: its tokens, true activations and the simulation."""

    split: str
    """``test_top`` or ``test_random``."""
    tokens: list[str]
    """Token strings of the context."""
    true: list[float]
    """The unit's activations."""
    simulated: list[float]
    """The simulator's expected activation per token (0..10)."""


@dataclass
class UnitExplanation:
    """One unit's explanation, scores, verdict and held-out simulations."""

    id: str
    """The unit id (:func:`tl_concepts.ids.unit_id`), also its file name and dataset key."""
    hook: str
    """Hook point, e.g. ``blocks.3.mlp.hook_post``."""
    unit: int | str
    """Neuron / dimension index (or a direction's name)."""
    status: str
    """``ok``; ``explanation_failed`` / ``simulation_failed`` (see :attr:`message` and
    :attr:`failure_kinds`); ``too_few_activating``, ``no_test_records``, ``overlapping_splits``."""
    explanation: str | None = None
    """The LLM explanation (None when it failed)."""
    correlation: Interval | None = None
    """Test correlation of the LLM explanation's simulation (top + random test records)."""
    correlation_random: Interval | None = None
    """The same on the random test records only."""
    rsquared: Interval | None = None
    """r-squared of the calibrated simulation (top + random)."""
    absolute_dev_explained: Interval | None = None
    """Absolute deviation explained by the calibrated simulation (top + random)."""
    baseline_explanation: str | None = None
    """The token-lookup baseline's explanation (a list of tokens), simulated by the same LLM."""
    baseline_correlation: Interval | None = None
    """Test correlation of the baseline explanation's simulation."""
    lookup_table_correlation: Interval | None = None
    """Test correlation of the lookup table itself (no LLM)."""
    verdict: dict[str, Any] | None = None
    """Paired-bootstrap verdict of the LLM explanation (``label``, ``beats_chance``,
    ``beats_baseline``, ``delta_vs_baseline``, ``vs_lookup_table``), when computed."""
    detection: dict[str, Any] | None = None
    """Detection scorer result of the LLM explanation (None when not run)."""
    fuzzing: dict[str, Any] | None = None
    """Fuzzing scorer result of the LLM explanation (None when not run)."""
    records: list[SimulatedRecord] = field(default_factory=list)
    """Held-out test records with true and simulated activations."""
    max_activation: float | None = None
    """The unit's largest activation over the corpus."""
    n_activating: int | None = None
    """Top contexts with a positive activation."""
    message: str | None = None
    """Why the unit was not scored, when it was not."""
    failure_kinds: list[str] = field(default_factory=list)
    """LLM failure kinds behind a failed status (``retries_exhausted``, ``unparseable``, ...)."""
    llm_usage: dict[str, Any] = field(default_factory=dict)
    """LLM requests and tokens spent on this unit."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """What produced the result: input fingerprints, prompt templates, LLM identity, config."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The unit file as written by the runner."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UnitExplanation":
        """Build from a unit file's JSON."""
        llm = d.get("llm") or {}
        base = d.get("baseline") or {}
        recs = [SimulatedRecord(s.get("split", "test"), list(s["tokens"]), list(s["true"]), list(s["simulated"]))
                for s in llm.get("simulations") or []]
        return cls(
            id=d.get("id") or d.get("key") or unit_id(d["hook"], d["unit"]),
            hook=d["hook"], unit=d["unit"], status=d.get("status", "?"),
            explanation=(llm.get("explanation") or {}).get("text"),
            correlation=_score(llm, "correlation"), correlation_random=_score(llm, "correlation", "random"),
            rsquared=_score(llm, "rsquared"), absolute_dev_explained=_score(llm, "absolute_dev_explained"),
            baseline_explanation=(base.get("explanation") or {}).get("text"),
            baseline_correlation=_score(base, "correlation"),
            lookup_table_correlation=_interval((d.get("lookup_table") or {}).get("correlation")),
            verdict=llm.get("verdict"), detection=llm.get("detection"), fuzzing=llm.get("fuzzing"),
            records=recs, max_activation=d.get("max_activation"), n_activating=d.get("n_activating"),
            message=d.get("message") or llm.get("message"), failure_kinds=failure_kinds(d),
            llm_usage=d.get("llm_usage") or {}, provenance=d.get("provenance") or {}, raw=d,
        )

    def to_dict(self) -> dict[str, Any]:
        """The unit file's JSON."""
        return self.raw

    def row(self) -> dict[str, Any]:
        """One flat row (intervals as ``x``, ``x_low``, ``x_high``)."""
        out: dict[str, Any] = {"unit_id": self.id, "hook": self.hook, "unit": self.unit, "status": self.status,
                               "explanation": self.explanation}
        for name in ("correlation", "correlation_random", "rsquared", "absolute_dev_explained",
                     "baseline_correlation", "lookup_table_correlation"):
            iv: Interval | None = getattr(self, name)
            for suffix, v in (("", iv.value if iv else None), ("_low", iv.low if iv else None),
                              ("_high", iv.high if iv else None)):
                out[name + suffix] = None if v is None or math.isnan(v) else float(v)
        verdict = self.verdict or {}
        out.update(baseline_explanation=self.baseline_explanation, verdict=verdict.get("label"),
                   beats_chance=verdict.get("beats_chance"), beats_baseline=verdict.get("beats_baseline"),
                   max_activation=self.max_activation, n_activating=self.n_activating,
                   message=self.message)
        return out

    def __repr__(self) -> str:
        expl = (self.explanation or "")[:60]
        return f"UnitExplanation({self.id}, {self.status}, r={_fmt(self.correlation)}, {expl!r})"

    def _repr_html_(self) -> str:
        return unit_html(self)


class ExplanationResults(ResultTable, Sequence[UnitExplanation]):
    """The explained units of one run, in input order.

    Index by position, by unit id (``res["blocks.3.mlp.hook_post.7"]``) or iterate.
    """

    def __init__(self, units: Sequence[UnitExplanation], out_dir: str | os.PathLike | None = None) -> None:
        self.units = list(units)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        """The folder the unit files live in (None for results built in memory)."""
        self.store: str | None = None
        """The activation store the units' records came from, when known."""

    @classmethod
    def from_dicts(cls, dicts: Sequence[dict[str, Any]], out_dir: str | os.PathLike | None = None
                   ) -> "ExplanationResults":
        """Build from unit-file dicts."""
        return cls([UnitExplanation.from_dict(d) for d in dicts], out_dir)

    @classmethod
    def load(cls, path: str | os.PathLike, ids: Sequence[str] | None = None) -> "ExplanationResults":
        """Read the unit files of an explanation folder (all, or those in ``ids`` that exist)."""
        if not (Path(path) / "units").is_dir():
            raise StoreError(f"{path} holds no explanation results (no units/ folder); run "
                             f"`tl-concepts explain --out {path}` first")
        return cls.from_dicts(load_unit_dicts(path, ids, strict=True), path)

    def save(self, path: str | os.PathLike) -> Path:
        """Write every unit file into ``<path>/units/`` (atomically, one file per unit)."""
        store = unit_store(path)
        for u in self.units:
            store.put({**u.raw, "id": u.id, "input_key": u.raw.get("input_key") or "unknown"})
        return Path(path)

    def rows(self) -> list[dict[str, Any]]:
        return [u.row() for u in self.units]

    def to_dicts(self) -> list[dict[str, Any]]:
        """The unit files' JSON, in order."""
        return [u.raw for u in self.units]

    def status_counts(self) -> dict[str, int]:
        """How many units have each status."""
        out: dict[str, int] = {}
        for u in self.units:
            out[u.status] = out.get(u.status, 0) + 1
        return out

    def verdict_counts(self) -> str:
        """One line counting paired-bootstrap verdicts, e.g. ``0 of 3 explanations beat the
        baseline at 95%; 1 of 3 above chance`` (see :func:`~tl_concepts.explain.verdict.count_verdicts`)."""
        from tl_concepts.explain.verdict import count_verdicts

        return count_verdicts([u.verdict for u in self.units if u.raw.get("llm")])

    def summary(self, max_rows: int = 50) -> str:
        """A text table of the units (see :func:`tl_concepts.explain.runner.summary_table`)."""
        from tl_concepts.explain.runner import summary_table

        return summary_table(self, max_rows=max_rows)

    @overload
    def __getitem__(self, i: int) -> UnitExplanation: ...
    @overload
    def __getitem__(self, i: slice) -> "ExplanationResults": ...
    @overload
    def __getitem__(self, i: str) -> UnitExplanation: ...

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return ExplanationResults(self.units[i], self.out_dir)
        if isinstance(i, str):
            for u in self.units:
                if u.id == i:
                    return u
            raise KeyError(f"no unit {i!r} in these results; ids look like {self.units[0].id!r}"
                           if self.units else f"no unit {i!r}: the results are empty")
        return self.units[i]

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[UnitExplanation]:
        return iter(self.units)

    def __repr__(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.status_counts().items()))
        return f"ExplanationResults({len(self.units)} units: {counts or 'none'}; {self.verdict_counts()})"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(u.id)}</td><td>{html.escape(u.status)}</td>"
            f"<td>{html.escape(u.explanation or '')}</td><td>{_fmt(u.correlation)}</td>"
            f"<td>{_fmt(u.baseline_correlation)}</td><td>{_fmt(u.lookup_table_correlation)}</td>"
            f"<td>{html.escape((u.verdict or {}).get('label') or '-')}</td></tr>"
            for u in self.units)
        return (f"<div><b>{html.escape(repr(self))}</b><table><tr><th>unit</th><th>status</th>"
                "<th>explanation</th><th>correlation [95% CI]</th><th>baseline</th><th>lookup table</th>"
                f"<th>verdict</th></tr>{rows}</table></div>")


def _cell(tok: str, v: float, scale: float) -> str:
    a = max(-1.0, min(1.0, v / scale)) if scale > 0 else 0.0
    colour = f"rgba(0,140,70,{a:.2f})" if a >= 0 else f"rgba(200,40,40,{-a:.2f})"
    return f'<span title="{v:.3g}" style="background:{colour}">{html.escape(tok)}</span>'


def unit_html(u: UnitExplanation, max_records: int = 3) -> str:
    """Notebook view of a unit: explanation, scores with intervals, and held-out records as
    tokens coloured by the true activation (scaled to the unit's max) and by the simulation
    (scaled to 10), green positive, red negative."""
    parts = [f"<div><b>{html.escape(u.id)}</b> ({html.escape(u.status)})<br>",
             f"explanation: <i>{html.escape(u.explanation or '-')}</i><br>",
             f"correlation {_fmt(u.correlation)}; baseline {_fmt(u.baseline_correlation)}; "
             f"lookup table {_fmt(u.lookup_table_correlation)}",
             f"; verdict: {html.escape((u.verdict or {}).get('label') or '-')}<br>" if u.verdict else "<br>"]
    if u.message:
        parts.append(f"{html.escape(u.message)}<br>")
    scale = float(u.max_activation or 0.0) or 1.0
    for r in u.records[:max_records]:
        parts.append(f"<div style='margin-top:4px'><small>{html.escape(r.split)}, true (max {max(r.true):.3g}):</small> ")
        parts.append("".join(_cell(t, v, scale) for t, v in zip(r.tokens, r.true)))
        parts.append("<br><small>simulated (0..10):</small> ")
        parts.append("".join(_cell(t, v, 10.0) for t, v in zip(r.tokens, r.simulated)))
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)
