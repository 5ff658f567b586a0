"""A descriptor vocabulary: the LLM's descriptors clustered by meaning.

Distinct descriptors are embedded (unit vectors), clustered by average-linkage
agglomerative clustering on cosine distance cut at ``distance_threshold``, and each
cluster is named by a representative: its most frequent member (ties: the member closest
to the cluster centroid). "stock market" and "stocks" become one vocabulary entry.

Example:
    >>> import numpy as np
    >>> vec = {"stocks": [1, 0], "stock market": [0.99, 0.14], "rain": [0, 1]}
    >>> fake = lambda texts: np.array([vec[t] for t in texts], np.float32)
    >>> v = build_vocabulary([["stocks"], ["stock market", "stocks"], ["rain"]], fake)
    >>> [c.representative for c in v.clusters], v.cluster_of["stock market"]
    (['stocks', 'rain'], 0)
"""
from __future__ import annotations

from tl_concepts.errors import InputError

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tl_concepts.atomic import write_json

from .embed import Embedder


@dataclass
class DescriptorCluster:
    """One vocabulary entry."""

    id: int
    """Cluster id (0.. by decreasing sentence count)."""
    representative: str
    """The name used for the entry."""
    members: dict[str, int]
    """Descriptor -> number of sentences it was given to."""
    sentences: int = 0
    """Sentences tagged with any member."""


@dataclass
class Vocabulary:
    """Clustered descriptors and the descriptor -> cluster lookup."""

    clusters: list[DescriptorCluster]
    """Entries, most frequent first."""
    cluster_of: dict[str, int] = field(default_factory=dict)
    """Normalised descriptor -> cluster id."""
    distance_threshold: float = 0.3
    """Cosine distance at which the clustering was cut."""
    embedder: str = ""
    """Embedding model name."""

    def __len__(self) -> int:
        return len(self.clusters)

    @property
    def names(self) -> list[str]:
        """Representatives by cluster id."""
        return [c.representative for c in self.clusters]

    def tag_matrix(self, descriptor_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """[n, V] bool: row i marks the clusters of sentence i's descriptors (unknown ones ignored)."""
        t = np.zeros((len(descriptor_lists), len(self.clusters)), bool)
        for i, ds in enumerate(descriptor_lists):
            for d in ds:
                c = self.cluster_of.get(d)
                if c is not None:
                    t[i, c] = True
        return t

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomic)."""
        return write_json(path, {"distance_threshold": self.distance_threshold, "embedder": self.embedder,
                                 "clusters": [asdict(c) for c in self.clusters]})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`."""
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        clusters = [DescriptorCluster(**c) for c in d["clusters"]]
        return cls(clusters=clusters, cluster_of={m: c.id for c in clusters for m in c.members},
                   distance_threshold=d["distance_threshold"], embedder=d.get("embedder", ""))


def build_vocabulary(descriptor_lists: Sequence[Sequence[str]], embed: Embedder, *,
                     distance_threshold: float = 0.3, min_sentences: int = 1) -> Vocabulary:
    """Cluster the descriptors of many sentences (one list per sentence) into a vocabulary.

    Args:
        embed: texts -> unit vectors (e.g. :class:`~tl_concepts.descriptors.embed.MiniLMEmbedder`).
        distance_threshold: cosine distance below which clusters merge (average linkage).
        min_sentences: entries given to fewer sentences are dropped.
    """
    counts = Counter(d for ds in descriptor_lists for d in set(ds))
    if not counts:
        raise InputError("no descriptors to cluster: every sentence failed or had none; check the generation records")
    uniq = sorted(counts, key=lambda d: (-counts[d], d))
    e = np.asarray(embed(uniq), np.float64)
    if e.shape[0] != len(uniq):
        raise InputError(f"the embedder returned {e.shape[0]} vectors for {len(uniq)} texts")
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    if len(uniq) == 1:
        lab = np.zeros(1, np.int64)
    else:
        from sklearn.cluster import AgglomerativeClustering

        lab = AgglomerativeClustering(n_clusters=None, distance_threshold=distance_threshold, metric="cosine",
                                      linkage="average").fit_predict(e)
    groups: dict[int, list[int]] = {}
    for i, cluster in enumerate(lab):
        groups.setdefault(int(cluster), []).append(i)
    gid = {uniq[i]: g for g, idx in enumerate(groups.values()) for i in idx}
    n_sent = np.zeros(len(groups), np.int64)
    for ds in descriptor_lists:
        for g in {gid[d] for d in ds if d in gid}:
            n_sent[g] += 1
    raw: list[tuple[str, dict[str, int], int]] = []
    for g, idx in enumerate(groups.values()):
        centroid = e[idx].mean(axis=0)
        best = max(idx, key=lambda i: (counts[uniq[i]], float(e[i] @ centroid), -i))
        members = {uniq[i]: counts[uniq[i]] for i in sorted(idx, key=lambda i: (-counts[uniq[i]], uniq[i]))}
        raw.append((uniq[best], members, int(n_sent[g])))
    raw = [r for r in raw if r[2] >= min_sentences]
    raw.sort(key=lambda r: (-r[2], r[0]))
    clusters = [DescriptorCluster(id=i, representative=r, members=m, sentences=n) for i, (r, m, n) in enumerate(raw)]
    return Vocabulary(clusters=clusters, cluster_of={m: c.id for c in clusters for m in c.members},
                      distance_threshold=distance_threshold, embedder=str(getattr(embed, "name", "")))
