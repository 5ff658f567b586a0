"""Versioned prompt templates for labelling and judging concepts.

Written for this project after the protocol Mousi et al. 2023 describe (zero-shot, a
system instruction, the concept's words as a list, optionally a few context sentences):

* ``label-general`` v1: a short semantic/linguistic label for the word group;
* ``label-fewshot`` v1: the same request made easy for small models: five worked examples
  (word groups from outside the corpus and the gold categories: fruits, instruments,
  prepositions, determiners, mountains) as earlier chat turns answered ``Label: <name>``, and
  a 10-token budget. The default for the embedded SmolLM2 (planted-concept label accuracy
  7/15 against 0/15 for ``label-general``: ``benchmarks/truth_concepts.py``);
* ``label-lexical`` v1: the n-gram the words share, or ``NA``;
* ``label-pos`` v1: the one Penn Treebank tag the words share, or ``NA``;
* ``judge`` v2: two yes/no questions (does the label describe most words? is it specific?)
  answered by the next token, so the verdict comes with P(yes);
  ``judge-json`` v1 is its fallback for LLMs without next-token probabilities (one JSON answer);
* ``agree`` v1: do two labels name the same concept (yes/no).

Every template is a :class:`~tl_concepts.llm.templates.PromptTemplate` (labels: the
:class:`LabelTemplate` subclass, which adds the parser and answer budget).

Each label template is rendered with or without context sentences and with the words as
tokens (with repeats) or types; the template's name and version travel with every label.

Every parsed answer then passes :func:`label_gate`: an echo of the member words, a label of
more than 8 words, an empty answer or ``NA`` is not accepted (status ``rejected``).

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

from tl_concepts.errors import ConfigError
from tl_concepts.llm.base import Message
from tl_concepts.llm.templates import PromptTemplate, TemplateRegistry

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


GATE_MAX_WORDS = 8
"""Labels longer than this many words are rejected (``too_long``)."""

_NA = {"na", "n a", "none", "nothing", "no label", "unknown", "no common concept"}


def _stem(word: str) -> str:
    w = word.lower().strip("'\"`.,;:!?()[]{}")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    return w


def label_gate(label: str | None, words: Sequence[str]) -> str | None:
    """Why ``label`` is not an acceptable label of a concept with member ``words``, or None.

    Reasons: ``empty``; ``na`` (NA, N/A, none); ``too_long`` (more than
    :data:`GATE_MAX_WORDS` words); ``echo``: the label lists member words: a list of three or
    more comma/semicolon/slash separated items, or at least two of its words are member words
    (plural ``s`` ignored) and they make up at least half of its words.

    Example:
        >>> label_gate("called, called, calling, calling", ["called", "calling", "calls"])
        'echo'
        >>> label_gate("verbs of speaking", ["called", "said", "told"]) is None
        True
        >>> label_gate("N/A", ["a"]), label_gate("", ["a"])
        ('na', 'empty')
    """
    text = (label or "").strip()
    if not text:
        return "empty"
    norm = " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
    if norm in _NA or not norm:
        return "na" if norm in _NA else "empty"
    items = [x for x in re.split(r"[,;/|]", text) if x.strip()]
    if len(items) >= 3:
        return "echo"
    members = {_stem(w) for w in words if w.strip()}
    toks = re.findall(r"\w+(?:'\w+)?", text.lower())
    hits = sum(_stem(t) in members for t in toks)
    if hits >= 2 and 2 * hits >= len(toks):
        return "echo"
    if len(text.split()) > GATE_MAX_WORDS:
        return "too_long"
    return None


def word_list(words: Sequence[str], words_as: str, limit: int = 100) -> list[str]:
    """The words to show: every token (with repeats) or the distinct types, most frequent
    first; at most ``limit``."""
    if words_as == "types":
        return [w for w, _ in sorted(Counter(words).items(), key=lambda kv: (-kv[1], kv[0]))][:limit]
    if words_as != "tokens":
        raise ConfigError(f"words_as must be 'tokens' or 'types'; got {words_as!r}")
    return list(words)[:limit]


@dataclass(frozen=True, kw_only=True)
class LabelTemplate(PromptTemplate):
    """A named, versioned label prompt (:class:`~tl_concepts.llm.templates.PromptTemplate`
    plus an answer parser and budget). ``system``: the instruction; ``task``: the request,
    placed before the words; ``examples``: worked examples shown as earlier chat turns,
    (comma-separated words, answer) pairs."""

    parse: Callable[[str], Parsed]
    """Answer parser."""
    max_tokens: int = 32
    """Answer budget."""
    answer_prefix: str = ""
    """What the answer starts with (e.g. ``Label:``; the parser strips it)."""

    def render(self, words: Sequence[str], contexts: Sequence[tuple[str, str]] = (),
               words_as: str = "tokens", max_words: int = 100) -> list[Message]:
        """Chat messages for one concept. ``contexts`` are (word, sentence) pairs."""
        shown = word_list(words, words_as, max_words)
        msgs = [Message("system", self.system)]
        for ex_words, ex_answer in self.examples:
            msgs += [Message("user", f"{self.task}\nWords: {ex_words}"),
                     Message("assistant", f"{self.answer_prefix} {ex_answer}".strip())]
        parts = [self.task]
        if contexts:
            parts.append("Sentences where the words occur (the word is marked [[like this]]):")
            for w, sent in contexts:
                parts.append("- " + _mark(sent, w))
        parts.append("Words: " + ", ".join(shown))
        return msgs + [Message("user", "\n".join(parts))]


def _mark(sentence: str, word: str) -> str:
    toks = sentence.split()
    for i, t in enumerate(toks):
        if t == word:
            toks[i] = f"[[{t}]]"
            return " ".join(toks)
    return sentence


TEMPLATES: TemplateRegistry[LabelTemplate] = TemplateRegistry("label", [
    LabelTemplate(
        name="label-general", version="v1",
        system=("You are a linguist who annotates groups of words. The words in a group were "
                "grouped together by a language model because they play a similar role."),
        task=("Give one short label (at most five words) naming the concept that the following "
              "words share; it may be semantic, syntactic, morphological or lexical. Answer "
              "with the label only."),
        parse=parse_general, max_tokens=24),
    LabelTemplate(
        name="label-fewshot", version="v1",
        system=("You name what a group of words has in common. Use one to four words. Do not repeat "
                "the words."),
        task="What do these words have in common?",
        examples=(("apple, cherry, grape, lemon, plum, peach", "fruits"),
                  ("violin, piano, flute, guitar, drum, trumpet", "musical instruments"),
                  ("of, in, on, at, with, from", "prepositions"),
                  ("the, a, an, this, that, these, those", "determiners"),
                  ("Everest, Kilimanjaro, Fuji, Olympus", "mountains")),
        answer_prefix="Label:", parse=parse_general, max_tokens=10),
    LabelTemplate(
        name="label-lexical", version="v1",
        system="You are a linguist who annotates groups of words by their surface form.",
        task=("Do all of the following words share a common n-gram (the same word, prefix, "
              "suffix or character sequence)? Answer with that n-gram only, or NA if there is none."),
        parse=parse_lexical, max_tokens=12),
    LabelTemplate(
        name="label-pos", version="v1",
        system="You are a linguist who annotates groups of words with part-of-speech tags.",
        task=("Which single Penn Treebank part-of-speech tag (for example NN, NNS, NNP, VB, "
              "VBD, JJ, RB, IN, DT, CD) do all of the following words share? Answer with the "
              "tag only, or NA if they do not share one."),
        parse=parse_pos, max_tokens=8),
])
"""Label templates by name (an unknown name raises an error listing these)."""

EMBEDDED_LLM = "SmolLM2-135M-Instruct"


def default_template(llm: object = None) -> str:
    """The label template used when none is named: ``label-fewshot`` for the embedded
    SmolLM2 (it measured better there), ``label-general`` for any other LLM.

    Example:
        >>> default_template(None)
        'label-general'
    """
    return "label-fewshot" if getattr(llm, "model", "") == EMBEDDED_LLM else "label-general"


# -- judging -------------------------------------------------------------------------------
JUDGE_SYSTEM = ("You evaluate labels that an annotator gave to groups of words. Be strict and "
                "answer in JSON only.")
JUDGE_JSON_TEMPLATE = PromptTemplate(
    "judge-json", "v1", system=JUDGE_SYSTEM,
    task=("Is the label acceptable, i.e. does it correctly describe what most of the words have "
          "in common? If acceptable, is it precise (specific to this group) or imprecise (true "
          'but too broad or too narrow)? Reply as {"acceptable": "yes" or "no", "precise": '
          '"yes" or "no"}.'))
"""Judge v1 (the fallback without next-token probabilities): one JSON answer."""
JUDGE_NAME, JUDGE_VERSION = "judge", JUDGE_JSON_TEMPLATE.version


def render_judge(words: Sequence[str], label: str, contexts: Sequence[tuple[str, str]] = (),
                 max_words: int = 60) -> list[Message]:
    """Messages asking whether ``label`` is acceptable and precise for the word group."""
    parts = ["Word group: " + ", ".join(word_list(words, "types", max_words))]
    if contexts:
        parts.append("Example sentences:")
        parts += ["- " + _mark(s, w) for w, s in contexts]
    parts.append(f"Label: {label}")
    parts.append(JUDGE_JSON_TEMPLATE.task)
    return [Message("system", JUDGE_JSON_TEMPLATE.system), Message("user", "\n".join(parts))]


JUDGE_QUESTION_SYSTEM = ("You evaluate labels that an annotator gave to groups of words. Be strict. "
                         "Answer with yes or no only.")
_QUESTIONS = {
    "acceptable": "Does the label correctly describe what most of these words have in common?",
    "precise": "Is the label specific to this group of words, neither too broad nor too narrow?",
}
JUDGE_TEMPLATE = PromptTemplate("judge", "v2", system=JUDGE_QUESTION_SYSTEM, task=" Answer yes or no.",
                                examples=tuple(sorted(_QUESTIONS.items())))
"""Judge v2: one yes/no question per call (``examples``: the questions by name)."""
JUDGE_QUESTION_VERSION = JUDGE_TEMPLATE.version


def render_judge_question(words: Sequence[str], label: str, question: str,
                          contexts: Sequence[tuple[str, str]] = (), max_words: int = 60) -> list[Message]:
    """Messages asking one yes/no question (``acceptable`` or ``precise``) about ``label``
    (judge v2); the verdict is read from the answer's first token.

    Example:
        >>> render_judge_question(["cat", "dog"], "animals", "acceptable")[-1].content.splitlines()[-1]
        'Does the label correctly describe what most of these words have in common? Answer yes or no.'
    """
    parts = ["Word group: " + ", ".join(word_list(words, "types", max_words))]
    if contexts:
        parts.append("Example sentences:")
        parts += ["- " + _mark(s, w) for w, s in contexts]
    parts.append(f"Label: {label}")
    parts.append(_QUESTIONS[question] + JUDGE_TEMPLATE.task)
    return [Message("system", JUDGE_TEMPLATE.system), Message("user", "\n".join(parts))]


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


AGREE_TEMPLATE = PromptTemplate(
    "agree", "v1", system=JUDGE_SYSTEM,
    task='Do labels A and B describe the same concept of this group? Reply as {"same": "yes" or "no"}.')
"""Do two labels name the same concept (JSON yes/no)."""
AGREE_NAME, AGREE_VERSION = AGREE_TEMPLATE.name, AGREE_TEMPLATE.version

JUDGE_TEMPLATES: TemplateRegistry[PromptTemplate] = TemplateRegistry(
    "judge", [JUDGE_JSON_TEMPLATE, JUDGE_TEMPLATE, AGREE_TEMPLATE])
"""Templates that judge labels, by name."""


def render_agree(words: Sequence[str], label_a: str, label_b: str) -> list[Message]:
    """Messages asking whether two labels name the same concept of a word group."""
    return [Message("system", AGREE_TEMPLATE.system), Message("user", "\n".join([
        "Word group: " + ", ".join(word_list(words, "types", 40)),
        f"Label A: {label_a}", f"Label B: {label_b}", AGREE_TEMPLATE.task]))]


def parse_agree(text: str) -> bool | None:
    """True/False from an agreement answer, or None when unparseable."""
    m = re.search(r"same\W+(yes|no|true|false)", text or "", flags=re.I)
    if m:
        return _yes(m.group(1))
    first = _first_line(text).lower().strip(".! ")
    return _yes(first)
