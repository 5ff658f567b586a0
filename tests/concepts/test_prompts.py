import pytest

from tl_concepts.concepts.prompts import (TEMPLATES, is_refusal, parse_agree, parse_general, parse_judge,
                                          parse_lexical, parse_pos, word_list)


@pytest.mark.parametrize("text,label,status", [
    ("Animals", "Animals", "ok"), ("Label: \"Farm animals\".", "Farm animals", "ok"),
    ("Words: Swiss\nmore text", "Swiss", "ok"), ("\n\n  **Verbs in past tense**  ", "Verbs in past tense", "ok"),
    ("I'm sorry, but I can't assist with that.", None, "refusal"), ("As an AI, I cannot", None, "refusal"),
    ("", None, "unparseable"), ("x" * 200, None, "unparseable")])
def test_parse_general(text, label, status):
    p = parse_general(text)
    assert (p.label, p.status) == (label, status)


@pytest.mark.parametrize("text,label,status", [
    ("NA", "NA", "ok"), ("N/A", "NA", "ok"), ("none", "NA", "ok"), ("-ing", "-ing", "ok"),
    ("n-gram: \"un\"", "un", "ok"), ("these words have nothing at all in common here", None, "unparseable")])
def test_parse_lexical(text, label, status):
    p = parse_lexical(text)
    assert (p.label, p.status) == (label, status)


@pytest.mark.parametrize("text,label,status", [
    ("NNP", "NNP", "ok"), ("The tag is VBD.", "VBD", "ok"), ("PRP$", "PRP$", "ok"), ("NA", "NA", "ok"),
    ("They are NOUNS", None, "unparseable"), ("Sorry, I cannot do that", None, "refusal")])
def test_parse_pos(text, label, status):
    p = parse_pos(text)
    assert (p.label, p.status) == (label, status)


def test_parse_judge_and_agree():
    assert parse_judge('{"acceptable": "yes", "precise": "no"}') == (True, False)
    assert parse_judge('Sure: {"acceptable": true, "precise": true}') == (True, True)
    assert parse_judge('{"acceptable": "no", "precise": "yes"}') == (False, False)
    assert parse_judge("acceptable: yes, precise: yes") == (True, True)
    assert parse_judge("I think so") is None and parse_judge("") is None
    assert parse_agree('{"same": "yes"}') is True and parse_agree("No.") is False and parse_agree("maybe") is None
    assert is_refusal("I won't label these") and not is_refusal("Sorrowful words")


def test_word_lists_and_render():
    words = ["b", "a", "b", "c", "b", "a"]
    assert word_list(words, "types") == ["b", "a", "c"]
    assert word_list(words, "tokens") == words and word_list(words, "tokens", limit=2) == ["b", "a"]
    with pytest.raises(ValueError):
        word_list(words, "lemmas")
    msgs = TEMPLATES["label-lexical"].render(words, [("c", "a c d")], "types")
    assert [m.role for m in msgs] == ["system", "user"]
    assert "- a [[c]] d" in msgs[1].content and msgs[1].content.endswith("Words: b, a, c")
    assert {t.version for t in TEMPLATES.values()} == {"v1"} and len(TEMPLATES) == 4


def test_fewshot_template_shows_examples_from_outside_the_corpus_as_chat_turns():
    t = TEMPLATES["label-fewshot"]
    msgs = t.render(["Monday", "Friday", "Monday"], [], "types")
    assert [m.role for m in msgs] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert msgs[2].content == "Label: fruits" and msgs[-1].content.endswith("Words: Monday, Friday")
    assert t.max_tokens <= 12 and t.parse("Label: days of the week").label == "days of the week"
    from tl_concepts.corpus import gold_word_categories

    gold = set().union(*gold_word_categories().values())
    shown = {w.strip().lower() for ex, _ in t.examples for w in ex.split(",")}
    assert not shown & gold  # no example word is a word of the benchmark's categories


def test_default_template_is_fewshot_for_the_embedded_model_only():
    from types import SimpleNamespace

    from tl_concepts.concepts.prompts import default_template

    assert default_template(SimpleNamespace(model="SmolLM2-135M-Instruct")) == "label-fewshot"
    assert default_template(SimpleNamespace(model="gpt-4o-mini")) == "label-general"
