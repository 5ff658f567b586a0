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
from tl_concepts.fingerprint import fingerprint
from tl_concepts.results import ResultTable, json_default

from .tree import ConceptTree

LabelStatus = Literal["ok", "rejected", "refusal", "content_filter", "unparseable", "error"]

ACCEPTED = "ok"
"""The one status of an accepted label; every other status is counted as not accepted."""


@dataclass
class ConceptLabel:
    """One LLM label of one concept, with its provenance."""

    concept_id: int
    """Node id of the concept in the merge tree (or the cluster id of an imported release)."""
    label: str | None
    """The accepted label; None when the answer was not accepted (see ``status``/``reason``;
    the answer itself is kept in ``raw``)."""
    status: str
    """``ok`` (accepted), ``rejected`` (answered, but the label gate refused it: an echo of
    the member words, too long, empty, ``NA``, or cut at max_tokens), ``refusal`` (the model
    declined), ``content_filter``, ``unparseable``, or ``error`` (another failure; ``reason``
    says which kind, and a transient kind is retried on the next run)."""
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
    reason: str = ""
    """Why the label is not accepted: a gate reason (``echo``, ``too_long``, ``empty``,
    ``na``, ``truncated``) or the LLM failure kind (``retries_exhausted``, ``refusal``, ...);
    empty for an accepted label."""
    key: str = ""
    """Fingerprint of everything that produced this label: the concept's member occurrences,
    the prompt (template, version, options) and the LLM (identity and sampling settings)."""
    members_fp: str = ""
    """Fingerprint of the concept's member occurrences (sentence, position, word) alone; a
    label is attached only to a concept with exactly these members."""
    usage: dict[str, Any] = field(default_factory=dict)
    """LLM usage that produced this label (keys of :data:`tl_concepts.llm.USAGE_KEYS`:
    calls, requests, retries, cache_hits, prompt_tokens, completion_tokens, failures,
    cost_usd), including earlier failed attempts at the same inputs that it replaced. Kept
    when the label is reused from a store, so a rerun reports what the label cost; empty for
    labels written before usage was stored, or imported ones (see :mod:`tl_concepts.usage`)."""

    @property
    def accepted(self) -> bool:
        """True when the label passed the gate (status ``ok``)."""
        return self.status == ACCEPTED and bool(self.label)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConceptLabel":
        """Read :meth:`to_dict` output; unknown keys are ignored, a missing (or null)
        ``usage`` (lines written by older versions) becomes ``{}``."""
        names = cls.__dataclass_fields__.keys()
        kw = {k: v for k, v in d.items() if k in names}
        kw["usage"] = dict(kw.get("usage") or {})
        return cls(**kw)


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


class ConceptSet(ResultTable):
    """Concepts at one layer and one K, over a table of clustered word occurrences.

    ``rows()`` / ``to_pandas()`` / ``to_dataset()`` give one flat row per concept; in a
    notebook the set shows each concept's label, words and a few contexts.
    """

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

    def members_fingerprint(self, concept: Concept | int) -> str:
        """Fingerprint of a concept's member occurrences: the sorted (sentence, word
        position, word) triples. Independent of the node id and of row order."""
        c = self.concept(concept) if isinstance(concept, (int, np.integer)) else concept
        sent, idx, text = self.points["sentence"], self.points["index"], self.points["text"]
        occ = sorted((int(sent[m]), int(idx[m]), str(text[m])) for m in c.members)
        return fingerprint(occ)

    def add_labels(self, labels: Iterable[ConceptLabel]) -> None:
        """Attach labels (replacing an earlier label of the same template and version).

        A label that carries a member fingerprint is attached only when the concept with
        its id has exactly those members here; others are dropped (they belong to another
        clustering)."""
        fps: dict[int, str | None] = {}
        for lab in labels:
            cid = int(lab.concept_id)
            if lab.members_fp:
                if cid not in fps:
                    try:
                        fps[cid] = self.members_fingerprint(cid)
                    except KeyError:
                        fps[cid] = None
                if fps[cid] != lab.members_fp:
                    continue
            lst = self.labels.setdefault(cid, [])
            lst[:] = [x for x in lst if (x.template, x.template_version) != (lab.template, lab.template_version)]
            lst.append(lab)

    def column(self, name: str, default: Any = "") -> list[Any]:
        return self.points.get(name, [default] * self.n_points)

    def label_of(self, concept_id: int) -> ConceptLabel | None:
        """The label shown for a concept: its first accepted label, else its latest one."""
        labs = self.labels.get(int(concept_id), [])
        ok = [lab for lab in labs if lab.accepted]
        return ok[0] if ok else (labs[-1] if labs else None)

    # -- typed results ----------------------------------------------------------------------
    def rows(self, top_words: int = 10) -> list[dict[str, Any]]:
        """One flat row per concept at this K.

        Columns: ``concept_id``, ``layer``, ``hook``, ``k``, ``n_occurrences``, ``n_types``,
        ``top_words`` (the ``top_words`` most frequent types, comma separated), ``label``
        (accepted label or None), ``label_status``, ``label_reason``, ``label_raw``,
        ``label_template``, ``label_model``, ``parent``, ``n_children``.

        Example:
            >>> cs.to_pandas()[["concept_id", "label", "top_words"]].head()   # doctest: +SKIP
        """
        out = []
        for c in self.concepts():
            lab = self.label_of(c.id)
            out.append({
                "concept_id": c.id, "layer": self.layer, "hook": self.hook, "k": self.k,
                "n_occurrences": c.size, "n_types": len(set(c.words)),
                "top_words": ", ".join(c.types[:top_words]),
                "label": lab.label if lab is not None and lab.accepted else None,
                "label_status": lab.status if lab is not None else None,
                "label_reason": (lab.reason or None) if lab is not None else None,
                "label_raw": lab.raw if lab is not None else None,
                "label_template": f"{lab.template}@{lab.template_version}" if lab is not None else None,
                "label_model": lab.model if lab is not None else None,
                "parent": c.parent, "n_children": len(c.children),
            })
        return out

    def label_counts(self) -> dict[str, int]:
        """How many concepts at this K have a label of each status (``ok`` = accepted)."""
        from collections import Counter

        return dict(Counter(lab.status for lab in (self.label_of(i) for i in self.concept_ids()) if lab))

    def __repr__(self) -> str:
        where = self.hook or (f"layer {self.layer}" if self.layer >= 0 else "no layer")
        counts = self.label_counts()
        n_lab = sum(counts.values())
        tail = f", {n_lab} labelled: {counts.get(ACCEPTED, 0)} accepted" if n_lab else ""
        return f"ConceptSet(K={self.k}, {where}, {self.n_points} occurrences{tail})"

    def _repr_html_(self, max_concepts: int = 50, n_words: int = 12, n_contexts: int = 2) -> str:
        from html import escape

        head = f"<p><b>{escape(repr(self))}</b></p>"
        rows = []
        for c in self.concepts()[:max_concepts]:
            lab = self.label_of(c.id)
            if lab is None:
                shown = "<i>unlabelled</i>"
            elif lab.accepted:
                shown = f"<b>{escape(lab.label or '')}</b>"
            else:
                why = lab.reason or lab.status
                shown = f"<i>{escape(lab.status)} ({escape(why)})</i>"
                if lab.raw:
                    shown += f" <small>raw: {escape(lab.raw[:80])}</small>"
            words = escape(", ".join(c.types[:n_words])) + (" ..." if len(c.types) > n_words else "")
            ctx = "<br>".join(_marked_html(s, w) for w, s in self.contexts(c, n_contexts))
            rows.append(f"<tr><td>{c.id}</td><td>{shown}</td><td>{c.size}</td><td>{words}</td>"
                        f"<td>{ctx}</td></tr>")
        more = (f"<p>... {self.k - max_concepts} more concepts</p>" if self.k > max_concepts else "")
        return (head + "<table><tr><th>concept</th><th>label</th><th>n</th><th>words</th><th>contexts</th></tr>"
                + "".join(rows) + "</table>" + more)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the set to a directory (atomic per file)."""
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "k": self.k, "layer": self.layer, "hook": self.hook, "n_points": self.n_points}
        _atomic_text(d / "meta.json", json.dumps(meta, indent=2, default=json_default))
        _atomic_text(d / "points.json", json.dumps({"points": self.points, "sentences": self.sentences},
                                                    default=json_default))
        arrays = ({"linkage": self.tree.linkage, "leaf_of_point": self.tree.leaf_of_point}
                  if self.tree is not None else {"assignment": self.assignment})
        atomic_write(d / "tree.npz", lambda tmp: _savez(tmp, arrays))
        self.save_labels(d)
        return d

    def save_labels(self, path: str | os.PathLike) -> Path:
        """Write the attached labels to ``<path>/labels.json`` (read back by :meth:`load`)."""
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        labels = [lab.to_dict() for labs in self.labels.values() for lab in labs]
        _atomic_text(d / "labels.json", json.dumps(labels, indent=1, default=json_default))
        return d / "labels.json"

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
        cs = cls(pts["points"], k=k or meta["k"], tree=tree,
                 assignment=None if tree is not None else arr["assignment"],
                 sentences=pts["sentences"], layer=meta.get("layer", -1), hook=meta.get("hook", ""),
                 meta=meta)
        if (d / "labels.json").exists():  # labels whose members do not match are dropped
            cs.add_labels(ConceptLabel.from_dict(x) for x in json.loads((d / "labels.json").read_text()))
        return cs


def _marked_html(sentence: str, word: str) -> str:
    from html import escape

    toks = sentence.split()
    for i, t in enumerate(toks):
        if t == word:
            return " ".join(f"<mark>{escape(x)}</mark>" if j == i else escape(x) for j, x in enumerate(toks))
    return escape(sentence)


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a temp name
        # numpy's stub lets **arrays bind allow_pickle (a bool); here they are only array names
        np.savez(f, **arrays)  # type: ignore[arg-type]


def _atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_text(path, text)
