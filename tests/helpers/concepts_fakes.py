"""Helpers for the concept tests: synthetic word representations, flat concept sets and a fake LLM."""
from __future__ import annotations

import asyncio
from typing import Callable, Sequence

import numpy as np

from tl_concepts.concepts.inputs import ConceptInput
from tl_concepts.concepts.model import ConceptSet
from tl_concepts.llm.base import LLM, ChatResult, Distributions, Failure, Message

CATEGORIES = {
    "animal": (["cat", "dog", "horse", "cow"], "NN"),
    "verb": (["ran", "ate", "slept", "sang"], "VBD"),
    "colour": (["red", "blue", "green", "pink"], "JJ"),
    "city": (["Paris", "Rome", "Oslo", "Lima"], "NNP"),
}


def make_input(n_per_type: int = 12, dim: int = 16, noise: float = 0.3, seed: int = 0) -> ConceptInput:
    """4 categories x 4 types x n_per_type occurrences: category centre + type offset + noise,
    so K=4 recovers the categories and K=16 the types."""
    rng = np.random.default_rng(seed)
    centres = {c: rng.normal(scale=5.0, size=dim) for c in CATEGORIES}
    reps, cols = [], {k: [] for k in ("word_id", "doc", "sentence", "index", "text", "pos", "ner")}
    sentences: list[str] = []
    for cat, (words, tag) in CATEGORIES.items():
        for w in words:
            offset = rng.normal(scale=1.5, size=dim)
            for j in range(n_per_type):
                sid = len(sentences)
                sentences.append(f"the {w} was here {j}")
                cols["word_id"].append(len(cols["text"]))
                cols["doc"].append(0)
                cols["sentence"].append(sid)
                cols["index"].append(1)
                cols["text"].append(w)
                cols["pos"].append(tag)
                cols["ner"].append("GPE" if cat == "city" else "")
                reps.append(centres[cat] + offset + rng.normal(scale=noise, size=dim))
    return ConceptInput(np.asarray(reps, dtype=np.float32), cols, sentences, layer=3, hook="blocks.3.hook_resid_post")


def flat_set(groups: dict[int, list[tuple[int, str]]]) -> ConceptSet:
    """A flat concept set (layer 2, 20 sentences): concept id -> [(sentence, word)] members."""
    pts: dict[str, list] = {"word_id": [], "sentence": [], "index": [], "text": []}
    assign = []
    for cid, members in groups.items():
        for s, w in members:
            pts["word_id"].append(len(pts["text"]))
            pts["sentence"].append(s)
            pts["index"].append(0)
            pts["text"].append(w)
            assign.append(cid)
    sentences = [f"sentence {i}" for i in range(20)]
    return ConceptSet(pts, k=0, assignment=np.asarray(assign), sentences=sentences, layer=2)


class FakeLLM(LLM):
    """Answers with ``respond(messages) -> str | Failure`` and counts calls."""

    name = "fake"
    model = "fake-model"

    def __init__(self, respond: Callable[[Sequence[Message]], "str | Failure"]) -> None:
        self.respond = respond
        self.calls: list[list[Message]] = []
        self.max_concurrent = 0
        self._active = 0

    async def achat(self, messages, *, temperature=0.0, max_tokens=256, json_output=False, stage="default"):
        self.calls.append(list(messages))
        self._active += 1
        self.max_concurrent = max(self.max_concurrent, self._active)
        await asyncio.sleep(0.001)
        self._active -= 1
        out = self.respond(messages)
        if isinstance(out, Failure):
            return ChatResult(None, out, model=self.model, backend=self.name)
        return ChatResult(out, model=self.model, backend=self.name)

    async def anext_token_distributions(self, prompt, positions, candidates, *, stage="default"):
        return Distributions(None, failure=Failure("error", "not used"))


def words_of(messages: Sequence[Message]) -> list[str]:
    """The word list a label/judge prompt shows."""
    for line in messages[-1].content.splitlines():
        if line.startswith("Words: ") or line.startswith("Word group: "):
            return line.split(": ", 1)[1].split(", ")
    return []


def category_of(words: Sequence[str]) -> str:
    for cat, (ws, _) in CATEGORIES.items():
        if all(w in ws for w in words):
            return cat
    return "mixed"
