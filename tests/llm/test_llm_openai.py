"""OpenAI-compatible backend against the loopback stand-in: the real ``openai`` client
runs end to end (HTTP, errors, retries, logprobs)."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time

import pytest

from tests.helpers.openai_server import Reply, toy_logprobs
from tl_concepts.errors import LLMAuthError, LLMError, LLMUnavailableError
from tl_concepts.llm import (
    Limiter,
    LLMFatalError,
    Message,
    OpenAIBackend,
    PositionError,
    RetryPolicy,
)
from tl_concepts.llm.base import is_transient

FAST = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05)
U = [Message("user", "hello there")]


def backend(srv, **kw) -> OpenAIBackend:
    kw.setdefault("retry", FAST)
    kw.setdefault("api_key", "sk-test-abcdef123456")
    return OpenAIBackend(kw.pop("model", "standin-model"), base_url=srv.base_url, **kw)


# ------------------------------------------------------------------ chat


def test_chat_answer_tokens_and_request(standin):
    standin.push(Reply.chat("Paris", prompt_tokens=12, completion_tokens=2))
    r = backend(standin).chat([Message("system", "Be brief."), Message("user", "Capital?")],
                              temperature=0.3, max_tokens=7)
    assert r.ok and r.text == "Paris"
    assert (r.prompt_tokens, r.completion_tokens, r.requests, r.retries) == (12, 2, 1, 0)
    assert r.backend == "openai" and not r.cached
    body = standin.posts("/chat/completions")[0]["json"]
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Capital?"}]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 7
    assert standin.posts()[0]["headers"]["authorization"] == "Bearer sk-test-abcdef123456"


def test_429_retry_after_is_honoured(standin):
    standin.push(Reply.error(429, "slow down", headers={"Retry-After": "0.4"}),
                 Reply.chat("ok"))
    t = time.perf_counter()
    r = backend(standin, retry=RetryPolicy(max_retries=3, base_delay=0.001)).chat(U)
    assert r.ok and r.requests == 2 and r.retries == 1
    assert time.perf_counter() - t >= 0.4  # waited what the server asked, not 1 ms


def test_retry_after_over_the_limit_fails_at_once(standin):
    standin.push(Reply.error(429, "daily quota", headers={"Retry-After": "3600"}))
    r = backend(standin).chat(U)
    assert not r.ok and r.failure.kind == "retries_exhausted"
    assert "3600" in r.failure.message and r.requests == 1


def test_5xx_and_timeouts_are_retried_with_backoff(standin):
    standin.push(Reply.error(500, "boom"), Reply.error(503, "busy"), Reply.chat("fine"))
    r = backend(standin).chat(U)
    assert r.ok and r.text == "fine" and r.requests == 3 and r.retries == 2

    standin.push(Reply.chat("late", delay=0.6), Reply.chat("on time"))
    r = backend(standin, timeout=0.3).chat(U)
    assert r.ok and r.text == "on time" and r.retries == 1


def test_exhausted_retries_are_a_failure_not_an_exception(standin):
    standin.push(*[Reply.error(500, "down")] * 3)
    r = backend(standin).chat(U)
    assert r.text is None and r.failure.kind == "retries_exhausted"
    assert "3 attempts" in r.failure.message and r.requests == 3


@pytest.mark.parametrize("body", ["{not json", "[]", '{"choices": 5}', '{"choices": []}'])
def test_malformed_bodies_are_retried_then_fail(standin, body):
    standin.push(Reply.raw(body), Reply.chat("recovered"))
    r = backend(standin).chat(U)
    assert r.ok and r.text == "recovered" and r.retries == 1
    standin.push(*[Reply.raw(body)] * 3)
    r = backend(standin).chat(U)
    assert r.failure.kind == "retries_exhausted" and "malformed" in r.failure.message


@pytest.mark.parametrize("status", [401, 403])
def test_wrong_key_stops_the_job_without_retry_or_leak(standin, caplog, status):
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-key-987654321"
    if status == 401:
        standin.api_key = "sk-right-key-000000"  # the stand-in echoes the wrong key back
    else:
        standin.push(Reply.error(403, f"key {wrong} may not use this model",
                                 type="permission_error"))
    with pytest.raises(LLMAuthError) as ei:
        backend(standin, api_key=wrong).chat(U)
    msg = str(ei.value)
    assert ei.value.kind == "auth" and isinstance(ei.value, LLMError)
    assert f"HTTP {status}" in msg and standin.base_url in msg and "OPENAI_API_KEY" in msg
    assert wrong not in msg and wrong not in caplog.text
    assert len(standin.posts()) == 1  # no retry


def test_unknown_model_stops_the_job(standin):
    standin.models = {"real-model"}
    with pytest.raises(LLMUnavailableError) as ei:
        backend(standin, model="no-such-model").chat(U)
    msg = str(ei.value)
    assert ei.value.kind == "unknown_model" and "no-such-model" in msg
    assert standin.base_url in msg and "model name" in msg
    assert len(standin.posts()) == 1


def test_bad_request_stops_the_job(standin):
    standin.push(Reply.error(400, "Invalid value for 'temperature'"))
    with pytest.raises(LLMError) as ei:
        backend(standin).chat(U)
    assert type(ei.value) is LLMError
    assert ei.value.kind == "bad_request" and "temperature" in str(ei.value)
    assert len(standin.posts()) == 1


def _free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_stops_the_job_with_the_url():
    port = _free_port()
    b = OpenAIBackend("m", base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-key-abcdef99",
                      retry=RetryPolicy(max_retries=1, base_delay=0.01))
    with pytest.raises(LLMUnavailableError) as ei:
        b.chat(U)
    msg = str(ei.value)
    assert ei.value.kind == "unreachable" and f"127.0.0.1:{port}" in msg
    assert "2 attempts" in msg and "OPENAI_BASE_URL" in msg and "sk-key-abcdef99" not in msg


def test_server_gone_mid_run_is_unreachable_not_a_per_item_failure(standin):
    b = backend(standin)
    assert b.chat(U).ok
    standin.stop()
    with pytest.raises(LLMUnavailableError):
        b.chat([Message("user", "another")])


def test_timeouts_past_the_retries_are_a_transient_failure(standin):
    standin.latency = 0.5
    r = backend(standin, timeout=0.1).chat(U)
    assert r.failure.kind == "retries_exhausted" and is_transient(r.failure.kind)
    assert "timed out" in r.failure.message and r.requests == 3


def test_truncated_answer_is_a_failure_with_the_raw_text(standin):
    standin.chat_finish_reason = "length"
    standin.chat_text = '{"label": "concept polit'
    r = backend(standin).chat(U, max_tokens=5)
    assert not r.ok and r.text is None
    assert r.failure.kind == "truncated" and r.failure.raw == '{"label": "concept polit'
    assert "max_tokens=5" in r.failure.message and not is_transient("truncated")
    r = backend(standin).chat(U, json_output=True)  # also when asked for JSON
    assert r.failure.kind == "truncated"


def test_standin_truncates_at_max_tokens(standin):
    standin.truncate_at_max_tokens = True
    standin.chat_text = "one two three four five"
    b = backend(standin)
    r = b.chat(U, max_tokens=3)
    assert r.failure.kind == "truncated" and r.failure.raw == "one two three"
    r = b.chat(U, max_tokens=5)
    assert r.ok and r.text == "one two three four five"


def test_persistent_500_then_recovery(standin):
    standin.fail()  # down until told
    b = backend(standin)
    r = b.chat(U)
    assert r.failure.kind == "retries_exhausted" and "HTTP 500" in r.failure.message
    assert standin.failed == 3
    standin.recover()
    assert b.chat(U).ok
    standin.fail(2, status=503)  # the next two fail, then it answers
    r = b.chat(U)
    assert r.ok and r.retries == 2 and standin.failed == 5


def test_server_context_overflow_and_content_filter_are_per_request_failures(standin):
    standin.push(Reply.error(400, "This model's maximum context length is 4096 tokens.",
                             code="context_length_exceeded"))
    r = backend(standin).chat(U)
    assert r.failure.kind == "context_overflow" and "4096" in r.failure.message
    standin.push(Reply.chat(None, finish_reason="content_filter"))
    assert backend(standin).chat(U).failure.kind == "content_filter"
    standin.push(Reply.chat(None, refusal="I can't help with that."))
    r = backend(standin).chat(U)
    assert r.failure.kind == "refusal" and "can't help" in r.failure.message


def test_huge_prompt_refused_before_sending_with_numbers(standin):
    b = backend(standin, context_length=100)
    r = b.chat([Message("user", "word " * 200)], max_tokens=50)
    assert r.failure.kind == "context_overflow"
    assert "context length 100" in r.failure.message and "max_tokens 50" in r.failure.message
    assert r.requests == 0 and standin.posts() == []


def test_empty_prompt_is_a_caller_error(standin):
    b = backend(standin)
    with pytest.raises(ValueError, match="empty prompt"):
        b.chat([Message("user", "   ")])
    with pytest.raises(ValueError, match="no messages"):
        b.chat([])
    assert standin.posts() == []


def test_empty_answer_is_a_failure_not_a_placeholder(standin):
    standin.push(Reply.chat(""))
    r = backend(standin).chat(U)
    assert r.text is None and r.failure.kind == "unparseable"


# ------------------------------------------------------------------ JSON output


def test_json_output(standin):
    b = backend(standin)
    standin.push(Reply.chat('{"label": "animals"}'))
    r = b.chat([Message("user", "Label these words: cat, dog.")], json_output=True)
    assert r.ok and json.loads(r.text) == {"label": "animals"}
    body = standin.posts()[-1]["json"]
    assert body["response_format"] == {"type": "json_object"}
    assert "json" in json.dumps(body["messages"]).lower()  # OpenAI requires the word

    standin.push(Reply.chat('Sure!\n```json\n{"label": "x"}\n```'))
    r = b.chat(U, json_output=True)
    assert r.ok and json.loads(r.text) == {"label": "x"}

    standin.push(Reply.chat("animals, I think"))
    r = b.chat(U, json_output=True)
    assert r.failure.kind == "unparseable" and r.failure.raw == "animals, I think"
    assert r.text is None


def test_json_output_falls_back_when_response_format_is_rejected(standin):
    standin.push(Reply.error(400, "response_format is not supported"), Reply.chat('{"a": 1}'))
    b = backend(standin)
    r = b.chat(U, json_output=True)
    assert r.ok and json.loads(r.text) == {"a": 1} and r.requests == 2
    assert "response_format" not in standin.posts()[-1]["json"]


# ------------------------------------------------------------------ limits


def test_concurrency_cap_is_shared_by_all_calls(standin):
    standin.latency = 0.05
    lim = Limiter(max_concurrency=4)
    b1, b2 = backend(standin, limiter=lim), backend(standin, limiter=lim)

    async def go():
        return await asyncio.gather(*[b.achat([Message("user", f"q{i}")], stage=f"s{i % 3}")
                                      for i in range(20) for b in (b1, b2)])

    results = asyncio.run(go())
    assert all(r.ok for r in results)
    assert standin.max_in_flight == 4 and lim.max_in_flight_seen == 4


def test_requests_per_minute_budget(standin):
    lim = Limiter(max_concurrency=8, requests_per_minute=1200, burst_seconds=0.05)  # 20/s
    b = backend(standin, limiter=lim)

    async def go():
        t = time.perf_counter()
        await asyncio.gather(*[b.achat([Message("user", f"q{i}")]) for i in range(8)])
        return time.perf_counter() - t

    assert asyncio.run(go()) >= 7 / 20 * 0.9


def test_tokens_per_minute_budget_waits_for_refill():
    from tl_concepts.llm.limits import _Bucket

    b = _Bucket(per_minute=6000, burst_seconds=1.0)  # 100 tokens/s, 100 at once
    assert b.reserve(100) == 0.0
    wait = b.reserve(50)
    assert 0.45 <= wait <= 0.55
    b.refund(50)  # the request used fewer tokens than estimated
    assert b.reserve(1) <= 0.02


def test_retry_policy_backoff_grows_with_jitter():
    p = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=0.5)
    for attempt, full in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 8.0)]:
        ds = [p.backoff(attempt) for _ in range(50)]
        assert all(full * 0.5 <= d <= full for d in ds) and len(set(ds)) > 1
    assert p.delay(0, retry_after=2.0) >= 2.0
    assert p.delay(0, retry_after=1e6) is None


# ------------------------------------------------------------------ distributions

PROMPT = "the cat 5 dog\t7 x"
CANDS = ["0", "5", "7", "10"]


def toy_probs(prefix: str, cands=CANDS) -> dict[str, float]:
    lp = toy_logprobs(prefix)
    return {c: math.exp(lp[c]) for c in cands}


@pytest.mark.parametrize("alignment", ["standard", "shifted"])
def test_prompt_logprobs_alignment_is_detected(standin, alignment):
    standin.completions_alignment = alignment
    b = backend(standin)
    pos = [len(PROMPT), PROMPT.index("7"), PROMPT.index(" dog"), PROMPT.index("\t")]
    d = b.next_token_distributions(PROMPT, pos, CANDS)
    assert d.ok and d.method == "prompt_logprobs" and b.alignment == alignment
    for p, row in zip(pos, d.probs):
        assert row == pytest.approx(toy_probs(PROMPT[:p]), abs=1e-12)
    assert d.requests == 2  # the echo request + the one-time alignment probe
    assert d.absent == [[] for _ in pos]
    d2 = b.next_token_distributions(PROMPT, pos[:1], CANDS)
    assert d2.requests == 1 and d2.probs[0] == d.probs[0]
    body = standin.posts("/completions")[0]["json"]
    assert body["echo"] is True and body["logprobs"] == 20


def test_prompt_logprobs_position_inside_a_token(standin):
    b = backend(standin)
    with pytest.raises(PositionError, match="inside the token ' cat'"):
        b.next_token_distributions(PROMPT, [PROMPT.index("cat") + 1], CANDS)


def test_candidates_outside_top_k_are_reported_absent(standin):
    b = backend(standin, top_logprobs=2)
    d = b.next_token_distributions(PROMPT, [len(PROMPT)], CANDS)
    top2 = sorted(toy_logprobs(PROMPT).items(), key=lambda kv: -kv[1])[:2]
    reported = {t for t, _ in top2}
    assert set(d.absent[0]) == {c for c in CANDS if c not in reported}
    assert all(d.probs[0][c] == 0.0 for c in d.absent[0])


def test_falls_back_to_chat_top_logprobs(standin):
    standin.completions_alignment = "unsupported"
    b = backend(standin)
    pos = [len(PROMPT), PROMPT.index("7")]
    d = b.next_token_distributions(PROMPT, pos, CANDS)
    assert d.ok and d.method == "chat_top_logprobs"
    for p, row in zip(pos, d.probs):
        assert row == pytest.approx(toy_probs(PROMPT[:p]))
    assert d.requests == 1 + len(pos)  # the refused /completions, then one chat each
    chat = standin.posts("/chat/completions")[0]["json"]
    assert chat["logprobs"] is True and chat["top_logprobs"] == 20 and chat["max_tokens"] == 1
    d = b.next_token_distributions(PROMPT, pos, CANDS)
    assert d.requests == len(pos)  # the refusal is remembered


def test_falls_back_to_json_when_no_logprobs_exist(standin):
    standin.completions_alignment = "none"  # answers, but with logprobs: null
    standin.chat_logprobs = False
    b = backend(standin)
    answer = {"distributions": [{"0": 0.1, "5": 0.6, "7": 0.3}, {"7": 1.0}]}
    standin.responder = lambda req: (Reply.chat(json.dumps(answer))
                                     if "[[#1]]" in json.dumps(req["json"]) else None)
    d = b.next_token_distributions(PROMPT, [len(PROMPT), 9], CANDS)
    assert d.ok and d.method == "json"
    assert d.probs == [{"0": 0.1, "5": 0.6, "7": 0.3, "10": 0.0},
                       {"0": 0.0, "5": 0.0, "7": 1.0, "10": 0.0}]
    assert d.absent == [["10"], ["0", "5", "10"]]
    sent = standin.posts("/chat/completions")[-1]["json"]["messages"][1]["content"]
    assert sent == PROMPT[:9] + "[[#2]]" + PROMPT[9:] + "[[#1]]"


@pytest.mark.parametrize("answer", ['{"distributions": [{"0": "high"}]}', "seven",
                                    '{"distributions": [{"0": 0.5}, {"0": 0.5}]}',
                                    '{"distributions": [{"0": 1.7}]}'])
def test_non_numeric_simulation_answers_are_failures(standin, answer):
    b = backend(standin, distribution_method="json")
    standin.push(Reply.chat(answer))
    d = b.next_token_distributions(PROMPT, [len(PROMPT)], CANDS)
    assert not d.ok and d.probs is None and d.failure.kind == "unparseable"
    assert d.failure.raw == answer
    with pytest.raises(ValueError):
        d.expected_values()  # never a vector of zeros


def test_truncated_json_simulation_answer_is_a_failure(standin):
    b = backend(standin, distribution_method="json")
    standin.push(Reply.chat('{"distributions": [{"0": 0.', finish_reason="length"))
    d = b.next_token_distributions(PROMPT, [len(PROMPT)], CANDS)
    assert not d.ok and d.failure.kind == "truncated"
    assert d.failure.raw == '{"distributions": [{"0": 0.'


def test_explicit_method_without_support_is_a_no_logprobs_failure(standin):
    standin.completions_alignment = "none"
    d = backend(standin, distribution_method="prompt_logprobs").next_token_distributions(
        PROMPT, [len(PROMPT)], CANDS)
    assert d.failure.kind == "no_logprobs" and "no prompt logprobs" in d.failure.message


def test_unverifiable_alignment_falls_back(standin):
    # A server whose echo logprobs match neither the standard nor the shifted layout.
    standin.responder = lambda req: (
        Reply(json=_scrambled_echo(req["json"])) if req["json"].get("echo") else None)
    b = backend(standin)
    d = b.next_token_distributions(PROMPT, [len(PROMPT)], CANDS)
    assert d.method == "chat_top_logprobs"
    assert "alignment" in b._unsupported["prompt_logprobs"]


def _scrambled_echo(body):
    toks = ["the", " cat", " 5", " dog", "\t", "7", " x", "."]
    offs, acc = [], 0
    for t in toks:
        offs.append(acc)
        acc += len(t)
    tops = [None] + [{"0": -5.0 - i, "1": -0.1} for i in range(1, len(toks))]
    return {"id": "x", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"text": PROMPT + ".", "index": 0, "finish_reason": "length",
                         "logprobs": {"tokens": toks, "text_offset": offs,
                                      "token_logprobs": [None] + [-1.0] * 7,
                                      "top_logprobs": tops}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}


def test_distribution_argument_checks(standin):
    b = backend(standin)
    with pytest.raises(ValueError, match="empty prompt"):
        b.next_token_distributions("", [0], CANDS)
    with pytest.raises(ValueError, match="outside the prompt"):
        b.next_token_distributions(PROMPT, [len(PROMPT) + 1], CANDS)
    with pytest.raises(ValueError, match="duplicate"):
        b.next_token_distributions(PROMPT, [3], ["1", "1"])
    r = backend(standin, context_length=3).next_token_distributions(PROMPT, [3], CANDS)
    assert r.failure.kind == "context_overflow" and "context length 3" in r.failure.message
    assert standin.posts() == []


def test_sync_wrappers_work_inside_a_running_event_loop(standin):
    # A Jupyter cell runs inside the kernel's event loop: the sync API must still work.
    from tl_concepts.llm import get_llm, Ledger

    standin.push(Reply.chat("from a notebook"))
    llm = get_llm("openai:standin-model", base_url=standin.base_url, api_key="k",
                  cache=False, ledger=Ledger(), retry=FAST)

    async def cell():
        asyncio.get_running_loop()  # really inside a loop
        r = llm.chat(U, stage="nb")
        d = llm.next_token_distributions(PROMPT, [len(PROMPT)], CANDS)
        llm.close()
        return r, d

    r, d = asyncio.run(cell())
    assert r.ok and r.text == "from a notebook"
    assert d.ok and d.probs[0] == pytest.approx(toy_probs(PROMPT))
    assert llm.ledger.usage(stage="nb")["requests"] == 1

    async def wrong_key_cell():
        standin.api_key = "sk-right-000000"
        with pytest.raises(LLMAuthError):  # errors reach the caller unchanged
            llm.chat(U)

    asyncio.run(wrong_key_cell())


def test_exhausted_quota_stops_the_job(standin):
    standin.push(Reply.error(429, "You exceeded your current quota", code="insufficient_quota",
                             type="insufficient_quota"))
    with pytest.raises(LLMFatalError) as ei:
        backend(standin).chat(U)
    assert ei.value.kind == "quota" and len(standin.posts()) == 1
    assert standin.base_url in str(ei.value) and "credit" in str(ei.value)


def test_adapts_to_servers_wanting_max_completion_tokens(standin):
    standin.push(Reply.error(400, "Unsupported parameter: 'max_tokens'. Use "
                             "'max_completion_tokens' instead."), Reply.chat("ok"))
    b = backend(standin)
    r = b.chat(U, max_tokens=9)
    assert r.ok and r.requests == 2
    assert standin.posts()[-1]["json"]["max_completion_tokens"] == 9
    b.chat(U)
    assert "max_tokens" not in standin.posts()[-1]["json"]  # remembered


def _post_json(url: str, body: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_standin_out_of_process_outage_and_truncation_controls():
    """The stand-in as another process (how CLI tests use it): flags and the control
    endpoint set outages and truncation."""
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.openai_server",
                             "--fail-first", "2", "--fail-status", "503", "--truncate",
                             "--chat-text", "one two three"],
                            stdout=subprocess.PIPE, text=True)
    try:
        base = json.loads(proc.stdout.readline())["base_url"]
        b = OpenAIBackend("standin-model", base_url=base, api_key="k",
                          retry=RetryPolicy(max_retries=1, base_delay=0.01))
        r = b.chat(U, max_tokens=2)
        assert r.failure.kind == "retries_exhausted" and "HTTP 503" in r.failure.message
        r = b.chat(U, max_tokens=2)  # recovered after 2 failures; cut at 2 toy tokens
        assert r.failure.kind == "truncated" and r.failure.raw == "one two"
        assert _post_json(base + "/_standin/control", {"fail": None})["fail_left"] is None
        assert b.chat(U).failure.kind == "retries_exhausted"
        _post_json(base + "/_standin/control", {"recover": True, "chat_finish_reason": "stop",
                                                "truncate_at_max_tokens": False})
        r = b.chat(U, max_tokens=2)
        assert r.ok and r.text == "one two three"
        with urllib.request.urlopen(base + "/_standin/stats", timeout=10) as resp:
            stats = json.loads(resp.read())
        assert stats["failed"] == 4 and stats["requests"] == 6  # control posts not counted
    finally:
        proc.terminate()
        proc.wait(10)


def test_json_answer_cut_after_the_value_closed_is_kept(standin):
    b = backend(standin)
    standin.push(Reply.chat('```json\n{"label": "animals"}\n```\n\nThis JSON lists',
                            finish_reason="length"))
    r = b.chat(U, json_output=True)
    assert r.ok and json.loads(r.text) == {"label": "animals"}
    # cut inside the value: an inner list that parses on its own is not taken
    standin.push(Reply.chat('{"descriptors": ["war", "peace"], "extra": "fin',
                            finish_reason="length"))
    r = b.chat(U, json_output=True)
    assert r.failure.kind == "truncated"
    standin.push(Reply.chat('{"label": "animals"} and more', finish_reason="length"))
    assert b.chat(U).failure.kind == "truncated"  # plain text: any cut is a failure


def test_unreachable_is_decided_by_the_last_retry(standin):
    """A pooled connection reset first, then refused connections: the server is down
    (fatal); refused first, then a 500: it is up, the item failed (per-item failure)."""
    import openai
    import openai._base_client as base_client

    httpx_mod = getattr(base_client, "httpx2", None) or getattr(base_client, "httpx")
    request = httpx_mod.Request("POST", standin.base_url + "/chat/completions")

    def conn_error(cls):
        try:
            raise cls("boom", request=request)
        except Exception as cause:  # noqa: BLE001 - how the client chains it
            err = openai.APIConnectionError(request=request)
            err.__cause__ = cause
            return err

    b = backend(standin)

    class Scripted:
        def __init__(self, plan):
            self.plan = list(plan)

        async def post(self, *a, **kw):
            step = self.plan.pop(0)
            raise step

        async def close(self):
            pass

    b._client = lambda: client  # type: ignore[method-assign]
    client = Scripted([conn_error(httpx_mod.ReadError), conn_error(httpx_mod.ConnectError),
                       conn_error(httpx_mod.ConnectError)])
    with pytest.raises(LLMUnavailableError):
        b.chat(U)
    err500 = openai.InternalServerError("down", response=httpx_mod.Response(
        500, request=request), body=None)
    client = Scripted([conn_error(httpx_mod.ConnectError), conn_error(httpx_mod.ConnectError),
                       err500])
    r = b.chat(U)
    assert r.failure.kind == "retries_exhausted" and "HTTP 500" in r.failure.message
