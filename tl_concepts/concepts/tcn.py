"""Transformers Concept Net (ConceptX) release layout: export and import.

Layout under a release root::

    sentences.txt                     one sentence per line, by global sentence id
    layer{l}/clusters-{K}.txt         word|||freq|||sentIdx|||tokenIdx|||clusterId
    layer{l}/annotations.json         {"<clusterId>": {"labels": [...], "provenance": [...],
                                        "parent": id|null, "children": [ids]}}

``freq`` is the number of occurrences of that word type among the clustered occurrences
(recomputed on import, so a file from elsewhere with another meaning still loads);
``sentIdx`` is the global sentence id and ``tokenIdx`` the word position in that sentence;
``clusterId`` is the concept's node id in the merge tree. ``|||`` inside a word would break
the format, so such words are refused.

Example:
    >>> write_tcn(cs, "release/")                       # doctest: +SKIP
    >>> back = read_tcn("release/", layer=3, k=200)     # doctest: +SKIP
"""
from __future__ import annotations

from tl_concepts.errors import InputError

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .model import ConceptLabel, ConceptSet, _atomic_text

SEP = "|||"


def write_tcn(cs: ConceptSet, root: str | os.PathLike) -> Path:
    """Write ``cs`` in the TCN layout under ``root``; returns the clusters file."""
    if cs.layer < 0:
        raise InputError("the concept set has no layer number; set cs.layer before exporting")
    root = Path(root)
    layer_dir = root / f"layer{cs.layer}"
    layer_dir.mkdir(parents=True, exist_ok=True)
    text = cs.column("text")
    freq = Counter(text)
    lines = []
    for row in np.argsort(cs.assignment, kind="stable").tolist():
        w = text[row]
        if SEP in w or "\n" in w:
            raise InputError(f"word {w!r} contains '|||' or a newline; it cannot be written in the TCN format")
        lines.append(SEP.join([w, str(freq[w]), str(int(cs.points["sentence"][row])),
                               str(int(cs.points["index"][row])), str(int(cs.assignment[row]))]))
    path = layer_dir / f"clusters-{cs.k}.txt"
    _atomic_text(path, "\n".join(lines) + "\n")
    ann = {}
    for cid in cs.concept_ids():
        labs = cs.labels.get(cid, [])
        ann[str(cid)] = {
            "labels": [lab.label for lab in labs if lab.accepted],
            "provenance": [lab.to_dict() for lab in labs],
            "parent": cs.tree.parent_of(cid) if cs.tree is not None else None,
            "children": cs.tree.children(cid) if cs.tree is not None else [],
        }
    _atomic_text(layer_dir / "annotations.json", json.dumps(ann, indent=1))
    if cs.sentences:
        _atomic_text(root / "sentences.txt", "\n".join(s.replace("\n", " ") for s in cs.sentences) + "\n")
    return path


def read_tcn(root: str | os.PathLike, layer: int, k: int | None = None) -> ConceptSet:
    """Load a TCN layer (ours or a ConceptX release) as a flat :class:`ConceptSet`.

    ``k`` picks ``clusters-{k}.txt``; without it the only clusters file of the layer is used.
    Labels come from ``annotations.json`` when present: our provenance records as they
    were, plain label lists (e.g. ``{"12": ["Verbs"]}`` or ``{"12": {"labels": [...]}}``) as
    labels of template ``imported``.
    """
    layer_dir = Path(root) / f"layer{layer}"
    if k is None:
        files = sorted(layer_dir.glob("clusters-*.txt"))
        if len(files) != 1:
            raise FileNotFoundError(f"{layer_dir}: expected one clusters-K.txt, found {[f.name for f in files]}; pass k=")
        path = files[0]
    else:
        path = layer_dir / f"clusters-{k}.txt"
    if not path.exists():
        raise FileNotFoundError(f"no TCN clusters file {path}")
    cols: dict[str, list] = {"word_id": [], "sentence": [], "index": [], "text": []}
    assign = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(SEP)
        if len(parts) != 5:
            raise InputError(f"{path}:{n}: expected word|||freq|||sentIdx|||tokenIdx|||clusterId, got {line!r}")
        w, _freq, s, t, c = parts
        cols["word_id"].append(-1)
        cols["text"].append(w)
        cols["sentence"].append(int(s))
        cols["index"].append(int(t))
        assign.append(int(c))
    if not assign:
        raise InputError(f"{path} lists no words")
    sent_file = Path(root) / "sentences.txt"
    sentences = sent_file.read_text(encoding="utf-8").splitlines() if sent_file.exists() else []
    cs = ConceptSet(cols, k=0, assignment=np.asarray(assign), sentences=sentences, layer=layer,
                    meta={"source": str(path)})
    ann_path = layer_dir / "annotations.json"
    if ann_path.exists():
        ann = json.loads(ann_path.read_text(encoding="utf-8"))
        labels = []
        for cid, entry in ann.items():
            cid_i = int(str(cid).lstrip("c"))
            if isinstance(entry, dict) and entry.get("provenance"):
                labels += [ConceptLabel.from_dict(p) for p in entry["provenance"]]
            else:
                plain = entry.get("labels", []) if isinstance(entry, dict) else entry
                plain = [plain] if isinstance(plain, str) else plain
                labels += [ConceptLabel(cid_i, lab, "ok", "imported", "-") for lab in plain]
        # several plain labels per concept all share template "imported": keep them all
        for lab in labels:
            cs.labels.setdefault(int(lab.concept_id), []).append(lab)
    return cs
