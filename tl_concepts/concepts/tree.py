"""The Ward merge tree: cut it at any K, walk super- and sub-concepts.

Node ids follow scipy: leaves are ``0..L-1``, the merge in row s of the linkage creates
node ``L+s``. A *concept at K* is a node that is a root after the first ``L-K`` merges; its
super-concept is its parent node, its sub-concepts are its two children. Node ids are
stable across cuts, so the concept "which" at K=600 is the same object at K=200 when it
survives there.

Example:
    >>> import numpy as np
    >>> from scipy.cluster.hierarchy import linkage
    >>> x = np.array([[0.0], [0.1], [5.0], [5.2]])
    >>> t = ConceptTree(linkage(x, "ward"))
    >>> t.cut(2).tolist()
    [4, 5]
    >>> t.labels(2).tolist()
    [0, 0, 1, 1]
"""
from __future__ import annotations


import numpy as np


class ConceptTree:
    """A merge tree over L leaves and N points (each point sits in one leaf)."""

    def __init__(self, linkage: np.ndarray, leaf_of_point: np.ndarray | None = None) -> None:
        z = np.asarray(linkage, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != 4:
            raise ValueError(f"linkage must be [L-1, 4]; got {z.shape}")
        self.linkage = z
        self.n_leaves = int(z.shape[0] + 1)
        self.leaf_of_point = (np.arange(self.n_leaves) if leaf_of_point is None
                              else np.asarray(leaf_of_point, dtype=np.int64))
        n_nodes = 2 * self.n_leaves - 1
        self.children_of = z[:, :2].astype(np.int64)
        self.parent = np.full(n_nodes, -1, dtype=np.int64)
        for s, (a, b) in enumerate(self.children_of):
            self.parent[a] = self.n_leaves + s
            self.parent[b] = self.n_leaves + s
        # merge step at which each node appears (-1 for leaves)
        self.created = np.concatenate([np.full(self.n_leaves, -1), np.arange(self.n_leaves - 1)])
        self._leaves_cache: dict[int, np.ndarray] = {}

    @property
    def n_points(self) -> int:
        return int(len(self.leaf_of_point))

    @property
    def n_nodes(self) -> int:
        return 2 * self.n_leaves - 1

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.n_leaves:
            raise ValueError(
                f"cannot cut into K={k} concepts: the tree has {self.n_leaves} leaves"
                + (" (micro-clusters; raise n_micro)" if self.n_leaves < self.n_points else
                   f" ({self.n_points} points)") + f"; choose 1 <= K <= {self.n_leaves}")

    def cut(self, k: int) -> np.ndarray:
        """Node ids of the K concepts (ascending)."""
        self._check_k(k)
        m = self.n_leaves - k
        created = self.created
        par = self.parent
        par_created = np.where(par >= 0, created[np.maximum(par, 0)], np.iinfo(np.int64).max)
        roots = (created < m) & ((par < 0) | (par_created >= m))
        return np.flatnonzero(roots)

    def node_of_leaf_at(self, k: int) -> np.ndarray:
        """[L] concept node id of every leaf at cut K."""
        self._check_k(k)
        m = self.n_leaves - k
        assign = np.arange(self.n_nodes)
        # walk merges applied so far, top-down: a node below the cut takes its parent's root
        for s in range(m - 1, -1, -1):
            node = self.n_leaves + s
            a, b = self.children_of[s]
            assign[a] = assign[node]
            assign[b] = assign[node]
        return assign[: self.n_leaves]

    def labels(self, k: int) -> np.ndarray:
        """[N] cluster number 0..K-1 of every point (ordered by concept node id)."""
        nodes = self.node_of_point_at(k)
        _, lab = np.unique(nodes, return_inverse=True)
        return lab

    def node_of_point_at(self, k: int) -> np.ndarray:
        """[N] concept node id of every point at cut K."""
        return self.node_of_leaf_at(k)[self.leaf_of_point]

    def children(self, node: int) -> list[int]:
        """Sub-concepts (the two nodes merged into ``node``); [] for a leaf."""
        if node < self.n_leaves:
            return []
        return [int(c) for c in self.children_of[node - self.n_leaves]]

    def parent_of(self, node: int) -> int | None:
        """Super-concept of ``node``; None for the root."""
        p = int(self.parent[node])
        return None if p < 0 else p

    def leaves(self, node: int) -> np.ndarray:
        """Leaf ids under ``node``."""
        if node < self.n_leaves:
            return np.array([node])
        if node in self._leaves_cache:
            return self._leaves_cache[node]
        out, stack = [], [node]
        while stack:
            v = stack.pop()
            if v < self.n_leaves:
                out.append(v)
            else:
                stack.extend(self.children_of[v - self.n_leaves].tolist())
        res = np.sort(np.asarray(out, dtype=np.int64))
        self._leaves_cache[node] = res
        return res

    def members(self, node: int) -> np.ndarray:
        """Point indices under ``node`` (ascending)."""
        return np.flatnonzero(np.isin(self.leaf_of_point, self.leaves(node)))

    def distance(self, node: int) -> float:
        """Ward merge height of ``node`` (0 for a leaf)."""
        return 0.0 if node < self.n_leaves else float(self.linkage[node - self.n_leaves, 2])


def cut_labels(linkage: np.ndarray, leaf_of_point: np.ndarray, k: int) -> np.ndarray:
    """[N] cluster number 0..K-1 of every point at cut K (a one-call helper)."""
    return ConceptTree(linkage, leaf_of_point).labels(k)
