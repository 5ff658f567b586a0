"""The explain pipeline on the real LLM backends: the OpenAI client against the loopback
stand-in server, and the in-process SmolLM2 backend (slow)."""
import json
import math

import pytest

from tests.helpers import openai_server as standin
from tests.helpers.explain_fakes import planted_unit
from tl_concepts.explain.prompts import simulation_prompt
from tl_concepts.explain.runner import ExplainConfig, run_explain, summary_table
from tl_concepts.explain.simulators import AllAtOnceSimulator
from tl_concepts.llm import openai_backend


@pytest.fixture
def server():
    with standin.OpenAIStandin(api_key="sk-test") as srv:
        yield srv


def _backend(srv):
    return openai_backend.OpenAIBackend("standin-model", base_url=srv.base_url, api_key="sk-test")


def test_simulation_offsets_match_the_servers_prompt_distributions(server):
    tokens = ["We", " met", " on", " Monday", "."]
    sim = AllAtOnceSimulator(_backend(server)).simulate("days of the week", tokens)
    assert sim.ok and sim.method == "prompt_logprobs"
    # The stand-in's toy model gives toy_logprobs(prompt[:p]) as the distribution at p:
    # recompute the expected value at each slot independently.
    p = simulation_prompt("days of the week", tokens)
    for got, pos in zip(sim.activations, p.positions):
        lp = standin.toy_logprobs(p.text[:pos])
        probs = {c: math.exp(lp[c]) for c in map(str, range(11))}
        want = sum(int(c) * v for c, v in probs.items()) / sum(probs.values())
        assert got == pytest.approx(want, rel=1e-6)


def test_run_explain_end_to_end_against_standin(server, tmp_path):
    server.chat_text = "days of the week."
    units = [planted_unit("weekday", unit=0, seed=1, n_top=3, n_random=3),
             planted_unit("digit", unit=1, seed=2, n_top=3, n_random=3)]
    cfg = ExplainConfig(out_dir=str(tmp_path / "run"), n_bootstrap=20, progress=False)
    res = run_explain(units, _backend(server), cfg)
    assert [r.status for r in res] == ["ok", "ok"]
    assert res[0].explanation == "days of the week"
    assert res[0].raw["llm"]["simulation_method"] == ["prompt_logprobs"]
    assert res[0].detection["n_failed"] == 0
    ledger = [json.loads(x) for x in (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()]
    assert all(x["failure"] is None and x["backend"] == "openai" for x in ledger)
    assert "sk-test" not in (tmp_path / "run" / "ledger.jsonl").read_text()
    n_posts = len(server.posts())
    assert n_posts >= len(ledger)
    run_explain(units, _backend(server), cfg)  # resume: no new request
    assert len(server.posts()) == n_posts
    assert "days of the week" in summary_table(cfg.out_dir)


def test_endpoint_without_logprobs_is_marked(server, tmp_path):
    server.completions_alignment = "unsupported"
    server.chat_logprobs = False
    llm = openai_backend.OpenAIBackend("standin-model", base_url=server.base_url, api_key="sk-test",
                                       distribution_method="prompt_logprobs")
    sim = AllAtOnceSimulator(llm).simulate("digits", ["a", " 7"])
    assert sim.method == "json"
    assert sim.ok or sim.failure.kind == "unparseable"  # the toy chat answers "ok": not JSON
