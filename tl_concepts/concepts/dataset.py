"""Concepts as a ``datasets.Dataset`` (one row per concept).

Schema (one row per concept at the set's K)::

    concept_id   int64           node id in the merge tree (cluster id for an imported release)
    layer        int64           block index L
    hook         string          hook name the representations came from
    k            int64           number of concepts in the cut
    size         int64           number of member occurrences
    label        string|null     first accepted label (status ok), else null
    labels       list<struct>    every label with provenance: label, status, template,
                                 template_version, model, backend, raw, words_as, n_context,
                                 reason (why not accepted), key (input fingerprint),
                                 members_fp (member-occurrence fingerprint)
    members      list<struct>    word, word_id, sentence (global id), index (word position)
    parent       int64|null      super-concept node id
    children     list<int64>     sub-concept node ids

Sentence texts are not repeated per member; :func:`sentences_dataset` gives them
(``sentence``, ``text``) to join on ``members.sentence``.

Example:
    >>> ds = to_dataset(cs)                      # doctest: +SKIP
    >>> ds[0]["members"][0]["word"]              # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

from .model import ConceptSet

LABEL_FIELDS = ("label", "status", "template", "template_version", "model", "backend", "raw",
                "words_as", "n_context", "reason", "key", "members_fp")


def features() -> Any:
    """The ``datasets.Features`` of :func:`to_dataset`."""
    from datasets import Features, Sequence, Value

    label = {f: Value("int64") if f == "n_context" else Value("string") for f in LABEL_FIELDS}
    member = {"word": Value("string"), "word_id": Value("int64"), "sentence": Value("int64"),
              "index": Value("int64")}
    return Features({
        "concept_id": Value("int64"), "layer": Value("int64"), "hook": Value("string"), "k": Value("int64"),
        "size": Value("int64"), "label": Value("string"), "labels": [label], "members": [member],
        "parent": Value("int64"), "children": Sequence(Value("int64")),
    })


def concept_rows(cs: ConceptSet) -> list[dict[str, Any]]:
    """The rows of :func:`to_dataset` as plain dicts."""
    rows = []
    wid = cs.column("word_id", -1)
    for c in cs.concepts():
        ok = [lab for lab in c.labels if lab.accepted]
        rows.append({
            "concept_id": c.id, "layer": cs.layer, "hook": cs.hook, "k": cs.k, "size": c.size,
            "label": ok[0].label if ok else None,
            "labels": [{f: getattr(lab, f) for f in LABEL_FIELDS} for lab in c.labels],
            "members": [{"word": c.words[j], "word_id": int(wid[m]), "sentence": int(cs.points["sentence"][m]),
                         "index": int(cs.points["index"][m])} for j, m in enumerate(c.members)],
            "parent": c.parent, "children": list(c.children),
        })
    return rows


def to_dataset(cs: ConceptSet) -> Any:
    """A ``datasets.Dataset`` of the concepts (schema in the module docstring)."""
    from datasets import Dataset

    return Dataset.from_list(concept_rows(cs), features=features())


def sentences_dataset(cs: ConceptSet) -> Any:
    """A ``datasets.Dataset`` of (sentence id, text) for the sentences members point to."""
    from datasets import Dataset

    used = sorted({int(s) for s in cs.points["sentence"]})
    return Dataset.from_dict({"sentence": used,
                              "text": [cs.sentences[s] if 0 <= s < len(cs.sentences) else "" for s in used]})
