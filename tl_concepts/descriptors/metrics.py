"""Quality of a neuron -> descriptor mapping.

* precision@k / recall@k against a labelled subset (neuron -> set of correct entries):
  ``P@k = |top-k ∩ gold| / k`` and ``R@k = |top-k ∩ gold| / |gold|``, averaged over the
  labelled neurons (a neuron with no mapped entry scores 0);
* Jaccard stability: mean Jaccard of each neuron's entry sets mapped on the calibration
  and on the validation half, over neurons mapped in either half.

Example:
    >>> precision_recall_at_k({0: [3, 1], 1: [2]}, {0: {3}, 1: {5}}, k=2)
    (0.25, 0.5)
    >>> jaccard_stability({0: [1, 2], 1: [4]}, {0: [2, 1], 2: [7]})
    0.3333333333333333
"""
from __future__ import annotations

from tl_concepts.errors import InputError

from typing import Mapping, Sequence

import numpy as np


def precision_recall_at_k(predicted: Mapping[int, Sequence[int]], gold: Mapping[int, set[int] | Sequence[int]],
                          k: int = 2) -> tuple[float, float]:
    """Mean P@k and R@k over the neurons in ``gold`` (with a non-empty gold set)."""
    if k < 1:
        raise InputError(f"k must be >= 1; got {k}")
    ps, rs = [], []
    for n, g in gold.items():
        g = set(g)
        if not g:
            continue
        hit = len(set(list(predicted.get(n, []))[:k]) & g)
        ps.append(hit / k)
        rs.append(hit / len(g))
    if not ps:
        raise InputError("the labelled subset has no neuron with a gold descriptor")
    return float(np.mean(ps)), float(np.mean(rs))


def jaccard_stability(a: Mapping[int, Sequence[int]], b: Mapping[int, Sequence[int]]) -> float:
    """Mean Jaccard of the two mappings' entry sets over neurons mapped in either (NaN if none)."""
    js = []
    for n in set(a) | set(b):
        sa, sb = set(a.get(n, [])), set(b.get(n, []))
        if sa or sb:
            js.append(len(sa & sb) / len(sa | sb))
    return float(np.mean(js)) if js else float("nan")
