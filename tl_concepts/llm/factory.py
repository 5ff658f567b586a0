"""``get_llm(spec)``: a backend wrapped in the cache and the ledger, from one string.

Specs (``TL_CONCEPTS_LLM`` holds the default; without it, ``in-process``):

=============================  =============================================================
``in-process``                 the embedded SmolLM2-135M-Instruct, in this process
``in-process:/path/to/folder`` any local Hugging Face causal LM folder
``openai:gpt-4o-mini``         OpenAI (key from ``OPENAI_API_KEY``), or any
                               ``base_url=`` / ``$OPENAI_BASE_URL``
``vllm:MODEL``                 an OpenAI-compatible server, default ``http://127.0.0.1:8000/v1``
``llamacpp[:MODEL]``           a llama.cpp server, default ``http://127.0.0.1:8000/v1``
``ollama:MODEL``               Ollama, default ``http://127.0.0.1:11434/v1``
=============================  =============================================================

For the last three, ``base_url=`` or ``$OPENAI_BASE_URL`` wins over the default URL.
"""
from __future__ import annotations

from tl_concepts.errors import ConfigError

import os
import threading
from pathlib import Path
from typing import Any

from .base import LLM, LLMFatalError
from .cache import CachedLLM, LLMCache
from .inprocess import InProcessBackend
from .ledger import Ledger, MeteredLLM
from .limits import Limiter, RetryPolicy
from .openai_backend import OpenAIBackend

LOCAL_SERVERS = {
    "vllm": "http://127.0.0.1:8000/v1",
    "llamacpp": "http://127.0.0.1:8000/v1",
    "llama.cpp": "http://127.0.0.1:8000/v1",
    "ollama": "http://127.0.0.1:11434/v1",
}

_default_ledger: Ledger | None = None
_limiters: dict[tuple[Any, ...], Limiter] = {}
_lock = threading.Lock()


def default_ledger() -> Ledger:
    """The process-wide ledger ``get_llm`` records into unless given ``ledger=``."""
    global _default_ledger
    with _lock:
        if _default_ledger is None:
            _default_ledger = Ledger()
        return _default_ledger


def default_cache_path() -> Path:
    """``$TL_CONCEPTS_LLM_CACHE``, else ``<tl_concepts cache>/llm/llm-cache.sqlite``."""
    env = os.environ.get("TL_CONCEPTS_LLM_CACHE")
    if env:
        return Path(env)
    from tl_concepts.models.embedded import cache_dir

    return cache_dir() / "llm" / "llm-cache.sqlite"


def shared_limiter(base_url: str, max_concurrency: int = 16,
                   requests_per_minute: float | None = None,
                   tokens_per_minute: float | None = None) -> Limiter:
    """One :class:`Limiter` per endpoint and settings, shared by every ``get_llm`` call."""
    key = (base_url, max_concurrency, requests_per_minute, tokens_per_minute)
    with _lock:
        lim = _limiters.get(key)
        if lim is None:
            lim = _limiters[key] = Limiter(max_concurrency, requests_per_minute,
                                           tokens_per_minute)
        return lim


def make_backend(spec: str | None = None, **kw: Any) -> LLM:
    """The bare backend for ``spec`` (no cache, no ledger)."""
    spec = (spec or os.environ.get("TL_CONCEPTS_LLM") or "in-process").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind in ("in-process", "inprocess", "local", "hf"):
        for k in ("base_url", "api_key", "max_concurrency", "requests_per_minute",
                  "tokens_per_minute", "retry", "limiter", "timeout"):
            if kw.get(k) is not None:
                raise ConfigError(f"{k}= does not apply to the in-process backend")
            kw.pop(k, None)
        return InProcessBackend(arg or None, **kw)
    if kind == "openai" or kind in LOCAL_SERVERS:
        base_url = kw.pop("base_url", None) or os.environ.get("OPENAI_BASE_URL")
        if kind in LOCAL_SERVERS and not base_url:
            base_url = LOCAL_SERVERS[kind]
        model = arg or kw.pop("model", None) or os.environ.get("OPENAI_MODEL")
        if not model and kind in ("llamacpp", "llama.cpp"):
            model = "default"  # a one-model llama.cpp server answers to any name
        limiter = kw.pop("limiter", None)
        conc = kw.pop("max_concurrency", None) or 16
        rpm = kw.pop("requests_per_minute", None)
        tpm = kw.pop("tokens_per_minute", None)
        url_key = (base_url or "https://api.openai.com/v1").rstrip("/")
        if limiter is None:
            limiter = shared_limiter(url_key, conc, rpm, tpm)
        retry = kw.pop("retry", None)
        if isinstance(retry, int):
            retry = RetryPolicy(max_retries=retry)
        return OpenAIBackend(model, base_url=base_url, limiter=limiter, retry=retry, **kw)
    raise LLMFatalError(f"unknown LLM spec {spec!r}: use 'in-process[:/path]', "
                        "'openai:MODEL', 'vllm:MODEL', 'llamacpp[:MODEL]' or 'ollama:MODEL'",
                        "config")


def get_llm(spec: str | None = None, *, cache: bool | str | os.PathLike[str] | LLMCache = True,
            ledger: Ledger | None = None, cache_failures: bool = True, **kw: Any) -> MeteredLLM:
    """The LLM every stage should use: backend -> :class:`CachedLLM` -> :class:`MeteredLLM`.

    Args:
        spec: see the module docstring; None reads ``$TL_CONCEPTS_LLM``, else
            ``"in-process"``.
        cache: True (the default cache file, see :func:`default_cache_path`), False (no
            cache), or a path / :class:`LLMCache`.
        ledger: where calls are counted (default: :func:`default_ledger`).
        **kw: backend arguments, e.g. ``base_url``, ``api_key``, ``max_concurrency``,
            ``requests_per_minute``, ``tokens_per_minute``, ``retry`` (a
            :class:`RetryPolicy` or a retry count), ``timeout``, ``context_length``,
            ``distribution_method`` (OpenAI-compatible); ``device``, ``dtype``,
            ``batch_size`` (in-process).

    The result has ``.ledger``, ``.backend`` (the bare backend) and, when cached,
    ``.cache``.

    Example:
        >>> llm = get_llm("openai:gpt-4o-mini", max_concurrency=8)   # doctest: +SKIP
        >>> llm.chat([Message("user", "Say hi")], stage="demo").text  # doctest: +SKIP
        >>> print(llm.ledger.summary_table())                          # doctest: +SKIP
    """
    backend = make_backend(spec, **kw)
    inner: LLM = backend
    if cache is not False and cache is not None:
        store = cache if isinstance(cache, LLMCache) else LLMCache(
            default_cache_path() if cache is True else cache)
        inner = CachedLLM(backend, store, cache_failures=cache_failures)
    return MeteredLLM(inner, ledger if ledger is not None else default_ledger())
