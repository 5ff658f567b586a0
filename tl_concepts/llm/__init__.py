"""The one LLM interface every stage talks to (see ``docs/llm.md``).

>>> from tl_concepts.llm import get_llm, Message                      # doctest: +SKIP
>>> llm = get_llm()               # $TL_CONCEPTS_LLM, else the embedded SmolLM2 in-process
>>> r = llm.chat([Message("user", "Name a colour.")], stage="demo")   # doctest: +SKIP
>>> r.text if r.ok else r.failure                                     # doctest: +SKIP
>>> print(llm.ledger.summary_table())                                 # doctest: +SKIP
"""
from .base import (
    LLM,
    ChatResult,
    DistributionMethod,
    Distributions,
    Failure,
    FailureKind,
    LLMFatalError,
    LLMWrapper,
    Message,
    PositionError,
    TRANSIENT_FAILURES,
    is_transient,
)
from .cache import CachedLLM, LLMCache
from .factory import default_cache_path, default_ledger, get_llm, make_backend
from .inprocess import InProcessBackend
from .ledger import DEFAULT_PRICES, USAGE_KEYS, Ledger, MeteredLLM, merge_usage
from .limits import Limiter, RetryPolicy
from .openai_backend import OpenAIBackend

__all__ = [
    "LLM", "LLMWrapper", "Message", "ChatResult", "Distributions", "Failure", "FailureKind",
    "DistributionMethod", "LLMFatalError", "PositionError", "is_transient", "TRANSIENT_FAILURES",
    "get_llm", "make_backend", "default_ledger", "default_cache_path",
    "OpenAIBackend", "InProcessBackend", "CachedLLM", "LLMCache", "MeteredLLM", "Ledger",
    "DEFAULT_PRICES", "USAGE_KEYS", "merge_usage", "Limiter", "RetryPolicy",
]
