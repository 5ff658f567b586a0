"""Map neurons to descriptors whose sentences are over-represented among their exemplars.

For neuron j, its exemplars are the ``top_k`` sentences (of the half being mapped) with
the largest sentence-level activation (the max over the sentence's word tokens). For a
vocabulary entry v:

* composition ``c[j, v]``: share of j's exemplars tagged with v;
* base rate ``b[v]``: share of all sentences of the half tagged with v;
* lift ``c / b`` and excess ``(c - b) / (1 - b)`` (0 = no more than chance, 1 = every
  exemplar).

v is mapped to j when ``c >= composition_threshold``, ``lift >= min_lift`` and v tags at
least ``min_support`` sentences of the half; a neuron's descriptors are ranked by excess.
Mondal et al. map on a calibration half and check the mapping on a validation half
(:func:`split_halves`, :func:`tl_concepts.descriptors.metrics.jaccard_stability`).

Example:
    >>> import numpy as np
    >>> acts = np.array([[5.], [4.], [0.], [0.], [1.], [0.]])
    >>> tags = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0, 1]], bool)
    >>> m = map_neurons(acts, tags, top_k=2, composition_threshold=0.5, min_support=1)
    >>> m.descriptors(0), round(float(m.composition[0, 0]), 2), round(float(m.base_rate[0]), 2)
    ([0], 1.0, 0.33)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tl_concepts.errors import InputError


class CorpusTooSmallError(InputError):
    """Too few sentences for the calibration/validation split; the message gives the minimum."""


@dataclass
class NeuronDescriptorMap:
    """Which descriptors each neuron is mapped to, with the numbers behind it."""

    composition: np.ndarray
    """[d, V] share of each neuron's exemplars tagged with each entry."""
    base_rate: np.ndarray
    """[V] share of the half's sentences tagged with each entry."""
    support: np.ndarray
    """[V] sentences of the half tagged with each entry."""
    mapped: np.ndarray
    """[d, V] bool: entry mapped to neuron."""
    excess: np.ndarray
    """[d, V] ``(c - b) / (1 - b)``."""
    sentences: np.ndarray
    """Row ids (into the activation matrix) of the half that was mapped."""
    top_k: int
    """Exemplars per neuron."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Thresholds used."""

    def descriptors(self, neuron: int) -> list[int]:
        """Entries mapped to ``neuron``, best (largest excess) first."""
        v = np.flatnonzero(self.mapped[neuron])
        return v[np.lexsort((v, -self.excess[neuron, v]))].tolist()

    def all_descriptors(self) -> dict[int, list[int]]:
        """Neuron -> ranked entries, for neurons with at least one."""
        return {int(j): self.descriptors(int(j)) for j in np.flatnonzero(self.mapped.any(axis=1))}


def sentence_activations(store: Any, hook: str) -> tuple[np.ndarray, np.ndarray]:
    """(sentence ids, [n_sentences, d] max activation over each sentence's word tokens).

    Special tokens (no word) are left out; a sentence split across contexts uses both.
    """
    tok = store.tokens()
    acts = store.activations(hook)
    rows = np.flatnonzero(np.asarray(tok["word_id"]) >= 0)
    sent = np.asarray(tok["sentence"])[rows]
    order = np.argsort(sent, kind="stable")
    rows, sent = rows[order], sent[order]
    ids, starts = np.unique(sent, return_index=True)
    return ids, np.maximum.reduceat(acts[rows], starts, axis=0)


def split_halves(n: int, seed: int = 0, *, min_half: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random calibration/validation halves of ``range(n)``.

    Raises :class:`CorpusTooSmallError` when a half would have fewer than ``min_half`` rows.
    """
    if n // 2 < min_half:
        raise CorpusTooSmallError(
            f"{n} usable sentences are too few for a calibration/validation split: each half needs >= "
            f"{min_half} (so at least {2 * min_half} sentences with descriptors); give a larger corpus "
            "or lower top_k")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def map_neurons(activations: np.ndarray, tags: np.ndarray, rows: np.ndarray | None = None, *, top_k: int = 20,
                composition_threshold: float = 0.3, min_lift: float = 2.0, min_support: int = 3
                ) -> NeuronDescriptorMap:
    """Map every neuron (column of ``activations`` [S, d]) to entries of ``tags`` [S, V].

    ``rows`` restricts to one half (default: all rows).
    """
    a = np.asarray(activations)
    t = np.asarray(tags, bool)
    if a.shape[0] != t.shape[0]:
        raise ValueError(f"activations cover {a.shape[0]} sentences but tags {t.shape[0]}; align them by sentence id")
    rows = np.arange(a.shape[0]) if rows is None else np.asarray(rows)
    if len(rows) < top_k:
        raise CorpusTooSmallError(f"{len(rows)} sentences are fewer than top_k={top_k} exemplars per neuron; "
                                  f"lower top_k or give at least {top_k} sentences per half")
    a, t = a[rows], t[rows]
    top = np.argpartition(-a, top_k - 1, axis=0)[:top_k]             # [k, d]
    comp = t[top].mean(axis=0)                                       # [d, V]
    support = t.sum(axis=0)
    base = support / len(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(base > 0, comp / base, 0.0)
        excess = np.where(base < 1, (comp - base) / (1 - base), 0.0)
    constant = np.ptp(a, axis=0) == 0                                # dead neurons have no exemplars
    mapped = (comp >= composition_threshold) & (lift >= min_lift) & (support >= min_support)[None, :]
    mapped[constant] = False
    return NeuronDescriptorMap(composition=comp, base_rate=base, support=support, mapped=mapped, excess=excess,
                               sentences=rows, top_k=top_k,
                               settings={"composition_threshold": composition_threshold, "min_lift": min_lift,
                                         "min_support": min_support})
