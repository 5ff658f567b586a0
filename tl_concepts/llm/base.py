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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from tl_concepts._sync import run_sync
from tl_concepts.errors import LLMError

if TYPE_CHECKING:
    from .ledger import MeteredLLM

FailureKind = Literal[
    "unparseable",        # the answer came back but could not be parsed
    "refusal",            # the model refused
    "content_filter",     # blocked by a content policy
    "retries_exhausted",  # 429 / 5xx / timeouts past the retry budget
    "context_overflow",   # prompt longer than the model's context (message has the numbers)
    "no_logprobs",        # the endpoint gives no logprobs for the requested operation
    "truncated",          # the answer hit max_tokens (finish_reason "length"): never accepted
    "transient",          # timeout, connection reset, 5xx outside the retry loop: retry later
    "error",              # anything else, with the message
]

TRANSIENT_FAILURES: frozenset[str] = frozenset({"retries_exhausted", "transient"})
"""Failure kinds that a later run retries by itself (the cause may be gone by then). Every
other kind is a permanent answer for that item: kept, with its reason, until the user asks
to retry failed items (``retry_failed=True`` / ``--retry-failed``)."""


def is_transient(kind: str | None) -> bool:
    """True for a failure kind (or item status) that a rerun should retry by itself.

    Example:
        >>> is_transient("retries_exhausted"), is_transient("unparseable")
        (True, False)
    """
    return kind in TRANSIENT_FAILURES

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


@dataclass(kw_only=True)
class CallInfo:
    """Who answered a call and what it cost: the fields :class:`ChatResult` and
    :class:`Distributions` share (keyword-only)."""

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
    requests: int = 0
    """Requests (HTTP requests or forward passes) made for this answer, retries included;
    0 when cached."""
    retries: int = 0
    """How many of those requests were retries."""


@dataclass
class ChatResult(CallInfo):
    """The answer to one chat request (plus :class:`CallInfo`: model, backend, usage)."""

    text: str | None
    """The completion text; None when the call failed."""
    failure: Failure | None = None
    """Set when the call failed; ``text`` is then None."""

    @property
    def ok(self) -> bool:
        """True when the call produced a text."""
        return self.failure is None and self.text is not None


@dataclass
class Distributions(CallInfo):
    """Next-token probabilities over a candidate set at several prompt positions (plus
    :class:`CallInfo`: model, backend, usage)."""

    probs: list[dict[str, float]] | None
    """One dict per requested position: candidate -> probability (not renormalised);
    None when the call failed."""
    method: DistributionMethod | None = None
    """How the numbers were produced."""
    failure: Failure | None = None
    """Set when the call failed."""
    absent: list[list[str]] | None = None
    """Per position, the candidates the endpoint did not report (not among its top-k
    logprobs, or not a single token of its vocabulary): their probability is given as 0.0,
    the true value being below the smallest reported one. None or empty lists when every
    candidate was reported (always, for ``logits``)."""

    @property
    def ok(self) -> bool:
        """True when the call produced distributions."""
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


LLMFatalError = LLMError
"""A configuration error that no retry can fix; it stops the job (an alias of
:class:`tl_concepts.errors.LLMError`; :class:`~tl_concepts.errors.LLMAuthError` and
:class:`~tl_concepts.errors.LLMUnavailableError` are its user-facing subclasses).

Raised (not returned as a :class:`Failure`) for a wrong key (``kind="auth"``), an
unknown model (``"unknown_model"``), a rejected request (``"bad_request"``), an
unreachable server (``"unreachable"``) and a bad setup (``"config"``). The message
says what to fix and never contains the API key.
"""


class PositionError(ValueError):
    """A requested position does not fall on a token boundary of the prompt (or has no
    distribution, like position 0 without a BOS token). The message says where it fell."""


class LLM(abc.ABC):
    """Base class of every backend. Subclasses implement the two async methods."""

    name: str = "llm"
    model: str = ""
    context_length: int | None = None
    """The model's context window in tokens, when known (prompts over it are refused)."""

    def cache_identity(self) -> dict[str, Any]:
        """Everything about this backend that determines its answers (for cache keys and
        result fingerprints): backend, model, and what the backend adds (base URL, weights
        fingerprint, ...). Per-call sampling settings (temperature, max_tokens) are not in
        it: key them separately. Never contains secrets.

        Example:
            >>> OpenAIBackend("gpt-4o-mini", api_key="sk-...").cache_identity()["base_url"]  # doctest: +SKIP
            'https://api.openai.com/v1'
        """
        return {"backend": self.name, "model": self.model}

    def count_tokens(self, text: str) -> int:
        """Token count of ``text`` (exact where a tokenizer is known, else about chars/4)."""
        return max(1, -(-len(text) // 4)) if text else 0

    async def aclose(self) -> None:
        """Release clients, threads or models held by the backend."""

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
        """Sync wrapper around :meth:`achat`; works in scripts and inside a running event
        loop (a Jupyter cell), where it runs on a worker thread."""
        return run_sync(self._then_close(self.achat(messages, **kw)))

    def next_token_distributions(
        self, prompt: str, positions: Sequence[int], candidates: Sequence[str], **kw: Any
    ) -> Distributions:
        """Sync wrapper around :meth:`anext_token_distributions` (works inside a running
        event loop too)."""
        return run_sync(self._then_close(
            self.anext_token_distributions(prompt, positions, candidates, **kw)))

    async def _then_close(self, coro: Any) -> Any:
        # A sync call runs on an event loop of its own: release what was opened on it.
        try:
            return await coro
        finally:
            await self.aclose()

    def close(self) -> None:
        """Sync wrapper around :meth:`aclose` (works inside a running event loop too)."""
        run_sync(self.aclose())

    def tagged(self, *, unit: str | None = None, stage: str | None = None) -> "MeteredLLM":
        """A view of this LLM that meters its calls under ``unit`` / ``stage`` tags.

        On a :class:`~tl_concepts.llm.ledger.MeteredLLM` (what ``get_llm`` returns) the
        view records into the same ledger; on a bare LLM into a new
        :class:`~tl_concepts.llm.ledger.Ledger` of its own. ``view.usage()`` is the usage
        of the calls made through the view.

        Example:
            >>> u = llm.tagged(unit="blocks.0.mlp.hook_post.7", stage="explain")  # doctest: +SKIP
            >>> r = await u.achat([Message("user", "...")])                        # doctest: +SKIP
            >>> u.usage()["requests"]                                              # doctest: +SKIP
            1
        """
        from .ledger import Ledger, MeteredLLM

        return MeteredLLM(self, Ledger()).tagged(unit=unit, stage=stage)


class LLMWrapper(LLM):
    """An :class:`LLM` around another one (cache, ledger, ...); forwards everything else."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def model(self) -> str:  # type: ignore[override]
        return self.inner.model

    @property
    def context_length(self) -> int | None:  # type: ignore[override]
        return self.inner.context_length

    @property
    def backend(self) -> LLM:
        """The innermost backend."""
        inner = self.inner
        while isinstance(inner, LLMWrapper):
            inner = inner.inner
        return inner

    def cache_identity(self) -> dict[str, Any]:
        return self.inner.cache_identity()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, item: str) -> Any:
        if item == "inner":  # not set yet (during unpickling, say)
            raise AttributeError(item)
        return getattr(self.inner, item)

    async def achat(self, messages: Sequence[Message], **kw: Any) -> ChatResult:
        return await self.inner.achat(messages, **kw)

    async def anext_token_distributions(
        self, prompt: str, positions: Sequence[int], candidates: Sequence[str], **kw: Any
    ) -> Distributions:
        return await self.inner.anext_token_distributions(prompt, positions, candidates, **kw)
