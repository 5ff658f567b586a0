"""Each descriptor answer stores the LLM usage that produced it, so a rerun (after a clean
finish or a kill -9) reports the usage of the calls that produced the current answers, and the
stage result carries their sum (issue 11 item 5)."""
from __future__ import annotations

import json

import pytest

from tests.helpers.openai_server import OpenAIStandin, Reply
from tests.helpers.scripts import run_descriptors_child
from tests.helpers.tiny_models import TEXTS, hash_embed
from tests.helpers.usage import counts
from tests.helpers.usage import standin_llm as llm_for
from tl_concepts.descriptors import Descriptors, DescriptorsConfig, generate_descriptors, run_descriptors
from tl_concepts.descriptors.generate import DESCRIPTOR_STAGE, read_records
from tl_concepts.llm.ledger import Ledger, merge_usage
from tl_concepts.usage import descriptors_usage, items_without_usage

HOOK = "blocks.1.mlp.hook_post"
SENTENCES = {10: "The cat sat on the mat.", 11: "Markets rose 3 percent.", 12: "Rain again.",
             13: "The cat sat on the mat.", 14: "The minister spoke at length today."}


def sentence_of(request) -> str:
    return json.loads(request["json"]["messages"][-1]["content"].split("Sentence: ", 1)[1])


def respond(request):
    s = sentence_of(request)
    return Reply.chat(json.dumps(["news", "topic"]), prompt_tokens=100 + len(s), completion_tokens=len(s) // 5)


def test_rerun_reports_the_usage_that_produced_the_answers(tmp_path):
    path = tmp_path / "d.jsonl"
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        led = Ledger()
        first = generate_descriptors(SENTENCES, llm_for(srv, led), path, batch_size=2, progress=False)
        posts = srv.posts("/chat/completions")
        assert len(posts) == 4  # sentences 10 and 13 share a text: one request
        used = descriptors_usage(first)
        assert counts(used) == counts(led.usage(stage=DESCRIPTOR_STAGE))
        distinct = {t for t in SENTENCES.values()}
        assert used["requests"] == 4
        assert used["prompt_tokens"] == sum(100 + len(t) for t in distinct)
        assert used["completion_tokens"] == sum(len(t) // 5 for t in distinct)
        assert used["cost_usd"] == pytest.approx((used["prompt_tokens"] * 0.15 + used["completion_tokens"] * 0.6) / 1e6)
        by = {r.sentence: r for r in first}
        assert by[11].usage["prompt_tokens"] == 100 + len(SENTENCES[11]) and by[11].usage["requests"] == 1
        assert by[10].usage == by[13].usage and by[10].key == by[13].key
        # on disk with the answer
        assert {r.key: r.usage for r in read_records(path).values()} == {r.key: r.usage for r in first}

        led2 = Ledger()
        again = generate_descriptors(SENTENCES, llm_for(srv, led2), path, batch_size=2, progress=False)
        assert len(srv.posts("/chat/completions")) == 4 and led2.usage()["calls"] == 0
        assert descriptors_usage(again) == used
        assert again == first


def test_healed_answer_counts_the_failed_attempt_too(tmp_path):
    path = tmp_path / "d.jsonl"
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        srv.push(Reply.error(500, "boom"))
        led1, led2 = Ledger(), Ledger()
        first = generate_descriptors(SENTENCES, llm_for(srv, led1, retry=0), path, batch_size=1, progress=False)
        assert {r.sentence: r.status for r in first if not r.ok} == {10: "retries_exhausted", 13: "retries_exhausted"}
        healed = generate_descriptors(SENTENCES, llm_for(srv, led2, retry=0), path, batch_size=1, progress=False)
        assert all(r.ok for r in healed) and led2.usage()["requests"] == 1
        fixed = next(r for r in healed if r.sentence == 10)  # (13 shares its text: the same answer)
        assert fixed.usage["requests"] == 2 and fixed.usage["failures"] == {"retries_exhausted": 1}
        assert counts(descriptors_usage(healed)) == counts(merge_usage(led1.usage(), led2.usage()))


def test_old_records_without_usage_are_read(tmp_path):
    path = tmp_path / "d.jsonl"
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        first = generate_descriptors({0: "Rain."}, llm_for(srv, Ledger()), path, progress=False)
    d = json.loads(path.read_text())
    del d["usage"]
    path.write_text(json.dumps(d) + "\n")
    (r,) = read_records(path).values()
    assert r.usage == {} and r.key == first[0].key
    assert items_without_usage([r]) == 1 and descriptors_usage([r])["requests"] == 0


@pytest.fixture(scope="module")
def store(tiny_bridge, tmp_path_factory):
    from tl_concepts.capture import capture

    return capture(tiny_bridge, TEXTS * 2, [HOOK], tmp_path_factory.mktemp("du") / "run", context_tokens=32,
                   progress=False)


def test_kill_mid_descriptors_then_rerun_reports_the_uninterrupted_usage(store, tmp_path):
    cfg = dict(store=str(store.path), hook=HOOK, top_k=3, min_support=2, requests_per_batch=4)
    n_distinct = len(set(store.sentence_texts()))
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        p = run_descriptors_child(srv.base_url, str(store.path), HOOK, str(tmp_path / "crashed"),
                                  llm="openai:gpt-4o-mini", crash_at="descriptors.batch:2")
        assert p.returncode == 137, p.stderr[-2000:]
        assert len(srv.posts("/chat/completions")) == 8
        led = Ledger()
        resumed = run_descriptors(DescriptorsConfig(out=str(tmp_path / "crashed"), **cfg), llm=llm_for(srv, led),
                                  embed=hash_embed, progress=False)
        assert led.usage()["requests"] == n_distinct - 8
        fresh = run_descriptors(DescriptorsConfig(out=str(tmp_path / "fresh"), **cfg), llm=llm_for(srv, Ledger()),
                                embed=hash_embed, progress=False)
        # a finished rerun asks nothing and still reports the same usage
        rerun = run_descriptors(DescriptorsConfig(out=str(tmp_path / "fresh"), **cfg), llm=llm_for(srv, Ledger()),
                                embed=hash_embed, progress=False)
        assert len(srv.posts("/chat/completions")) == 2 * n_distinct
    u = descriptors_usage(resumed)
    assert u["requests"] == n_distinct and u == descriptors_usage(fresh) == descriptors_usage(rerun)
    assert u["prompt_tokens"] == sum(100 + len(t) for t in set(store.sentence_texts()))
    # the sum is saved with the result and read back
    assert descriptors_usage(Descriptors.load(tmp_path / "crashed")) == u
    assert resumed.metrics["llm_usage"] == u
    assert resumed.sentences.to_list() == fresh.sentences.to_list()
