"""The descriptor stage's tables: the one definition of their columns and ``datasets.Features``.

Three tables (see :mod:`tl_concepts.descriptors.runner`); ``mapping`` is the one that is
published (the ``descriptors`` dataset kind of :mod:`tl_concepts.hub`), so its columns are
given as ``(name, type, description)`` triples, the format the hub's cards and validators
read: ``type`` is ``string``, ``int64`` or ``float64``.

Example:
    >>> [c for c, _, _ in MAPPING_COLUMNS][:4]
    ['hook', 'unit', 'half', 'neuron']
    >>> empty_dataset(mapping_features()).num_rows
    0
"""
from __future__ import annotations

from typing import Any

from tl_concepts.results import Column, column_features, empty_dataset, read_parquet_dataset, typed_dataset

__all__ = ["HALVES", "MAPPING_COLUMNS", "dataset", "empty_dataset", "mapping_features", "read_parquet",
           "sentence_features", "vocabulary_features"]

MAPPING_COLUMNS: list[Column] = [
    ("hook", "string", "hook whose neurons are described"),
    ("unit", "string", "the unit's id (`<hook>.<neuron>`), as in every other table and the report"),
    ("half", "string", "`calibration` or `validation`: the half of the sentences the neuron was mapped on"),
    ("neuron", "int64", "neuron index at the hook"),
    ("rank", "int64", "0-based rank of the descriptor among the neuron's descriptors (by excess)"),
    ("entry", "int64", "id of the descriptor's vocabulary entry"),
    ("descriptor", "string", "the entry's representative descriptor"),
    ("composition", "float64", "share of the neuron's top exemplar sentences tagged with the entry"),
    ("base_rate", "float64", "share of all sentences of the half tagged with the entry"),
    ("lift", "float64", "composition / base rate (`inf` for a zero base rate)"),
    ("excess", "float64", "(composition - base rate) / (1 - base rate): 0 is chance, 1 is every exemplar"),
    ("support", "int64", "sentences of the half tagged with the entry"),
]
"""Columns of the neuron -> descriptor mapping table (the published ``descriptors`` kind)."""

HALVES = ("calibration", "validation")
"""Values of the mapping table's ``half`` column."""


def mapping_features() -> Any:
    """``datasets.Features`` of the mapping table."""
    return column_features(MAPPING_COLUMNS)


def sentence_features() -> Any:
    """``datasets.Features`` of the sentence table (one row per sentence and its LLM answer)."""
    from datasets import Features, Sequence, Value

    s, i = Value("string"), Value("int64")
    return Features({"sentence": i, "text": s, "status": s, "descriptors": Sequence(s), "raw": s, "message": s,
                     "model": s, "backend": s, "template": s, "template_version": s, "key": s,
                     "entries": Sequence(i)})


def vocabulary_features() -> Any:
    """``datasets.Features`` of the vocabulary table (one row per entry)."""
    from datasets import Features, Sequence, Value

    return Features({"id": Value("int64"), "representative": Value("string"), "members": Sequence(Value("string")),
                     "member_counts": Sequence(Value("int64")), "sentences": Value("int64")})


def dataset(rows: list[dict[str, Any]], features: Any) -> Any:
    """``rows`` as a typed ``datasets.Dataset`` (an empty one when there are no rows)."""
    return typed_dataset(rows, features)


def read_parquet(path: Any, features: Any) -> Any:
    """A parquet table written by this stage as a typed ``datasets.Dataset`` (also without rows)."""
    return read_parquet_dataset(path, features)
