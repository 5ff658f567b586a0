"""Ledger (per stage and model, cost, manifest dict), the get_llm factory, and secrets
staying out of caches, logs and manifests."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest

import tl_concepts.llm as llm_pkg
from tests.standins.openai_server import Reply
from tl_concepts.llm import (
    LLM,
    CachedLLM,
    ChatResult,
    Distributions,
    Failure,
    InProcessBackend,
    Ledger,
    LLMFatalError,
    Message,
    MeteredLLM,
    OpenAIBackend,
    RetryPolicy,
    get_llm,
    make_backend,
)

SECRET = "sk-super-secret-ABCDEFGHIJ0123456789"


def test_exports():
    for name in ("get_llm", "LLM", "Message", "ChatResult", "Distributions", "Failure",
                 "Ledger", "CachedLLM", "OpenAIBackend", "InProcessBackend", "Limiter",
                 "RetryPolicy", "LLMFatalError", "PositionError"):
        assert hasattr(llm_pkg, name), name


def test_ledger_counts_per_stage_and_model(standin, tmp_path):
    ledger = Ledger(prices={"standin-model": {"input": 1.0, "output": 2.0}})
    llm = get_llm("openai:standin-model", base_url=standin.base_url, api_key="k",
                  cache=tmp_path / "c.sqlite", ledger=ledger,
                  retry=RetryPolicy(max_retries=1, base_delay=0.01))
    standin.push(Reply.chat("a", prompt_tokens=100, completion_tokens=10),
                 Reply.error(500, "x"), Reply.chat("b", prompt_tokens=50, completion_tokens=5),
                 Reply.chat("not json", prompt_tokens=7, completion_tokens=3))
    llm.chat([Message("user", "q1")], stage="labels")
    llm.chat([Message("user", "q2")], stage="labels")
    llm.chat([Message("user", "q3")], stage="judge", json_output=True)
    llm.chat([Message("user", "q1")], stage="explain")  # cache hit
    rows = {r.stage: r for r in ledger.rows()}
    lab = rows["labels"]
    assert (lab.calls, lab.requests, lab.retries, lab.cache_hits) == (2, 3, 1, 0)
    assert (lab.prompt_tokens, lab.completion_tokens) == (150, 15)
    assert lab.cost_usd == pytest.approx((150 * 1.0 + 15 * 2.0) / 1e6)
    assert rows["judge"].failures == {"unparseable": 1}
    assert rows["explain"].cache_hits == 1 and rows["explain"].requests == 0
    assert rows["explain"].prompt_tokens == 0  # a hit costs nothing
    tot = ledger.totals()
    assert tot["calls"] == 4 and tot["requests"] == 4 and tot["cache_hits"] == 1
    d = ledger.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["prices_usd_per_million_tokens"]["standin-model"] == {"input": 1.0, "output": 2.0}
    table = ledger.summary_table()
    for word in ("labels", "judge", "explain", "TOTAL", "unparseable=1", "cache hits"):
        assert word in table
    back = Ledger.from_dict(d)
    assert back.totals() == ledger.totals()


def test_unknown_price_is_not_guessed_and_in_process_is_free():
    ledger = Ledger()
    ledger.record(ChatResult("x", model="mystery", backend="openai", prompt_tokens=10,
                             requests=1), stage="s")
    ledger.record(ChatResult("x", model="SmolLM2", backend="in-process", prompt_tokens=10,
                             requests=1), stage="s")
    ledger.record(ChatResult("x", model="gpt-4o-mini-2024-07-18", backend="openai",
                             prompt_tokens=1_000_000, requests=1), stage="s")
    costs = {r.model: r.cost_usd for r in ledger.rows()}
    assert costs["mystery"] is None and costs["SmolLM2"] == 0.0
    assert costs["gpt-4o-mini-2024-07-18"] == pytest.approx(0.15)  # prefix match
    assert ledger.totals()["cost_usd"] is None
    assert "n/a" in ledger.summary_table()


def test_price_table_from_env(tmp_path, monkeypatch):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"my-model": {"input": 3, "output": 4}}))
    monkeypatch.setenv("TL_CONCEPTS_LLM_PRICES", str(f))
    assert Ledger().price("openai", "my-model") == {"input": 3.0, "output": 4.0}
    f.write_text("{oops")
    with pytest.raises(LLMFatalError, match="price table"):
        Ledger()


def test_fatal_errors_are_counted_then_raised(standin):
    standin.models = {"real"}
    ledger = Ledger()
    llm = get_llm("openai:fake", base_url=standin.base_url, api_key="k", cache=False,
                  ledger=ledger)
    with pytest.raises(LLMFatalError):
        llm.chat([Message("user", "q")], stage="labels")
    assert ledger.rows()[0].failures == {"fatal:unknown_model": 1}


def test_factory_specs(monkeypatch, tmp_path):
    monkeypatch.delenv("TL_CONCEPTS_LLM", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    b = make_backend()
    assert isinstance(b, InProcessBackend) and b.model == "SmolLM2-135M-Instruct"
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert make_backend(f"in-process:{folder}").model == "hf"
    with pytest.raises(LLMFatalError, match="OPENAI_API_KEY"):
        make_backend("openai:gpt-4o-mini")
    o = make_backend("openai:gpt-4o-mini", api_key="sk-x")
    assert isinstance(o, OpenAIBackend) and o.base_url == "https://api.openai.com/v1"
    assert o.context_length == 128_000
    assert make_backend("ollama:llama3:8b").base_url == "http://127.0.0.1:11434/v1"
    assert make_backend("ollama:llama3:8b").model == "llama3:8b"
    assert make_backend("llamacpp").model == "default"
    assert make_backend("vllm:m", base_url="http://h:1/v1/").base_url == "http://h:1/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("TL_CONCEPTS_LLM", "openai:env-model")
    e = make_backend()
    assert (e.model, e.base_url, e._api_key) == ("env-model", "http://127.0.0.1:9/v1",
                                                 "sk-from-env")
    with pytest.raises(LLMFatalError, match="unknown LLM spec"):
        make_backend("nonsense:x")
    with pytest.raises(ValueError, match="in-process"):
        make_backend("in-process", base_url="http://x")
    with pytest.raises(FileNotFoundError):
        make_backend(f"in-process:{tmp_path}/missing")


def test_get_llm_stack_and_shared_limiter(standin, tmp_path):
    a = get_llm("openai:m", base_url=standin.base_url, cache=tmp_path / "c.sqlite",
                ledger=Ledger(), max_concurrency=3)
    b = get_llm("openai:m2", base_url=standin.base_url, cache=False, ledger=Ledger(),
                max_concurrency=3)
    assert isinstance(a, MeteredLLM) and isinstance(a.inner, CachedLLM)
    assert isinstance(a.backend, OpenAIBackend) and a.model == "m"
    assert a.backend.limiter is b.backend.limiter  # one cap per endpoint
    assert isinstance(a, LLM) and a.cache.path == tmp_path / "c.sqlite"


def test_default_cache_path_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TL_CONCEPTS_LLM_CACHE", str(tmp_path / "x.sqlite"))
    assert llm_pkg.default_cache_path() == tmp_path / "x.sqlite"


def test_keys_never_in_cache_logs_or_manifest(standin, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    standin.api_key = SECRET
    ledger = Ledger()
    llm = get_llm("openai:standin-model", base_url=standin.base_url, api_key=SECRET,
                  cache=tmp_path / "c.sqlite", ledger=ledger,
                  retry=RetryPolicy(max_retries=1, base_delay=0.01))
    standin.push(Reply.error(500, f"upstream said {SECRET}"))  # a server leaking it back
    llm.chat([Message("user", "q")], stage="s")
    llm.next_token_distributions("the cat 5", [9], ["5"], stage="s")
    wrong = get_llm("openai:standin-model", base_url=standin.base_url,
                    api_key=SECRET[::-1], cache=tmp_path / "c.sqlite", ledger=ledger)
    with pytest.raises(LLMFatalError) as ei:
        wrong.chat([Message("user", "q2")], stage="s")
    assert SECRET[::-1] not in str(ei.value)
    manifest = json.dumps(ledger.to_dict()) + ledger.summary_table() + repr(ledger)
    logs = caplog.text
    for secret in (SECRET, SECRET[::-1]):
        assert secret not in manifest
        assert secret not in logs
        for f in tmp_path.iterdir():
            assert secret.encode() not in f.read_bytes()
    assert "upstream said ***" in logs  # the retry warning was logged, redacted
    assert SECRET not in repr(llm.backend) and SECRET not in json.dumps(llm.cache_identity())


class _Fake(LLM):
    """A backend written against the bare contract: wrappers must work with it."""

    name = "fake"
    model = "fake-1"

    async def achat(self, messages, *, temperature=0.0, max_tokens=256, json_output=False,
                    stage="default"):
        return ChatResult(messages[-1].content.upper(), model=self.model, backend=self.name,
                          requests=1)

    async def anext_token_distributions(self, prompt, positions, candidates, *,
                                        stage="default"):
        if "fail" in prompt:
            return Distributions(None, failure=Failure("unparseable", "nope", raw="?"),
                                 model=self.model, backend=self.name, requests=1)
        return Distributions([{c: 0.5 for c in candidates} for _ in positions],
                             method="logits", model=self.model, backend=self.name, requests=1)


def test_wrappers_compose_around_any_backend(tmp_path):
    ledger = Ledger()
    llm = MeteredLLM(CachedLLM(_Fake(), tmp_path / "c.sqlite"), ledger)
    assert llm.chat([Message("user", "hi")]).text == "HI"
    assert llm.chat([Message("user", "hi")]).cached

    async def both():
        return await asyncio.gather(llm.anext_token_distributions("abc", [1, 3], ["x", "y"]),
                                    llm.anext_token_distributions("fail", [1], ["x"]))

    ok, bad = asyncio.run(both())
    assert ok.expected_values({"x": 0.0, "y": 10.0}) == [5.0, 5.0]
    assert bad.failure.kind == "unparseable"
    again = asyncio.run(llm.anext_token_distributions("fail", [1], ["x"]))
    assert again.cached  # a deterministic failure is recorded once
    t = ledger.totals()
    assert t["calls"] == 5 and t["cache_hits"] == 2 and t["failures"] == {"unparseable": 2}
