import pytest

from tl_concepts.concepts.filters import FilterConfig, TooFewPointsError, apply_filters

TEXTS = ["the"] * 30 + ["cat"] * 12 + ["dog"] * 10 + ["emu"] * 9 + ["yak"] * 1 + ["The"] * 2


def test_counts_are_exact():
    rows, rep = apply_filters(TEXTS, FilterConfig(min_count=10, max_per_type=10, max_count=None))
    assert [(s.name, s.n_points, s.n_types) for s in rep.steps] == [
        ("input", 64, 6), ("min_count", 52, 3), ("max_per_type", 30, 3)]
    kept = [TEXTS[i] for i in rows]
    assert kept.count("the") == 10 and kept.count("cat") == 10 and kept.count("dog") == 10
    assert list(rows) == sorted(rows)


def test_max_count_and_lowercase():
    rows, rep = apply_filters(TEXTS, FilterConfig(min_count=9, max_per_type=None, max_count=20, lowercase=True))
    assert [(s.name, s.n_points, s.n_types) for s in rep.steps] == [
        ("input", 64, 5), ("min_count", 63, 4), ("max_count", 31, 3)]
    assert {TEXTS[i] for i in rows} == {"cat", "dog", "emu"}


def test_sampling_is_seeded():
    a, _ = apply_filters(TEXTS, FilterConfig(min_count=1, max_per_type=3, seed=1))
    b, _ = apply_filters(TEXTS, FilterConfig(min_count=1, max_per_type=3, seed=1))
    c, _ = apply_filters(TEXTS, FilterConfig(min_count=1, max_per_type=3, seed=2))
    assert list(a) == list(b) and list(a) != list(c)


def test_too_few_points_names_the_filter():
    with pytest.raises(TooFewPointsError, match="min_count filter"):
        apply_filters(TEXTS, FilterConfig(min_count=100))
    with pytest.raises(TooFewPointsError, match="max_count filter"):
        apply_filters(TEXTS, FilterConfig(min_count=1, max_count=0))
