"""The versioned one-shot prompt that asks an LLM for a sentence's descriptors.

Following the protocol of Mondal et al. (a task statement, one worked example, then the
sentence), written for this project: the example is a user/assistant exchange so chat
models see the answer format once. The answer must contain a JSON list of short strings;
a bulleted or single-line comma list is accepted too. An answer that stops inside its list
(cut off by the completion budget) is *truncated*; anything else is *unparseable*. Both are
recorded as failures, never turned into a shorter or empty descriptor list.

Example:
    >>> msgs = TEMPLATE.render("Shares fell sharply in Tokyo.")
    >>> [m.role for m in msgs]
    ['system', 'user', 'assistant', 'user']
    >>> TEMPLATE.parse('["Stock market", "Japan"]').descriptors
    ['stock market', 'japan']
    >>> TEMPLATE.parse("I like turtles because they are slow and old.").status
    'unparseable'
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from tl_concepts.llm.base import Message
from tl_concepts.llm.templates import PromptTemplate, TemplateRegistry

_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|i won'?t|i will not|"
                      r"i'?m unable|i am unable|as an ai)", re.I)
_LIST = re.compile(r"\[[^\[\]]*\]", re.S)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.+)$")


@dataclass
class ParsedDescriptors:
    """A parsed answer."""

    descriptors: list[str]
    """Normalised descriptors (lower case, no surrounding punctuation, de-duplicated)."""
    status: str
    """``ok``, ``refusal``, ``truncated`` (an unterminated list) or ``unparseable``."""
    message: str = ""
    """Why parsing failed, when it did."""


def normalise(text: str) -> str:
    """Lower case, collapse whitespace, strip quotes and surrounding punctuation."""
    t = re.sub(r"\s+", " ", str(text)).strip().lower()
    return t.strip(" \t\"'`.,;:!?()[]{}*-_")


@dataclass(frozen=True, kw_only=True)
class DescriptorTemplate(PromptTemplate):
    """A versioned one-shot prompt plus its answer parser
    (:class:`~tl_concepts.llm.templates.PromptTemplate` plus the one-shot example and the
    limits on the answer). ``system``: the instruction; ``task``: the request, with ``{}``
    where the sentence (as a JSON string) goes."""

    task: str = "Give the descriptors of this sentence as a JSON list of strings.\nSentence: {}"
    """The request; ``{}`` stands for the sentence as a JSON string."""
    example_sentence: str
    """The one-shot example's sentence."""
    example_answer: list[str] = field(default_factory=list)
    """The one-shot example's descriptors."""
    max_descriptors: int = 6
    """Descriptors kept per sentence (extra ones are dropped)."""
    max_words: int = 5
    """Longer items are not descriptors and are dropped."""
    max_tokens: int = 48
    """Completion budget (three descriptors of three words fit in about 20 tokens; a small model
    that loops on one item is cut here and its answer recorded as ``truncated``)."""

    def render(self, sentence: str) -> list[Message]:
        """Chat messages for one sentence."""
        ask = self.task
        return [Message("system", self.system),
                Message("user", ask.format(json.dumps(self.example_sentence))),
                Message("assistant", json.dumps(self.example_answer)),
                Message("user", ask.format(json.dumps(sentence)))]

    def _clean(self, items: list[str]) -> list[str]:
        out: list[str] = []
        for it in items:
            d = normalise(it)
            if d and re.search(r"[a-z]", d) and len(d.split()) <= self.max_words and d not in out:
                out.append(d)
        return out[: self.max_descriptors]

    def parse(self, text: str) -> ParsedDescriptors:
        """Descriptors from an answer (see the module docstring for what is accepted)."""
        text = text or ""
        if _REFUSAL.search(text):
            return ParsedDescriptors([], "refusal", "the model declined")
        for m in _LIST.finditer(text):
            try:
                items = json.loads(m.group(0))
            except json.JSONDecodeError:
                continue
            if isinstance(items, list) and all(isinstance(i, str) for i in items):
                got = self._clean(items)
                if got:
                    return ParsedDescriptors(got, "ok")
        opened = text.rfind("[")
        if opened >= 0 and "]" not in text[opened:]:
            return ParsedDescriptors([], "truncated", "the answer stops inside a list (cut off by the completion "
                                                      "budget); nothing of it is used")
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        bullets = [b.group(1) for ln in lines if (b := _BULLET.match(ln))]
        if bullets and len(bullets) == len(lines):
            got = self._clean(bullets)
            if got:
                return ParsedDescriptors(got, "ok")
        if len(lines) == 1 and "," in lines[0]:
            parts = [p for p in lines[0].split(",") if p.strip()]
            if all(len(normalise(p).split()) <= self.max_words for p in parts):
                got = self._clean(parts)
                if got:
                    return ParsedDescriptors(got, "ok")
        return ParsedDescriptors([], "unparseable", "no JSON list, bullet list or comma list of short phrases")


TEMPLATE = DescriptorTemplate(
    name="descriptors",
    version="v2",  # v2: exactly three descriptors (small models loop less); a cut-off list is a failure
    system=("You tag sentences with descriptors: short noun phrases of one to three words that name "
            "what a sentence is about or what it expresses (its topic, the kind of entities it "
            "mentions, its sentiment, its style). Give exactly three different descriptors, general "
            "enough to be shared by other sentences. Answer with a JSON list of three strings and "
            "nothing else."),
    example_sentence="The battery died after two days and nobody from support answered my emails.",
    example_answer=["battery life", "customer support", "complaint"],
)
"""The default template (``descriptors`` v2)."""

TEMPLATES: TemplateRegistry[DescriptorTemplate] = TemplateRegistry("descriptors", [TEMPLATE])
"""Template name -> template (an unknown name raises an error listing these)."""
