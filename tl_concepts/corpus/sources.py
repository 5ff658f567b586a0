"""Load corpora: the embedded Lee news corpus, lists of strings, files, ``datasets``.

Text files (``.txt``, ``.jsonl``, ...) are read as UTF-8 unless ``encoding=`` says otherwise;
a byte that does not decode is an :class:`~tl_concepts.errors.InputError` naming the file,
line and byte offset: text is never silently replaced.

Example:
    >>> from tl_concepts.corpus import load_corpus
    >>> load_corpus(["One sentence. Another one."]).n_docs
    1
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from tl_concepts.corpus.types import Corpus, Sentence
from tl_concepts.errors import NotFoundError, ConfigError, InputError

_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


_ABBREV = {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "sr.", "jr.", "vs.", "etc.", "e.g.", "i.e.",
           "no.", "mt.", "gen.", "col.", "lt.", "sgt.", "capt.", "gov.", "sen.", "rep.", "inc.", "co."}


def split_sentences(text: str) -> list[str]:
    """Split raw text into sentences at ., ! or ? followed by a capital or digit.

    Common abbreviations (Dr., Mr., e.g., ...) and initials (J.) do not end a sentence.
    """
    out: list[str] = []
    for part in _SENT_END.split(text.strip()):
        part = part.strip()
        if not part:
            continue
        last = out[-1].split()[-1].lower() if out else ""
        if out and (last in _ABBREV or (len(last) == 2 and last[0].isalpha() and last[1] == ".")):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


def from_texts(texts: Iterable[str], name: str = "texts") -> Corpus:
    """A corpus with one document per string; sentences split by punctuation, words by whitespace."""
    sentences: list[Sentence] = []
    doc = 0
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"corpus texts must be strings, got {type(text).__name__}")
        sents = [s.split() for s in split_sentences(text)]
        sents = [w for w in sents if w]
        if not sents:
            continue
        sentences.extend(Sentence(doc=doc, words=w) for w in sents)
        doc += 1
    if not sentences:
        raise InputError(f"corpus '{name}' is empty: no text with any words in it")
    return Corpus(name, sentences)


def _texts_from_records(records: Iterable[dict[str, Any]], column: str, where: str) -> list[str]:
    texts = []
    for rec in records:
        if column not in rec:
            cols = ", ".join(sorted(rec)) or "none"
            raise NotFoundError(f"{where} has no text column '{column}' (columns: {cols}); pass text_column=")
        texts.append(rec[column])
    if not any(isinstance(t, str) and t.strip() for t in texts):
        raise InputError(f"the text column '{column}' of {where} is empty")
    return [t for t in texts if isinstance(t, str)]


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it, else a :class:`ConfigError` naming common choices."""
    import codecs

    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ConfigError(f"unknown text encoding {encoding!r}; use e.g. utf-8, utf-16, latin-1 or cp1252") from None


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole text of a file, decoded strictly with ``encoding`` (a UTF-8 byte-order mark
    is dropped).

    An undecodable byte raises :class:`InputError` naming the file, the line number and the
    byte offset, and how to choose another encoding.

    Example:
        >>> read_text("corpus.txt", encoding="latin-1")   # doctest: +SKIP
    """
    path = Path(path)
    name = check_encoding(encoding)
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].decode(encoding, errors="replace").count("\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
        bad = raw[e.start: e.end].hex(" ")
        raise InputError(
            f"{path}: line {line} cannot be read as {name}: byte(s) {bad} at byte offset {e.start} (byte "
            f"{col} of the line) ({e.reason}). Pass the file's real encoding (encoding='latin-1', "
            "'cp1252', ... or --encoding), or convert the file to UTF-8") from None
    if name == "utf-8" and text.startswith("\ufeff"):
        text = text[1:]
    return text


def from_file(path: str | Path, text_column: str = "text", encoding: str = "utf-8") -> Corpus:
    """A corpus from ``.txt`` (one document per non-empty line), ``.jsonl`` or ``.parquet``.

    Text files are decoded strictly with ``encoding`` (UTF-8 by default), see :func:`read_text`.

    Example:
        >>> from_file("notes.txt", encoding="cp1252").n_docs   # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".cor", ".text"):
        lines = read_text(path, encoding).splitlines()
        return from_texts([ln for ln in lines if ln.strip()], name=path.name)
    if suffix in (".jsonl", ".json"):
        text = read_text(path, encoding)
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                recs = json.loads(text)
            except ValueError as e:
                raise InputError(f"{path}: not valid JSON ({e}); fix the file") from None
            if not all(isinstance(r, dict) for r in recs):
                raise InputError(f"{path}: a JSON corpus must be a list of objects with a '{text_column}' field")
        else:
            recs = []
            for i, ln in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is legal inside JSON
                if not ln.strip():
                    continue
                try:
                    rec = json.loads(ln)
                except ValueError as e:
                    raise InputError(f"{path}: line {i} is not valid JSON ({e}); fix the line or remove it") from None
                if not isinstance(rec, dict):
                    raise InputError(f"{path}: line {i} is not a JSON object with a '{text_column}' field")
                recs.append(rec)
        return from_texts(_texts_from_records(recs, text_column, str(path)), name=path.name)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_column not in table.column_names:
            raise NotFoundError(f"{path} has no text column '{text_column}' "
                           f"(columns: {', '.join(table.column_names)}); pass text_column=")
        return from_texts(_texts_from_records(table.to_pylist(), text_column, str(path)), name=path.name)
    raise InputError(f"unsupported corpus file type '{suffix}': use .txt, .jsonl or .parquet")


def from_dataset(name_or_path: str, text_column: str = "text", split: str = "train",
                 max_docs: int | None = None, encoding: str = "utf-8", **load_kwargs: Any) -> Corpus:
    """A corpus from a ``datasets`` dataset (Hub name or local folder/files).

    ``encoding`` is passed to the text/JSON/CSV readers of a local folder when it is not
    UTF-8 (Parquet and Arrow data carry no text encoding).
    """
    import datasets

    check_encoding(encoding)
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        load_kwargs.setdefault("encoding", encoding)
    try:
        ds = datasets.load_dataset(name_or_path, split=split, **load_kwargs)
    except UnicodeDecodeError as e:
        raise InputError(f"dataset {name_or_path} holds text that is not {encoding} ({e.reason} at byte offset "
                         f"{e.start} of a file); pass its real encoding (encoding=... or --encoding)") from None
    if text_column not in ds.column_names:
        raise NotFoundError(f"dataset {name_or_path} has no text column '{text_column}' "
                       f"(columns: {', '.join(ds.column_names)}); pass text_column=")
    if max_docs is not None:
        ds = ds.select(range(min(max_docs, len(ds))))
    return from_texts(_texts_from_records(ds, text_column, name_or_path), name=str(name_or_path))


def load_corpus(spec: str | Sequence[str] | Corpus, *, text_column: str = "text",
                max_docs: int | None = None, encoding: str = "utf-8") -> Corpus:
    """Resolve a corpus spec.

    ``"lee"`` (embedded, tagged), a list of strings, a ``.txt``/``.jsonl``/``.parquet`` path,
    or a ``datasets`` name / local folder. ``max_docs`` keeps the first documents; text
    files are read with ``encoding`` (UTF-8 by default; an undecodable byte is an error).

    Example:
        >>> load_corpus(["One sentence. Another one."]).n_docs
        1
    """
    if isinstance(spec, Corpus):
        corpus = spec
    elif isinstance(spec, (list, tuple)):
        corpus = from_texts(spec)
    elif isinstance(spec, str) and spec == "lee":
        from tl_concepts.corpus.embedded import lee_corpus

        corpus = lee_corpus()
    elif isinstance(spec, str) and Path(spec).is_file():
        corpus = from_file(spec, text_column=text_column, encoding=encoding)
    elif isinstance(spec, str):
        corpus = from_dataset(spec, text_column=text_column, max_docs=max_docs, encoding=encoding)
    else:
        raise TypeError(f"cannot read a corpus from {type(spec).__name__}: pass 'lee', a list of "
                        "strings, a file path or a datasets name")
    if max_docs is not None:
        corpus = corpus.head(max_docs)
    if not corpus.sentences:
        raise InputError("the corpus is empty")
    return corpus
