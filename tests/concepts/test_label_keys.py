"""Labels are keyed by what produced them, runs heal, fatal errors stop, a crash resumes to
the same labels (issue 11), and the label gate refuses echoes (issue 12)."""
import asyncio
import json

import pytest

from tests.helpers.concepts_fakes import FakeLLM, category_of, flat_set, words_of
from tests.helpers.scripts import run_python

from tl_concepts.concepts import ConceptsConfig, discover_concepts, label, summary
from tl_concepts.concepts.filters import FilterConfig
from tl_concepts.concepts.labelling import LabelOptions, LabelStore, alabel_concepts, label_concepts
from tl_concepts.concepts.model import ConceptSet
from tl_concepts.concepts.prompts import label_gate
from tl_concepts.errors import LLMAuthError
from tl_concepts.llm.base import Failure

@pytest.fixture
def cs(synth, tmp_path):
    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=5), out=str(tmp_path / "c"))
    return discover_concepts(cfg, synth, progress=False)


def by_words(messages):
    """A label that names the words shown: what a correct label of these members would be."""
    ws = sorted(set(words_of(messages)))
    return f"group of {ws[0]} and {len(ws) - 1} others"


def test_same_node_id_with_other_members_gets_a_fresh_label(tmp_path):
    # issue 11: node 2394 was {December, days, hours, week, year}, then {across, along, area, around}
    store = tmp_path / "labels.jsonl"
    first = flat_set({2394: [(0, "December"), (1, "days"), (2, "hours"), (3, "week")],
                      7: [(4, "red"), (5, "blue")]})
    llm = FakeLLM(by_words)
    a = {lab.concept_id: lab for lab in label_concepts(first, llm, store, progress=False)}
    assert a[2394].label == "group of December and 3 others" and len(llm.calls) == 2
    second = flat_set({2394: [(6, "across"), (7, "along"), (8, "area"), (9, "around")],
                       7: [(4, "red"), (5, "blue")]})
    llm2 = FakeLLM(by_words)
    b = {lab.concept_id: lab for lab in label_concepts(second, llm2, store, progress=False)}
    assert len(llm2.calls) == 1 and words_of(llm2.calls[0]) == ["across", "along", "area", "around"]
    assert b[2394].label == "group of across and 3 others" and b[7].key == a[7].key and b[7].label == a[7].label
    # the old label is still in the store, under its own key: going back costs nothing
    llm3 = FakeLLM(by_words)
    again = {lab.concept_id: lab for lab in label_concepts(first, llm3, store, progress=False)}
    assert llm3.calls == [] and again[2394].label == a[2394].label


def test_recut_reuses_unchanged_concepts_and_moved_node_ids(cs, tmp_path):
    store = tmp_path / "labels.jsonl"
    llm = FakeLLM(by_words)
    label_concepts(cs, llm, store, progress=False)
    finer = cs.at(6)
    unchanged = set(cs.concept_ids()) & set(finer.concept_ids())
    llm2 = FakeLLM(by_words)
    labels = label_concepts(finer, llm2, store, progress=False)
    assert len(llm2.calls) == 6 - len(unchanged) > 0 and len(labels) == 6
    for lab in labels:  # every label names the words its concept holds now
        ws = sorted(set(finer.concept(lab.concept_id).words))
        assert lab.label == f"group of {ws[0]} and {len(ws) - 1} others"
        assert lab.members_fp == finer.members_fingerprint(lab.concept_id)


def test_reclustering_with_other_settings_into_the_same_store(synth, tmp_path):
    out = str(tmp_path / "c")
    store = tmp_path / "labels.jsonl"
    a = discover_concepts(ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=5), out=out), synth,
                          progress=False)
    label_concepts(a, FakeLLM(by_words), store, progress=False)
    b = discover_concepts(ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=4), out=out), synth,
                          progress=False)
    llm = FakeLLM(by_words)
    labels = label_concepts(b, llm, store, progress=False)
    assert len(llm.calls) == 4
    assert all(lab.members_fp == b.members_fingerprint(lab.concept_id) for lab in labels)


def test_other_llm_template_or_options_mean_fresh_labels(cs, tmp_path):
    store = tmp_path / "labels.jsonl"
    first = label_concepts(cs, FakeLLM(by_words), store, progress=False)
    other = FakeLLM(lambda m: "things")
    other.model = "another-model"
    second = label_concepts(cs, other, store, progress=False)
    assert len(other.calls) == 4 and {lab.label for lab in second} == {"things"}
    assert {lab.model for lab in second} == {"another-model"}
    hot = FakeLLM(lambda m: "warm things")
    label_concepts(cs, hot, store, LabelOptions(temperature=0.7), progress=False)
    assert len(hot.calls) == 4
    typed = FakeLLM(lambda m: "typed things")
    label_concepts(cs, typed, store, LabelOptions(words_as="types"), progress=False)
    assert len(typed.calls) == 4
    same = FakeLLM(lambda m: "never asked")
    assert label_concepts(cs, same, store, progress=False) == first and same.calls == []
    for lab in first:  # provenance
        assert lab.template == "label-general" and lab.template_version == "v1"
        assert lab.model == "fake-model" and lab.backend == "fake" and len(lab.key) == 16 and lab.members_fp
    assert len(LabelStore(store).records) == 16


def test_transient_failures_heal_permanent_ones_wait_for_retry_failed(cs, tmp_path):
    store = tmp_path / "labels.jsonl"
    kinds = {"animal": Failure("transient", "connection reset"), "verb": Failure("unparseable", "garbage", raw="%%"),
             "colour": Failure("truncated", "cut at max_tokens", raw="concept politi"), "city": "cities"}
    first = label_concepts(cs, FakeLLM(lambda m: kinds[category_of(words_of(m))]), store, progress=False)
    st = {category_of(cs.concept(lab.concept_id).words): (lab.status, lab.reason) for lab in first}
    assert st == {"animal": ("error", "transient"), "verb": ("unparseable", "unparseable"),
                  "colour": ("rejected", "truncated"), "city": ("ok", "")}
    assert all(lab.label is None for lab in first if lab.status != "ok")
    heal = FakeLLM(lambda m: "animals")
    second = label_concepts(cs, heal, store, progress=False)
    assert [category_of(words_of(c)) for c in heal.calls] == ["animal"]
    assert sorted(lab.status for lab in second) == ["ok", "ok", "rejected", "unparseable"]
    retry = FakeLLM(lambda m: category_of(words_of(m)) + " words")
    third = label_concepts(cs, retry, store, retry_failed=True, progress=False)
    assert sorted(category_of(words_of(c)) for c in retry.calls) == ["colour", "verb"]
    assert [lab.status for lab in third] == ["ok"] * 4


def test_fatal_llm_error_stops_labelling_and_keeps_finished_batches(cs, tmp_path):
    store = tmp_path / "labels.jsonl"
    order = cs.concept_ids()
    bad = set(cs.concept(order[2]).words)

    def respond(m):
        if set(words_of(m)) == bad:
            raise LLMAuthError("the API key was refused (401): set a valid key")
        return "fine label"

    llm = FakeLLM(respond)
    with pytest.raises(LLMAuthError, match="401"):
        label_concepts(cs, llm, store, LabelOptions(requests_per_batch=2), progress=False)
    saved = LabelStore(store).labels()
    assert len(saved) == 3 and all(lab.status == "ok" for lab in saved)  # batch 1 and the batch-2 survivor
    rest = FakeLLM(lambda m: "fine label")
    assert len(label_concepts(cs, rest, store, LabelOptions(requests_per_batch=2), progress=False)) == 4
    assert len(rest.calls) == 1


@pytest.mark.parametrize("label,reason", [
    ("called, called, calling, calling", "echo"), ("calling called", "echo"), ("Cats, dogs, horses", "echo"),
    ("cat dog", "echo"), ("a b c d e f g h i", "too_long"), ("", "empty"), ("  ", "empty"), ("NA", "na"),
    ("N/A", "na"), ("none", "na"), ("verbs of calling", None), ("called", None), ("past-tense verbs", None),
    ("Time expressions", None)])
def test_label_gate(label, reason):
    words = ["called", "called", "calling", "calls", "cat", "dog", "horse"]
    assert label_gate(label, words) == reason


def test_echo_answers_are_rejected_with_their_raw_text(cs, tmp_path):
    def echo(m):
        ws = words_of(m)
        return ", ".join(ws[:4]) if category_of(ws) in ("animal", "verb") else category_of(ws) + " words"

    cfg = ConceptsConfig(k=4, out=str(tmp_path / "c"))
    labels = label(cs, cfg, FakeLLM(echo), progress=False)
    rej = [lab for lab in labels if lab.status == "rejected"]
    assert len(rej) == 2 and {lab.reason for lab in rej} == {"echo"} and all(lab.label is None for lab in rej)
    assert all(lab.raw.count(",") == 3 for lab in rej)
    text = summary(cs, labels)
    assert "labels: 2 accepted of 4 concepts; not accepted: 2 rejected (2 echo)" in text
    assert cs.to_pandas()["label"].notna().sum() == 2
    assert "4 labelled: 2 accepted" in repr(cs)
    back = ConceptSet.load(tmp_path / "c")  # labels saved with the set
    assert back.label_counts() == {"ok": 2, "rejected": 2}


def test_labelling_inside_a_running_event_loop(cs, tmp_path):
    async def notebook_cell():
        sync = label_concepts(cs, FakeLLM(lambda m: "sync label"), None, progress=False)
        awaited = await alabel_concepts(cs, FakeLLM(lambda m: "async label"), None, progress=False)
        return sync, awaited

    sync, awaited = asyncio.run(notebook_cell())
    assert {lab.label for lab in sync} == {"sync label"} and {lab.label for lab in awaited} == {"async label"}


CRASH_SCRIPT = """
import json, sys
from tests.helpers.concepts_fakes import FakeLLM, make_input, words_of
from tl_concepts.concepts import ConceptsConfig, discover_concepts
from tl_concepts.concepts.filters import FilterConfig
from tl_concepts.concepts.labelling import LabelOptions, label_concepts
cs = discover_concepts(ConceptsConfig(k=12, filters=FilterConfig(min_count=1, max_per_type=3)), make_input(),
                       save=False, progress=False)
llm = FakeLLM(lambda m: "label of " + " ".join(sorted(set(words_of(m)))))
labs = label_concepts(cs, llm, sys.argv[1], LabelOptions(requests_per_batch=3), progress=False)
print(json.dumps({"calls": len(llm.calls), "labels": [l.to_dict() for l in labs]}))
"""


def test_crash_mid_labels_then_rerun_equals_uninterrupted_run(tmp_path):
    def run(store, crash=None):
        return run_python(CRASH_SCRIPT, str(store), crash_at=crash)

    crashed = run(tmp_path / "a.jsonl", "labels.batch:2")
    assert crashed.returncode == 137 and "labels.batch" in crashed.stderr
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 6  # two batches of three saved
    resumed = run(tmp_path / "a.jsonl")
    clean = run(tmp_path / "b.jsonl")
    assert resumed.returncode == 0 and clean.returncode == 0, resumed.stderr + clean.stderr
    r, c = json.loads(resumed.stdout), json.loads(clean.stdout)
    assert r["calls"] == 6 and c["calls"] == 12
    assert r["labels"] == c["labels"]
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_cli_flags_for_retry_and_export():
    from tl_concepts.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["concepts", "--store", "s", "--layer", "1", "--label", "--retry-failed",
                              "--export-tcn", "rel"])
    assert args.retry_failed is True and args.export_tcn == "rel" and not hasattr(args, "template")
    assert not hasattr(parser.parse_args(["concepts", "--store", "s", "--layer", "1"]), "retry_failed")


def test_labels_without_an_input_key_are_not_trusted(cs, tmp_path):
    store = tmp_path / "labels.jsonl"
    old = {"concept_id": cs.concept_ids()[0], "label": "stale", "status": "ok", "template": "label-general",
           "template_version": "v1"}
    store.write_text(json.dumps(old) + "\n")
    llm = FakeLLM(lambda m: "fresh")
    labels = label_concepts(cs, llm, store, progress=False)
    assert len(llm.calls) == 4 and {lab.label for lab in labels} == {"fresh"}
    assert "stale" not in store.read_text()


def test_judge_inside_a_running_event_loop(cs):
    from tl_concepts.concepts.evaluation import judge_labels
    from tl_concepts.concepts.model import ConceptLabel

    labels = [ConceptLabel(i, "things", "ok", "label-general", "v1") for i in cs.concept_ids()]

    async def cell():
        return judge_labels(cs, labels, FakeLLM(lambda m: '{"acceptable": "no", "precise": "no"}'))

    rep = asyncio.run(cell())
    assert rep.n_judged == 4 and rep.n_acceptable == 0
