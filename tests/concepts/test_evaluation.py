import pytest
from tests.helpers.concepts_fakes import FakeLLM, category_of, words_of

from tl_concepts.concepts import ConceptsConfig, discover_concepts, evaluate
from tl_concepts.concepts.evaluation import alignment, cohen_kappa, judge_labels, label_agreement
from tl_concepts.concepts.filters import FilterConfig
from tl_concepts.concepts.model import ConceptLabel


def test_alignment_threshold_on_hand_made_concepts():
    tags = [{"NN"}] * 9 + [{"VB"}] + [{"NN"}] * 19 + [{"JJ"}] + [{"JJ"}, {"RB"}] + [set(), set()]
    members = {10: list(range(10)),   # 9/10 NN  -> aligned at 0.9, not at 0.95
               11: list(range(10, 30)),  # 19/20 NN -> aligned at 0.95
               12: [30, 31],          # JJ, RB   -> not aligned
               13: [32, 33]}          # untagged -> not aligned
    r90 = alignment(members, tags, theta=0.9)
    assert r90.aligned == {10: "NN", 11: "NN"} and r90.n_concepts == 4 and r90.aligned_share == 0.5
    assert r90.n_tags == 4 and r90.n_tags_covered == 1 and r90.tag_coverage == 0.25
    r95 = alignment(members, tags, theta=0.95)
    assert r95.aligned == {11: "NN"}
    r_min = alignment(members, tags, theta=0.9, min_tag_count=2)
    assert r_min.n_tags == 2  # NN and JJ carried by >= 2 occurrences
    with pytest.raises(ValueError):
        alignment(members, tags, theta=0)


def test_multi_tag_occurrences():
    # gold categories can overlap: a word may carry several tags
    tags = [{"a", "b"}, {"a"}, {"a", "b"}]
    r = alignment({0: [0, 1, 2]}, tags, theta=0.6)
    assert r.aligned == {0: "a"} and r.tag_concepts == {"a": [0], "b": [0]} and r.n_tags_covered == 2


def test_alignment_reports_on_synthetic_corpus(synth, tmp_path):
    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=None), out=str(tmp_path))
    cs = discover_concepts(cfg, synth, progress=False)
    gold = {"animals": {"cat", "dog", "horse", "cow"}, "capitals": {"paris", "rome"}}
    rep = evaluate(cs, cfg, gold=gold)
    assert rep.alignment["pos"].n_aligned == 4 and rep.alignment["pos"].tag_coverage == 1.0
    assert rep.alignment["ner"].aligned_share == 0.25 and rep.alignment["ner"].n_tags == 1
    assert rep.alignment["gold"].n_aligned == 1 and rep.alignment["gold"].n_tags == 2
    assert (tmp_path / "evaluation.json").exists()
    finer = evaluate(cs.at(16), cfg, gold=gold, save=False)
    assert finer.alignment["gold"].n_aligned == 6  # 4 animal types + Paris + Rome


def test_judge_counts(synth, tmp_path):
    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=3), out=str(tmp_path))
    cs = discover_concepts(cfg, synth, progress=False)
    ids = cs.concept_ids()
    cats = {i: category_of(cs.concept(i).words) for i in ids}
    labels = [ConceptLabel(i, cats[i], "ok", "label-general", "v1") for i in ids[:3]]
    labels.append(ConceptLabel(ids[3], None, "refusal", "label-general", "v1", raw="I'm sorry"))

    def judge(msgs):
        cat = category_of(words_of(msgs))
        return {"animal": '{"acceptable": "yes", "precise": "yes"}', "verb": '{"acceptable": "yes", "precise": "no"}',
                "colour": '{"acceptable": "no", "precise": "yes"}', "city": "hmm"}[cat]

    rep = judge_labels(cs, labels, FakeLLM(judge))
    judged_cats = sorted(cats[i] for i in ids[:3])
    exp_acc = sum(c in ("animal", "verb") for c in judged_cats)
    exp_fail = sum(c == "city" for c in judged_cats)
    assert rep.n_labels == 3 and rep.n_refused_labels == 1 and rep.n_failed == exp_fail
    assert rep.n_judged == 3 - exp_fail and rep.n_acceptable == exp_acc
    assert rep.n_precise == sum(c == "animal" for c in judged_cats)  # "no" acceptable is never precise


def test_label_agreement():
    a = [ConceptLabel(i, lab, "ok", "label-pos", "v1") for i, lab in enumerate(["NN", "VB", "JJ", "NN"])]
    b = [ConceptLabel(i, lab, "ok", "label-pos", "v1") for i, lab in enumerate(["NN", "VB", "NN", "NN"])]
    b.append(ConceptLabel(9, "RB", "ok", "label-pos", "v1"))
    r = label_agreement(a, b)
    assert r.n_common == 4 and r.n_exact == 3 and r.exact_rate == 0.75
    assert r.kappa == pytest.approx(cohen_kappa(["nn", "vb", "jj", "nn"], ["nn", "vb", "nn", "nn"]))
    # po = 0.75, pe = (2*3 + 1*1 + 1*0)/16 = 7/16
    assert r.kappa == pytest.approx((0.75 - 7 / 16) / (1 - 7 / 16))
    g = label_agreement([ConceptLabel(1, "Big cats", "ok", "t", "v1")], [ConceptLabel(1, "cats, big", "ok", "t", "v1")])
    assert g.n_exact == 0 and g.mean_jaccard == 1.0


def test_judge_reads_raw_text_of_failed_json_check(synth, tmp_path):
    from tl_concepts.llm.base import Failure

    cfg = ConceptsConfig(k=2, filters=FilterConfig(min_count=1, max_per_type=2), out=str(tmp_path))
    cs = discover_concepts(cfg, synth, progress=False)
    labels = [ConceptLabel(i, "things", "ok", "label-general", "v1") for i in cs.concept_ids()]
    answers = iter([Failure("unparseable", "not JSON", raw="acceptable: yes; precise: no"),
                    Failure("retries_exhausted", "503")])
    rep = judge_labels(cs, labels, FakeLLM(lambda m: next(answers)), batch_size=1)
    assert (rep.n_judged, rep.n_acceptable, rep.n_precise, rep.n_failed) == (1, 1, 0, 1)
    assert rep.judgements[1].failure == "retries_exhausted"


class DistJudge(FakeLLM):
    """A judge with next-token distributions: P(yes) high when the label names the words' category."""

    def __init__(self):
        super().__init__(lambda m: "never used")
        self.prompts = []

    def render_chat(self, messages):
        return "\n".join(f"<{m.role}> {m.content}" for m in messages) + "\n<assistant>"

    async def anext_token_distributions(self, prompt, positions, candidates, *, stage="default"):
        from tl_concepts.llm.base import Distributions

        self.prompts.append(prompt)
        group = prompt.split("Word group: ")[1].split("\n")[0].split(", ")
        label = prompt.split("Label: ")[1].split("\n")[0]
        good = label == category_of(group)
        precise_q = "specific" in prompt
        p_yes = 0.9 if good and not precise_q else (0.3 if precise_q else 0.1)
        row = {c: 0.0 for c in candidates}
        row["Yes"], row[" yes"], row["No"] = p_yes * 0.8, p_yes * 0.1, (1 - p_yes) * 0.9
        return Distributions([row], method="logits", model=self.model, backend=self.name)


def test_judge_reads_the_verdict_from_next_token_distributions(synth, tmp_path):
    cfg = ConceptsConfig(k=4, filters=FilterConfig(min_count=1, max_per_type=3), out=str(tmp_path))
    cs = discover_concepts(cfg, synth, progress=False)
    ids = cs.concept_ids()
    cats = {i: category_of(cs.concept(i).words) for i in ids}
    labels = [ConceptLabel(ids[0], cats[ids[0]], "ok", "label-general", "v1"),
              ConceptLabel(ids[1], "wrong", "ok", "label-general", "v1"),
              ConceptLabel(ids[2], None, "rejected", "label-general", "v1", reason="echo"),
              ConceptLabel(ids[3], None, "refusal", "label-general", "v1")]
    judge = DistJudge()
    rep = judge_labels(cs, labels, judge)
    assert judge.calls == [] and len(judge.prompts) == 4  # two yes/no questions per accepted label
    assert all(p.endswith("Answer yes or no.\n<assistant>") for p in judge.prompts)
    j = {x.concept_id: x for x in rep.judgements}
    assert j[ids[0]].acceptable is True and j[ids[0]].p_acceptable == pytest.approx(0.9 * 0.9 / (0.9 * 0.9 + 0.1 * 0.9))
    assert j[ids[0]].precise is False and j[ids[0]].p_precise == pytest.approx(0.27 / (0.27 + 0.63))
    assert j[ids[1]].acceptable is False and j[ids[1]].method == "logits"
    assert (rep.n_labels, rep.n_judged, rep.n_acceptable, rep.n_rejected_labels, rep.n_refused_labels) == (2, 2, 1, 1, 1)
    assert rep.methods == {"logits": 2} and "logits P(yes)" in rep.describe()


def test_judge_without_distributions_says_it_parsed_the_chat_answer(synth, tmp_path):
    cfg = ConceptsConfig(k=2, filters=FilterConfig(min_count=1, max_per_type=2), out=str(tmp_path))
    cs = discover_concepts(cfg, synth, progress=False)
    labels = [ConceptLabel(i, "things", "ok", "label-general", "v1") for i in cs.concept_ids()]
    rep = judge_labels(cs, labels, FakeLLM(lambda m: '{"acceptable": "yes", "precise": "yes"}'))
    assert rep.methods == {"chat": 2} and rep.n_precise == 2
    assert "parsed chat answers (no next-token distributions)" in rep.describe()
