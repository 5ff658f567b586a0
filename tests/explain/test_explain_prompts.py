from tl_concepts.capture.records import ActivationRecord
from tl_concepts.explain.prompts import (
    EXPLAIN_SYSTEM,
    EXPLAIN_TEMPLATE,
    SIMULATE_HEADER,
    explanation_messages,
    format_record,
    fuzzing_prompt,
    normalize_activations,
    parse_explanation,
    simulation_prompt,
)


def test_normalisation_floors_clips_and_zeroes_negatives():
    # Bills et al.: floor, not round: 0.26 -> 2.6 -> 2; 0.35 -> 3 (round-half-even gives 4)
    assert normalize_activations([0.0, 0.26, 0.35, 1.0, 1.2, -0.5], 1.0) == [0, 2, 3, 10, 10, 0]
    assert normalize_activations([0.3, 0.1], 0.0) == [0, 0]
    assert normalize_activations([0.3], -1.0) == [0]


def test_dense_record_block_exact_text():
    r = ActivationRecord(["On", " Monday", "\n"], [0.0, 2.0, 1.0])
    assert format_record(r, 2.0) == "<start>\nOn\t0\n Monday\t10\n\\n\t5\n<end>\n"


def test_sparse_record_repeats_nonzero_lines():
    toks = [" a"] * 9 + [" Friday"]
    r = ActivationRecord(toks, [0.0] * 9 + [4.0])
    text = format_record(r, 8.0)
    expected = ("<start>\n" + " a\t0\n" * 9 + " Friday\t5\n<end>\n"
                "\nThe same activations, with the zero lines removed:\n<start>\n Friday\t5\n<end>\n")
    assert text == expected


def test_explanation_messages_exact_text_without_few_shot():
    r = ActivationRecord(["It", " rained", " on", " Sunday"], [0.0, 0.0, 0.0, 3.0])
    msgs = explanation_messages([r], 3.0, few_shot=())
    assert [m.role for m in msgs] == ["system", "user"]
    assert msgs[0].content == EXPLAIN_SYSTEM
    assert msgs[1].content == ("Neuron 1\nActivations:\n<start>\nIt\t0\n rained\t0\n on\t0\n Sunday\t10\n<end>\n"
                               "\nExplanation of neuron 1 behavior: the main thing this neuron does is find")


def test_explanation_messages_with_few_shot_number_the_target_last():
    r = ActivationRecord(["x"], [1.0])
    msgs = explanation_messages([r], 1.0)
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[-1].content.startswith("Neuron 3\n")
    assert msgs[2].content == " water and other liquids, such as rivers and rain."
    assert EXPLAIN_TEMPLATE.id == "explain/token-activation@2"


def test_simulation_prompt_text_and_slot_offsets():
    p = simulation_prompt("days of the week", ["On", " Monday", "\t"], few_shot=())
    body = ("Neuron 1\nExplanation of neuron 1 behavior: the main thing this neuron does is find days of the week.\n"
            "Activations:\n<start>\nOn\tunknown\n Monday\tunknown\n\\t\tunknown\n<end>\n")
    assert p.text == SIMULATE_HEADER + body
    assert len(p.positions) == 3
    for pos, tok in zip(p.positions, ["On", " Monday", "\\t"]):
        assert p.text[:pos].endswith("\n" + tok + "\t")
        assert p.text[pos:pos + 7] == "unknown"


def test_parse_explanation_variants():
    assert parse_explanation(" days of the week.") == "days of the week"
    assert parse_explanation("The main thing this neuron does is find digits.\nExtra") == "digits"
    assert parse_explanation('"past tense verbs"') == "past tense verbs"
    assert parse_explanation("   ") is None
    assert parse_explanation(None) is None


def test_fuzzing_prompt_marks_spans():
    p = fuzzing_prompt("days", ["On", " Monday", " Tuesday", " we", " ate"], [False, True, True, False, False])
    assert "On <<Monday Tuesday>> we ate" in p
