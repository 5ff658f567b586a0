"""Concepts, their labels, and a set of concepts at one layer and one K.

A :class:`ConceptSet` holds the clustered word occurrences (``points``: a word table whose
rows are the clustered occurrences), the merge tree (None for an imported TCN release,
which has only the flat partition), the cut K and the labels attached so far.

On disk (``save``/``load``), a directory with ``meta.json`` (layer, hook, K, mode, filter
report, agreement), ``points.json`` (word columns and sentence texts) and ``tree.npz``
(linkage, leaf_of_point, or a flat ``assignment``).

Example:
    >>> import numpy as np
    >>> from scipy.cluster.hierarchy import linkage
    >>> from tl_concepts.concepts.tree import ConceptTree
    >>> pts = {"word_id": [0, 1, 2], "sentence": [0, 0, 1], "index": [0, 1, 0], "text": ["a", "b", "c"]}
    >>> cs = ConceptSet(points=pts, tree=ConceptTree(linkage(np.array([[0.], [.1], [5.]]), "ward")), k=2)
    >>> [c.words for c in cs.concepts()]
    [['c'], ['a', 'b']]
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
from tl_concepts.atomic import atomic_write, write_text

from .tree import ConceptTree

LabelStatus = Literal["ok", "refusal", "content_filter", "unparseable", "error"]


@dataclass
class ConceptLabel:
    """One LLM label of one concept, with its provenance."""

    concept_id: int
    """Node id of the concept in the merge tree (or the cluster id of an imported release)."""
    label: str | None
    """The parsed label (``"NA"`` is a valid answer of the lexical/POS prompts); None when
    there is no usable answer (see ``status``)."""
    status: str
    """``ok``, ``refusal`` (the model declined, e.g. sensitive content), ``content_filter``,
    ``unparseable``, or ``error`` (transport failures; retried on a rerun)."""
    template: str
    """Prompt template name, e.g. ``label-general``."""
    template_version: str
    """Template version, e.g. ``v1``."""
    model: str = ""
    """Model that answered."""
    backend: str = ""
    """LLM backend (``openai``, ``in-process``, ...)."""
    raw: str | None = None
    """The raw answer text (kept for refusals and unparseable answers too)."""
    words_as: str = "tokens"
    """How the concept's words were shown: ``tokens`` (with repeats) or ``types``."""
    n_context: int = 0
    """Number of context sentences shown."""
    message: str = ""
    """Failure detail, when there was one."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConceptLabel":
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Concept:
    """A latent concept: a node of the merge tree and the word occurrences under it."""

    id: int
    """Node id (stable across cuts of the same tree)."""
    layer: int
    """Block index the representations came from."""
    members: list[int]
    """Row numbers into the set's ``points`` table."""
    words: list[str]
    """Word text of every member (same order as ``members``)."""
    parent: int | None = None
    """Super-concept node id (None for the root or an imported release)."""
    children: list[int] = field(default_factory=list)
    """Sub-concept node ids ([] for a leaf or an imported release)."""
    labels: list[ConceptLabel] = field(default_factory=list)
    """Labels attached so far."""

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def types(self) -> list[str]:
        """Distinct words, most frequent first (ties alphabetical)."""
        from collections import Counter

        return [w for w, _ in sorted(Counter(self.words).items(), key=lambda kv: (-kv[1], kv[0]))]


class ConceptSet:
    """Concepts at one layer and one K, over a table of clustered word occurrences."""

    def __init__(self, points: dict[str, list[Any]], *, k: int, tree: ConceptTree | None = None,
                 assignment: np.ndarray | None = None, sentences: list[str] | None = None,
                 layer: int = -1, hook: str = "", meta: dict[str, Any] | None = None) -> None:
        self.points = {name: list(col) for name, col in points.items()}
        self.n_points = len(self.points["text"])
        self.tree = tree
        self.sentences = list(sentences or [])
        self.layer = layer
        self.hook = hook
        self.meta = dict(meta or {})
        self.labels: dict[int, list[ConceptLabel]] = {}
        if tree is not None:
            if tree.n_points != self.n_points:
                raise ValueError(f"tree covers {tree.n_points} points, table has {self.n_points}")
            self.k = k
            self.assignment = tree.node_of_point_at(k)
        else:
            if assignment is None:
                raise ValueError("give a tree or a flat assignment")
            self.assignment = np.asarray(assignment, dtype=np.int64)
            self.k = int(len(np.unique(self.assignment)))

    # -- concepts ---------------------------------------------------------------------------
    def concept_ids(self) -> list[int]:
        """Node ids of the concepts at this K (ascending)."""
        return [int(i) for i in np.unique(self.assignment)]

    def concept(self, node: int) -> Concept:
        """The concept with node id ``node`` (any tree node works, not only those at K)."""
        if self.tree is not None and not np.any(self.assignment == node):
            members = self.tree.members(node).tolist()
        else:
            members = np.flatnonzero(self.assignment == node).tolist()
        if not members:
            raise KeyError(f"no concept {node}")
        parent = self.tree.parent_of(node) if self.tree is not None else None
        children = self.tree.children(node) if self.tree is not None else []
        text = self.points["text"]
        return Concept(id=int(node), layer=self.layer, members=members, words=[text[i] for i in members],
                       parent=parent, children=children, labels=list(self.labels.get(int(node), [])))

    def concepts(self) -> list[Concept]:
        """All K concepts, by node id."""
        return [self.concept(i) for i in self.concept_ids()]

    def at(self, k: int) -> "ConceptSet":
        """The same tree cut at another K (no clustering again); labels carry over by node id."""
        if self.tree is None:
            raise ValueError("this concept set has no merge tree (imported release); it cannot be recut")
        other = ConceptSet(self.points, k=k, tree=self.tree, sentences=self.sentences, layer=self.layer,
                           hook=self.hook, meta={**self.meta, "k": k})
        other.labels = {i: list(v) for i, v in self.labels.items()}
        return other

    def contexts(self, concept: Concept, n: int) -> list[tuple[str, str]]:
        """Up to ``n`` (word, sentence text) pairs from distinct sentences of ``concept``,
        covering as many distinct words as possible (one per word first, then more)."""
        out: list[tuple[str, str]] = []
        if not self.sentences or n <= 0:
            return out
        seen_s: set[int] = set()
        for distinct_words in (True, False):
            seen_w = {w for w, _ in out}
            for i in concept.members:
                s = int(self.points["sentence"][i])
                w = self.points["text"][i]
                if s in seen_s or not (0 <= s < len(self.sentences)) or (distinct_words and w in seen_w):
                    continue
                seen_s.add(s)
                seen_w.add(w)
                out.append((w, self.sentences[s]))
                if len(out) >= n:
                    return out
        return out

    def add_labels(self, labels: Iterable[ConceptLabel]) -> None:
        """Attach labels (replacing an earlier label of the same template and version)."""
        for lab in labels:
            lst = self.labels.setdefault(int(lab.concept_id), [])
            lst[:] = [x for x in lst if (x.template, x.template_version) != (lab.template, lab.template_version)]
            lst.append(lab)

    def column(self, name: str, default: Any = "") -> list[Any]:
        return self.points.get(name, [default] * self.n_points)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the set to a directory (atomic per file)."""
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "k": self.k, "layer": self.layer, "hook": self.hook, "n_points": self.n_points}
        _atomic_text(d / "meta.json", json.dumps(meta, indent=2, default=_json_default))
        _atomic_text(d / "points.json", json.dumps({"points": self.points, "sentences": self.sentences},
                                                    default=_json_default))
        arrays = ({"linkage": self.tree.linkage, "leaf_of_point": self.tree.leaf_of_point}
                  if self.tree is not None else {"assignment": self.assignment})
        atomic_write(d / "tree.npz", lambda tmp: _savez(tmp, arrays))
        return d

    @classmethod
    def load(cls, path: str | os.PathLike, k: int | None = None) -> "ConceptSet":
        """Read a set written by :meth:`save` (optionally cut at another K)."""
        d = Path(path)
        if not (d / "meta.json").exists():
            raise FileNotFoundError(f"{d} is not a concept set (no meta.json); run discover_concepts first")
        meta = json.loads((d / "meta.json").read_text())
        pts = json.loads((d / "points.json").read_text())
        arr = np.load(d / "tree.npz")
        tree = ConceptTree(arr["linkage"], arr["leaf_of_point"]) if "linkage" in arr else None
        return cls(pts["points"], k=k or meta["k"], tree=tree,
                   assignment=None if tree is not None else arr["assignment"],
                   sentences=pts["sentences"], layer=meta.get("layer", -1), hook=meta.get("hook", ""),
                   meta=meta)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a temp name
        np.savez(f, **arrays)


def _atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_text(path, text)
