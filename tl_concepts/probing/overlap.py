"""Overlap between neuron rankings, and super-/sub-concept alignment in a concept tree.

Mousi et al. 2023 rank neurons for a super-concept (e.g. adverbs) and for each of its
sub-concepts and report how many of the super-concept's top neurons reappear among each
sub-concept's top neurons (0.36 on average for adverbs, top 10).

:func:`concept_alignment` works on any parent -> children structure: a
:class:`~tl_concepts.concepts.ConceptSet` with a merge tree (:func:`tree_members`), or plain
dicts ``members`` (node -> row indices) and ``children`` (node -> child nodes).

Example:
    >>> import numpy as np
    >>> top_n_overlap(np.array([3, 1, 2, 0]), np.array([1, 3, 0, 2]), 2)
    1.0
"""
from __future__ import annotations

from tl_concepts.errors import InputError

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .data import binary_task
from .rankers import NeuronRanking, probeless


def _order_of(r: NeuronRanking | np.ndarray | Sequence[int]) -> np.ndarray:
    return r.order if isinstance(r, NeuronRanking) else np.asarray(r)


def top_n_overlap(a: NeuronRanking | np.ndarray | Sequence[int], b: NeuronRanking | np.ndarray | Sequence[int],
                  n: int = 10) -> float:
    """|top-n(a) ∩ top-n(b)| / n."""
    if n < 1:
        raise InputError(f"n must be >= 1; got {n}")
    ta, tb = _order_of(a)[:n], _order_of(b)[:n]
    return len(set(ta.tolist()) & set(tb.tolist())) / n


@dataclass
class Alignment:
    """Top-n overlap of a super-concept's ranking with each sub-concept's ranking."""

    node: int
    """Super-concept node id."""
    children: list[int]
    """Sub-concept node ids."""
    overlaps: list[float]
    """Top-n overlap with each child (same order)."""
    n: int
    """Top-n used."""
    method: str
    """Ranking method."""
    top: list[int] = field(default_factory=list)
    """The super-concept's top-n neurons."""
    skipped: list[int] = field(default_factory=list)
    """Sub-concepts left out: fewer than ``min_size`` members."""

    @property
    def mean(self) -> float:
        """Mean overlap over children (the paper's alignment)."""
        return float(np.mean(self.overlaps)) if self.overlaps else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean}


def tree_members(concepts: Any) -> tuple[dict[int, np.ndarray], Callable[[int], list[int]]]:
    """``(members, children)`` for a ConceptSet with a merge tree: members are rows of its
    ``points`` table, children come from the tree."""
    if getattr(concepts, "tree", None) is None:
        raise InputError("this concept set has no merge tree (an imported release); pass members/children dicts")
    tree = concepts.tree

    class _Members(dict):
        def __missing__(self, node: int) -> np.ndarray:
            v = tree.members(int(node))
            self[node] = v
            return v

    return _Members(), tree.children


def concept_alignment(representations: Any, node: int, *, members: Mapping[int, Any],
                      children: Mapping[int, Sequence[int]] | Callable[[int], Sequence[int]],
                      n: int = 10, ranker: Callable[..., NeuronRanking] = probeless, seed: int = 0,
                      negatives: float | None = None, min_size: int = 2) -> Alignment:
    """Rank neurons for ``node`` (members vs every other row) and for each child, and
    return the top-n overlap of the node's ranking with each child's.

    ``negatives`` subsamples non-members per member (None keeps them all; Probeless
    needs no balancing). Sub-concepts with fewer than ``min_size`` members are skipped
    (listed in ``skipped``); a ``ValueError`` says when none is left.
    """
    x = np.asarray(representations)
    kids = list(children(node) if callable(children) else children.get(node, []))
    if not kids:
        raise InputError(f"concept {node} has no sub-concepts; pick a node above the leaves")

    if len(np.unique(np.asarray(members[node]))) >= x.shape[0]:
        raise InputError(f"concept {node} covers every row (the root?); its ranking needs rows outside it")

    def rank(node_: int) -> NeuronRanking:
        data = binary_task(x, np.asarray(members[node_]), negatives=negatives, seed=seed)
        return ranker(None, None, data=data)

    used = [k for k in kids if len(np.unique(np.asarray(members[k]))) >= min_size]
    if not used:
        raise InputError(f"every sub-concept of {node} has fewer than {min_size} members; nothing to align")
    sup = rank(node)
    over = [top_n_overlap(sup, rank(k), n) for k in used]
    return Alignment(node=int(node), children=[int(k) for k in used], overlaps=over, n=n,
                     method=sup.method, top=sup.order[:n].tolist(),
                     skipped=[int(k) for k in kids if k not in used])
