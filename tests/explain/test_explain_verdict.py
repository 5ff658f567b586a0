"""Verdicts from paired bootstrap intervals, checked against a loop over explicit resamples."""
import math

import numpy as np
import pytest

from tl_concepts.explain.scoring import correlation
from tl_concepts.explain.verdict import Verdict, count_verdicts, verdict


def _records(rng, n=12, length=10):
    t = [np.where(rng.random(length) < 0.25, rng.uniform(2, 6, length), 0.0) for _ in range(n)]
    return t


def test_paired_delta_equals_explicit_resampling():
    rng = np.random.default_rng(7)
    t = _records(rng)
    good = [x + rng.normal(scale=0.5, size=x.size) for x in t]
    weak = [x * 0.2 + rng.normal(scale=1.0, size=x.size) for x in t]
    v = verdict(t, good, weak, n_bootstrap=300, seed=11)
    # the same resamples, by hand: draw records, concatenate, correlate both, subtract
    counts = np.random.default_rng(11).multinomial(len(t), np.full(len(t), 1 / len(t)), size=300)
    deltas, corrs = [], []
    for c in counts:
        idx = np.repeat(np.arange(len(t)), c)
        tt = np.concatenate([t[i] for i in idx])
        a = correlation(tt, np.concatenate([good[i] for i in idx]))
        b = correlation(tt, np.concatenate([weak[i] for i in idx]))
        corrs.append(a)
        deltas.append(a - b)
    assert v.delta_vs_baseline.low == pytest.approx(np.quantile(deltas, 0.025), abs=1e-9)
    assert v.delta_vs_baseline.high == pytest.approx(np.quantile(deltas, 0.975), abs=1e-9)
    assert v.correlation.low == pytest.approx(np.quantile(corrs, 0.025), abs=1e-9)
    ta = np.concatenate(t)
    assert v.delta_vs_baseline.value == pytest.approx(
        correlation(ta, np.concatenate(good)) - correlation(ta, np.concatenate(weak)), abs=1e-12)
    assert v.label == "beats baseline" and v.beats_baseline and v.beats_chance


def test_labels_chance_and_not_above_chance():
    rng = np.random.default_rng(1)
    t = _records(rng, n=15)
    good = [x + rng.normal(scale=0.5, size=x.size) for x in t]
    also_good = [x + rng.normal(scale=0.5, size=x.size) for x in t]
    noise = [rng.normal(size=x.size) for x in t]
    tie = verdict(t, good, also_good, n_bootstrap=500)
    assert tie.label == "above chance" and tie.beats_chance and not tie.beats_baseline
    assert tie.delta_vs_baseline.low < 0 < tie.delta_vs_baseline.high
    bad = verdict(t, noise, good, n_bootstrap=500)
    assert bad.label == "not above chance" and not bad.beats_chance and not bad.beats_baseline
    assert bad.correlation.low < 0


def test_beating_a_baseline_below_chance_is_not_a_win():
    rng = np.random.default_rng(5)
    t = _records(rng, n=15)
    weak = [rng.normal(size=x.size) for x in t]               # chance
    anti = [-x for x in t]                                    # far below chance
    v = verdict(t, weak, anti, n_bootstrap=300)
    assert v.beats_baseline and not v.beats_chance
    assert v.label == "not above chance"
    assert count_verdicts([v]) == "0 of 1 explanations beat the baseline at 95%; 0 of 1 above chance"


def test_constant_baseline_counts_as_zero_and_table_delta():
    rng = np.random.default_rng(2)
    t = _records(rng)
    good = [x + rng.normal(scale=0.3, size=x.size) for x in t]
    zeros = [np.zeros(x.size) for x in t]
    v = verdict(t, good, zeros, table_sim=good, n_bootstrap=200)
    assert v.delta_vs_baseline.value == pytest.approx(v.correlation.value)
    assert v.beats_baseline
    assert v.vs_lookup_table.value == 0.0 and v.vs_lookup_table.low == 0.0 == v.vs_lookup_table.high


def test_not_scored_cases_and_round_trip():
    t = [[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]
    assert verdict(t, None, t).label == "not scored"
    one = verdict(t[:1], t[:1], t[:1])
    assert one.label == "not scored" and "2 test records" in one.reason
    const = verdict([[1.0, 1.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]], None)
    assert const.label == "not scored" and math.isnan(const.correlation.value)
    v = verdict(t, t, None, n_bootstrap=50)
    assert not v.beats_baseline and math.isnan(v.delta_vs_baseline.value) and v.vs_lookup_table is None
    d = v.to_dict()
    assert d["delta_vs_baseline"]["value"] is None and d["vs_lookup_table"] is None
    assert Verdict.from_dict(d).to_dict() == d
    with pytest.raises(ValueError, match="baseline_sim: 1 simulated records for 3"):
        verdict(t, t, t[:1])


def test_count_verdicts_line():
    rng = np.random.default_rng(4)
    t = _records(rng, n=15)
    good = [x + rng.normal(scale=0.3, size=x.size) for x in t]
    noise = [rng.normal(size=x.size) for x in t]
    vs = [verdict(t, noise, good, n_bootstrap=200), verdict(t, good, good, n_bootstrap=200),
          verdict(t, noise, noise, n_bootstrap=200)]
    assert [v.label for v in vs] == ["not above chance", "above chance", "not above chance"]
    assert count_verdicts(vs) == "0 of 3 explanations beat the baseline at 95%; 1 of 3 above chance"
    line = count_verdicts([v.to_dict() for v in vs] + [None])
    assert line == "0 of 4 explanations beat the baseline at 95%; 1 of 4 above chance; 1 not scored"
