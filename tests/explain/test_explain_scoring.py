import math

import numpy as np
import pytest

from tl_concepts.capture.records import ActivationRecord
from tl_concepts.explain.calibration import LinearCalibration
from tl_concepts.explain.scoring import (
    absolute_dev_explained,
    absolute_dev_explained_centred,
    auroc,
    balanced_accuracy,
    correlation,
    rsquared,
    rsquared_centred,
    score,
)


def test_hand_computed_scores():
    # t = [0, 2, 1, 0], s = [0, 4, 2, 0]: mean t = 0.75, SST = 2.75, SSE = 5,
    # sum|t - mean| = 3.0, sum|t - s| = 3.0, cov = 3.25 ... r = 1 (s = 2 t)
    t = [[0.0, 2.0], [1.0, 0.0]]
    s = [[0.0, 4.0], [2.0, 0.0]]
    out = score(t, s, n_bootstrap=0)
    assert out.correlation.value == pytest.approx(1.0)
    assert out.rsquared_centred.value == pytest.approx(1 - 5 / 2.75)
    assert out.absolute_dev_explained_centred.value == pytest.approx(1 - 3.0 / 3.0)
    # uncentred (neuron-explainer): mean t^2 = 5/4, MSE = 5/4 -> 0; mean|t| = 3/4, MAE = 3/4 -> 0
    assert out.rsquared.value == pytest.approx(0.0, abs=1e-12)
    assert out.absolute_dev_explained.value == pytest.approx(0.0, abs=1e-12)
    assert out.n_tokens == 4 and out.n_records == 2
    assert math.isnan(out.correlation.low)


def test_correlation_hand_case():
    # t = [1,2,3], s = [1,3,2]: tc = [-1,0,1], sc = [-1,1,0]; r = 1 / (sqrt2*sqrt2) = 0.5
    assert correlation(np.array([1, 2, 3.0]), np.array([1, 3, 2.0])) == pytest.approx(0.5)
    assert correlation(np.array([1, 2, 3.0]), np.array([3, 2, 1.0])) == pytest.approx(-1.0)
    # abs dev: mean 2, sum|t-m| = 2, sum|t-s| = 2 -> 0
    assert absolute_dev_explained_centred(np.array([1, 2, 3.0]), np.array([1, 3, 2.0])) == pytest.approx(0.0)
    # r2: SST = 2, SSE = 2 -> 0
    assert rsquared_centred(np.array([1, 2, 3.0]), np.array([1, 3, 2.0])) == pytest.approx(0.0)


def test_undefined_is_nan_not_zero():
    assert math.isnan(correlation(np.array([1.0, 2.0]), np.array([3.0, 3.0])))
    assert math.isnan(rsquared_centred(np.array([1.0, 1.0]), np.array([0.0, 2.0])))
    assert math.isnan(rsquared(np.array([0.0, 0.0]), np.array([0.0, 2.0])))
    assert math.isnan(absolute_dev_explained(np.array([0.0, 0.0]), np.array([0.0, 2.0])))


def test_accepts_records_and_checks_lengths():
    recs = [ActivationRecord(["a", "b"], [0.0, 1.0])]
    assert score(recs, [[0.0, 5.0]], n_bootstrap=0).correlation.value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1 simulated"):
        score(recs, [[1.0]], n_bootstrap=0)
    with pytest.raises(ValueError, match="failed simulation"):
        score(recs, [[0.0, float("nan")]], n_bootstrap=0)


def test_bootstrap_interval_brackets_point_and_is_seeded():
    rng = np.random.default_rng(1)
    t = [rng.normal(size=20) for _ in range(15)]
    s = [x + rng.normal(scale=0.8, size=20) for x in t]
    a = score(t, s, n_bootstrap=300, seed=3)
    b = score(t, s, n_bootstrap=300, seed=3)
    assert a.correlation.low < a.correlation.value < a.correlation.high
    assert a.correlation.to_dict() == b.correlation.to_dict()
    assert 0.5 < a.correlation.value < 0.9
    # a perfect simulation has a degenerate interval at 1
    p = score(t, t, n_bootstrap=50)
    assert p.correlation.low == pytest.approx(1.0) and p.rsquared.high == pytest.approx(1.0)


def test_calibration_recovers_linear_map():
    sim = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    true = [[2 * v - 1 for v in r] for r in sim]
    cal = LinearCalibration.fit(true, sim)
    assert cal.slope == pytest.approx(2.0) and cal.intercept == pytest.approx(-1.0)
    assert score(true, [cal.apply(r) for r in sim], n_bootstrap=0).rsquared.value == pytest.approx(1.0)
    const = LinearCalibration.fit([[1.0, 3.0]], [[5.0, 5.0]])
    assert const.slope == 0.0 and const.intercept == pytest.approx(2.0)
    with pytest.raises(ValueError, match="calibration split is empty"):
        LinearCalibration.fit([], [])


def test_balanced_accuracy_and_auroc_hand_cases():
    # TPR = 2/3, TNR = 1/1 -> 5/6
    assert balanced_accuracy([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(5 / 6)
    assert math.isnan(balanced_accuracy([1, 1], [1, 0]))
    # pairs (pos, neg): (0.8,0.3) win, (0.8,0.8) tie, (0.2,0.3) loss, (0.2,0.8) loss -> 1.5/4
    assert auroc([1, 0, 1, 0], [0.8, 0.3, 0.2, 0.8]) == pytest.approx(0.375)
    assert auroc([1, 1, 0], [0.9, 0.7, 0.1]) == 1.0
    assert math.isnan(auroc([0, 0], [0.1, 0.2]))


def test_vectorised_bootstrap_equals_concatenating_drawn_records():
    from tl_concepts.explain.scoring import _bootstrap, record_resample_counts

    rng = np.random.default_rng(0)
    ts = [rng.normal(size=int(rng.integers(3, 9))) for _ in range(7)]
    ss = [x + rng.normal(size=x.size) for x in ts]
    boots = _bootstrap(ts, np.concatenate(ts), np.concatenate(ss), record_resample_counts(7, 40, 5))
    counts = np.random.default_rng(5).multinomial(7, np.full(7, 1 / 7), size=40)
    for k in range(40):
        idx = np.repeat(np.arange(7), counts[k])
        t = np.concatenate([ts[i] for i in idx])
        s = np.concatenate([ss[i] for i in idx])
        for j, f in enumerate((correlation, rsquared, absolute_dev_explained, rsquared_centred,
                                absolute_dev_explained_centred)):
            assert boots[j][k] == pytest.approx(f(t, s), abs=1e-9)
