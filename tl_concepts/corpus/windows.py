"""Tokenise a corpus for one model and cut it into model contexts ("windows").

Every model token keeps its document, sentence, position and the whitespace word it
belongs to. Windows are packed from whole sentences up to ``max_tokens`` corpus tokens;
a sentence longer than that is split at word boundaries (never silently cut).

Example:
    >>> w = make_windows(corpus, tokenizer, max_tokens=64)      # doctest: +SKIP
    >>> w.n_windows, w.token_ids[0][:5]                          # doctest: +SKIP
"""
from __future__ import annotations

from tl_concepts.errors import ConfigError

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tl_concepts.corpus.types import Corpus


@dataclass
class Windows:
    """A tokenised corpus cut into model contexts. Token columns are flat over all windows."""

    window_start: np.ndarray
    """int64 [n_windows + 1]: row offsets of each window in the flat token columns."""
    token_id: np.ndarray
    """int64 [n_tokens]: model token id."""
    doc: np.ndarray
    """int64 [n_tokens]: document index."""
    sentence: np.ndarray
    """int64 [n_tokens]: global sentence index."""
    word_id: np.ndarray
    """int64 [n_tokens]: global word index (row of the words table), -1 for none."""
    position: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """int64 [n_tokens]: position of the token inside its window (0 = first corpus token)."""

    @property
    def n_windows(self) -> int:
        return len(self.window_start) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.window_start[-1])

    def window(self, i: int) -> slice:
        return slice(int(self.window_start[i]), int(self.window_start[i + 1]))


def _doc_tokens(text: str, char_word: np.ndarray, tokenizer: Any) -> tuple[list[int], list[int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, words = [], []
    for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
        span = char_word[s:e]
        hit = span[span >= 0]
        if len(hit):
            w = int(hit[0])
        elif e < len(char_word) and char_word[e] >= 0:  # a bare space token: goes with the next word
            w = int(char_word[e])
        else:
            w = -1
        ids.append(int(tid))
        words.append(w)
    return ids, words


def make_windows(corpus: Corpus, tokenizer: Any, max_tokens: int) -> Windows:
    """Tokenise ``corpus`` document by document and pack sentences into windows."""
    if max_tokens < 2:
        raise ConfigError(f"max_tokens must be at least 2, got {max_tokens}")
    if not getattr(tokenizer, "is_fast", True):
        raise TypeError("word alignment needs a fast (Rust) tokenizer with offset mappings")
    # Word rows and sentence ids, in corpus order.
    word_sentence: list[int] = []
    by_doc: dict[int, list[int]] = {}
    for si, s in enumerate(corpus.sentences):
        by_doc.setdefault(s.doc, []).append(si)
        word_sentence.extend([si] * len(s.words))
    sent_first_word = np.zeros(len(corpus.sentences) + 1, np.int64)
    np.cumsum([len(s.words) for s in corpus.sentences], out=sent_first_word[1:])
    word_sentence_arr = np.asarray(word_sentence, np.int64)

    starts, tok_ids, docs, sents, words = [0], [], [], [], []

    def emit(ids: list[int], ws: list[int], doc: int) -> None:
        last_s = None
        for t, w in zip(ids, ws):
            s = int(word_sentence_arr[w]) if w >= 0 else last_s
            last_s = s
            tok_ids.append(t)
            docs.append(doc)
            sents.append(-1 if s is None else s)
            words.append(w)
        starts.append(len(tok_ids))

    for doc, sent_ids in by_doc.items():
        pieces: list[str] = []
        char_word: list[int] = []
        for si in sent_ids:
            s = corpus.sentences[si]
            for j, word in enumerate(s.words):
                if pieces:
                    pieces.append(" ")
                    char_word.append(-1)
                pieces.append(word)
                char_word.extend([int(sent_first_word[si]) + j] * len(word))
        text = "".join(pieces)
        ids, ws = _doc_tokens(text, np.asarray(char_word, np.int64), tokenizer)
        # Pack whole sentences; split over-long ones at word boundaries.
        cur_ids: list[int] = []
        cur_ws: list[int] = []
        i = 0
        n = len(ids)
        while i < n:
            # extent of the sentence starting at token i
            s_of = word_sentence_arr[ws[i]] if ws[i] >= 0 else None
            j = i + 1
            while j < n and (ws[j] < 0 or word_sentence_arr[ws[j]] == s_of):
                j += 1
            sent_ids_, sent_ws = ids[i:j], ws[i:j]
            if len(cur_ids) + len(sent_ids_) > max_tokens and cur_ids:
                emit(cur_ids, cur_ws, doc)
                cur_ids, cur_ws = [], []
            while len(sent_ids_) > max_tokens:
                cut = max_tokens
                # back off to a word boundary when one exists in the window
                while cut > 1 and sent_ws[cut] == sent_ws[cut - 1]:
                    cut -= 1
                if cut <= 1:
                    cut = max_tokens
                emit(sent_ids_[:cut], sent_ws[:cut], doc)
                sent_ids_, sent_ws = sent_ids_[cut:], sent_ws[cut:]
            cur_ids += sent_ids_
            cur_ws += sent_ws
            i = j
        if cur_ids:
            emit(cur_ids, cur_ws, doc)

    start_arr = np.asarray(starts, np.int64)
    position = np.concatenate([np.arange(start_arr[k + 1] - start_arr[k]) for k in range(len(starts) - 1)]
                              ) if len(starts) > 1 else np.zeros(0, np.int64)
    return Windows(window_start=start_arr, token_id=np.asarray(tok_ids, np.int64),
                   doc=np.asarray(docs, np.int64), sentence=np.asarray(sents, np.int64),
                   word_id=np.asarray(words, np.int64), position=position.astype(np.int64))
