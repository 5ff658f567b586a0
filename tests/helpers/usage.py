"""The real LLM layer against the stand-in OpenAI server, and the usage counts the usage tests compare."""
from __future__ import annotations

from typing import Any

from tl_concepts.llm import get_llm
from tl_concepts.llm.ledger import Ledger, MeteredLLM

COUNTS = ("calls", "requests", "retries", "cache_hits", "prompt_tokens", "completion_tokens", "failures")
"""The usage fields a ledger and a stage's stored usage must agree on (cost aside)."""


def standin_llm(srv: Any, ledger: Ledger | None = None, model: str = "gpt-4o-mini", **kw: Any) -> MeteredLLM:
    """``get_llm("openai:<model>")`` on the stand-in server ``srv`` (API key ``sk-test``), counted in
    ``ledger`` (a fresh one by default), with no answer cache unless ``cache=`` is given.

    ``gpt-4o-mini`` has a price, so the usage carries a cost; pass another model for none."""
    kw.setdefault("cache", False)
    return get_llm(f"openai:{model}", base_url=srv.base_url, api_key="sk-test",
                   ledger=ledger if ledger is not None else Ledger(), **kw)


def counts(usage: dict[str, Any]) -> dict[str, Any]:
    """The :data:`COUNTS` fields of a usage dict."""
    return {k: usage[k] for k in COUNTS}
