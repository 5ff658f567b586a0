"""Corpus sources: strings, files, datasets; the embedded Lee corpus and gold classes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tl_concepts.corpus import from_texts, gold_word_categories, lee_corpus, load_corpus, split_sentences
from tl_concepts.corpus.windows import make_windows


def test_from_texts_splits_sentences_and_words():
    c = from_texts(["Dr. Smith left. He came back on Monday! Really? Yes.", "", "Second doc"])
    assert c.n_docs == 2
    assert [s.words for s in c.sentences if s.doc == 0][1] == ["He", "came", "back", "on", "Monday!"]
    assert split_sentences("One. Two.") == ["One.", "Two."]
    assert c.fingerprint() != from_texts(["Other text."]).fingerprint()


def test_file_sources(tmp_path):
    (tmp_path / "a.txt").write_text("First doc here.\n\nSecond doc here.\n")
    assert load_corpus(str(tmp_path / "a.txt")).n_docs == 2
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in ["A b.", "C d."]))
    assert load_corpus(str(tmp_path / "b.jsonl"), text_column="body").n_docs == 2
    with pytest.raises(KeyError, match="no text column 'text'.*body"):
        load_corpus(str(tmp_path / "b.jsonl"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["One doc.", "Two doc.", "Three."]}), tmp_path / "c.parquet")
    assert load_corpus(str(tmp_path / "c.parquet"), max_docs=2).n_docs == 2
    (tmp_path / "e.jsonl").write_text(json.dumps({"text": "  "}) + "\n")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(str(tmp_path / "e.jsonl"))


def test_datasets_source_from_local_files(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"txt": f"Doc {i} says hi."}) for i in range(5)))
    from tl_concepts.corpus import from_dataset

    c = from_dataset("json", text_column="txt", data_files=str(tmp_path / "d.jsonl"), max_docs=3)
    assert c.n_docs == 3 and c.sentences[0].words == ["Doc", "0", "says", "hi."]


def test_long_sentences_are_split_not_cut(tiny_bridge):
    words = " ".join(f"word{i}" for i in range(200))
    c = from_texts([words + "."])
    w = make_windows(c, tiny_bridge.tokenizer, max_tokens=32)
    full = tiny_bridge.tokenizer(c.sentences[0].text, add_special_tokens=False).input_ids
    assert w.n_tokens == len(full) and w.token_id.tolist() == full
    assert w.n_windows > 1 and max(np.diff(w.window_start)) <= 32
    # cuts fall on word boundaries
    for s in w.window_start[1:-1]:
        assert w.word_id[s] != w.word_id[s - 1]


@pytest.mark.slow
def test_lee_corpus_is_tagged_and_gold_classes_load():
    c = lee_corpus()
    assert c.n_docs >= 299 and 55_000 < c.n_words < 65_000
    assert c.tagged
    tags = {t for s in c.sentences for t in s.pos}
    assert {"NN", "NNP", "VBD", "DT", "IN"} <= tags
    ents = {t for s in c.sentences for t in s.ner}
    assert {"GPE", "PERSON", "ORG"} <= ents
    g = gold_word_categories()
    assert "athens" in g["capital-common-countries:a"] and "greece" in g["capital-common-countries:b"]
    assert len(g) == 28
