"""Corpus data model: documents -> sentences -> whitespace words (with optional tags).

Example:
    >>> from tl_concepts.corpus import from_texts
    >>> c = from_texts(["The cat sat. It slept."])
    >>> [s.words for s in c.sentences]
    [['The', 'cat', 'sat.'], ['It', 'slept.']]
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass
class Sentence:
    """One sentence of a document, as whitespace words."""

    doc: int
    """Index of the document the sentence belongs to."""
    words: list[str]
    """Whitespace-separated words; the model reads ``" ".join(words)``."""
    pos: list[str] | None = None
    """Penn Treebank tag per word (None when the corpus is untagged)."""
    ner: list[str] | None = None
    """Entity type per word, "" outside entities (None when untagged)."""

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class Corpus:
    """An ordered list of sentences grouped into documents."""

    name: str
    """Short name, e.g. ``lee`` or a file name."""
    sentences: list[Sentence] = field(default_factory=list)
    """All sentences, documents in order."""

    @property
    def n_docs(self) -> int:
        return len({s.doc for s in self.sentences})

    @property
    def n_words(self) -> int:
        return sum(len(s.words) for s in self.sentences)

    @property
    def tagged(self) -> bool:
        return bool(self.sentences) and self.sentences[0].pos is not None

    def fingerprint(self) -> str:
        """sha256 over the documents' words (and tags): identifies the corpus content."""
        h = hashlib.sha256()
        for s in self.sentences:
            h.update(json.dumps([s.doc, s.words, s.pos, s.ner]).encode("utf-8"))
        return h.hexdigest()[:16]

    def head(self, n_docs: int) -> "Corpus":
        """The first ``n_docs`` documents."""
        docs = sorted({s.doc for s in self.sentences})[:n_docs]
        keep = set(docs)
        return Corpus(f"{self.name}[:{n_docs}]", [s for s in self.sentences if s.doc in keep])
