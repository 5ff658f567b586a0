"""Fakes for the explain tests: a rule-following LLM and planted units.

``RuleLLM`` reads the prompts the way a perfect simulator would: it finds the explanation
in the prompt, maps it to a predicate over tokens ("days of the week" -> weekday names,
'the tokens "A", "B"' -> those tokens, ...), and reads the token just before each
requested character offset from the prompt itself. A misaligned offset therefore reads the
wrong token and the scores drop, which is what the alignment tests rely on.
"""
from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Callable, Sequence

from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.llm.base import LLM, ChatResult, Distributions, Failure, Message

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DIGITS = [str(i) for i in range(10)]
PAST = ["walked", "jumped", "talked", "played", "cooked", "painted", "cleaned", "opened"]
FILLER = ["the", "a", "cat", "dog", "house", "on", "in", "we", "they", "see", "green", "big", "river",
          "city", "book", "and", "of", "to", "is", "was", "very", "small", "old", "road"]
CLASSES = {"weekday": WEEKDAYS, "digit": DIGITS, "past": PAST}
CONCEPTS = {"days of the week": set(WEEKDAYS), "digits": set(DIGITS), "past-tense verbs": set(PAST)}
PREFIX = "the main thing this neuron does is find "


def predicate(explanation: str) -> Callable[[str], bool]:
    quoted = re.findall(r'"([^"]+)"', explanation)
    if explanation.startswith("the tokens") and quoted:
        s = set(quoted)
        return lambda t: t.strip() in s
    for k, s in CONCEPTS.items():
        if k in explanation:
            return lambda t, s=s: t.strip() in s
    return lambda t: False


def _explanation_in(prompt: str) -> str:
    i = prompt.rfind(PREFIX)
    if i < 0:
        i = prompt.rfind("activates on: " + PREFIX)
    j = prompt.find(".\n", i)
    return prompt[i + len(PREFIX): j]


class RuleLLM(LLM):
    """Deterministic fake backend (see module docstring).

    Args:
        explanations: answers to explanation requests, used in turn.
        logprobs: False -> distributions fail with ``no_logprobs``.
        fail_distributions: every distributions call fails with ``error``.
        latency: seconds each call sleeps (to measure concurrency).
    """

    name = "rule-fake"
    model = "rule-fake-1"

    def __init__(self, explanations: Sequence[str] = ("days of the week",), *, logprobs: bool = True,
                 fail_distributions: bool = False, latency: float = 0.0) -> None:
        self.explanations = list(explanations)
        self.logprobs = logprobs
        self.fail_distributions = fail_distributions
        self.latency = latency
        self.calls = {"chat": 0, "distributions": 0}
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen_tokens: list[str] = []

    async def _enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.latency:
            await asyncio.sleep(self.latency)
        else:
            await asyncio.sleep(0)

    async def achat(self, messages: Sequence[Message], *, temperature: float = 0.0, max_tokens: int = 256,
                    json_output: bool = False, stage: str = "default") -> ChatResult:
        await self._enter()
        try:
            self.calls["chat"] += 1
            last = messages[-1].content
            if json_output:
                expl = last.split(PREFIX, 1)[1].split(".\n", 1)[0]
                pred = predicate(expl)
                listing = last.split("Tokens (index<tab>token):\n", 1)[1].split("\n\n", 1)[0]
                toks = [ln.split("\t", 1)[1] for ln in listing.split("\n")]
                return ChatResult(json.dumps({"activations": [10 if pred(t) else 0 for t in toks]}),
                                  model=self.model, backend=self.name, prompt_tokens=len(last) // 4,
                                  completion_tokens=len(toks))
            if last.rstrip().endswith("Answer:"):
                pass
            text = self.explanations[(self.calls["chat"] - 1) % len(self.explanations)]
            return ChatResult(f" {text}.", model=self.model, backend=self.name, prompt_tokens=len(last) // 4,
                              completion_tokens=5)
        finally:
            self.in_flight -= 1

    async def anext_token_distributions(self, prompt: str, positions: Sequence[int], candidates: Sequence[str],
                                        *, stage: str = "default") -> Distributions:
        await self._enter()
        try:
            self.calls["distributions"] += 1
            if not self.logprobs:
                return Distributions(None, failure=Failure("no_logprobs", "fake endpoint without logprobs"))
            if self.fail_distributions:
                return Distributions(None, failure=Failure("error", "fake failure"))
            pred = predicate(_explanation_in(prompt))
            if "Does the neuron activate anywhere" in prompt:
                text = prompt.split("Text: ", 1)[1].split("\n\n", 1)[0]
                hit = any(pred(w) for w in re.findall(r"\w+", text))
                return Distributions([{"1": 0.9, "0": 0.1} if hit else {"1": 0.1, "0": 0.9}], method="logits")
            if "Are the marked tokens" in prompt:
                text = prompt.split("marked <<like this>>: ", 1)[1].split("\n\n", 1)[0]
                spans = re.findall(r"<<(.*?)>>", text)
                hit = bool(spans) and all(all(pred(w) for w in s.split()) for s in spans)
                return Distributions([{"1": 0.8, "0": 0.2} if hit else {"1": 0.2, "0": 0.8}], method="logits")
            out = []
            for p in positions:
                line = prompt[:p].rsplit("\n", 1)[-1]
                assert line.endswith("\t"), f"slot offset {p} is not right after a tab: {line!r}"
                tok = line[:-1]
                self.seen_tokens.append(tok)
                top = "10" if "10" in candidates else max(candidates, key=int)
                out.append({c: (0.9 if c == top else 0.01) for c in candidates} if pred(tok)
                           else {c: (0.9 if c == "0" else 0.01) for c in candidates})
            return Distributions(out, method="logits", model=self.model, backend=self.name,
                                 prompt_tokens=len(prompt) // 4)
        finally:
            self.in_flight -= 1


def planted_records(cls: str, n: int, *, length: int = 12, seed: int = 0, p_class: float = 0.5,
                    noise: float = 0.0, start_doc: int = 0) -> list[ActivationRecord]:
    """Contexts of filler words where about ``p_class`` of them hold 1-2 class tokens that fire
    (activation 5..10); everything else is 0 (plus ``noise`` * uniform[0,1))."""
    rng = random.Random(seed)
    words = CLASSES[cls]
    out = []
    for k in range(n):
        toks = [(" " if i else "") + rng.choice(FILLER) for i in range(length)]
        acts = [noise * rng.random() for _ in range(length)]
        if rng.random() < p_class:
            for i in rng.sample(range(1, length), rng.choice([1, 2])):
                toks[i] = " " + rng.choice(words)
                acts[i] = float(rng.randint(5, 10))
        out.append(ActivationRecord(toks, acts, doc=start_doc + k, start=(start_doc + k) * length))
    return out


def planted_unit(cls: str = "weekday", *, unit: int = 0, seed: int = 0, n_top: int = 6, n_random: int = 10,
                 noise: float = 0.0) -> UnitRecords:
    """A unit firing on one token class, with disjoint splits (distinct docs)."""
    def top(k: int) -> list[ActivationRecord]:
        return planted_records(cls, n_top, seed=seed * 100 + k, p_class=1.0, noise=noise, start_doc=1000 * k)

    def rnd(k: int) -> list[ActivationRecord]:
        return planted_records(cls, n_random, seed=seed * 100 + 50 + k, p_class=0.3, noise=noise,
                               start_doc=1000 * k + 500)

    u = UnitRecords("blocks.0.mlp.hook_post", unit, train_top=top(1), train_random=rnd(1),
                    calibration_top=top(2), calibration_random=rnd(2), test_top=top(3), test_random=rnd(3))
    u.max_activation = max(r.max_activation for r in u.all_records())
    u.n_contexts = len(u.all_records())
    return u
