"""What every typed result shares: flat rows, a pandas frame, a ``datasets.Dataset``.

A result class (``ExplanationResults``, ``ConceptSet``, ``ProbeResults``, ``Rankings``,
``Descriptors``) implements :meth:`ResultTable.rows` (one flat dict per item, the same keys
in every row) and gets :meth:`to_pandas` and :meth:`to_dataset` from here.

Example:
    >>> class Two(ResultTable):
    ...     def rows(self):
    ...         return [{"unit": "a", "score": 0.5}, {"unit": "b", "score": 0.25}]
    >>> list(Two().to_pandas().columns)
    ['unit', 'score']
"""
from __future__ import annotations

from typing import Any


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
