"""The typed result of the descriptor stage: :class:`Descriptors`.

Example:
    >>> d = Descriptors.load("runs/x/descriptors")                  # doctest: +SKIP
    >>> d                                                           # doctest: +SKIP
    Descriptors(blocks.3.mlp.hook_post: 12 of 1536 neurons mapped, 87 entries, 120 sentences (113 ok))
    >>> d.to_pandas()[["unit", "half", "descriptor", "excess"]]     # doctest: +SKIP
"""
from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_concepts.atomic import atomic_write, write_json
from tl_concepts.errors import InputError
from tl_concepts.results import ResultTable

from .schema import dataset, mapping_features, read_parquet, sentence_features, vocabulary_features

TABLES = ("sentences", "vocabulary", "mapping")
"""Tables saved as ``<name>.parquet``."""


@dataclass(repr=False)
class Descriptors(ResultTable):
    """What :func:`~tl_concepts.descriptors.run_descriptors` produced.

    :meth:`rows` (and :meth:`to_pandas` / :meth:`to_dataset`) give one row per
    (half, neuron, descriptor) of the mapping table (columns of
    :data:`~tl_concepts.descriptors.schema.MAPPING_COLUMNS`). When no neuron received a
    descriptor the mapping is empty (typed) and :attr:`message` says why.
    """

    sentences: Any
    """``datasets.Dataset``: one row per sentence and its LLM answer (status, descriptors, key)."""
    vocabulary: Any
    """``datasets.Dataset``: one row per vocabulary entry (representative, members)."""
    mapping: Any
    """``datasets.Dataset``: mapped (half, neuron, descriptor) rows."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """``sentences``, ``ok``, ``failed`` (per status), ``entries``, ``neurons``, ``neurons_mapped``,
    ``jaccard``, ``k`` and, with a gold subset, ``precision_at_k`` / ``recall_at_k``."""
    hook: str = ""
    """Hook whose neurons are described."""
    message: str = ""
    """Why the mapping is empty (empty when neurons were mapped)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """The inputs that produced the result: store fingerprint, LLM identity and sampling,
    template name and version, embedder, stage config."""

    @property
    def empty(self) -> bool:
        """True when no neuron received a descriptor."""
        return len(self.mapping) == 0

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per (half, neuron, descriptor)."""
        return self.mapping.to_list()

    def to_pandas(self) -> Any:
        """The mapping table as a ``pandas.DataFrame`` (typed columns, also when empty)."""
        return self.mapping.to_pandas()

    def to_dataset(self) -> Any:
        """The mapping table as a typed ``datasets.Dataset`` (also when empty)."""
        return self.mapping

    def neuron_descriptors(self, half: str = "calibration") -> dict[int, list[str]]:
        """Neuron -> its descriptors on ``half``, best first."""
        out: dict[int, list[tuple[int, str]]] = {}
        for r in self.mapping:
            if r["half"] == half:
                out.setdefault(r["neuron"], []).append((r["rank"], r["descriptor"]))
        return {n: [d for _, d in sorted(v)] for n, v in sorted(out.items())}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>/{sentences,vocabulary,mapping}.parquet``, ``metrics.json`` and
        ``descriptors.json`` (hook, message, provenance), each atomically; ``descriptors.json``
        is written last, so a folder with it is complete."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            atomic_write(out / f"{name}.parquet", getattr(self, name).to_parquet)
        write_json(out / "metrics.json", self.metrics, ensure_ascii=True)
        write_json(out / "descriptors.json", {"hook": self.hook, "message": self.message,
                                              "provenance": self.provenance}, ensure_ascii=True)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Descriptors":
        """Read a folder written by :meth:`save` (or by ``tl-concepts descriptors``)."""
        p = Path(path)
        missing = [f"{n}.parquet" for n in TABLES if not (p / f"{n}.parquet").is_file()]
        if missing:
            raise InputError(f"{p} is not a finished descriptors folder (missing {', '.join(missing)}); "
                             "run tl-concepts descriptors with this folder as --out")
        feats = {"sentences": sentence_features(), "vocabulary": vocabulary_features(), "mapping": mapping_features()}
        tables = {name: read_parquet(p / f"{name}.parquet", feats[name]) for name in TABLES}
        metrics = json.loads((p / "metrics.json").read_text(encoding="utf-8")) if (p / "metrics.json").is_file() else {}
        info = (json.loads((p / "descriptors.json").read_text(encoding="utf-8"))
                if (p / "descriptors.json").is_file() else {})
        return cls(metrics=metrics, hook=info.get("hook", ""), message=info.get("message", ""),
                   provenance=info.get("provenance", {}), **tables)

    def __repr__(self) -> str:
        m = self.metrics
        head = (f"Descriptors({self.hook or '?'}: {m.get('neurons_mapped', 0)} of {m.get('neurons', '?')} neurons "
                f"mapped, {m.get('entries', len(self.vocabulary))} entries, {m.get('sentences', len(self.sentences))} "
                f"sentences ({m.get('ok', '?')} ok))")
        return head if not self.message else f"{head[:-1]}; {self.message})"

    def _repr_html_(self, max_neurons: int = 20) -> str:
        e = html.escape
        parts = [f"<div><b>{e(repr(self))}</b>"]
        by = self.neuron_descriptors("calibration")
        if by:
            parts.append("<table><tr><th>unit</th><th>descriptors (calibration half)</th></tr>")
            for n, ds in list(by.items())[:max_neurons]:
                from tl_concepts.ids import unit_id

                parts.append(f"<tr><td>{e(unit_id(self.hook, n))}</td><td>{e(', '.join(ds))}</td></tr>")
            parts.append("</table>")
            if len(by) > max_neurons:
                parts.append(f"<p>... and {len(by) - max_neurons} more neurons</p>")
        parts.append("</div>")
        return "".join(parts)


def descriptors_from_rows(sentences: list[dict[str, Any]], vocabulary: list[dict[str, Any]],
                          mapping: list[dict[str, Any]], **kw: Any) -> Descriptors:
    """A :class:`Descriptors` from row lists (typed, also when a list is empty)."""
    return Descriptors(sentences=dataset(sentences, sentence_features()),
                       vocabulary=dataset(vocabulary, vocabulary_features()),
                       mapping=dataset(mapping, mapping_features()), **kw)
