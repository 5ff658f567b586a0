"""Backend for any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...)
on the official ``openai`` async client.

* Model, key and URL come from the arguments, else ``OPENAI_MODEL``, ``OPENAI_API_KEY``
  and ``OPENAI_BASE_URL``. A local server needs no key.
* Every HTTP request goes through the shared :class:`~tl_concepts.llm.limits.Limiter`
  (requests in flight, requests and tokens per minute) and the
  :class:`~tl_concepts.llm.limits.RetryPolicy` (429, 5xx, timeouts, connection errors and
  malformed bodies are retried with backoff and jitter, honouring ``Retry-After``).
* Errors that stop the job are raised, never returned (the key never appears in them):
  a refused key (HTTP 401/403) raises :class:`~tl_concepts.errors.LLMAuthError`; an
  endpoint that still cannot be connected to on the last retry of a request, or a model
  the server does not serve (HTTP 404), :class:`~tl_concepts.errors.LLMUnavailableError`;
  a rejected request (400/422) or an exhausted quota, :class:`~tl_concepts.errors.LLMError`.
* Per-request problems come back as a :class:`~tl_concepts.llm.base.Failure`: 429/5xx,
  timeouts and malformed bodies past the retries are ``retries_exhausted`` (transient:
  never cached, a rerun asks again); an answer cut at ``max_tokens``
  (``finish_reason="length"``) is ``truncated`` with the text in ``failure.raw``; for a
  JSON answer only when the cut fell inside the JSON value (a value that closed before the
  cut lost only trailing prose).
* Next-token distributions, ``distribution_method="auto"`` tries in order:

  1. ``prompt_logprobs``: one ``/completions`` request with ``echo`` + ``logprobs``. Servers
     disagree on which entry holds which distribution (llama.cpp without BOS shifts them
     by one), so the first use checks the alignment against a plain completion of the same
     prompt and keeps the answer for the backend's lifetime.
  2. ``chat_top_logprobs``: per position, a chat request whose user message is
     ``prompt[:p]``, reading ``top_logprobs`` of the first answer token (an approximation:
     the chat template sits between the text and the answer).
  3. ``json``: one chat request asking for the probabilities as JSON (the model's own
     estimate, not a measurement).

  ``Distributions.method`` says which one produced the numbers; candidates the endpoint
  did not report are listed in ``Distributions.absent`` (probability 0.0 given).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tl_concepts.errors import LLMAuthError, LLMError, LLMUnavailableError

from .base import (
    LLM,
    ChatResult,
    Distributions,
    Failure,
    Message,
    PositionError,
)
from .limits import Limiter, RetryPolicy, parse_retry_after
from .util import (
    as_messages,
    check_distribution_args,
    JSON_HINT,
    finite_prob,
    json_closed_before_cut,
    parse_json_answer,
    redact,
)

log = logging.getLogger("tl_concepts.llm")

OPENAI_URL = "https://api.openai.com/v1"

KNOWN_CONTEXT = {
    "gpt-4o-mini": 128_000,
    "gpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "o4-mini": 200_000,
    "gpt-3.5-turbo-instruct": 4_096,
    "gpt-3.5-turbo": 16_385,
}
"""Context windows of a few OpenAI models (longest-prefix match); others: pass
``context_length=``."""

DIST_METHODS = ("prompt_logprobs", "chat_top_logprobs", "json")

CHAT_DIST_SYSTEM = (
    "Continue the user's text exactly where it stops. Reply with the single next token "
    "only, which is one of: {candidates}."
)
JSON_DIST_SYSTEM = (
    "You estimate next-token probabilities. The user's text contains numbered markers "
    "like [[#1]]. For each marker, in order, estimate the probability of each of these "
    "candidates being the next text right after the text that precedes the marker: "
    "{candidates}. Answer with JSON only, of the form "
    '{{"distributions": [{{"<candidate>": <probability>, ...}}, ...]}} with one object per '
    "marker; probabilities are numbers between 0 and 1."
)
POSITION_HELP = "positions must fall on the server's token boundaries"


class _CallFailed(Exception):
    def __init__(self, failure: Failure, requests: int, retries: int) -> None:
        super().__init__(failure.message)
        self.failure, self.requests, self.retries = failure, requests, retries


class _Rejected(Exception):
    """A non-retryable 400/404/422: the caller decides (fatal, or a capability fallback)."""

    def __init__(self, status: int, message: str, requests: int) -> None:
        super().__init__(message)
        self.status, self.message, self.requests = status, message, requests


class _Unsupported(Exception):
    def __init__(self, reason: str, requests: int = 0, retries: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.requests, self.retries = reason, requests, retries


class _Malformed(Exception):
    pass


@dataclass
class _Sent:
    value: Any
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    model: str


class OpenAIBackend(LLM):
    """Chat and next-token distributions from an OpenAI-compatible endpoint.

    Args:
        model: model name (else ``$OPENAI_MODEL``).
        base_url: endpoint (else ``$OPENAI_BASE_URL``, else OpenAI's).
        api_key: key (else ``$OPENAI_API_KEY``; not needed for a local server).
        timeout: seconds per HTTP request.
        limiter: shared limits (default: 16 requests in flight, no per-minute budget).
        retry: retry policy (default :class:`RetryPolicy`).
        context_length: the model's context window in tokens (else a known value or
            unchecked here; the server's own refusal is then recorded).
        distribution_method: ``"auto"`` or one of ``prompt_logprobs``,
            ``chat_top_logprobs``, ``json``.
        top_logprobs: how many alternatives to ask for (chat endpoints allow up to 20,
            OpenAI's legacy completions 5; llama.cpp and vLLM more).
        alignment: prompt-logprob alignment, ``"auto"`` (checked on first use),
            ``"standard"`` (entry i = distribution of token i) or ``"shifted"``
            (entry i = distribution of token i+1, llama.cpp without BOS).
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        context_length: int | None = None,
        distribution_method: str = "auto",
        top_logprobs: int = 20,
        alignment: str = "auto",
        organization: str | None = None,
        default_headers: dict[str, str] | None = None,
    ) -> None:
        self.model = model or os.environ.get("OPENAI_MODEL") or ""
        if not self.model:
            raise LLMError("no model given: pass model= (e.g. 'gpt-4o-mini') or set "
                           "OPENAI_MODEL", "config")
        url = base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        self.base_url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url == OPENAI_URL:
                raise LLMAuthError(f"no API key for {OPENAI_URL}: set OPENAI_API_KEY or pass "
                                   "api_key=")
            key = "no-key"  # local servers ignore it; the client wants a string
        self._api_key = key
        self.timeout = timeout
        self.limiter = limiter or Limiter()
        self.retry = retry or RetryPolicy()
        if context_length is None:
            best = max((k for k in KNOWN_CONTEXT if self.model.startswith(k)), key=len,
                       default=None)
            context_length = KNOWN_CONTEXT[best] if best else None
        self.context_length = context_length
        if distribution_method not in ("auto", *DIST_METHODS):
            raise ValueError(f"distribution_method must be 'auto' or one of {DIST_METHODS}")
        self.distribution_method = distribution_method
        self.top_logprobs = int(top_logprobs)
        if alignment not in ("auto", "standard", "shifted"):
            raise ValueError("alignment must be 'auto', 'standard' or 'shifted'")
        self.alignment = alignment
        self._alignment_setting = alignment  # self.alignment is what "auto" found
        self._organization = organization
        self._headers = default_headers
        self._clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = (
            weakref.WeakKeyDictionary())
        self._unsupported: dict[str, str] = {}
        self._json_mode = True
        self._token_param = "max_tokens"
        self._encoder: Any = None

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------------ plumbing
    def cache_identity(self) -> dict[str, Any]:
        """Backend, model, base URL and the settings that change answers (how
        distributions are measured, the context window that decides refusals); never
        the key, the organization or headers."""
        return {"backend": self.name, "model": self.model, "base_url": self.base_url,
                "distribution_method": self.distribution_method,
                "top_logprobs": self.top_logprobs, "alignment": self._alignment_setting,
                "context_length": self.context_length}

    def count_tokens(self, text: str) -> int:
        if self._encoder is None:
            try:
                import tiktoken  # optional

                try:
                    self._encoder = tiktoken.encoding_for_model(self.model)
                except KeyError:
                    self._encoder = tiktoken.get_encoding("o200k_base")
            except Exception:  # not installed, or no encoding data offline
                self._encoder = False
        if self._encoder:
            return len(self._encoder.encode(text, disallowed_special=()))
        return super().count_tokens(text)

    def _client(self) -> Any:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # One client per event loop (connections belong to a loop). An explicit
            # http_client is not closed from __del__ on whatever loop runs next.
            client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url,
                                 timeout=self.timeout, max_retries=0,
                                 organization=self._organization,
                                 default_headers=self._headers,
                                 http_client=DefaultAsyncHttpxClient(timeout=self.timeout))
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.close()

    def _redact(self, text: str) -> str:
        return redact(str(text), [self._api_key])

    async def _send(self, kind: str, params: dict[str, Any], est_tokens: int,
                    extract: Callable[[Any], Any]) -> _Sent:
        """One logical request with retries. ``extract(response)`` raises ``_Malformed``."""
        import openai

        try:  # the HTTP library of the installed openai client (httpx2 from 3.x on)
            from httpx2 import Response as RawResponse
        except ImportError:
            from httpx import Response as RawResponse  # type: ignore[assignment]  # same class, older openai

        attempt = 0
        requests = 0
        while True:
            error: str
            retry_after: float | None = None
            connection = False
            try:
                client = self._client()
                async with self.limiter.slot(tokens=est_tokens):
                    requests += 1
                    # client.post is the client's documented way to send a body as is:
                    # it keeps the client's auth, URL handling, timeouts and error types,
                    # and skips its per-call params transform and response models (most
                    # of its CPU time per request); the JSON is read here, checked field
                    # by field, so a malformed body is caught and retried.
                    path = "/chat/completions" if kind == "chat" else "/completions"
                    raw = await client.post(path, body=params, cast_to=RawResponse)
                    data = raw.json()
                try:
                    if not isinstance(data, dict):
                        raise _Malformed("the body is not a JSON object")
                    value = extract(data)
                    usage = data.get("usage") or {}
                    p_tok = int(usage.get("prompt_tokens") or 0)
                    c_tok = int(usage.get("completion_tokens") or 0)
                    model = str(data.get("model") or self.model)
                except (_Malformed, AttributeError, IndexError, KeyError, TypeError,
                        ValueError) as e:
                    raise _Malformed(f"malformed response body: {e}") from None
                self.limiter.settle_tokens(est_tokens, p_tok + c_tok)
                return _Sent(value, requests, attempt, p_tok, c_tok, model)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise LLMAuthError(
                    f"the LLM server at {self.base_url} refused the API key "
                    f"(HTTP {e.status_code}): {self._redact(_err_message(e))}. "
                    "Check OPENAI_API_KEY (or api_key=), and that the key may use model "
                    f"{self.model!r}.") from None
            except openai.RateLimitError as e:
                if _err_code(e) == "insufficient_quota":
                    raise LLMError(f"the account's quota is exhausted at {self.base_url} "
                                   f"(HTTP 429): {self._redact(_err_message(e))}. Add credit "
                                   "or use another key (OPENAI_API_KEY).", "quota") from None
                error = f"HTTP 429 rate limited: {self._redact(_err_message(e))}"
                retry_after = parse_retry_after(e.response.headers)
            except openai.APITimeoutError:
                error = f"timed out after {self.timeout} s"
            except openai.APIConnectionError as e:
                error = f"cannot connect to {self.base_url}: {self._redact(str(e.__cause__ or e))}"
                connection = _never_connected(e)
            except (OSError, asyncio.TimeoutError) as e:  # a transport error let through
                error = f"connection error: {self._redact(str(e) or type(e).__name__)}"
            except openai.APIStatusError as e:
                status = e.status_code
                if status in (408, 409) or status >= 500:
                    error = f"HTTP {status}: {self._redact(_err_message(e))}"
                    retry_after = parse_retry_after(e.response.headers)
                else:
                    raise _Rejected(status, self._redact(_err_message(e)), requests) from None
            except openai.APIError as e:  # e.g. a response the client could not validate
                error = f"unexpected response: {self._redact(_err_message(e))}"
            except _Malformed as e:
                error = self._redact(str(e))
            except ValueError as e:  # the client could not decode the body
                error = f"malformed response body: {self._redact(str(e))}"
            if attempt >= self.retry.max_retries:
                if connection:  # still no connection after every retry: unreachable
                    raise LLMUnavailableError(
                        f"cannot reach the LLM server at {self.base_url} after "
                        f"{requests} attempts ({error}). Check that it is running and that "
                        "the URL (OPENAI_BASE_URL / base_url=) is right: OpenAI-compatible "
                        "servers usually end in /v1. Rerun when it is back: finished "
                        "answers are cached.") from None
                raise _CallFailed(Failure("retries_exhausted",
                                          f"gave up after {requests} attempts: {error}"),
                                  requests, attempt)
            delay = self.retry.delay(attempt, retry_after)
            if delay is None:
                raise _CallFailed(Failure(
                    "retries_exhausted",
                    f"the server asked to retry after {retry_after:.0f} s, over the "
                    f"{self.retry.max_retry_after:.0f} s limit: {error}"), requests, attempt)
            log.warning("LLM request to %s failed (%s); retry %d/%d in %.2f s", self.base_url,
                        error, attempt + 1, self.retry.max_retries, delay)
            await asyncio.sleep(delay)
            attempt += 1

    def _fatal_rejection(self, e: _Rejected) -> LLMError:
        if e.status == 404:
            return LLMUnavailableError(
                f"model {self.model!r} not found at {self.base_url} (HTTP 404: {e.message}). "
                f"Check the model name (the server lists its models at {self.base_url}/models) "
                "and that the URL is the API root (often ending in /v1).", "unknown_model")
        return LLMError(f"the LLM server at {self.base_url} rejected the request for "
                        f"model {self.model!r} (HTTP {e.status}): {e.message}. Check the "
                        "LLM settings (model, max_tokens, temperature) for this server.",
                        "bad_request")

    def _rejection_failure(self, e: _Rejected) -> Failure | None:
        """A per-request (not per-job) rejection: context overflow or content filter."""
        low = e.message.lower()
        if "context_length" in low or "context length" in low or "maximum context" in low \
                or "too many tokens" in low or "exceed" in low and "context" in low:
            return Failure("context_overflow", f"the server says: {e.message}")
        if "content_filter" in low or "content management policy" in low \
                or "content_policy" in low or "flagged" in low:
            return Failure("content_filter", f"the server says: {e.message}")
        return None

    def _overflow(self, n_prompt: int, max_tokens: int) -> Failure | None:
        if self.context_length is not None and n_prompt + max_tokens > self.context_length:
            return Failure("context_overflow",
                           f"prompt is about {n_prompt} tokens + max_tokens {max_tokens} = "
                           f"{n_prompt + max_tokens} > context length {self.context_length} "
                           f"of {self.model}")
        return None

    # ------------------------------------------------------------------ chat
    async def achat(self, messages: Sequence[Message], *, temperature: float = 0.0,
                    max_tokens: int = 256, json_output: bool = False,
                    stage: str = "default") -> ChatResult:
        msgs = as_messages(messages)
        if json_output and not any("json" in m.content.lower() for m in msgs):
            msgs = [Message("system", JSON_HINT), *msgs]
        n_prompt = sum(self.count_tokens(m.content) + 4 for m in msgs) + 3
        over = self._overflow(n_prompt, max_tokens)
        if over is not None:
            return self._chat_result(None, over, prompt_tokens=n_prompt)
        try:
            sent = await self._chat_request(msgs, temperature, max_tokens, json_output,
                                            _extract_chat)
        except _CallFailed as f:
            return self._chat_result(None, f.failure, requests=f.requests, retries=f.retries)
        text, refusal, finish = sent.value
        failure: Failure | None = None
        if refusal:
            failure = Failure("refusal", f"the model refused: {refusal}", raw=text)
        elif finish == "content_filter":
            failure = Failure("content_filter", "the answer was blocked by a content filter",
                              raw=text)
        elif finish == "length" and not (json_output and json_closed_before_cut(text)):
            failure = _truncated(max_tokens, text)  # a JSON value that closed keeps
        elif text is None or not text.strip():
            failure = Failure("unparseable", f"empty answer (finish_reason={finish})",
                              raw=text)
        elif json_output:
            try:
                json.loads(text)
            except ValueError:
                pass
            else:
                return self._chat_result(text, None, sent=sent)
            try:  # JSON inside a code fence or some prose: keep the JSON only
                text = json.dumps(parse_json_answer(text), ensure_ascii=False)
            except ValueError as e:
                reason = "answer cut at max_tokens" if finish == "length" else str(e)
                failure = Failure("unparseable", f"not JSON: {reason}", raw=text)
        return self._chat_result(None if failure else text, failure, sent=sent)

    async def _chat_request(self, msgs: Sequence[Message], temperature: float,
                            max_tokens: int, json_output: bool,
                            extract: Callable[[Any], Any], capability: str | None = None,
                            **extra: Any) -> _Sent:
        """A chat request, adapting once to servers that reject ``response_format`` or
        want ``max_completion_tokens``. With ``capability``, a 400/422 rejection means the
        server lacks that feature (``_Unsupported``) rather than a fatal error."""
        rejected = 0  # requests refused before an adaptation
        for _ in range(3):
            params: dict[str, Any] = {
                "model": self.model,
                "messages": [{"role": m.role, "content": m.content} for m in msgs],
                "temperature": temperature,
                self._token_param: max_tokens,
                **extra,
            }
            if json_output and self._json_mode:
                params["response_format"] = {"type": "json_object"}
            est = sum(self.count_tokens(m.content) + 4 for m in msgs) + max_tokens
            try:
                sent = await self._send("chat", params, est, extract)
                sent.requests += rejected
                return sent
            except _Rejected as e:
                rejected += e.requests
                e.requests = rejected
                low = e.message.lower()
                if e.status == 400 and "max_completion_tokens" in low \
                        and self._token_param == "max_tokens":
                    self._token_param = "max_completion_tokens"
                    continue
                if e.status in (400, 422) and "response_format" in low and self._json_mode \
                        and json_output:
                    self._json_mode = False
                    continue
                fail = self._rejection_failure(e)
                if fail is not None:
                    raise _CallFailed(fail, e.requests, 0) from None
                if capability and e.status in (400, 422):
                    raise _Unsupported(f"{capability} rejected (HTTP {e.status}: "
                                       f"{e.message})", e.requests) from None
                raise self._fatal_rejection(e) from None
        raise LLMError(f"the LLM server at {self.base_url} keeps rejecting chat requests "
                       f"for model {self.model!r}; check the LLM settings for this server.",
                       "bad_request")

    def _chat_result(self, text: str | None, failure: Failure | None, *,
                     sent: _Sent | None = None, requests: int = 0, retries: int = 0,
                     prompt_tokens: int = 0) -> ChatResult:
        if sent is not None:
            return ChatResult(text, failure, model=sent.model, backend=self.name,
                              prompt_tokens=sent.prompt_tokens,
                              completion_tokens=sent.completion_tokens,
                              requests=sent.requests, retries=sent.retries)
        return ChatResult(text, failure, model=self.model, backend=self.name,
                          prompt_tokens=prompt_tokens, requests=requests, retries=retries)

    # ------------------------------------------------------------------ distributions
    async def anext_token_distributions(self, prompt: str, positions: Sequence[int],
                                        candidates: Sequence[str], *,
                                        stage: str = "default") -> Distributions:
        pos, cands = check_distribution_args(prompt, positions, candidates)
        n_prompt = self.count_tokens(prompt)
        over = self._overflow(n_prompt, 1)
        if over is not None:
            return Distributions(None, failure=over, model=self.model, backend=self.name)
        if self.distribution_method == "auto":
            methods = [m for m in DIST_METHODS if m not in self._unsupported]
        else:
            methods = [self.distribution_method]
        requests = retries = 0
        reasons: list[str] = []
        for method in methods:
            try:
                if method == "prompt_logprobs":
                    out = await self._dist_prompt_logprobs(prompt, pos, cands)
                elif method == "chat_top_logprobs":
                    out = await self._dist_chat(prompt, pos, cands)
                else:
                    out = await self._dist_json(prompt, pos, cands)
            except _Unsupported as e:
                requests += e.requests
                retries += e.retries
                reasons.append(f"{method}: {e.reason}")
                if self.distribution_method == "auto":
                    if method not in self._unsupported:
                        log.info("%s at %s: %s unavailable (%s); falling back", self.model,
                                 self.base_url, method, e.reason)
                    self._unsupported[method] = e.reason
                continue
            except _CallFailed as f:
                return Distributions(None, failure=f.failure, model=self.model,
                                     backend=self.name, requests=requests + f.requests,
                                     retries=retries + f.retries)
            out.requests += requests
            out.retries += retries
            return out
        return Distributions(None, failure=Failure("no_logprobs", "; ".join(reasons) or
                                                   "no method left"),
                             model=self.model, backend=self.name, requests=requests,
                             retries=retries)

    async def _completion(self, params: dict[str, Any], est: int) -> _Sent:
        try:
            return await self._send("completion", params, est, _extract_completion)
        except _Rejected as e:
            if e.status in (400, 404, 422):
                fail = self._rejection_failure(e)
                if fail is not None and fail.kind == "context_overflow":
                    raise _CallFailed(fail, e.requests, 0) from None
                raise _Unsupported(f"/completions rejected echo+logprobs (HTTP {e.status}: "
                                   f"{e.message})", e.requests) from None
            raise self._fatal_rejection(e) from None

    async def _dist_prompt_logprobs(self, prompt: str, pos: list[int],
                                    cands: list[str]) -> Distributions:
        k = self.top_logprobs
        est = self.count_tokens(prompt) * 2 + 1
        sent = await self._completion({"model": self.model, "prompt": prompt, "echo": True,
                                       "logprobs": k, "max_tokens": 1, "temperature": 0}, est)
        requests, retries = sent.requests, sent.retries
        p_tok, c_tok = sent.prompt_tokens, sent.completion_tokens
        lp = sent.value
        if lp is None or not lp.get("top_logprobs"):
            raise _Unsupported("the server returned no prompt logprobs", requests, retries)
        tokens: list[str] = list(lp["tokens"])
        tops: list[dict[str, float] | None] = list(lp["top_logprobs"])
        starts = _token_starts(prompt, tokens, lp.get("text_offset"))
        if starts is None:
            raise _Unsupported("the server's echoed tokens do not spell the prompt",
                               requests, retries)
        n = sum(1 for s in starts if s < len(prompt))
        alignment = self.alignment
        if alignment == "auto":
            alignment, probe = await self._check_alignment(prompt, tops, n, k)
            requests += probe.requests
            retries += probe.retries
            p_tok += probe.prompt_tokens
            c_tok += probe.completion_tokens
        shift = 1 if alignment == "shifted" else 0
        start_index = {s: i for i, s in enumerate(starts[:n])}
        probs: list[dict[str, float]] = []
        absent: list[list[str]] = []
        for p in pos:
            if p == len(prompt):
                idx = n - shift
            elif p in start_index:
                idx = start_index[p] - shift
            else:
                raise PositionError(_position_message(prompt, p, tokens[:n], starts[:n]))
            dist = tops[idx] if 0 <= idx < len(tops) else None
            if dist is None:
                raise PositionError(
                    f"the server gives no distribution for the next token after "
                    f"prompt[:{p}] (its first token has no logprobs; alignment {alignment})")
            row, miss = _match(dist, cands, strip=False)
            probs.append(row)
            absent.append(miss)
        return Distributions(probs, method="prompt_logprobs", model=sent.model,
                             backend=self.name, prompt_tokens=p_tok, completion_tokens=c_tok,
                             requests=requests, retries=retries, absent=absent)

    async def _check_alignment(self, prompt: str, tops: list[dict[str, float] | None],
                               n: int, k: int) -> tuple[str, _Sent]:
        """Which echo entry holds the distribution after the whole prompt: compare with a
        plain (non-echo) completion's first-token logprobs."""
        probe = await self._completion({"model": self.model, "prompt": prompt, "echo": False,
                                        "logprobs": k, "max_tokens": 1, "temperature": 0},
                                       self.count_tokens(prompt) + 1)
        plp = probe.value
        ref = (plp or {}).get("top_logprobs") or [None]
        ref = ref[0]
        if not ref:
            raise _Unsupported("the server returned no logprobs for a plain completion",
                               probe.requests, probe.retries)
        scores = {}
        for name, idx in (("standard", n), ("shifted", n - 1)):
            got = tops[idx] if 0 <= idx < len(tops) else None
            scores[name] = _dist_distance(got, ref)
        best = min(scores, key=lambda a: scores[a])
        other = "shifted" if best == "standard" else "standard"
        if not (scores[best] < 0.05 and scores[other] > max(2 * scores[best], 0.01)):
            raise _Unsupported(f"could not verify the prompt-logprob alignment (mean "
                               f"|logprob difference| standard={scores['standard']:.3g}, "
                               f"shifted={scores['shifted']:.3g})",
                               probe.requests, probe.retries)
        self.alignment = best
        log.info("%s at %s: prompt logprobs are %s-aligned", self.model, self.base_url, best)
        return best, probe

    async def _dist_chat(self, prompt: str, pos: list[int], cands: list[str]) -> Distributions:
        system = Message("system", CHAT_DIST_SYSTEM.format(
            candidates=", ".join(json.dumps(c) for c in cands)))
        k = min(self.top_logprobs, 20)

        async def one(p: int) -> _Sent:
            if p == 0:
                raise PositionError("position 0: a chat request needs some text before the "
                                    "position")
            return await self._chat_request([system, Message("user", prompt[:p])], 0.0, 1,
                                            False, _extract_chat_logprobs,
                                            capability="chat logprobs", logprobs=True,
                                            top_logprobs=k)

        results = await asyncio.gather(*(one(p) for p in pos), return_exceptions=True)
        requests = sum(getattr(r, "requests", 0) for r in results)
        retries = sum(getattr(r, "retries", 0) for r in results)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:  # the most telling error first: fatal, position, then per-call ones
            err = next((e for e in errors if not isinstance(e, (_CallFailed, _Unsupported))),
                       errors[0])
            if isinstance(err, (_CallFailed, _Unsupported)):
                err.requests, err.retries = requests, retries
            raise err
        sent = [r for r in results if isinstance(r, _Sent)]
        if any(s.value is None for s in sent):
            raise _Unsupported("the chat endpoint returned no top_logprobs", requests, retries)
        probs, absent = [], []
        for s in sent:
            row, miss = _match(s.value, cands, strip=True)
            probs.append(row)
            absent.append(miss)
        return Distributions(probs, method="chat_top_logprobs", model=sent[0].model,
                             backend=self.name,
                             prompt_tokens=sum(s.prompt_tokens for s in sent),
                             completion_tokens=sum(s.completion_tokens for s in sent),
                             requests=requests, retries=retries, absent=absent)

    async def _dist_json(self, prompt: str, pos: list[int], cands: list[str]) -> Distributions:
        marked, last = [], 0
        for i, p in sorted(enumerate(pos), key=lambda t: (t[1], t[0])):
            marked.append(prompt[last:p])
            marked.append(f"[[#{i + 1}]]")
            last = p
        marked.append(prompt[last:])
        msgs = [Message("system", JSON_DIST_SYSTEM.format(
            candidates=", ".join(json.dumps(c) for c in cands))),
                Message("user", "".join(marked))]
        max_tokens = 32 + len(pos) * (len(cands) * 12 + 8)
        sent = await self._chat_request(msgs, 0.0, max_tokens, True, _extract_chat)
        text, refusal, finish = sent.value
        common: dict[str, Any] = dict(model=sent.model, backend=self.name, prompt_tokens=sent.prompt_tokens,
                      completion_tokens=sent.completion_tokens, requests=sent.requests,
                      retries=sent.retries)
        if refusal:
            return Distributions(None, failure=Failure("refusal", f"the model refused: "
                                                       f"{refusal}", raw=text), **common)
        if finish == "content_filter":
            return Distributions(None, failure=Failure("content_filter", "blocked by a "
                                                       "content filter", raw=text), **common)
        if finish == "length" and not json_closed_before_cut(text):
            return Distributions(None, method="json", failure=_truncated(max_tokens, text),
                                 **common)
        try:
            probs, absent = _parse_json_distributions(text, len(pos), cands)
        except ValueError as e:
            return Distributions(None, method="json", failure=Failure(
                "unparseable", f"simulation answer: {e}", raw=text), **common)
        return Distributions(probs, method="json", absent=absent, **common)


# ---------------------------------------------------------------------- response parsing


def _truncated(max_tokens: int, text: str | None) -> Failure:
    return Failure("truncated", f"the answer was cut at max_tokens={max_tokens} "
                   "(finish_reason 'length'); raise max_tokens", raw=text)


def _never_connected(e: BaseException) -> bool:
    """True when the connection itself failed (refused, DNS, unreachable), as opposed
    to a connection that broke after the request went out."""
    cause: BaseException | None = e
    seen = 0
    while cause is not None and seen < 8:
        # httpx's / httpx2's ConnectError, or the socket error under it
        if isinstance(cause, (ConnectionRefusedError, socket.gaierror)) or any(
                c.__name__ == "ConnectError" for c in type(cause).__mro__):
            return True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return False


def _err_message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(getattr(e, "message", None) or e)


def _err_code(e: Any) -> str | None:
    code = getattr(e, "code", None)
    if code:
        return str(code)
    body = getattr(e, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None


def _choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Malformed("no choices in the response")
    return choices[0]


def _extract_chat(data: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    c = _choice(data)
    msg = c.get("message")
    if not isinstance(msg, dict):
        raise _Malformed("no message in the choice")
    text = msg.get("content")
    if text is not None and not isinstance(text, str):
        raise _Malformed("message content is not a string")
    refusal = msg.get("refusal")
    return text, (str(refusal) if refusal else None), c.get("finish_reason")


def _extract_chat_logprobs(data: dict[str, Any]) -> dict[str, float] | None:
    c = _choice(data)
    lp = c.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not content:
        return None
    first = content[0]
    out = {str(t["token"]): float(t["logprob"]) for t in first.get("top_logprobs") or []}
    out.setdefault(str(first["token"]), float(first["logprob"]))
    return out


def _extract_completion(data: dict[str, Any]) -> dict[str, Any] | None:
    c = _choice(data)
    lp = c.get("logprobs")
    if not isinstance(lp, dict) or lp.get("top_logprobs") is None:
        return None
    tokens = [str(t) for t in lp["tokens"]]
    tops = lp["top_logprobs"]
    if len(tops) != len(tokens):
        raise _Malformed("tokens and top_logprobs differ in length")
    clean = [None if d is None else {str(k): float(v) for k, v in dict(d).items()}
             for d in tops]
    offsets = lp.get("text_offset")
    offsets = None if offsets is None else [int(o) for o in offsets]
    return {"tokens": tokens, "top_logprobs": clean, "text_offset": offsets}


def _token_starts(prompt: str, tokens: list[str], offsets: list[int] | None) -> list[int] | None:
    """Character start of each echoed token in ``prompt`` terms, or None if the tokens
    cannot be placed. Trusts ``text_offset`` when it agrees with the text; else rebuilds
    the offsets from the token strings (allowing the leading space some tokenizers add)."""
    def fits(starts: list[int]) -> bool:
        prev = -1
        for s, t in zip(starts, tokens):
            if s < prev:
                return False
            prev = s
            if s >= len(prompt):
                continue  # generated tokens
            if t and "\ufffd" not in t and not prompt.startswith(t, s):
                return False
        return True

    if offsets is not None and len(offsets) == len(tokens) and fits(offsets):
        return offsets
    starts, acc = [], 0
    for t in tokens:
        starts.append(acc)
        acc += len(t)
    if fits(starts):
        return starts
    # SentencePiece servers may echo the first token with the space they prepended.
    if tokens and tokens[0].startswith(" ") and not prompt.startswith(" ") \
            and prompt.startswith(tokens[0][1:]):
        shifted = [0] + [s - 1 for s in starts[1:]]
        saved, tokens[0] = tokens[0], tokens[0][1:]
        try:
            if fits(shifted):
                return shifted
        finally:
            tokens[0] = saved
    return None


def _position_message(prompt: str, p: int, tokens: list[str], starts: list[int]) -> str:
    for t, s in zip(tokens, starts):
        if s < p < s + len(t):
            return (f"position {p} ({prompt[max(0, p - 10):p]!r}|{prompt[p:p + 10]!r}) is "
                    f"inside the token {t!r} (chars {s}-{s + len(t)}); {POSITION_HELP}")
    return f"position {p} is not the start of a token; {POSITION_HELP}"


def _match(dist: dict[str, float], cands: list[str], strip: bool) -> tuple[dict[str, float],
                                                                            list[str]]:
    row: dict[str, float] = {}
    miss: list[str] = []
    for c in cands:
        if strip:
            lps = [lp for t, lp in dist.items() if t.strip() == c.strip()]
        else:
            lps = [dist[c]] if c in dist else []
        if lps:
            row[c] = float(sum(math.exp(lp) for lp in lps))
        else:
            row[c] = 0.0
            miss.append(c)
    return row, miss


def _dist_distance(got: dict[str, float] | None, ref: dict[str, float]) -> float:
    if not got:
        return math.inf
    common = [t for t in ref if t in got]
    if not common:
        return math.inf
    return sum(abs(got[t] - ref[t]) for t in common) / len(common)


def _parse_json_distributions(text: str | None, n: int, cands: list[str]
                              ) -> tuple[list[dict[str, float]], list[list[str]]]:
    value = parse_json_answer(text)
    if isinstance(value, dict):
        for key in ("distributions", "probabilities", "positions"):
            if key in value:
                value = value[key]
                break
    if not isinstance(value, list):
        raise ValueError("expected a list of distributions")
    if len(value) != n:
        raise ValueError(f"{len(value)} distributions for {n} positions")
    probs, absent = [], []
    for i, d in enumerate(value):
        if not isinstance(d, dict):
            raise ValueError(f"distribution {i + 1} is not an object")
        row, miss = {}, []
        for c in cands:
            if c in d:
                row[c] = finite_prob(d[c])
            else:
                row[c] = 0.0
                miss.append(c)
        if len(miss) == len(cands):
            raise ValueError(f"distribution {i + 1} names none of the candidates")
        probs.append(row)
        absent.append(miss)
    return probs, absent
