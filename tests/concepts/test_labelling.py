import json

import pytest
from tests.helpers.concepts_fakes import FakeLLM, category_of, words_of

from tl_concepts.concepts import ConceptsConfig, discover_concepts
from tl_concepts.concepts.filters import FilterConfig
from tl_concepts.concepts.labelling import LabelOptions, LabelStore, label_concepts
from tl_concepts.concepts.prompts import TEMPLATES
from tl_concepts.llm.base import Failure


@pytest.fixture
def cs(synth, tmp_path):
    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=5), out=str(tmp_path / "c"))
    return discover_concepts(cfg, synth, progress=False)


def answer_by_category(messages):
    cat = category_of(words_of(messages))
    if cat == "city":
        return "I'm sorry, but I can't help with labelling these words."
    if cat == "verb":
        return Failure("content_filter", "blocked by policy")
    return f"Label: {cat}s."


def test_labels_keep_provenance_and_refusals(cs, tmp_path):
    llm = FakeLLM(answer_by_category)
    store = tmp_path / "labels.jsonl"
    labels = label_concepts(cs, llm, store, LabelOptions(words_as="types", n_context=2), progress=False)
    assert len(labels) == 4 and len(llm.calls) == 4
    by_cat = {category_of(cs.concept(lab.concept_id).words): lab for lab in labels}
    assert by_cat["animal"].label == "animals" and by_cat["animal"].status == "ok"
    assert by_cat["animal"].raw == "Label: animals." and by_cat["animal"].model == "fake-model"
    assert by_cat["animal"].template == "label-general" and by_cat["animal"].template_version == "v1"
    assert by_cat["city"].status == "refusal" and by_cat["city"].label is None
    assert by_cat["city"].raw.startswith("I'm sorry")
    assert by_cat["verb"].status == "content_filter" and by_cat["verb"].label is None
    assert by_cat["colour"].n_context == 2 and by_cat["colour"].words_as == "types"
    # the prompt shows types once each plus two marked context sentences
    user = llm.calls[0][-1].content
    marked = [line for line in user.splitlines() if line.startswith("- ")]
    assert len(words_of(llm.calls[0])) == 4 and len(marked) == 2
    assert len({line.split("[[")[1].split("]]")[0] for line in marked}) == 2  # two different words
    assert llm.calls[0][0].role == "system" and llm.calls[0][0].content == TEMPLATES["label-general"].system
    on_disk = [json.loads(line) for line in store.read_text().splitlines()]
    assert sorted(r["status"] for r in on_disk) == ["content_filter", "ok", "ok", "refusal"]
    assert {lab.label for lab in cs.concept(by_cat["animal"].concept_id).labels} == {"animals"}


def test_tokens_with_repeats(cs):
    llm = FakeLLM(lambda m: "x")
    label_concepts(cs, llm, None, LabelOptions(words_as="tokens", max_words=1000), progress=False)
    assert sorted(len(words_of(c)) for c in llm.calls) == [20, 20, 20, 20]  # 4 types x 5 occurrences


def test_rerun_skips_done_and_retries_errors(cs, tmp_path):
    store = tmp_path / "labels.jsonl"
    flaky = FakeLLM(lambda m: Failure("retries_exhausted", "503") if category_of(words_of(m)) == "animal" else "ok label")
    first = label_concepts(cs, flaky, store, progress=False)
    assert sorted(lab.status for lab in first) == ["error", "ok", "ok", "ok"]
    assert [lab.reason for lab in first if lab.status == "error"] == ["retries_exhausted"]
    again = FakeLLM(lambda m: "animals")
    second = label_concepts(cs, again, store, progress=False)
    assert len(again.calls) == 1 and category_of(words_of(again.calls[0])) == "animal"
    assert sorted(lab.status for lab in second) == ["ok"] * 4
    third = FakeLLM(lambda m: "never")
    label_concepts(cs, third, LabelStore(store), progress=False)
    assert third.calls == []


def test_batches_run_concurrently(cs):
    llm = FakeLLM(lambda m: "x")
    label_concepts(cs, llm, None, LabelOptions(requests_per_batch=4), progress=False)
    assert llm.max_concurrent == 4


@pytest.mark.parametrize("template,answer,expected,status", [
    ("label-pos", "NNP", "NNP", "ok"), ("label-pos", "NA", None, "rejected"), ("label-lexical", "NA", None, "rejected"),
    ("label-lexical", "-ed", "-ed", "ok")])
def test_lexical_and_pos_templates(cs, template, answer, expected, status):
    llm = FakeLLM(lambda m: answer)
    labels = label_concepts(cs, llm, None, LabelOptions(template=template), progress=False)
    assert {lab.label for lab in labels} == {expected} and {lab.template for lab in labels} == {template}
    assert {lab.status for lab in labels} == {status} and {lab.raw for lab in labels} == {answer}
    assert {lab.reason for lab in labels} == ({"na"} if status == "rejected" else {""})
    assert "Penn Treebank" in llm.calls[0][-1].content if template == "label-pos" else "n-gram" in llm.calls[0][-1].content


def test_unparseable_pos_answer_is_recorded(cs):
    labels = label_concepts(cs, FakeLLM(lambda m: "a mixture of things"), None,
                            LabelOptions(template="label-pos"), progress=False)
    assert {lab.status for lab in labels} == {"unparseable"} and all(lab.raw for lab in labels)


def test_unknown_template(cs):
    with pytest.raises(ValueError, match="unknown template"):
        label_concepts(cs, FakeLLM(lambda m: "x"), None, LabelOptions(template="nope"), progress=False)
