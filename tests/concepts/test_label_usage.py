"""Each label stores the LLM usage that produced it, so a rerun that reuses the labels (after
a clean finish, a kill -9, or through the answer cache) reports the usage of the calls that
produced them (issue 11 item 5)."""
from __future__ import annotations

import json

import pytest

from tests.helpers.concepts_fakes import flat_set
from tests.helpers.openai_server import OpenAIStandin, Reply
from tests.helpers.scripts import run_python
from tests.helpers.usage import counts
from tests.helpers.usage import standin_llm as llm_for
from tl_concepts.concepts.labelling import LABEL_STAGE, LabelOptions, LabelStore, label_concepts
from tl_concepts.concepts.model import ConceptLabel
from tl_concepts.llm.base import LLM, ChatResult
from tl_concepts.llm.ledger import Ledger, merge_usage
from tl_concepts.usage import items_without_usage, labels_usage, stage_usage

GROUPS = {3: [(0, "December"), (1, "days"), (2, "hours")], 7: [(3, "red"), (4, "blue")],
          9: [(5, "cat"), (6, "dog"), (7, "horse"), (8, "cow")], 12: [(9, "Paris"), (10, "Rome")],
          15: [(11, "run"), (12, "walk")], 18: [(13, "happy"), (14, "sad"), (15, "angry")]}


def prompt_tokens_of(request) -> int:
    """A per-concept token count: the length of the prompt the server received."""
    return sum(len(m["content"] or "") for m in request["json"]["messages"])


def respond(request):
    return Reply.chat("a topic", prompt_tokens=prompt_tokens_of(request), completion_tokens=3)


def test_rerun_reports_the_usage_that_produced_the_labels(tmp_path):
    store = tmp_path / "labels.jsonl"
    opts = LabelOptions(requests_per_batch=4)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        first_ledger = Ledger()
        first = label_concepts(flat_set(GROUPS), llm_for(srv, first_ledger), store, opts, progress=False)
        posts = srv.posts("/chat/completions")
        assert len(posts) == 6 and all(lab.accepted for lab in first)
        used = labels_usage(first)
        assert counts(used) == counts(first_ledger.usage(stage=LABEL_STAGE))
        assert used["requests"] == 6 and used["completion_tokens"] == 18
        assert used["prompt_tokens"] == sum(prompt_tokens_of(p) for p in posts) > 6 * 50
        assert used["cost_usd"] == pytest.approx((used["prompt_tokens"] * 0.15 + 18 * 0.60) / 1e6)
        # each label holds its own request's usage, tagged in the ledger under concept:<id>
        for lab in first:
            assert lab.usage["requests"] == 1 and lab.usage["cache_hits"] == 0
            assert counts(lab.usage) == counts(first_ledger.usage(stage=LABEL_STAGE, unit=f"concept:{lab.concept_id}"))
        assert len({lab.usage["prompt_tokens"] for lab in first}) > 1
        # the usage is on disk with the label
        on_disk = {json.loads(line)["concept_id"]: json.loads(line)["usage"] for line in store.read_text().splitlines()}
        assert on_disk == {lab.concept_id: lab.usage for lab in first}

        # a rerun (new process: a new ledger) makes no request, yet reports the same usage
        second_ledger = Ledger()
        again = label_concepts(flat_set(GROUPS), llm_for(srv, second_ledger), store, opts, progress=False)
        assert len(srv.posts("/chat/completions")) == 6
        assert second_ledger.usage()["calls"] == 0
        assert labels_usage(again) == used
        assert [lab.to_dict() for lab in again] == [lab.to_dict() for lab in first]


def test_healed_label_counts_the_failed_attempt_too(tmp_path):
    store = tmp_path / "labels.jsonl"
    opts = LabelOptions(requests_per_batch=1)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        srv.push(Reply.error(500, "boom"))  # the first concept's only attempt fails
        led1 = Ledger()
        first = label_concepts(flat_set(GROUPS), llm_for(srv, led1, retry=0), store, opts, progress=False)
        failed = [lab for lab in first if not lab.accepted]
        assert len(failed) == 1 and failed[0].reason == "retries_exhausted"
        assert failed[0].usage["requests"] == 1 and failed[0].usage["failures"] == {"retries_exhausted": 1}
        led2 = Ledger()
        healed = label_concepts(flat_set(GROUPS), llm_for(srv, led2, retry=0), store, opts, progress=False)
        assert len(srv.posts("/chat/completions")) == 7 and all(lab.accepted for lab in healed)
        assert led2.usage()["requests"] == 1
        fixed = next(lab for lab in healed if lab.concept_id == failed[0].concept_id)
        assert fixed.usage["requests"] == 2 and fixed.usage["failures"] == {"retries_exhausted": 1}
        # the stage's usage is everything both invocations spent on the current labels
        assert counts(labels_usage(healed)) == counts(merge_usage(led1.usage(), led2.usage()))
        # nothing left: a third run makes no request and reports the same
        again = label_concepts(flat_set(GROUPS), llm_for(srv, Ledger(), retry=0), store, opts, progress=False)
        assert len(srv.posts("/chat/completions")) == 7
        assert labels_usage(again) == labels_usage(healed)


def test_cache_hit_on_a_fresh_label_is_a_cache_hit(tmp_path):
    opts = LabelOptions(requests_per_batch=8)
    cache = tmp_path / "llm-cache"
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        first = label_concepts(flat_set(GROUPS), llm_for(srv, Ledger(), cache=cache), tmp_path / "a.jsonl", opts,
                               progress=False)
        # another label store (no stored labels) but the same answer cache: 0 requests
        led = Ledger()
        cached = label_concepts(flat_set(GROUPS), llm_for(srv, led, cache=cache), tmp_path / "b.jsonl", opts,
                                progress=False)
        assert len(srv.posts("/chat/completions")) == 6
    assert [lab.label for lab in cached] == [lab.label for lab in first]
    u = labels_usage(cached)
    assert (u["calls"], u["cache_hits"], u["requests"], u["prompt_tokens"], u["cost_usd"]) == (6, 6, 0, 0, 0.0)
    assert counts(u) == counts(led.usage(stage=LABEL_STAGE))
    assert labels_usage(first)["requests"] == 6


def test_labels_without_usage_still_load(tmp_path):
    cs = flat_set({3: GROUPS[3]})
    old = label_concepts(cs, FixedLLM(), None, progress=False)[0].to_dict()
    del old["usage"]  # a line written before usage was stored
    (tmp_path / "labels.jsonl").write_text(json.dumps(old) + "\n")
    st = LabelStore(tmp_path / "labels.jsonl")
    (lab,) = st.labels()
    assert lab.usage == {} and lab.label == "a topic"
    assert ConceptLabel.from_dict({**old, "usage": None}).usage == {}
    assert items_without_usage([lab]) == 1 and labels_usage([lab])["calls"] == 0
    # the reused label keeps reporting nothing (its calls are unknown), and is not asked again
    llm = FixedLLM()
    assert labels_usage(label_concepts(cs, llm, st, progress=False)) == stage_usage([])
    assert llm.n == 0


class FixedLLM(LLM):
    """A bare LLM (no ledger of its own) answering "a topic": ``tagged()`` gives it one."""

    name, model = "fake", "fake-model"

    def __init__(self) -> None:
        self.n = 0

    async def achat(self, messages, *, temperature=0.0, max_tokens=256, json_output=False, stage="default"):
        self.n += 1
        return ChatResult(text="a topic", backend="fake", model="fake-model", prompt_tokens=40, completion_tokens=2,
                          requests=1)

    async def anext_token_distributions(self, prompt, positions, candidates, **kw):
        raise NotImplementedError


def test_bare_llm_usage_is_stored_too():
    labs = label_concepts(flat_set(GROUPS), FixedLLM(), None, progress=False)
    assert all(lab.usage["requests"] == 1 and lab.usage["prompt_tokens"] == 40 for lab in labs)
    u = labels_usage(labs)
    assert (u["requests"], u["prompt_tokens"], u["completion_tokens"]) == (6, 240, 12)
    assert u["cost_usd"] is None  # a model without a price: unknown, never guessed


CRASH_SCRIPT = """
import json, sys
from tests.concepts.test_label_usage import GROUPS
from tests.helpers.concepts_fakes import flat_set
from tl_concepts.concepts.labelling import LabelOptions, label_concepts
from tl_concepts.llm import get_llm
from tl_concepts.llm.ledger import Ledger
from tl_concepts.usage import labels_usage
llm = get_llm("openai:gpt-4o-mini", base_url={url!r}, api_key="sk-test", cache=False, ledger=Ledger())
labs = label_concepts(flat_set(GROUPS), llm, sys.argv[1], LabelOptions(requests_per_batch=2), progress=False)
print(json.dumps({{"usage": labels_usage(labs), "requests": llm.ledger.usage()["requests"]}}))
"""


def test_kill_mid_labels_then_rerun_reports_the_uninterrupted_usage(tmp_path):
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        script = CRASH_SCRIPT.format(url=srv.base_url)

        def run(store, crash=None):
            return run_python(script, str(store), crash_at=crash)

        crashed = run(tmp_path / "a.jsonl", "labels.batch:2")
        assert crashed.returncode == 137, crashed.stderr[-2000:]
        assert len(srv.posts("/chat/completions")) == 4
        resumed = run(tmp_path / "a.jsonl")
        assert len(srv.posts("/chat/completions")) == 6
        clean = run(tmp_path / "b.jsonl")
        assert resumed.returncode == 0 and clean.returncode == 0, resumed.stderr + clean.stderr
    r, c = json.loads(resumed.stdout), json.loads(clean.stdout)
    assert r["requests"] == 2 and c["requests"] == 6  # the resumed invocation asked only the rest
    assert r["usage"] == c["usage"] and r["usage"]["requests"] == 6  # but reports all six
