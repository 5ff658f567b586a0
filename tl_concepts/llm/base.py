"""The one LLM interface every stage talks to.

Two operations, each async with a sync wrapper:

* ``chat(messages, ...)`` -> :class:`ChatResult` (labels, explanations, descriptors, judging)
* ``next_token_distributions(prompt, positions, candidates)`` -> :class:`Distributions`
  (simulation: the probability of each candidate token, e.g. "0".."10", as the next token
  after ``prompt[:p]`` for every character offset ``p`` in ``positions``).

A failed or unparseable answer is returned as a :class:`Failure`, never as a placeholder.

Example:
    >>> from tl_concepts.llm import get_llm                      # doctest: +SKIP
    >>> llm = get_llm("in-process")                              # doctest: +SKIP
    >>> r = llm.chat([Message("user", "Say hi")], stage="demo")  # doctest: +SKIP
    >>> r.text if r.ok else r.failure.kind                       # doctest: +SKIP
"""
from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

FailureKind = Literal[
    "unparseable",        # the answer came back but could not be parsed
    "refusal",            # the model refused
    "content_filter",     # blocked by a content policy
    "retries_exhausted",  # 429 / 5xx / timeouts past the retry budget
    "context_overflow",   # prompt longer than the model's context (message has the numbers)
    "no_logprobs",        # the endpoint gives no logprobs for the requested operation
    "error",              # anything else, with the message
]

DistributionMethod = Literal[
    "logits",             # exact, from in-process logits
    "prompt_logprobs",    # completions endpoint, echo + logprobs (alignment checked)
    "chat_top_logprobs",  # chat endpoint, top_logprobs of a generated token
    "json",               # fallback: the model was asked for the numbers as JSON
]


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    """Who speaks."""
    content: str
    """What is said."""


@dataclass
class Failure:
    """Why an LLM call produced no usable answer."""

    kind: FailureKind
    """Machine-readable reason."""
    message: str
    """Human-readable detail (never contains secrets)."""
    raw: str | None = None
    """The raw answer text, when there was one (e.g. an unparseable answer)."""


@dataclass
class ChatResult:
    """The answer to one chat request."""

    text: str | None
    """The completion text; None when the call failed."""
    failure: Failure | None = None
    """Set when the call failed; ``text`` is then None."""
    model: str = ""
    """Model that answered."""
    backend: str = ""
    """Backend name, e.g. ``openai`` or ``in-process``."""
    prompt_tokens: int = 0
    """Prompt tokens billed / counted."""
    completion_tokens: int = 0
    """Completion tokens billed / counted."""
    cached: bool = False
    """True when answered from the disk cache (no request made)."""

    @property
    def ok(self) -> bool:
        return self.failure is None and self.text is not None


@dataclass
class Distributions:
    """Next-token probabilities over a candidate set at several prompt positions."""

    probs: list[dict[str, float]] | None
    """One dict per requested position: candidate -> probability (not renormalised);
    None when the call failed."""
    method: DistributionMethod | None = None
    """How the numbers were produced."""
    failure: Failure | None = None
    """Set when the call failed."""
    model: str = ""
    backend: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and self.probs is not None

    def expected_values(self, values: dict[str, float] | None = None) -> list[float]:
        """Expected value per position, renormalising over the candidates.

        ``values`` maps candidate -> number (default: ``float(candidate)``). Raises
        ``ValueError`` on a failed result: a failure is never a vector of zeros.
        """
        if not self.ok:
            raise ValueError(f"no distributions: {self.failure}")
        out = []
        for dist in self.probs or []:
            total = sum(dist.values())
            if total <= 0:
                raise ValueError("candidate probabilities sum to 0 at a position")
            out.append(sum(p * (values[c] if values else float(c)) for c, p in dist.items()) / total)
        return out


class LLM(abc.ABC):
    """Base class of every backend. Subclasses implement the two async methods."""

    name: str = "llm"
    model: str = ""

    @abc.abstractmethod
    async def achat(
        self,
        messages: Sequence[Message],
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        json_output: bool = False,
        stage: str = "default",
    ) -> ChatResult:
        """Chat completion. ``stage`` names the pipeline stage for the ledger."""

    @abc.abstractmethod
    async def anext_token_distributions(
        self,
        prompt: str,
        positions: Sequence[int],
        candidates: Sequence[str],
        *,
        stage: str = "default",
    ) -> Distributions:
        """Probability of each candidate as the next token after ``prompt[:p]`` for each p."""

    def chat(self, messages: Sequence[Message], **kw: Any) -> ChatResult:
        """Sync wrapper around :meth:`achat`."""
        return _run(self.achat(messages, **kw))

    def next_token_distributions(
        self, prompt: str, positions: Sequence[int], candidates: Sequence[str], **kw: Any
    ) -> Distributions:
        """Sync wrapper around :meth:`anext_token_distributions`."""
        return _run(self.anext_token_distributions(prompt, positions, candidates, **kw))


def _run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("called a sync LLM method inside a running event loop; await the a* method")
