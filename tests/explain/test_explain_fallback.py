"""Against an endpoint without logprobs (real openai client, loopback stand-in), every
request that wants a distribution falls back to a chat answer and the result says so."""
import asyncio
import json

import pytest

from tests.helpers.openai_server import OpenAIStandin, Reply
from tl_concepts.explain.runner import ExplainConfig, explain_unit
from tl_concepts.explain.simulators import AllAtOnceSimulator
from tl_concepts.llm.openai_backend import OpenAIBackend

from tests.helpers.explain_fakes import WEEKDAYS, planted_unit


def _respond(request):
    """A chat-only model that knows weekdays; it never returns logprobs."""
    body = request["json"]
    if not request["path"].endswith("/chat/completions"):
        return None
    last = body["messages"][-1]["content"]
    if "Answer with JSON only" in last:
        listing = last.split("Tokens (index<tab>token):\n", 1)[1].split("\n\n", 1)[0]
        toks = [ln.split("\t", 1)[1] for ln in listing.split("\n")]
        return Reply.chat(json.dumps({"activations": [10 if t.strip() in WEEKDAYS else 0 for t in toks]}))
    if "Answer 1 for yes, 0 for no" in last:
        return Reply.chat("1" if any(w in last.split("Answer 1 for")[0].split("Text")[-1] for w in WEEKDAYS) else "0")
    return Reply.chat(" days of the week.")


@pytest.fixture
def server():
    with OpenAIStandin(api_key="sk-test", chat_logprobs=False, completions_alignment="unsupported") as srv:
        srv.responder = _respond
        yield srv


def test_simulation_falls_back_to_json_and_is_marked(server):
    llm = OpenAIBackend("standin-model", base_url=server.base_url, api_key="sk-test",
                        distribution_method="prompt_logprobs")
    sim = AllAtOnceSimulator(llm).simulate("days of the week", ["On", " Monday", " night"])
    assert sim.ok and sim.method == "json" and sim.activations == [0.0, 10.0, 0.0]
    assert sim.template == "simulate/json@1"


def test_explain_unit_without_logprobs_says_how_it_scored(server, tmp_path):
    llm = OpenAIBackend("standin-model", base_url=server.base_url, api_key="sk-test",
                        distribution_method="prompt_logprobs")
    unit = planted_unit("weekday", seed=1)
    res = asyncio.run(explain_unit(unit, llm, ExplainConfig(out_dir=str(tmp_path), n_bootstrap=0)))
    assert res["status"] == "ok" and res["llm"]["explanation"]["text"] == "days of the week"
    assert res["llm"]["simulation_method"] == ["json"]
    assert res["llm"]["scores"]["all"]["correlation"]["value"] > 0.9
    assert res["llm"]["detection"]["method"] == "chat" and res["llm"]["detection"]["n_failed"] == 0
    assert res["llm"]["fuzzing"]["method"] == "chat"
    chat_posts = server.posts("/chat/completions")
    assert any("Answer with JSON only" in p["json"]["messages"][-1]["content"] for p in chat_posts)
