"""Planted units: activations over real corpus tokens that fire on a known word class,
and an oracle LLM that knows the classes. Together they check the explain -> simulate ->
score path against the truth (``benchmarks/bench_truth.py``, ``tests/explain/test_truth.py``).

A planted unit fires on every token of one class (weekday names, month names, numbers
written in digits, country names from gensim's ``questions-words.txt``, past-tense verbs
and plural nouns by spaCy tag) with a random strength in ``[0.5, 1] * scale`` and is
small noise elsewhere. Contexts are the corpus sentences; exemplars are picked with the
capture's own rules (:func:`tl_concepts.capture.exemplars.select_exemplars`).

:class:`OracleLLM` answers every request the pipeline makes the way a perfect model
would: it explains a unit with the name of the class its top tokens belong to (or, with
``mismatch=True``, with the name of another class) and simulates an explanation from
class membership (an explanation listing tokens, like the lookup baseline's, predicts
those tokens).

Example:
    >>> from tl_concepts.corpus import lee_corpus                        # doctest: +SKIP
    >>> classes = planted_classes(lee_corpus())                          # doctest: +SKIP
    >>> units = planted_units(lee_corpus(), classes)                     # doctest: +SKIP
    >>> oracle = OracleLLM(classes)                                      # doctest: +SKIP
"""
from __future__ import annotations

import json
import re
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from tl_concepts.capture.exemplars import SPLITS, ExemplarConfig, select_exemplars
from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.explain.prompts import EXPLANATION_PREFIX
from tl_concepts.llm.base import LLM, ChatResult, Distributions, Message

if TYPE_CHECKING:
    from tl_concepts.explain.simulators import Simulation

PLANTED_HOOK = "planted"
"""Hook name of planted units (unit ids read ``planted.<n>``)."""

_PIECE = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")
WEEKDAYS = frozenset(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])
MONTHS = frozenset(["january", "february", "april", "june", "july", "august", "september", "october",
                    "november", "december"])  # "may" and "march" left out: mostly not months


@dataclass(frozen=True)
class PlantedClass:
    """A known word class a planted unit fires on."""

    key: str
    """Short id, e.g. ``weekday``."""
    name: str
    """What the oracle says the unit finds, e.g. ``days of the week``."""
    keywords: tuple[str, ...]
    """Words whose presence in an explanation counts as naming this class (lower case)."""
    members: frozenset[str]
    """Member word types (lower case, punctuation stripped); empty for ``number``."""

    def fires(self, token: str) -> bool:
        """Whether the unit fires on ``token`` (a display token, spaces kept)."""
        core = token.strip().lower()
        if self.key == "number":
            return bool(re.fullmatch(r"\d+", core))
        if self.key == "country" and not token.strip()[:1].isupper():
            return False
        return core in self.members


def _majority_tag_types(corpus: Any, tag: str, min_count: int = 2) -> frozenset[str]:
    tags: dict[str, Counter] = defaultdict(Counter)
    for s in corpus.sentences:
        for w, t in zip(s.words, s.pos or [""] * len(s.words)):
            core = "".join(_PIECE.findall(w)[:1]).lower()
            if core.isalpha():
                tags[core][t] += 1
    return frozenset(w for w, c in tags.items() if c.most_common(1)[0][0] == tag and c[tag] >= min_count)


def planted_classes(corpus: Any) -> dict[str, PlantedClass]:
    """The planted word classes for a tagged corpus (spaCy tags; the embedded Lee corpus).

    Past-tense verbs and plural nouns are the word types whose most frequent tag in the
    corpus is ``VBD`` / ``NNS`` (so membership is a property of the token string and an
    oracle can simulate it exactly).
    """
    from tl_concepts.corpus import gold_word_categories

    gold = gold_word_categories()
    countries = frozenset(gold.get("capital-common-countries:b", set()) | gold.get("capital-world:b", set()))
    past = _majority_tag_types(corpus, "VBD")
    plural = _majority_tag_types(corpus, "NNS")
    out = [
        PlantedClass("weekday", "days of the week", ("day", "week", "monday", "friday", "sunday"), WEEKDAYS),
        PlantedClass("month", "months of the year", ("month", "january", "june", "december"), MONTHS),
        PlantedClass("number", "numbers written in digits", ("numbers", "digit", "numeral", "figures"), frozenset()),
        PlantedClass("country", "names of countries", ("countr", "nation"), countries),
        PlantedClass("past", "past-tense verbs", ("past",), past - plural),
        PlantedClass("plural", "plural nouns", ("plural",), plural - past),
    ]
    return {c.key: c for c in out}


def class_named(explanation: str | None, classes: dict[str, PlantedClass]) -> str | None:
    """The class an explanation names: exact class name first, then keywords; None if none
    or if the keywords of several classes appear."""
    if not explanation:
        return None
    e = explanation.lower()
    for c in classes.values():
        if c.name in e:
            return c.key
    hits = [c.key for c in classes.values() if any(k in e for k in c.keywords)]
    return hits[0] if len(hits) == 1 else None


def corpus_contexts(corpus: Any, max_tokens: int = 64) -> list[tuple[int, list[str]]]:
    """(doc, display tokens) per sentence: words split into word and punctuation pieces,
    a word's first piece with a leading space (GPT-2 style), cut to ``max_tokens``."""
    out = []
    for s in corpus.sentences:
        toks: list[str] = []
        for i, w in enumerate(s.words):
            for j, p in enumerate(_PIECE.findall(w)):
                toks.append((" " if i and not j else "") + p)
        if toks:
            out.append((s.doc, toks[:max_tokens]))
    return out


def planted_units(
    corpus: Any,
    classes: dict[str, PlantedClass],
    *,
    keys: Sequence[str] | None = None,
    exemplars: ExemplarConfig | None = None,
    scale: float = 3.0,
    noise: float = 0.03,
    seed: int = 0,
    max_tokens: int = 64,
) -> list[tuple[PlantedClass, UnitRecords]]:
    """One planted unit per class in ``keys`` (default: all), with exemplars picked by the
    capture's rules. Unit ``i`` is ``planted.<i>``."""
    keys = list(keys or classes)
    ctxs = corpus_contexts(corpus, max_tokens)
    starts = np.cumsum([0] + [len(t) for _, t in ctxs])[:-1]
    out = []
    for u, k in enumerate(keys):
        # each class draws from its own stream: a unit is the same whichever classes run beside it
        rng = np.random.default_rng([seed, zlib.crc32(k.encode("utf-8"))])
        acts = []
        for _, toks in ctxs:
            fire = np.array([classes[k].fires(t) for t in toks], dtype=bool)
            a = rng.normal(0.0, noise, size=fire.shape)
            a[fire] = rng.uniform(0.5, 1.0, size=int(fire.sum())) * scale
            acts.append(a)
        ctx_max = np.array([[a.max()] for a in acts])
        ctx_min = np.array([[a.min()] for a in acts])
        sel = select_exemplars(ctx_max, ctx_min, exemplars or ExemplarConfig())

        def rec(c: int) -> ActivationRecord:
            return ActivationRecord(list(ctxs[c][1]), [float(v) for v in acts[c]], doc=int(ctxs[c][0]),
                                    start=int(starts[c]))

        unit = UnitRecords(PLANTED_HOOK, u, max_activation=float(ctx_max.max()), n_contexts=len(ctxs))
        for split in SPLITS:
            setattr(unit, split, [rec(int(c)) for c in sel[split][0] if c >= 0])
        unit.quantile = {b: [rec(int(c)) for c in sel["quantile"][0, b] if c >= 0]
                         for b in range(sel["quantile"].shape[1])}
        out.append((classes[k], unit))
    return out


def _explanation_in(text: str) -> str:
    i = text.rfind(EXPLANATION_PREFIX)
    if i < 0:
        return ""
    rest = text[i + len(EXPLANATION_PREFIX):]
    return rest.split(".\n", 1)[0].strip()


class OracleLLM(LLM):
    """A stand-in LLM that knows the planted classes (see the module docstring).

    Args:
        classes: the planted classes.
        mismatch: explain every unit with the name of the *next* class instead (a wrong
            but fluent explanation, simulated honestly).
    """

    name = "oracle"

    def __init__(self, classes: dict[str, PlantedClass], *, mismatch: bool = False) -> None:
        self.classes = classes
        self.mismatch = mismatch
        self.model = "oracle-mismatch" if mismatch else "oracle"
        self.calls: Counter[str] = Counter()

    def cache_identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model}

    def predictor(self, explanation: str) -> Callable[[str], bool]:
        """Token -> fires, for an explanation (a class name, or quoted tokens)."""
        quoted = re.findall(r'"([^"]+)"', explanation)
        if explanation.startswith("the tokens") and quoted:
            s = {q.strip() for q in quoted}
            return lambda t: t.strip() in s
        key = class_named(explanation, self.classes)
        if key is None:
            return lambda t: False
        return self.classes[key].fires

    def _explain(self, prompt: str) -> str:
        block = prompt.rsplit("Activations:\n", 1)[-1]
        votes: Counter = Counter()
        for line in block.splitlines():
            tok, _, val = line.rpartition("\t")
            if val.isdigit() and int(val) >= 5:
                for k, c in self.classes.items():
                    if c.fires(tok.replace("\\n", "\n")):
                        votes[k] += 1
        if not votes:
            return "nothing in particular"
        keys = list(self.classes)
        best = votes.most_common(1)[0][0]
        if self.mismatch:
            best = keys[(keys.index(best) + 1) % len(keys)]
        return self.classes[best].name

    async def achat(self, messages: Sequence[Message], *, temperature: float = 0.0, max_tokens: int = 256,
                    json_output: bool = False, stage: str = "default") -> ChatResult:
        self.calls["chat"] += 1
        last = messages[-1].content
        if json_output and "Tokens (index<tab>token):\n" in last:
            pred = self.predictor(_explanation_in(last))
            listing = last.split("Tokens (index<tab>token):\n", 1)[1].split("\n\n", 1)[0]
            toks = [ln.split("\t", 1)[1] for ln in listing.split("\n")]
            text = json.dumps({"activations": [10 if pred(t) else 0 for t in toks]})
        elif last.rstrip().endswith("Answer:"):
            text = "1" if self._detect(last) else "0"
        else:
            text = " " + self._explain(last) + "."
        return ChatResult(text, model=self.model, backend=self.name, prompt_tokens=len(last) // 4,
                          completion_tokens=len(text) // 4, requests=1)

    def _detect(self, prompt: str) -> bool:
        pred = self.predictor(_explanation_in(prompt))
        if "marked <<like this>>: " in prompt:
            text = prompt.split("marked <<like this>>: ", 1)[1].split("\n\nAre the marked", 1)[0]
            spans = re.findall(r"<<(.*?)>>", text)
            return bool(spans) and all(pred(" " + w) for s in spans for w in _PIECE.findall(s))
        text = prompt.split("\n\nText: ", 1)[1].split("\n\nDoes the neuron", 1)[0]
        return any(pred(" " + w) for w in _PIECE.findall(text))

    async def anext_token_distributions(self, prompt: str, positions: Sequence[int], candidates: Sequence[str],
                                        *, stage: str = "default") -> Distributions:
        self.calls["distributions"] += 1
        if prompt.rstrip().endswith("Answer:"):
            yes = self._detect(prompt)
            return Distributions([{"1": 0.9 if yes else 0.1, "0": 0.1 if yes else 0.9}], method="logits",
                                 model=self.model, backend=self.name, requests=1)
        pred = self.predictor(_explanation_in(prompt))
        top = "10" if "10" in candidates else max(candidates, key=int)
        out = []
        for p in positions:
            tok = prompt[:p].rsplit("\n", 1)[-1][:-1]
            hot = top if pred(tok) else "0"
            out.append({c: (0.96 if c == hot else 0.04 / (len(candidates) - 1)) for c in candidates})
        return Distributions(out, method="logits", model=self.model, backend=self.name,
                             prompt_tokens=len(prompt) // 4, requests=1)


def _corr(res: dict[str, Any], which: str) -> float | None:
    try:
        return res[which]["scores"]["all"]["correlation"]["value"]
    except (KeyError, TypeError):
        return None


def _sims(res: dict[str, Any], which: str) -> list[list[float]] | None:
    sims = (res.get(which) or {}).get("simulations")
    return None if not sims else [s["simulated"] for s in sims]


def _values(sims: Sequence[Simulation]) -> list[list[float]]:
    """The simulated activations of ``sims``; a failed one raises (callers check ``ok`` first)."""
    out = []
    for s in sims:
        if s.activations is None:
            raise RuntimeError(f"a simulation failed: {s.failure}")
        out.append(s.activations)
    return out


async def ascore_planted(
    units: Sequence[tuple[PlantedClass, UnitRecords]],
    llm: LLM,
    config: Any,
    *,
    classes: dict[str, PlantedClass],
    mismatch_llm: LLM | None = None,
    simulator_llm: LLM | None = None,
) -> list[dict[str, Any]]:
    """Run every planted unit through :func:`tl_concepts.explain.runner.explain_unit`
    (the real explain -> simulate -> score path) and judge it against the truth.

    Per unit: the class, the LLM's explanation and whether it names the planted class
    (``named_right``), test correlations of the LLM explanation, the baseline and the
    lookup table, the paired-bootstrap :func:`~tl_concepts.explain.verdict.verdict`, and,
    with ``mismatch_llm`` (e.g. ``OracleLLM(classes, mismatch=True)``), the correlation of
    a wrong explanation. ``recovered``: the explanation names the planted class, its
    correlation interval lies above 0, and (with a mismatch run) it scores above the
    wrong explanation. ``config`` must keep simulations (``save_simulations=True``).
    """
    from tl_concepts.explain.explainers import TokenLookupExplainer
    from tl_concepts.explain.runner import explain_unit
    from tl_concepts.explain.verdict import verdict

    out = []
    for cls, unit in units:
        res = await explain_unit(unit, llm, config, simulator_llm=simulator_llm)
        text = ((res.get("llm") or {}).get("explanation") or {}).get("text")
        test = list(unit.test_top) + list(unit.test_random)
        table = await TokenLookupExplainer().simulator(unit).asimulate_many("", [r.tokens for r in test])
        v = verdict(test, _sims(res, "llm"), _sims(res, "baseline"), _values(table),
                    n_bootstrap=config.n_bootstrap, seed=config.seed)
        row: dict[str, Any] = {
            "class": cls.key, "unit": unit.unit, "status": res.get("status"), "explanation": text,
            "named_right": class_named(text, classes) == cls.key,
            "failure": ((res.get("llm") or {}).get("explanation") or {}).get("failure"),
            "llm": _corr(res, "llm"), "baseline": _corr(res, "baseline"),
            "table": ((res.get("lookup_table") or {}).get("correlation") or {}).get("value"),
            "verdict": v.to_dict(),
        }
        if mismatch_llm is not None:
            wrong = await explain_unit(unit, mismatch_llm, config, simulator_llm=simulator_llm or llm)
            row["mismatched_explanation"] = ((wrong.get("llm") or {}).get("explanation") or {}).get("text")
            w = _corr(wrong, "llm")
            row["mismatched"] = 0.0 if w is None and wrong.get("status") == "ok" else w  # constant: predicts nothing
        right_beats_wrong = ("mismatched" not in row or
                             (row["llm"] is not None and row["mismatched"] is not None
                              and row["llm"] > row["mismatched"]))
        row["right_beats_wrong"] = right_beats_wrong
        row["recovered"] = bool(row["named_right"] and v.beats_chance and right_beats_wrong)
        out.append(row)
    return out


async def arevision_effect(
    units: Sequence[tuple[PlantedClass, UnitRecords]],
    start_texts: Sequence[str | None],
    llm: LLM,
    rounds: int,
    *,
    few_shot: bool = True,
    max_records: int = 10,
    classes: dict[str, PlantedClass] | None = None,
) -> list[dict[str, Any]]:
    """Test-score change from :func:`tl_concepts.explain.explainers.revise` on planted units.

    For each unit, starts from ``start_texts[i]`` (e.g. the runner's LLM explanation, or a
    wrong class name), revises it ``rounds`` times on the calibration split with ``llm``
    (explainer and simulator), then simulates the **test** split with the starting and
    the final explanation and reports both correlations (the test split is only touched
    after revision is over).
    """
    from tl_concepts.explain.explainers import Explanation, LLMExplainer, revise
    from tl_concepts.explain.prompts import FEW_SHOT
    from tl_concepts.explain.scoring import score
    from tl_concepts.explain.simulators import AllAtOnceSimulator

    shots = FEW_SHOT if few_shot else ()
    explainer = LLMExplainer(llm, max_records=max_records, few_shot=shots)
    sim = AllAtOnceSimulator(llm, few_shot=shots)
    out = []
    for (cls, unit), text in zip(units, start_texts):
        row: dict[str, Any] = {"class": cls.key, "start": text}
        if not text:
            out.append({**row, "status": "no starting explanation"})
            continue
        rev = await revise(explainer, sim, unit, Explanation(text, "start"), rounds)
        test = list(unit.test_top) + list(unit.test_random)
        corr = {}
        for name, t in (("before", text), ("after", rev.text or text)):
            sims = await sim.asimulate_many(t, [r.tokens for r in test])
            corr[name] = (score(test, _values(sims), n_bootstrap=0).correlation.value
                          if all(s.ok for s in sims) else None)
        out.append({**row, "status": "ok", "final": rev.text, "kept": sum(bool(r.get("kept")) for r in rev.revisions[1:]),
                    "named_right_after": class_named(rev.text, classes or classes_of(units)) == cls.key,
                    "test_before": corr["before"], "test_after": corr["after"], "revisions": rev.revisions})
    return out


def classes_of(units: Sequence[tuple[PlantedClass, UnitRecords]]) -> dict[str, PlantedClass]:
    """The classes of a list of planted units, by key."""
    return {c.key: c for c, _ in units}
