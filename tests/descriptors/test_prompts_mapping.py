import numpy as np
import pytest

from tl_concepts.descriptors import (TEMPLATE, CorpusTooSmallError, build_vocabulary, jaccard_stability, map_neurons,
                                     precision_recall_at_k, split_halves)


@pytest.mark.parametrize("answer, expected", [
    ('["Stock Market", "Japan", "stock market"]', ["stock market", "japan"]),
    ('Sure! Here you go: ["weather", "rain"] hope it helps', ["weather", "rain"]),
    ("- sports\n- football match\n", ["sports", "football match"]),
    ("1. politics\n2) elections", ["politics", "elections"]),
    ("finance, interest rates, banks", ["finance", "interest rates", "banks"]),
])
def test_parse_accepts_lists(answer, expected):
    p = TEMPLATE.parse(answer)
    assert p.status == "ok" and p.descriptors == expected


@pytest.mark.parametrize("answer, status", [
    ("", "unparseable"),
    ("The sentence is about a cat sitting on a mat in the sun", "unparseable"),
    ("[1, 2, 3]", "unparseable"),
    ('["this is a whole sentence rather than a short descriptor phrase"]', "unparseable"),
    ("I'm sorry, I cannot help with that.", "refusal"),
    ('["heavy rain", "severe weather", "severe", "heavy rain", "alar', "truncated"),
    ('["war", "fin', "truncated"),
    ('Sure: ["war",\n"finance",\n"mark', "truncated"),
])
def test_parse_failures_are_failures(answer, status):
    p = TEMPLATE.parse(answer)
    assert p.status == status and p.descriptors == [] and p.message


def test_prompt_is_one_shot_and_versioned():
    msgs = TEMPLATE.render("Rain fell on Sydney.")
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user"]
    assert TEMPLATE.parse(msgs[2].content).descriptors == TEMPLATE.example_answer
    assert '"Rain fell on Sydney."' in msgs[3].content
    assert (TEMPLATE.name, TEMPLATE.version) == ("descriptors", "v2")


def _synthetic(n=400, d=12, seed=0):
    """Sentences tagged with random topics; neuron 3 fires on 'weather' sentences only."""
    rng = np.random.default_rng(seed)
    topics = ["weather", "sports", "finance", "politics"]
    descs = [[t for t in topics if rng.random() < 0.25] for _ in range(n)]
    acts = rng.normal(0, 1, (n, d))
    is_weather = np.array(["weather" in ds for ds in descs])
    acts[:, 3] = np.where(is_weather, 5 + rng.random(n), rng.random(n))
    acts[:, 7] = 2.0  # a dead (constant) neuron
    return descs, acts, is_weather


def onehot_embed(texts):
    vocab = {"weather": 0, "rain": 0, "sports": 1, "finance": 2, "politics": 3}
    e = np.zeros((len(texts), 4), np.float32)
    for i, t in enumerate(texts):
        e[i, vocab[t]] = 1
    return e


def test_one_neuron_one_descriptor_is_mapped_and_stable():
    descs, acts, is_weather = _synthetic()
    descs = [["rain" if (d == "weather" and i % 3 == 0) else d for d in ds] for i, ds in enumerate(descs)]
    vocab = build_vocabulary(descs, onehot_embed)
    assert len(vocab) == 4
    w = vocab.cluster_of["weather"]
    assert vocab.cluster_of["rain"] == w and vocab.names[w] == "weather"  # the more frequent member
    tags = vocab.tag_matrix(descs)
    assert tags[:, w].tolist() == is_weather.tolist()
    cal, val = split_halves(len(descs), seed=0, min_half=20)
    m_cal = map_neurons(acts, tags, cal, top_k=20)
    m_val = map_neurons(acts, tags, val, top_k=20)
    assert m_cal.descriptors(3) == [w]
    assert m_cal.composition[3, w] == 1.0
    np.testing.assert_allclose(m_cal.base_rate[w], tags[cal, w].mean())
    assert m_cal.excess[3, w] == pytest.approx(1.0)
    assert m_cal.descriptors(7) == []  # constant neuron: no exemplars, no descriptors
    # random neurons: at most rarely mapped (composition needs lift >= 2 over a ~25% base rate)
    mapped_random = [j for j in m_cal.all_descriptors() if j != 3]
    assert len(mapped_random) <= 2
    assert jaccard_stability({3: m_cal.descriptors(3)}, {3: m_val.descriptors(3)}) == 1.0
    p, r = precision_recall_at_k(m_cal.all_descriptors(), {3: {w}}, k=2)
    assert (p, r) == (0.5, 1.0)


def test_map_neurons_hand_numbers():
    acts = np.array([[3.0], [2.0], [1.0], [0.0]])
    tags = np.array([[1, 1], [0, 1], [0, 1], [0, 0]], bool)
    m = map_neurons(acts, tags, top_k=2, composition_threshold=0.5, min_lift=1.0, min_support=1)
    np.testing.assert_allclose(m.composition[0], [0.5, 1.0])
    np.testing.assert_allclose(m.base_rate, [0.25, 0.75])
    np.testing.assert_allclose(m.excess[0], [(0.5 - 0.25) / 0.75, 1.0])
    assert m.descriptors(0) == [1, 0]
    strict = map_neurons(acts, tags, top_k=2, composition_threshold=0.5, min_lift=2.0, min_support=1)
    assert strict.descriptors(0) == [0]  # lift 2 for entry 0, 1.33 for entry 1
    assert map_neurons(acts, tags, top_k=2, min_support=2, min_lift=1.0).descriptors(0) == [1]


def test_corpus_too_small():
    with pytest.raises(CorpusTooSmallError, match="at least 40 sentences"):
        split_halves(30, min_half=20)
    with pytest.raises(CorpusTooSmallError, match="top_k=20"):
        map_neurons(np.zeros((10, 2)), np.zeros((10, 1), bool), top_k=20)


def test_metrics_hand_numbers():
    assert precision_recall_at_k({1: [5, 6, 7]}, {1: [6, 9]}, k=2) == (0.5, 0.5)
    assert precision_recall_at_k({}, {1: [6]}, k=2) == (0.0, 0.0)
    assert jaccard_stability({0: [1, 2, 3]}, {0: [2, 3, 4]}) == 0.5
    assert np.isnan(jaccard_stability({}, {}))
