"""Disk cache: zero requests on rerun, resume after interruption, keys without secrets,
several processes at once."""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import sqlite3

import pytest

from tests.helpers.openai_server import Reply
from tl_concepts.llm import (
    CachedLLM,
    LLMCache,
    Message,
    OpenAIBackend,
    RetryPolicy,
)

FAST = RetryPolicy(max_retries=1, base_delay=0.01)


def cached(srv, path, key="sk-test-key-1234567", **kw):
    b = OpenAIBackend("standin-model", base_url=srv.base_url, api_key=key, retry=FAST, **kw)
    return CachedLLM(b, path)


def ask(i: int) -> list[Message]:
    return [Message("user", f"question {i}")]


def test_rerun_makes_zero_requests(standin, tmp_path):
    llm = cached(standin, tmp_path / "c.sqlite")

    async def job():
        return await asyncio.gather(*(llm.achat(ask(i)) for i in range(10)))

    first = asyncio.run(job())
    assert len(standin.posts()) == 10 and not any(r.cached for r in first)
    again = asyncio.run(job())
    assert len(standin.posts()) == 10  # nothing new
    assert all(r.cached and r.requests == 0 for r in again)
    assert [r.text for r in again] == [r.text for r in first]
    # a fresh process-level object on the same file sees the same answers
    llm2 = cached(standin, tmp_path / "c.sqlite")
    assert llm2.chat(ask(3)).cached and len(standin.posts()) == 10


def test_key_covers_everything_that_determines_the_answer(standin, tmp_path):
    path = tmp_path / "c.sqlite"
    llm = cached(standin, path)
    llm.chat(ask(1))
    llm.chat(ask(1), temperature=0.7)
    llm.chat(ask(1), max_tokens=5)
    llm.chat(ask(1), json_output=True)
    llm.chat([Message("system", "Be brief."), *ask(1)])
    other_model = CachedLLM(OpenAIBackend("other-model", base_url=standin.base_url,
                                          api_key="k", retry=FAST), path)
    other_model.chat(ask(1))
    assert len(standin.posts()) == 6
    # the stage and the API key are not part of it
    llm.chat(ask(1), stage="labels")
    cached(standin, path, key="sk-another-key-7654321").chat(ask(1))
    assert len(standin.posts()) == 6


def test_distributions_are_cached(standin, tmp_path):
    llm = cached(standin, tmp_path / "c.sqlite")
    p = "the cat 5 dog"
    d1 = llm.next_token_distributions(p, [len(p)], ["5", "7"])
    n = len(standin.posts())
    d2 = llm.next_token_distributions(p, [len(p)], ["5", "7"])
    assert d2.cached and d2.probs == d1.probs and d2.method == d1.method
    assert len(standin.posts()) == n
    llm.next_token_distributions(p, [len(p)], ["5", "8"])
    assert len(standin.posts()) == n + 1


def test_interrupted_job_resumes_where_it_stopped(standin, tmp_path):
    standin.latency = 0.05
    path = tmp_path / "c.sqlite"
    from tl_concepts.llm import Limiter

    def make():
        b = OpenAIBackend("standin-model", base_url=standin.base_url, api_key="k",
                          retry=FAST, limiter=Limiter(max_concurrency=2))
        return CachedLLM(b, path)

    async def job(llm, stop_after=None):
        tasks = [asyncio.ensure_future(llm.achat(ask(i))) for i in range(12)]
        if stop_after is None:
            return await asyncio.gather(*tasks)
        while sum(t.done() for t in tasks) < stop_after:
            await asyncio.wait([t for t in tasks if not t.done()],
                               return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()  # the job is killed half-way
        await asyncio.gather(*tasks, return_exceptions=True)
        return [t.result() for t in tasks if not t.cancelled()]

    done = asyncio.run(job(make(), stop_after=4))
    assert 0 < len(done) < 12
    stored = len(LLMCache(path))
    assert stored == len(done)  # each answer was stored the moment it arrived
    sent_before = len(standin.posts())
    results = asyncio.run(job(make()))
    assert all(r.ok for r in results)
    new_requests = len(standin.posts()) - sent_before
    assert new_requests == 12 - stored
    assert sum(not r.cached for r in results) == new_requests


def test_transient_failures_are_not_cached_deterministic_ones_are(standin, tmp_path):
    llm = cached(standin, tmp_path / "c.sqlite")
    standin.push(Reply.error(500, "down"), Reply.error(500, "down"))
    assert llm.chat(ask(1)).failure.kind == "retries_exhausted"
    r = llm.chat(ask(1))
    assert r.ok and not r.cached  # asked again

    standin.push(Reply.chat("not json at all"))
    r = llm.chat(ask(2), json_output=True)
    assert r.failure.kind == "unparseable"
    n = len(standin.posts())
    r = llm.chat(ask(2), json_output=True)
    assert r.cached and r.failure.kind == "unparseable" and r.failure.raw == "not json at all"
    assert len(standin.posts()) == n

    no_fail_cache = CachedLLM(llm.inner, tmp_path / "d.sqlite", cache_failures=False)
    standin.push(Reply.chat("nope"), Reply.chat('{"ok": true}'))
    assert no_fail_cache.chat(ask(3), json_output=True).failure.kind == "unparseable"
    assert no_fail_cache.chat(ask(3), json_output=True).ok


def test_identical_requests_in_flight_are_sent_once(standin, tmp_path):
    standin.latency = 0.05
    llm = cached(standin, tmp_path / "c.sqlite")

    async def go():
        return await asyncio.gather(*(llm.achat(ask(7)) for _ in range(5)))

    results = asyncio.run(go())
    assert len(standin.posts()) == 1
    assert sum(r.cached for r in results) == 4 and len({r.text for r in results}) == 1


def test_api_key_never_in_the_cache_file(standin, tmp_path):
    secret = "sk-very-secret-key-0123456789"
    standin.api_key = secret
    path = tmp_path / "c.sqlite"
    llm = cached(standin, path, key=secret)
    llm.chat(ask(1))
    llm.next_token_distributions("the cat 5", [9], ["5"])
    for f in tmp_path.iterdir():  # the db and its WAL / shm files
        assert secret.encode() not in f.read_bytes(), f
    rows = sqlite3.connect(path).execute("SELECT request, answer FROM answers").fetchall()
    assert rows and all(secret not in r + a for r, a in rows)


def _writer(path: str, worker: int, n: int) -> None:
    c = LLMCache(path)
    for i in range(n):
        c.put(f"k{worker}-{i}", "chat", {"i": i}, {"text": f"{worker}:{i}"})
        assert c.get(f"k{worker}-{i}") == {"text": f"{worker}:{i}"}
        c.get(f"k{(worker + 1) % 4}-{i}")  # read what the others write


def test_several_processes_share_one_cache(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    c = LLMCache(path)
    assert len(c) == 600
    assert c.get("k2-149") == {"text": "2:149"}


def test_unwritable_cache_degrades_to_no_cache(standin, tmp_path, caplog):
    llm = cached(standin, tmp_path / "c.sqlite")
    llm.cache.close()
    llm.cache._connect = lambda: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O"))
    r = llm.chat(ask(1))
    assert r.ok and "cache" in caplog.text


@pytest.mark.parametrize("bad", [[], [Message("user", "")]])
def test_bad_messages_raise_before_any_lookup(standin, tmp_path, bad):
    with pytest.raises(ValueError):
        cached(standin, tmp_path / "c.sqlite").chat(bad)


def test_runs_heal_after_a_persistent_500(standin, tmp_path):
    """A transient failure is never stored: the rerun after the server recovers asks again."""
    from tl_concepts.llm import Ledger, get_llm

    path = tmp_path / "c.sqlite"

    def run() -> list:
        llm = get_llm("openai:standin-model", base_url=standin.base_url, api_key="k",
                      cache=path, ledger=Ledger(), retry=FAST)

        async def job():
            return await asyncio.gather(*(llm.achat(ask(i), stage="labels")
                                          for i in range(3)))

        return asyncio.run(job())

    standin.fail()  # persistent 500
    first = run()
    assert [r.failure.kind for r in first] == ["retries_exhausted"] * 3
    assert len(LLMCache(path)) == 0
    sent = len(standin.posts())
    assert sent == 6  # 3 items x (1 + 1 retry)

    again = run()  # still down: asks again, never a cached failure
    assert all(r.failure.kind == "retries_exhausted" and not r.cached for r in again)
    assert len(standin.posts()) == 12

    standin.recover()
    healed = run()
    assert all(r.ok and not r.cached for r in healed)
    assert len(standin.posts()) == 15 and len(LLMCache(path)) == 3
    assert all(r.cached for r in run())  # and now they are kept
    assert len(standin.posts()) == 15


def test_truncated_answers_are_cached_as_permanent_failures(standin, tmp_path):
    from tl_concepts.llm import is_transient
    from tl_concepts.llm.cache import CACHEABLE_FAILURES

    assert "truncated" in CACHEABLE_FAILURES
    assert not any(is_transient(k) for k in CACHEABLE_FAILURES)
    llm = cached(standin, tmp_path / "c.sqlite")
    standin.chat_finish_reason = "length"
    standin.chat_text = "a long answer cut"
    r = llm.chat(ask(1), max_tokens=4)
    assert r.failure.kind == "truncated" and r.failure.raw == "a long answer cut"
    r = llm.chat(ask(1), max_tokens=4)
    assert r.cached and r.failure.kind == "truncated" and r.failure.raw == "a long answer cut"
    standin.chat_finish_reason = "stop"
    assert llm.chat(ask(1), max_tokens=40).ok  # more room is another request


@pytest.mark.parametrize("content", [b"this is not an sqlite file" * 200,
                                     b"SQLite format 3\x00" + b"\xff" * 5000])
def test_corrupt_cache_file_is_a_clear_error(standin, tmp_path, content):
    from tl_concepts.errors import LLMError
    from tl_concepts.llm import get_llm

    path = tmp_path / "llm-cache.sqlite"
    path.write_bytes(content)
    with pytest.raises(LLMError) as ei:
        get_llm("openai:standin-model", base_url=standin.base_url, api_key="k", cache=path)
    msg = str(ei.value)
    assert ei.value.kind == "cache"
    assert str(path) in msg and f"mv '{path}' '{path}.bad'" in msg and "cache=False" in msg
    assert standin.posts() == []
    # the advice works: moved aside, the cache starts afresh
    path.rename(str(path) + ".bad")
    llm = get_llm("openai:standin-model", base_url=standin.base_url, api_key="k", cache=path)
    assert llm.chat(ask(1)).ok and len(llm.cache) == 1


def test_cache_corrupted_while_open_stops_the_job(standin, tmp_path):
    from tl_concepts.errors import LLMError

    llm = cached(standin, tmp_path / "c.sqlite")
    llm.chat(ask(1))
    llm.cache.close()
    for f in tmp_path.iterdir():
        f.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(LLMError) as ei:
        llm.chat(ask(2))
    assert ei.value.kind == "cache" and "c.sqlite" in str(ei.value)


def test_cache_path_that_cannot_be_a_file_is_a_clear_error(tmp_path):
    from tl_concepts.errors import LLMError

    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(LLMError, match="cannot be used") as ei:
        LLMCache(tmp_path / "blocker" / "c.sqlite")
    assert ei.value.kind == "cache"
