"""Typed results of the probing stage: :class:`ProbeResults` and :class:`Rankings`.

Example:
    >>> res = ProbeResults.load("runs/x/store/probing/blocks.3.hook_resid_post/pos")   # doctest: +SKIP
    >>> res.to_pandas()[["label", "test_accuracy", "selectivity"]]                       # doctest: +SKIP
    >>> rk = Rankings.load("runs/x/store/probing/blocks.3.mlp.hook_post/pos")            # doctest: +SKIP
    >>> rk.top("NOUN", "probeless", 5)                                                   # doctest: +SKIP
    [112, 7, 93, 1400, 51]
"""
from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tl_concepts.atomic import atomic_write, write_json
from tl_concepts.errors import InputError
from tl_concepts.results import ResultTable

from .schema import ALIGNMENT_COLUMNS, PROBE_COLUMNS, RANKING_COLUMNS, dataset


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()  # also a table without rows


def _write_folder(path: str | os.PathLike, tables: dict[str, Any], info_name: str, info: dict[str, Any]) -> Path:
    """``<path>/<name>.parquet`` for each dataset in ``tables`` (a None table removes its old
    file) and ``<path>/<info_name>.json``, each written atomically."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        f = out / f"{name}.parquet"
        if table is not None:
            atomic_write(f, table.to_parquet)
        elif f.exists():
            f.unlink()
    write_json(out / f"{info_name}.json", info, ensure_ascii=True)
    return out


def _read_folder(path: str | os.PathLike, name: str, what: str, command: str
                 ) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """(folder, rows of ``<name>.parquet``, ``<name>.json`` or {}) of a folder :func:`_write_folder` wrote."""
    p = Path(path)
    if not (p / f"{name}.parquet").is_file():
        raise InputError(f"{p} holds no {what} (no {name}.parquet); run tl-concepts {command} --out {p}")
    info_file = p / f"{name}.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    return p, _read_parquet(p / f"{name}.parquet"), info


@dataclass(repr=False)
class ProbeResults(ResultTable):
    """One row per trained probe (columns of :data:`~tl_concepts.probing.schema.PROBE_COLUMNS`).

    Iterating gives the row dicts; ``res["test_accuracy"]`` a column; ``res[0]`` a row.
    """

    probes: list[dict[str, Any]]
    """The probe rows."""
    hook: str = ""
    """Hook the representations come from."""
    source: str = ""
    """Label source."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """The inputs: store fingerprint, label source, config."""

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per probe."""
        return [dict(r) for r in self.probes]

    def to_dataset(self) -> Any:
        """A typed ``datasets.Dataset`` (also when empty)."""
        return dataset(self.probes, PROBE_COLUMNS)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per probe (typed columns, also when empty)."""
        return self.to_dataset().to_pandas()

    @property
    def column_names(self) -> list[str]:
        """Column names."""
        return [c for c, _, _ in PROBE_COLUMNS]

    def to_list(self) -> list[dict[str, Any]]:
        """The rows (as ``datasets.Dataset.to_list``)."""
        return self.rows()

    def __len__(self) -> int:
        return len(self.probes)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return [r[key] for r in self.probes]
        return dict(self.probes[key])

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>/probes.parquet`` and ``<path>/probes.json`` (provenance), atomically."""
        return _write_folder(path, {"probes": self.to_dataset()}, "probes",
                             {"hook": self.hook, "source": self.source, "provenance": self.provenance})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ProbeResults":
        """Read a folder written by :meth:`save` (or by ``tl-concepts probe``)."""
        _, rows, info = _read_folder(path, "probes", "probe results", "probe")
        return cls(probes=rows, hook=info.get("hook", ""),
                   source=info.get("source", ""), provenance=info.get("provenance", {}))

    def __repr__(self) -> str:
        binary = [r["test_accuracy"] for r in self.probes if r.get("task") == "binary"]
        sel = [r["selectivity"] for r in self.probes if r.get("task") == "binary" and r.get("selectivity") is not None]
        mean = lambda xs: f"{sum(xs) / len(xs):.3f}" if xs else "-"  # noqa: E731
        return (f"ProbeResults({self.hook or '?'}, {self.source or '?'}: {len(self.probes)} probes, "
                f"mean binary accuracy {mean(binary)}, mean selectivity {mean(sel)})")

    def _repr_html_(self, max_rows: int = 30) -> str:
        cols = ["label", "name", "task", "size", "test_accuracy", "majority_accuracy", "control_accuracy",
                "selectivity"]
        rows = [[r.get(c) for c in cols] for r in self.probes[:max_rows]]
        more = f"<p>... and {len(self.probes) - max_rows} more</p>" if len(self.probes) > max_rows else ""
        return f"<div><b>{html.escape(repr(self))}</b>{_html_table(cols, rows)}{more}</div>"


@dataclass(repr=False)
class Rankings(ResultTable):
    """Top neurons per (label, method): one row per (ranking, neuron) (columns of
    :data:`~tl_concepts.probing.schema.RANKING_COLUMNS`), plus the super/sub-concept alignment
    for ``concepts:`` sources."""

    rankings: Any
    """``datasets.Dataset`` of the ranking rows."""
    alignment: Any = None
    """``datasets.Dataset`` of super/sub-concept overlaps (``concepts:`` sources), else None."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Ranking time per method (of this invocation; resumed rankings cost 0)."""
    hook: str = ""
    """Hook whose neurons are ranked."""
    source: str = ""
    """Label source."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """The inputs: store fingerprint, label source, config."""
    resumed: int = 0
    """Rankings read back from an earlier (possibly interrupted) run instead of computed."""

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per (label, method, neuron)."""
        return self.rankings.to_list()

    def to_dataset(self) -> Any:
        """The ranking table as a typed ``datasets.Dataset``."""
        return self.rankings

    def to_pandas(self) -> Any:
        """The ranking table as a ``pandas.DataFrame``."""
        return self.rankings.to_pandas()

    def top(self, label: str, method: str | None = None, n: int | None = None) -> list[int]:
        """Neurons of one ranking, best first (``method``: the first one when None)."""
        method = method or (self.rankings["method"][0] if len(self.rankings) else None)
        got = sorted((r["rank"], r["neuron"]) for r in self.rankings
                     if r["label"] == str(label) and r["method"] == method)
        if not got:
            raise KeyError(f"no ranking for label {label!r} and method {method!r}")
        return [nrn for _, nrn in got][:n]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``rankings.parquet`` (and ``alignment.parquet``) and ``rankings.json``, atomically."""
        return _write_folder(path, {"rankings": self.rankings, "alignment": self.alignment}, "rankings",
                             {"hook": self.hook, "source": self.source, "seconds": self.seconds,
                              "provenance": self.provenance})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Rankings":
        """Read a folder written by :meth:`save` (or by ``tl-concepts rank``)."""
        p, rows, info = _read_folder(path, "rankings", "rankings", "rank")
        al = _read_parquet(p / "alignment.parquet") if (p / "alignment.parquet").is_file() else None
        return cls(rankings=dataset(rows, RANKING_COLUMNS),
                   alignment=None if al is None else dataset(al, ALIGNMENT_COLUMNS),
                   seconds=info.get("seconds", {}), hook=info.get("hook", ""), source=info.get("source", ""),
                   provenance=info.get("provenance", {}))

    def __repr__(self) -> str:
        groups = {(r["label"], r["method"]) for r in self.rankings}
        methods = sorted({m for _, m in groups})
        extra = f", alignment over {len(self.alignment)} concepts" if self.alignment is not None else ""
        return (f"Rankings({self.hook or '?'}, {self.source or '?'}: {len(groups)} rankings "
                f"({', '.join(methods) or 'none'}){extra})")

    def _repr_html_(self, top: int = 5, max_rows: int = 30) -> str:
        from tl_concepts.ids import unit_id

        groups: dict[tuple[str, str, str], list[str]] = {}
        for r in self.rankings:
            if r["rank"] < top:
                groups.setdefault((r["label"], r["name"], r["method"]), []).append(unit_id(r["hook"], r["neuron"]))
        rows = [[lab, name, m, ", ".join(us)] for (lab, name, m), us in list(groups.items())[:max_rows]]
        return (f"<div><b>{html.escape(repr(self))}</b>"
                f"{_html_table(['label', 'name', 'method', f'top {top} units'], rows)}</div>")
