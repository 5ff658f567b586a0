"""Labelling and judging through the real LLM layer: the stand-in OpenAI server (the real
``openai`` client over HTTP) and the in-process embedded SmolLM2."""
from __future__ import annotations

import pytest

from tests.helpers.concepts_fakes import category_of
from tests.helpers.openai_server import OpenAIStandin, Reply
from tl_concepts.concepts import ConceptsConfig, discover_concepts, evaluate, summary
from tl_concepts.concepts.filters import FilterConfig
from tl_concepts.concepts.labelling import LabelOptions, label_concepts
from tl_concepts.llm import get_llm
from tl_concepts.llm.ledger import Ledger, MeteredLLM


@pytest.fixture
def cs(synth, tmp_path):
    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=3), out=str(tmp_path / "c"))
    return discover_concepts(cfg, synth, progress=False)


def _words(request) -> list[str]:
    user = request["json"]["messages"][-1]["content"]
    for line in user.splitlines():
        if line.startswith(("Words: ", "Word group: ")):
            return line.split(": ", 1)[1].split(", ")
    return []


def test_labelling_through_standin_openai_server(cs, tmp_path):
    def respond(request):
        msgs = request["json"]["messages"]
        cat = category_of(_words(request))
        if msgs[0]["content"].startswith("You evaluate"):
            return Reply.chat('{"acceptable": "yes", "precise": "yes"}')
        if cat == "city":
            return Reply.chat(None, refusal="I can't help with that.")
        if cat == "verb":
            return Reply.chat("", finish_reason="content_filter")
        return Reply.chat(f"{cat.title()}s")

    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = respond
        ledger = Ledger()
        llm = get_llm("openai:standin-model", base_url=srv.base_url, api_key="sk-test", cache=False,
                              ledger=ledger, retry=0)
        store = tmp_path / "labels.jsonl"
        labels = label_concepts(cs, llm, store, LabelOptions(words_as="types", n_context=1), progress=False)
        assert len(srv.posts("/chat/completions")) == 4
        by_cat = {category_of(cs.concept(lab.concept_id).words): lab for lab in labels}
        assert by_cat["animal"].label == "Animals" and by_cat["animal"].status == "ok"
        assert by_cat["animal"].model == "standin-model" and by_cat["animal"].backend == "openai"
        assert by_cat["city"].status == "refusal" and by_cat["city"].label is None
        assert by_cat["verb"].status == "content_filter"
        sent = srv.posts("/chat/completions")[0]["json"]["messages"]
        assert sent[0]["role"] == "system" and "[[" in sent[1]["content"]
        # rerun with the same inputs: nothing left to ask
        again = get_llm("openai:standin-model", base_url=srv.base_url, api_key="sk-test", cache=False,
                                ledger=ledger)
        label_concepts(cs, again, store, LabelOptions(words_as="types", n_context=1), progress=False)
        assert len(srv.posts("/chat/completions")) == 4
        # another model at the same endpoint: labels of the first one are not reused
        other = get_llm("openai:other-model", base_url=srv.base_url, api_key="sk-test", cache=False,
                                ledger=ledger)
        relabelled = label_concepts(cs, other, store, LabelOptions(words_as="types", n_context=1), progress=False)
        assert len(srv.posts("/chat/completions")) == 8 and len(relabelled) == 4
        assert {p["json"]["model"] for p in srv.posts("/chat/completions")[4:]} == {"other-model"}
        assert len({lab.key for lab in labels} | {lab.key for lab in relabelled}) == 8
        rep = evaluate(cs, ConceptsConfig(k=4, out=str(tmp_path / "c")), labels=labels, judge=llm)
        assert rep.judge.n_labels == 2 and rep.judge.n_acceptable == 2 and rep.judge.n_refused_labels == 2
        assert all(j.method in ("chat", "prompt_logprobs", "chat_top_logprobs") for j in rep.judge.judgements)
        assert "LLM ledger" in summary(cs, labels, rep, llm)
        assert "sk-test" not in store.read_text()


@pytest.mark.slow
def test_labelling_through_in_process_smollm2(cs, tmp_path, smollm2):
    llm = MeteredLLM(smollm2, Ledger())  # what get_llm("in-process", cache=False) builds
    ids = cs.concept_ids()[:2]
    labels = label_concepts(cs, llm, tmp_path / "labels.jsonl", LabelOptions(words_as="types", max_tokens=8),
                            ids=ids, progress=False)
    assert [lab.concept_id for lab in labels] == ids
    for lab in labels:
        assert lab.backend == "in-process" and lab.model and lab.raw is not None
        assert lab.template == "label-fewshot"  # the embedded model's default
        assert lab.status in ("ok", "rejected", "refusal", "unparseable")
        assert (lab.label is not None) == (lab.status == "ok")
    # the judge reads a verdict and P(yes) from the logits even for this small model
    from tl_concepts.concepts.evaluation import judge_labels
    from tl_concepts.concepts.model import ConceptLabel

    fake = [ConceptLabel(i, "animals", "ok", "label-general", "v1") for i in ids]
    rep = judge_labels(cs, fake, llm)
    assert rep.n_judged == 2 and rep.methods == {"logits": 2} and rep.n_failed == 0
    assert all(0.0 < j.p_acceptable < 1.0 and 0.0 < j.p_precise < 1.0 for j in rep.judgements)
