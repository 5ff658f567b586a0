"""Versioned prompt templates for labelling and judging concepts.

Written for this project after the protocol Mousi et al. 2023 describe (zero-shot, a
system instruction, the concept's words as a list, optionally a few context sentences):

* ``label-general`` v1: a short semantic/linguistic label for the word group;
* ``label-lexical`` v1: the n-gram the words share, or ``NA``;
* ``label-pos`` v1: the one Penn Treebank tag the words share, or ``NA``;
* ``judge`` v1: rate a label acceptable/unacceptable and precise/imprecise (JSON);
* ``agree`` v1: do two labels name the same concept (yes/no).

Each label template is rendered with or without context sentences and with the words as
tokens (with repeats) or types; the template's name and version travel with every label.

Example:
    >>> t = TEMPLATES["label-pos"]
    >>> msgs = t.render(words=["run", "eat", "run"], contexts=[], words_as="types")
    >>> msgs[-1].content.splitlines()[-1]
    'Words: run, eat'
    >>> t.parse("VB").label, t.parse("The tag is NNP.").label, t.parse("banana").status
    ('VB', 'NNP', 'unparseable')
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from tl_concepts.llm.base import Message

PENN_TAGS = frozenset(
    "CC CD DT EX FW IN JJ JJR JJS LS MD NN NNS NNP NNPS PDT POS PRP PRP$ RB RBR RBS RP SYM TO UH "
    "VB VBD VBG VBN VBP VBZ WDT WP WP$ WRB".split()) | frozenset({"-LRB-", "-RRB-", ",", ".", ":", "``", "''", "$", "#", "HYPH", "NFP", "ADD", "AFX", "XX", "_SP"})

_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|i won'?t|i will not|i'?m unable|"
    r"i am unable|as an ai|i do not feel comfortable|i'?m not able)", re.I)


@dataclass
class Parsed:
    """A parsed answer."""

    label: str | None
    """The label (None when unusable)."""
    status: str
    """``ok``, ``refusal`` or ``unparseable``."""


def is_refusal(text: str) -> bool:
    """True when an answer reads as the model declining the task."""
    return bool(_REFUSAL.search(text or ""))


def _first_line(text: str) -> str:
    for line in (text or "").strip().splitlines():
        line = line.strip()
        if line:
            return line
    return ""


def _clean(s: str) -> str:
    s = re.sub(r"^(label|concept|answer|n-?gram|tag|words?)\s*[:\-]\s*", "", s.strip(), flags=re.I)
    prev = None
    while prev != s:
        prev = s
        s = s.strip().strip("*`\"'“”‘’ ").rstrip(".").strip()
    return s


def parse_general(text: str) -> Parsed:
    """First non-empty line, without a ``Label:`` prefix, quotes or a final full stop."""
    if is_refusal(text):
        return Parsed(None, "refusal")
    lab = _clean(_first_line(text))
    if not lab or len(lab) > 120:
        return Parsed(None, "unparseable")
    return Parsed(lab, "ok")


def parse_lexical(text: str) -> Parsed:
    """The shared n-gram, or ``NA``."""
    if is_refusal(text):
        return Parsed(None, "refusal")
    lab = _clean(_first_line(text))
    if re.fullmatch(r"n/?a|none|no common n-?gram", lab, flags=re.I):
        return Parsed("NA", "ok")
    if not lab or len(lab.split()) > 5:
        return Parsed(None, "unparseable")
    return Parsed(lab, "ok")


def parse_pos(text: str) -> Parsed:
    """A Penn Treebank tag (the first one mentioned), or ``NA``."""
    if is_refusal(text):
        return Parsed(None, "refusal")
    first = _first_line(text)
    if re.fullmatch(r"\W*(n/?a|none)\W*", first, flags=re.I):
        return Parsed("NA", "ok")
    for tok in re.findall(r"[A-Z]{2,4}\$?", first):
        if tok in PENN_TAGS:
            return Parsed(tok, "ok")
    if re.search(r"\bNA\b", first):
        return Parsed("NA", "ok")
    return Parsed(None, "unparseable")


def word_list(words: Sequence[str], words_as: str, limit: int = 100) -> list[str]:
    """The words to show: every token (with repeats) or the distinct types, most frequent
    first; at most ``limit``."""
    if words_as == "types":
        return [w for w, _ in sorted(Counter(words).items(), key=lambda kv: (-kv[1], kv[0]))][:limit]
    if words_as != "tokens":
        raise ValueError(f"words_as must be 'tokens' or 'types'; got {words_as!r}")
    return list(words)[:limit]


@dataclass(frozen=True)
class LabelTemplate:
    """A named, versioned label prompt."""

    name: str
    """Template name (stored with every label)."""
    version: str
    """Template version (bump when the text changes)."""
    system: str
    """System instruction."""
    task: str
    """The request, placed before the words."""
    parse: Callable[[str], Parsed]
    """Answer parser."""
    max_tokens: int = 32
    """Answer budget."""

    def render(self, words: Sequence[str], contexts: Sequence[tuple[str, str]] = (),
               words_as: str = "tokens", max_words: int = 100) -> list[Message]:
        """Chat messages for one concept. ``contexts`` are (word, sentence) pairs."""
        shown = word_list(words, words_as, max_words)
        parts = [self.task]
        if contexts:
            parts.append("Sentences where the words occur (the word is marked [[like this]]):")
            for w, sent in contexts:
                parts.append("- " + _mark(sent, w))
        parts.append("Words: " + ", ".join(shown))
        return [Message("system", self.system), Message("user", "\n".join(parts))]


def _mark(sentence: str, word: str) -> str:
    toks = sentence.split()
    for i, t in enumerate(toks):
        if t == word:
            toks[i] = f"[[{t}]]"
            return " ".join(toks)
    return sentence


TEMPLATES: dict[str, LabelTemplate] = {
    "label-general": LabelTemplate(
        name="label-general", version="v1",
        system=("You are a linguist who annotates groups of words. The words in a group were "
                "grouped together by a language model because they play a similar role."),
        task=("Give one short label (at most five words) naming the concept that the following "
              "words share; it may be semantic, syntactic, morphological or lexical. Answer "
              "with the label only."),
        parse=parse_general, max_tokens=24),
    "label-lexical": LabelTemplate(
        name="label-lexical", version="v1",
        system="You are a linguist who annotates groups of words by their surface form.",
        task=("Do all of the following words share a common n-gram (the same word, prefix, "
              "suffix or character sequence)? Answer with that n-gram only, or NA if there is none."),
        parse=parse_lexical, max_tokens=12),
    "label-pos": LabelTemplate(
        name="label-pos", version="v1",
        system="You are a linguist who annotates groups of words with part-of-speech tags.",
        task=("Which single Penn Treebank part-of-speech tag (for example NN, NNS, NNP, VB, "
              "VBD, JJ, RB, IN, DT, CD) do all of the following words share? Answer with the "
              "tag only, or NA if they do not share one."),
        parse=parse_pos, max_tokens=8),
}
"""Label templates by name."""


# -- judging -------------------------------------------------------------------------------
JUDGE_NAME, JUDGE_VERSION = "judge", "v1"
JUDGE_SYSTEM = ("You evaluate labels that an annotator gave to groups of words. Be strict and "
                "answer in JSON only.")


def render_judge(words: Sequence[str], label: str, contexts: Sequence[tuple[str, str]] = (),
                 max_words: int = 60) -> list[Message]:
    """Messages asking whether ``label`` is acceptable and precise for the word group."""
    parts = ["Word group: " + ", ".join(word_list(words, "types", max_words))]
    if contexts:
        parts.append("Example sentences:")
        parts += ["- " + _mark(s, w) for w, s in contexts]
    parts.append(f"Label: {label}")
    parts.append(
        "Is the label acceptable, i.e. does it correctly describe what most of the words have "
        "in common? If acceptable, is it precise (specific to this group) or imprecise (true "
        'but too broad or too narrow)? Reply as {"acceptable": "yes" or "no", "precise": '
        '"yes" or "no"}.')
    return [Message("system", JUDGE_SYSTEM), Message("user", "\n".join(parts))]


def parse_judge(text: str) -> tuple[bool, bool] | None:
    """(acceptable, precise) from a judge answer, or None when unparseable.
    An unacceptable label is never precise."""
    if not text:
        return None
    m = re.search(r"\{.*?\}", text, flags=re.S)
    acc = prec = None
    if m:
        try:
            obj = json.loads(m.group(0))
            acc, prec = _yes(obj.get("acceptable")), _yes(obj.get("precise"))
        except (json.JSONDecodeError, AttributeError):
            pass
    if acc is None:
        ma = re.search(r"acceptable\W+(yes|no|true|false)", text, flags=re.I)
        mp = re.search(r"precise\W+(yes|no|true|false)", text, flags=re.I)
        acc = _yes(ma.group(1)) if ma else None
        prec = _yes(mp.group(1)) if mp else prec
    if acc is None:
        return None
    return acc, bool(acc and prec)


def _yes(v: object) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in {"yes", "true", "y"}:
        return True
    if isinstance(v, str) and v.strip().lower() in {"no", "false", "n"}:
        return False
    return None


AGREE_NAME, AGREE_VERSION = "agree", "v1"


def render_agree(words: Sequence[str], label_a: str, label_b: str) -> list[Message]:
    """Messages asking whether two labels name the same concept of a word group."""
    return [Message("system", JUDGE_SYSTEM), Message("user", "\n".join([
        "Word group: " + ", ".join(word_list(words, "types", 40)),
        f"Label A: {label_a}", f"Label B: {label_b}",
        'Do labels A and B describe the same concept of this group? Reply as {"same": "yes" or "no"}.']))]


def parse_agree(text: str) -> bool | None:
    """True/False from an agreement answer, or None when unparseable."""
    m = re.search(r"same\W+(yes|no|true|false)", text or "", flags=re.I)
    if m:
        return _yes(m.group(1))
    first = _first_line(text).lower().strip(".! ")
    return _yes(first)
