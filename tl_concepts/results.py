"""What every typed result shares: flat rows, a pandas frame, a ``datasets.Dataset``.

A result class (``ExplanationResults``, ``ConceptSet``, ``ProbeResults``, ``Rankings``,
``Descriptors``) implements :meth:`ResultTable.rows` (one flat dict per item, the same keys
in every row) and gets :meth:`to_pandas` and :meth:`to_dataset` from here.

A stage's table schema is a list of :data:`Column` triples ``(name, type, description)``
(``type``: ``string``, ``int64``, ``float64``, ``bool``, ``list<...>`` of one of those, with
``|null`` where a value may be missing): the one format the stages define their tables in and
the hub's cards and validators read. :func:`column_features` turns it into
``datasets.Features``; :func:`typed_dataset` / :func:`read_parquet_dataset` build and read
tables with those types, also when they have no rows.

Example:
    >>> class Two(ResultTable):
    ...     def rows(self):
    ...         return [{"unit": "a", "score": 0.5}, {"unit": "b", "score": 0.25}]
    >>> list(Two().to_pandas().columns)
    ['unit', 'score']
"""
from __future__ import annotations

import os
from typing import Any, Sequence

Column = tuple[str, str, str]
"""A table column: (name, type, description)."""


def json_default(obj: Any) -> Any:
    """``default=`` for ``json.dumps`` of result files: numpy scalars and arrays as plain
    numbers and lists; anything else raises ``TypeError`` as ``json`` does.

    Example:
        >>> import json, numpy as np
        >>> json.dumps({"n": np.int64(3), "v": np.array([0.5, 1.0])}, default=json_default)
        '{"n": 3, "v": [0.5, 1.0]}'
    """
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _feature(typ: str) -> Any:
    from datasets import Sequence as ListOf, Value

    base = typ.split("|")[0]
    if base.startswith("list<") and base.endswith(">"):
        return ListOf(Value(base[5:-1]))
    return Value(base)


def column_features(columns: Sequence[Column]) -> Any:
    """``datasets.Features`` of a column list.

    Example:
        >>> f = column_features([("unit", "string", "id"), ("score", "float64|null", ""),
        ...                      ("kids", "list<int64>", "")])
        >>> f["score"].dtype, f["kids"].feature.dtype
        ('float64', 'int64')
    """
    from datasets import Features

    return Features({name: _feature(typ) for name, typ, _ in columns})


def empty_dataset(features: Any) -> Any:
    """A ``datasets.Dataset`` with no rows and the given features (``from_list([])`` cannot)."""
    import datasets

    return datasets.Dataset.from_dict({name: [] for name in features}, features=features)


def typed_dataset(rows: Sequence[dict[str, Any]], features: Any, *, fill_missing: bool = False) -> Any:
    """``rows`` as a ``datasets.Dataset`` with ``features`` (an empty one when there are no rows).
    ``fill_missing``: keep only the features' columns, a missing one as None (for rows whose
    optional values are left out); otherwise rows must have exactly those columns."""
    import datasets

    if not rows:
        return empty_dataset(features)
    if fill_missing:
        rows = [{c: r.get(c) for c in features} for r in rows]
    return datasets.Dataset.from_list(list(rows), features=features)


def read_parquet_dataset(path: str | os.PathLike, features: Any) -> Any:
    """A parquet table as a typed ``datasets.Dataset``; an empty table too
    (``Dataset.from_parquet`` refuses a file without rows)."""
    import datasets
    import pyarrow.parquet as pq

    table = pq.read_table(str(path))
    if table.num_rows == 0:
        return empty_dataset(features)
    return datasets.Dataset(table)


class ResultTable:
    """Mixin for typed results: :meth:`rows` -> :meth:`to_pandas` / :meth:`to_dataset`."""

    def rows(self) -> list[dict[str, Any]]:
        """One flat row (str/int/float/bool/None values) per item."""
        raise NotImplementedError

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per item (columns as in :meth:`rows`)."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    def to_dataset(self) -> Any:
        """A ``datasets.Dataset`` of :meth:`rows`."""
        import datasets

        return datasets.Dataset.from_pandas(self.to_pandas(), preserve_index=False)
