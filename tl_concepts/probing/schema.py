"""The probing stage's tables: the one definition of their columns and ``datasets.Features``.

``probes`` and ``rankings`` are published (dataset kinds of :mod:`tl_concepts.hub`); their
columns are ``(name, type, description)`` triples, the format the hub's cards and validators
read (``type``: ``string``, ``int64`` or ``float64``; ``|null`` where a value may be missing).

Example:
    >>> [c for c, _, _ in RANKING_COLUMNS]
    ['hook', 'source', 'label', 'name', 'method', 'rank', 'neuron', 'unit', 'score']
"""
from __future__ import annotations

from typing import Any

from tl_concepts.results import Column, column_features, typed_dataset

PROBE_COLUMNS: list[Column] = [
    ("hook", "string", "hook the word representations come from"),
    ("source", "string", "label source (`pos`, `ner`, `concepts:<dir>`, a label file)"),
    ("label", "string", "the probed label (`*all*` for the multi-class probe over every kept label)"),
    ("name", "string", "display name (a concept's LLM label, else the label)"),
    ("task", "string", "`binary` (label vs a balanced sample of the rest) or `multiclass`"),
    ("size", "int64", "rows carrying the label (all rows for `*all*`)"),
    ("n_train", "int64", "train split size (60/20/20 per class)"),
    ("n_dev", "int64", "dev split size (used to pick `c`)"),
    ("n_test", "int64", "held-out test split size"),
    ("train_accuracy", "float64", "accuracy on the train split"),
    ("dev_accuracy", "float64", "accuracy on the dev split"),
    ("test_accuracy", "float64", "accuracy on the held-out test split: *the* probe accuracy"),
    ("majority_accuracy", "float64", "test accuracy of always predicting the majority train class"),
    ("control_accuracy", "float64|null", "test accuracy on the control task (random label per word type)"),
    ("selectivity", "float64|null", "`test_accuracy - control_accuracy`"),
    ("c", "float64", "chosen inverse regularisation strength"),
    ("seconds", "float64", "fit time"),
    ("seed", "int64", "seed of the split and the control task"),
]
"""Columns of the probe table (one row per probe; the published ``probes`` kind)."""

RANKING_COLUMNS: list[Column] = [
    ("hook", "string", "hook whose neurons are ranked"),
    ("source", "string", "label source (`pos`, `ner`, `concepts:<dir>`, a label file)"),
    ("label", "string", "the label the neurons are ranked for (`*all*`: multi-class ranking over every label)"),
    ("name", "string", "display name (a concept's LLM label, else the label)"),
    ("method", "string", "ranking method (`probeless`, `probe_weights`, `average_precision`)"),
    ("rank", "int64", "0-based rank of the neuron for (label, method); 0 is the best"),
    ("neuron", "int64", "neuron index at the hook"),
    ("unit", "string", "the neuron's unit id (`<hook>.<neuron>`), as in every other table and the report"),
    ("score", "float64", "the method's score of the neuron"),
]
"""Columns of the ranking table (one row per (label, method, rank); the published ``rankings`` kind)."""

ALIGNMENT_COLUMNS: list[Column] = [
    ("hook", "string", "hook whose neurons are ranked"),
    ("concept", "int64", "super-concept node id"),
    ("name", "string", "display name of the super-concept"),
    ("children", "list<int64>", "sub-concept node ids"),
    ("overlaps", "list<float64>", "top-n overlap of the super-concept's ranking with each sub-concept's"),
    ("mean", "float64", "mean overlap (the alignment)"),
    ("n", "int64", "top-n used"),
    ("method", "string", "ranking method"),
]
"""Columns of the super/sub-concept alignment table (``concepts:`` sources)."""


def features(columns: list[Column]) -> Any:
    """``datasets.Features`` of a column list."""
    return column_features(columns)


def dataset(rows: list[dict[str, Any]], columns: list[Column]) -> Any:
    """``rows`` as a typed ``datasets.Dataset`` (also when there are none; a column a row
    leaves out is None)."""
    return typed_dataset(rows, column_features(columns), fill_missing=True)
