"""Prompt templates of the explain -> simulate pipeline, named and versioned.

Records are shown the way Bills et al. (2023) show them: one ``token<TAB>activation`` line
per token between ``<start>`` and ``<end>``, activations normalised per unit to integers
0..10 exactly as neuron-explainer does (:func:`normalize_activations`:
``min(10, floor(10 * relu(a) / max))``, the max over the finite activations of the records
shown, :func:`display_max`). When few tokens of a record are non-zero, the
non-zero lines are repeated in a second block so the explainer cannot miss them.

Display of tokens: a token is shown as its decoded string with ``\\n``, ``\\r`` and ``\\t``
escaped (a raw newline or tab would break the line format); leading spaces are kept.

Every prompt is a :class:`~tl_concepts.llm.templates.PromptTemplate` (name, version and the
fixed text: ``system`` the instruction or header, ``task`` the closing request, ``examples``
the few-shot units) whose id goes into each explanation and score, so results made with
different wording are never mixed; :data:`TEMPLATES` lists them by name.

Example:
    >>> normalize_activations([0.0, 1.0, 1.99, 2.0, -3.0], max_activation=2.0)
    [0, 5, 9, 10, 0]
    >>> format_record_lines(["The", " cat"], [0, 7])
    'The\\t0\\n cat\\t7'
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from tl_concepts.capture.records import ActivationRecord
from tl_concepts.llm.base import Message
from tl_concepts.llm.templates import PromptTemplate, TemplateRegistry

MAX_NORMALIZED = 10
"""Top of the integer activation scale shown to explainer and simulator."""

EXPLANATION_PREFIX = "the main thing this neuron does is find"
"""The sentence every explanation completes (Bills et al.)."""

SLOT_PLACEHOLDER = "unknown"
"""What stands in a simulation slot; the simulator reads the distribution just before it."""

SPARSE_FRACTION = 0.2
"""A record whose non-zero fraction is below this gets its non-zero lines repeated."""


# --------------------------------------------------------------------------- normalisation
def display_max(records: Sequence[ActivationRecord | Sequence[float]]) -> float:
    """The largest finite, non-negative activation over ``records`` (0.0 when none is
    positive): the top of the 0..10 display scale. NaN and inf values are ignored here;
    :func:`normalize_activations` refuses them.

    Example:
        >>> display_max([[0.5, float("nan")], [-1.0, 2.0]])
        2.0
    """
    best = 0.0
    for r in records:
        vals = r.activations if isinstance(r, ActivationRecord) else r
        for a in vals:
            a = float(a)
            if math.isfinite(a) and a > best:
                best = a
    return best


def normalize_activations(activations: Sequence[float], max_activation: float) -> list[int]:
    """Bills et al.'s display scale: ``min(10, floor(10 * relu(a) / max_activation))``.

    Negative activations become 0; a ``max_activation`` that is not a positive finite
    number gives all zeros. A NaN or infinite activation raises ``ValueError`` (it has no
    place on the scale; the caller names the unit).
    """
    vals = [float(a) for a in activations]
    bad = [i for i, a in enumerate(vals) if not math.isfinite(a)]
    if bad:
        raise ValueError(f"activation {bad[0]} is {vals[bad[0]]}; NaN/inf activations cannot be shown on the 0..10 scale")
    if not max_activation or not math.isfinite(max_activation) or max_activation <= 0:
        return [0 for _ in vals]
    return [min(MAX_NORMALIZED, math.floor(MAX_NORMALIZED * max(a, 0.0) / max_activation)) for a in vals]


def display_token(token: str) -> str:
    """A token as shown in a prompt line: newlines and tabs escaped, spaces kept."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def format_record_lines(tokens: Sequence[str], values: Sequence[int | str]) -> str:
    """``token<TAB>value`` lines, one per token, no trailing newline."""
    return "\n".join(f"{display_token(t)}\t{v}" for t, v in zip(tokens, values))


def format_record(record: ActivationRecord, max_activation: float) -> str:
    """One record as a ``<start>`` ... ``<end>`` block, plus a block with only the
    non-zero lines when fewer than :data:`SPARSE_FRACTION` of the tokens are non-zero."""
    norm = normalize_activations(record.activations, max_activation)
    text = "<start>\n" + format_record_lines(record.tokens, norm) + "\n<end>\n"
    nonzero = [i for i, v in enumerate(norm) if v > 0]
    if nonzero and len(nonzero) < SPARSE_FRACTION * len(norm):
        text += (
            "\nThe same activations, with the zero lines removed:\n<start>\n"
            + format_record_lines([record.tokens[i] for i in nonzero], [norm[i] for i in nonzero])
            + "\n<end>\n"
        )
    return text


# --------------------------------------------------------------------------- few-shot
@dataclass(frozen=True)
class FewShotExample:
    """A hand-written unit used as an in-prompt example."""

    records: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]
    """(tokens, activations 0..10) per record."""
    explanation: str
    """Continuation of :data:`EXPLANATION_PREFIX`, without final period."""


FEW_SHOT: tuple[FewShotExample, ...] = (
    FewShotExample(
        records=(
            (("She", " poured", " cold", " water", " into", " the", " glass", "."),
             (0, 1, 0, 10, 0, 0, 2, 0)),
            (("The", " river", " flooded", " after", " heavy", " rain", "."),
             (0, 7, 4, 0, 0, 8, 0)),
        ),
        explanation="water and other liquids, such as rivers and rain",
    ),
    FewShotExample(
        records=(
            (("print", "(", "x", ",", " y", ")", "\n"), (0, 0, 0, 0, 0, 10, 0)),
            (("f", "(", "g", "(", "1", "))", ";"), (0, 0, 0, 0, 0, 9, 0)),
        ),
        explanation="closing parentheses in code",
    ),
)


# --------------------------------------------------------------------------- explanation
EXPLAIN_SYSTEM = (
    "We are studying neurons in a neural network. Each neuron looks for one particular "
    "thing in a short text. Look at the tokens the neuron activates on and summarise in "
    "one short phrase what the neuron is looking for. Do not list every example word.\n\n"
    "The activation format is token<tab>activation. Activations go from 0 to 10; a "
    "non-zero value means the neuron found what it is looking for, and the higher the "
    "value, the stronger the match."
)


EXPLAIN_TEMPLATE = PromptTemplate("explain/token-activation", "2",  # 2: Bills floor display scale
                                  system=EXPLAIN_SYSTEM, task=f"Explanation of neuron {{n}} behavior: {EXPLANATION_PREFIX}",
                                  examples=FEW_SHOT)
"""Ask for one explanation of a unit (few-shot units as earlier chat turns)."""


def _neuron_block(index: int, blocks: Sequence[str]) -> str:
    return f"Neuron {index}\nActivations:\n" + "\n".join(blocks)


def explanation_messages(
    records: Sequence[ActivationRecord],
    max_activation: float,
    *,
    few_shot: Sequence[FewShotExample] = FEW_SHOT,
) -> list[Message]:
    """Chat messages asking for one explanation of the unit behind ``records``.

    Few-shot examples are given as user/assistant turns; the last user turn shows the
    records and ends with ``Explanation of neuron N behavior: the main thing this neuron
    does is find`` for the model to complete.

    Example:
        >>> r = ActivationRecord(["a", " Monday"], [0.0, 3.0])
        >>> explanation_messages([r], 3.0, few_shot=())[-1].content.endswith("is find")
        True
    """
    msgs = [Message("system", EXPLAIN_TEMPLATE.system)]
    for i, ex in enumerate(few_shot, start=1):
        blocks = []
        for toks, acts in ex.records:
            rec = ActivationRecord(list(toks), [float(a) for a in acts])
            blocks.append(format_record(rec, float(MAX_NORMALIZED)))
        msgs.append(Message("user", _neuron_block(i, blocks) + "\n" + EXPLAIN_TEMPLATE.task.format(n=i)))
        msgs.append(Message("assistant", f" {ex.explanation}."))
    n = len(few_shot) + 1
    blocks = [format_record(r, max_activation) for r in records]
    msgs.append(Message("user", _neuron_block(n, blocks) + "\n" + EXPLAIN_TEMPLATE.task.format(n=n)))
    return msgs


_PREFIX_RE = re.compile(r"^.*?the main thing this neuron does is find\s*", re.IGNORECASE | re.DOTALL)


def parse_explanation(text: str | None) -> str | None:
    """The explanation phrase in a completion, or None when there is none.

    Drops a repeated prefix (``the main thing this neuron does is find``), keeps the first
    line, strips quotes and the final period.

    Example:
        >>> parse_explanation(" days of the week.\\nMore text")
        'days of the week'
    """
    if text is None:
        return None
    t = text.strip()
    if EXPLANATION_PREFIX in t.lower():
        t = _PREFIX_RE.sub("", t, count=1)
    t = t.strip().splitlines()[0].strip() if t.strip() else ""
    t = t.strip("\"'` ").rstrip(".").strip()
    return t or None


REVISE_TEMPLATE = PromptTemplate(
    "explain/revise", "1", system=EXPLAIN_SYSTEM,
    task=(f"An earlier explanation of neuron 1 was: {EXPLANATION_PREFIX} {{explanation}}.\n"
          "A simulation from that explanation predicted these values on texts where it was most wrong:\n"
          "{predicted}\nThe neuron's real values on the same texts follow. Write a better explanation that "
          "fits them; keep it to one short phrase.\n\n"
          f"{{actual}}\nExplanation of neuron 1 behavior: {EXPLANATION_PREFIX}"))
"""Ask for a better explanation after showing where a simulation from the old one went wrong."""


def revision_messages(
    explanation: str,
    records: Sequence[ActivationRecord],
    predicted: Sequence[Sequence[float]],
    max_activation: float,
) -> list[Message]:
    """Chat messages asking to revise ``explanation`` after seeing where it went wrong.

    Shows, for each record, what a simulation from the explanation predicted (0..10,
    rounded) and then the true activations (the usual 0..10 display), and asks for a
    better completion of "the main thing this neuron does is find".

    Example:
        >>> r = ActivationRecord(["On", " Monday"], [0.0, 3.0])
        >>> m = revision_messages("numbers", [r], [[0.0, 0.2]], 3.0)
        >>> m[-1].content.splitlines()[-1]
        'Explanation of neuron 1 behavior: the main thing this neuron does is find'
    """
    pred_blocks = []
    for rec, pred in zip(records, predicted):
        vals = [min(MAX_NORMALIZED, max(0, int(round(float(v))))) for v in pred]
        pred_blocks.append("<start>\n" + format_record_lines(rec.tokens, vals) + "\n<end>\n")
    true_blocks = [format_record(r, max_activation) for r in records]
    text = REVISE_TEMPLATE.task.format(explanation=explanation, predicted="\n".join(pred_blocks),
                                       actual=_neuron_block(1, true_blocks))
    return [Message("system", REVISE_TEMPLATE.system), Message("user", text)]


# --------------------------------------------------------------------------- simulation
SIMULATE_HEADER = (
    "We are studying neurons in a neural network. Each neuron looks for one particular "
    "thing in a short text. Given an explanation of what a neuron does, predict its "
    "activation on every token. The format is token<tab>activation; activations go from "
    "0 to 10, most are 0, and a non-zero value means the token matches the explanation.\n\n"
)

SIMULATE_TEMPLATE = PromptTemplate("simulate/all-at-once", "1", system=SIMULATE_HEADER, task=SLOT_PLACEHOLDER,
                                   examples=FEW_SHOT)
"""All-at-once simulation: ``system`` the header, ``task`` what stands in each slot."""
SIMULATE_JSON_TEMPLATE = PromptTemplate(
    "simulate/json", "1", system=SIMULATE_HEADER.strip(),
    task=('Answer with JSON only: {{"activations": [one integer 0..10 per token, '
          "in order, {n} numbers]}}"))
"""Simulation as a JSON answer (fallback without logprobs); ``{n}``: the number of tokens."""


@dataclass
class SimulationPrompt:
    """An all-at-once simulation prompt and where its slots are."""

    text: str
    """The full prompt."""
    positions: list[int]
    """Character offset of each token's slot: the distribution wanted is that of the next
    token after ``text[:p]`` (just after the token and its tab)."""
    template: PromptTemplate = SIMULATE_TEMPLATE
    """Template used."""


def _explained_block(index: int, explanation: str) -> str:
    return f"Neuron {index}\nExplanation of neuron {index} behavior: {EXPLANATION_PREFIX} {explanation}.\nActivations:\n"


def simulation_prompt(
    explanation: str,
    tokens: Sequence[str],
    *,
    few_shot: Sequence[FewShotExample] = FEW_SHOT,
) -> SimulationPrompt:
    """All-at-once prompt: the explanation, then one ``token<TAB>unknown`` line per token.

    Few-shot neurons are shown with their true activations. The slot of token ``i`` is
    ``positions[i]``: the prompt up to there ends with ``token<TAB>`` and the text after
    it is the placeholder ``unknown``, so a causal model's next-token distribution at that
    offset depends only on the explanation and the tokens up to ``i``.

    Example:
        >>> p = simulation_prompt("days of the week", ["On", " Monday"], few_shot=())
        >>> p.text[p.positions[1] - len(" Monday\\t"):p.positions[1]]
        ' Monday\\t'
    """
    text = SIMULATE_TEMPLATE.system
    for i, ex in enumerate(few_shot, start=1):
        text += _explained_block(i, ex.explanation)
        for toks, acts in ex.records:
            text += "<start>\n" + format_record_lines(toks, acts) + "\n<end>\n"
        text += "\n"
    text += _explained_block(len(few_shot) + 1, explanation) + "<start>\n"
    positions = []
    for tok in tokens:
        text += display_token(tok) + "\t"
        positions.append(len(text))
        text += SIMULATE_TEMPLATE.task + "\n"
    text += "<end>\n"
    return SimulationPrompt(text=text, positions=positions)


def json_simulation_messages(explanation: str, tokens: Sequence[str]) -> list[Message]:
    """Chat messages asking for the activations as JSON (fallback without logprobs)."""
    listing = "\n".join(f"{i}\t{display_token(t)}" for i, t in enumerate(tokens))
    return [
        Message("system", SIMULATE_JSON_TEMPLATE.system),
        Message("user",
                f"Explanation: {EXPLANATION_PREFIX} {explanation}.\n\n"
                f"Tokens (index<tab>token):\n{listing}\n\n"
                + SIMULATE_JSON_TEMPLATE.task.format(n=len(tokens))),
    ]


# --------------------------------------------------------------------------- detection / fuzzing
_SCORE_HEADER = "A neuron in a neural network activates on: " + EXPLANATION_PREFIX + " "
DETECTION_TEMPLATE = PromptTemplate(
    "score/detection", "1", system=_SCORE_HEADER,
    task="\n\nDoes the neuron activate anywhere in this text? Answer 1 for yes, 0 for no.\nAnswer: ")
"""Does a context contain what the explanation describes (answer slot at the end)."""
FUZZING_TEMPLATE = PromptTemplate(
    "score/fuzzing", "1", system=_SCORE_HEADER,
    task="\n\nAre the marked tokens the ones this neuron activates on? Answer 1 for yes, 0 for no.\nAnswer: ")
"""Are the tokens marked ``<<like this>>`` what the explanation describes (answer slot at the end)."""

def detection_prompt(explanation: str, tokens: Sequence[str]) -> str:
    """Prompt asking whether a context contains what the explanation describes.

    The answer slot is the end of the prompt; candidates are ``"1"`` (yes) and ``"0"``.
    """
    return (DETECTION_TEMPLATE.system + explanation + ".\n\nText: " + "".join(tokens).strip()
            + DETECTION_TEMPLATE.task)


def fuzzing_prompt(explanation: str, tokens: Sequence[str], highlighted: Sequence[bool]) -> str:
    """Prompt asking whether the tokens marked ``<<like this>>`` match the explanation.

    Adjacent highlighted tokens are merged into one marked span.
    """
    parts: list[str] = []
    open_ = False
    for tok, h in zip(tokens, highlighted):
        if h and not open_:
            lead = tok[: len(tok) - len(tok.lstrip())]
            parts.append(lead + "<<" + tok.lstrip())
            open_ = True
        elif h:
            parts.append(tok)
        else:
            if open_:
                parts.append(">>")
                open_ = False
            parts.append(tok)
    if open_:
        parts.append(">>")
    return (FUZZING_TEMPLATE.system + explanation + ".\n\nText with some tokens marked <<like this>>: "
            + "".join(parts).strip() + FUZZING_TEMPLATE.task)


TEMPLATES: TemplateRegistry[PromptTemplate] = TemplateRegistry("explain", [
    EXPLAIN_TEMPLATE, REVISE_TEMPLATE, SIMULATE_TEMPLATE, SIMULATE_JSON_TEMPLATE, DETECTION_TEMPLATE,
    FUZZING_TEMPLATE])
"""The explain stage's templates by name."""
