"""Ledger (per stage and model, cost, manifest dict), the get_llm factory, and secrets
staying out of caches, logs and manifests."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest

import tl_concepts.llm as llm_pkg
from tests.helpers.openai_server import Reply
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


def test_tagged_views_meter_units_into_one_ledger_and_a_jsonl_sink(standin, tmp_path):
    from tl_concepts.llm.ledger import merge_usage

    sink = tmp_path / "calls" / "llm-calls.jsonl"
    ledger = Ledger(prices={"standin-model": {"input": 1.0, "output": 2.0}}, sink=sink)
    llm = get_llm("openai:standin-model", base_url=standin.base_url, api_key=SECRET,
                  cache=tmp_path / "c.sqlite", ledger=ledger,
                  retry=RetryPolicy(max_retries=1, base_delay=0.01))
    standin.push(Reply.chat("a", prompt_tokens=100, completion_tokens=10),
                 Reply.error(500, "x"), Reply.chat("b", prompt_tokens=50, completion_tokens=5),
                 Reply.chat("cut", finish_reason="length", prompt_tokens=7, completion_tokens=3))
    u1 = llm.tagged(unit="blocks.0.mlp.hook_post.1", stage="explain")
    u2 = llm.tagged(unit="blocks.0.mlp.hook_post.2", stage="explain")
    assert isinstance(u1, MeteredLLM) and u1.ledger is ledger and u1.inner is llm.inner

    async def work():
        a = await u1.achat([Message("user", "secret prompt text q1")])
        b = await u1.achat([Message("user", "q2")])
        c = await u2.achat([Message("user", "q3")], stage="judge")  # a call may name its stage
        d = await u2.achat([Message("user", "secret prompt text q1")])  # cache hit
        return a, b, c, d

    a, b, c, d = asyncio.run(work())
    assert a.ok and b.ok and c.failure.kind == "truncated" and d.cached
    one = u1.usage()
    assert {k: one[k] for k in ("calls", "requests", "retries", "cache_hits", "prompt_tokens",
                                "completion_tokens")} == dict(
        calls=2, requests=3, retries=1, cache_hits=0, prompt_tokens=150, completion_tokens=15)
    assert one["failures"] == {} and one["cost_usd"] == pytest.approx(180 / 1e6)
    two = u2.usage()
    assert (two["calls"], two["cache_hits"], two["failures"]) == (2, 1, {"truncated": 1})
    assert ledger.usage(unit="blocks.0.mlp.hook_post.1") == one
    assert ledger.usage(stage="explain", unit="blocks.0.mlp.hook_post.2")["calls"] == 1
    assert ledger.usage(stage="judge")["failures"] == {"truncated": 1}
    assert ledger.usage() == ledger.totals() == merge_usage(one, two)
    assert ledger.totals()["calls"] == 4

    lines = [json.loads(x) for x in sink.read_text().splitlines()]
    assert len(lines) == 4
    assert [(x["stage"], x["unit"], x["cached"], x["requests"], x["failure"]) for x in lines] \
        == [("explain", "blocks.0.mlp.hook_post.1", False, 1, None),
            ("explain", "blocks.0.mlp.hook_post.1", False, 2, None),
            ("judge", "blocks.0.mlp.hook_post.2", False, 1, "truncated"),
            ("explain", "blocks.0.mlp.hook_post.2", True, 0, None)]
    assert {"time", "op", "backend", "model", "prompt_tokens", "completion_tokens",
            "retries", "seconds"} <= set(lines[0])
    text = sink.read_text()
    assert "secret prompt text" not in text and SECRET not in text

    # the sink alone rebuilds the ledger (a torn last line after kill -9 is skipped)
    with open(sink, "a") as f:
        f.write('{"time": 1, "stage": "expl')
    rebuilt = Ledger.from_jsonl(sink, prices={"standin-model": {"input": 1.0, "output": 2.0}})
    assert rebuilt.usage() == ledger.usage()
    assert rebuilt.usage(unit="blocks.0.mlp.hook_post.1") == one


def test_ledger_round_trip_and_merge_for_resumed_runs():
    ledger = Ledger(prices={"priced": {"input": 1.0, "output": 1.0}})
    ledger.record(ChatResult("x", model="priced", backend="openai", prompt_tokens=10,
                             completion_tokens=5, requests=2, retries=1), stage="labels",
                  unit="c1")
    ledger.record(ChatResult(None, failure=Failure("retries_exhausted", "down"), model="priced",
                             backend="openai", requests=3, retries=2), stage="labels",
                  unit="c2")
    ledger.record(ChatResult("y", model="mystery", backend="openai", prompt_tokens=1,
                             requests=1), stage="judge")
    ledger.record_fatal("auth", stage="judge", backend="openai", model="priced")
    d = ledger.to_dict()
    assert json.loads(json.dumps(d)) == d
    back = Ledger.from_dict(d)
    assert back.to_dict() == d
    assert back.usage(unit="c2")["failures"] == {"retries_exhausted": 1}
    assert back.usage(stage="judge")["cost_usd"] is None  # "mystery" has no price
    assert back.usage(stage="judge")["failures"] == {"fatal:auth": 1}

    # an interrupted invocation saved d; the resumed one adds its own calls
    now = Ledger(prices={"priced": {"input": 1.0, "output": 1.0}})
    now.record(ChatResult("z", model="priced", backend="openai", prompt_tokens=4, requests=1),
               stage="labels", unit="c2")
    total = Ledger().merge(d).merge(now)
    lab = total.usage(stage="labels")
    assert (lab["calls"], lab["requests"], lab["prompt_tokens"]) == (3, 6, 14)
    assert lab["cost_usd"] == pytest.approx(19 / 1e6)
    c2 = total.usage(unit="c2")
    assert (c2["calls"], c2["requests"], c2["failures"]) == (2, 4, {"retries_exhausted": 1})
    assert Ledger().to_dict().get("units") is None  # no tags, no "units" entry


def test_tagged_on_a_bare_backend_and_stage_defaults(tmp_path):
    view = _Fake().tagged(unit="u7", stage="descriptors")
    assert view.chat([Message("user", "hi")]).text == "HI"
    assert view.usage()["calls"] == 1 and view.ledger.usage(stage="descriptors",
                                                            unit="u7")["requests"] == 1
    inner = view.tagged(unit="u8")  # inherits the stage
    inner.chat([Message("user", "x")])
    assert view.ledger.usage(stage="descriptors", unit="u8")["calls"] == 1
    assert view.usage()["calls"] == 1  # each view counts its own calls


@pytest.mark.parametrize("kind", ["auth", "unknown_model", "unreachable"])
def test_wrappers_reraise_fatal_errors_with_their_type(standin, tmp_path, caplog, kind):
    from tl_concepts.errors import LLMAuthError, LLMUnavailableError

    caplog.set_level(logging.DEBUG)
    sink = tmp_path / "calls.jsonl"
    ledger = Ledger(sink=sink)
    base_url = standin.base_url
    if kind == "auth":
        standin.api_key = "sk-the-right-one-000"
    elif kind == "unknown_model":
        standin.models = {"real"}
    else:
        standin.stop()
    llm = get_llm("openai:standin-model", base_url=base_url, api_key=SECRET,
                  cache=tmp_path / "c.sqlite", ledger=ledger,
                  retry=RetryPolicy(max_retries=1, base_delay=0.01))
    want = LLMAuthError if kind == "auth" else LLMUnavailableError
    view = llm.tagged(unit="u1", stage="labels")
    with pytest.raises(want) as ei:
        view.chat([Message("user", "q")])
    assert ei.value.kind == kind and base_url in str(ei.value)
    with pytest.raises(want):  # the distributions path too
        llm.next_token_distributions("the cat 5", [9], ["5"], stage="sim")
    assert view.usage()["failures"] == {f"fatal:{kind}": 1}
    assert ledger.usage(stage="sim")["failures"] == {f"fatal:{kind}": 1}
    assert len(llm.cache) == 0
    for text in (str(ei.value), caplog.text, sink.read_text()):
        assert SECRET not in text


def test_cache_identity_has_what_determines_answers_and_no_secrets(standin, tmp_path):
    def ident(**kw):
        kw.setdefault("api_key", SECRET)
        kw.setdefault("base_url", standin.base_url)
        return make_backend(f"openai:{kw.pop('model', 'standin-model')}", **kw).cache_identity()

    base = ident()
    assert base["backend"] == "openai" and base["model"] == "standin-model"
    assert base["base_url"] == standin.base_url
    assert SECRET not in json.dumps(base)
    assert ident(api_key="sk-other-key-0000000") == base  # the key does not change answers
    assert ident(max_concurrency=2, timeout=5.0) == base  # nor limits and timeouts
    for changed in (ident(model="other"), ident(base_url="http://127.0.0.1:9/v1"),
                    ident(distribution_method="json"), ident(context_length=512),
                    ident(alignment="shifted")):
        assert changed != base
    # what the backend learns at run time (the alignment found) does not change it
    b = make_backend("openai:standin-model", base_url=standin.base_url, api_key="k")
    before = b.cache_identity()
    assert b.next_token_distributions("the cat 5", [9], ["5"]).ok and b.alignment == "standard"
    assert b.cache_identity() == before
    # wrappers report the backend's identity, the in-process one carries the weights
    llm = get_llm("openai:standin-model", base_url=standin.base_url, api_key=SECRET,
                  cache=tmp_path / "c.sqlite", ledger=Ledger())
    assert llm.cache_identity() == llm.tagged(unit="u").cache_identity() == base
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    ip = make_backend(f"in-process:{folder}").cache_identity()
    assert ip["backend"] == "in-process" and ip["model"] == "hf" and len(ip["weights"]) == 32
