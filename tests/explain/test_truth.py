"""Truth benchmark in CI: planted units over real Lee tokens, through the real explain ->
simulate -> score path (tl_concepts.explain.runner.explain_unit) with an oracle LLM."""
import pytest

from tl_concepts._sync import run_sync
from tl_concepts.capture.exemplars import ExemplarConfig
from tl_concepts.corpus import lee_corpus
from tl_concepts.explain.planted import OracleLLM, ascore_planted, class_named, planted_classes, planted_units
from tl_concepts.explain.runner import ExplainConfig
from tl_concepts.explain.units import split_overlaps


@pytest.fixture(scope="module")
def planted():
    corpus = lee_corpus()
    classes = planted_classes(corpus)
    return classes, planted_units(corpus, classes, seed=0)


def test_planted_units_fire_on_their_class_only_with_capture_splits(planted):
    classes, units = planted
    assert [c.key for c, _ in units] == ["weekday", "month", "number", "country", "past", "plural"]
    assert {"said", "was", "were"} <= classes["past"].members and "people" not in classes["past"].members
    assert {"france", "germany"} <= classes["country"].members
    for cls, u in units:
        assert not split_overlaps(u)
        cfg = ExemplarConfig()
        assert (len(u.train_top), len(u.calibration_top), len(u.test_top)) == (
            cfg.n_train_top, cfg.n_calibration_top, cfg.n_test_top)
        for r in u.train_top + u.test_top:
            for t, a in zip(r.tokens, r.activations):
                assert (a >= 0.5 * 3.0) == cls.fires(t), (cls.key, t, a)
        assert any(cls.fires(t) for r in u.test_top for t in r.tokens)


def test_oracle_recovers_every_planted_unit_and_beats_a_mismatched_explanation(tmp_path, planted):
    classes, units = planted
    cfg = ExplainConfig(out_dir=str(tmp_path), n_bootstrap=200, progress=False)
    rows = run_sync(ascore_planted(units, OracleLLM(classes), cfg, classes=classes,
                                   mismatch_llm=OracleLLM(classes, mismatch=True)))
    for row in rows:
        assert row["status"] == "ok", row
        assert row["explanation"] == classes[row["class"]].name
        assert row["mismatched_explanation"] != row["explanation"]
        assert row["llm"] > 0.8 and row["llm"] > row["mismatched"] + 0.5, row
        assert row["verdict"]["beats_chance"] and row["verdict"]["correlation"]["low"] > 0.5
        assert row["recovered"], row
    assert sum(r["recovered"] for r in rows) == len(units) == 6


def test_recovery_is_not_automatic(tmp_path, planted):
    """The check can fail: an explainer that always names the wrong class recovers nothing."""
    classes, units = planted
    cfg = ExplainConfig(out_dir=str(tmp_path), n_bootstrap=100, progress=False, detection=False, fuzzing=False)
    rows = run_sync(ascore_planted(units[:3], OracleLLM(classes, mismatch=True), cfg, classes=classes,
                                   simulator_llm=OracleLLM(classes)))
    assert not any(r["recovered"] for r in rows)
    assert all(not r["named_right"] for r in rows)


def test_class_named_reads_keywords_and_refuses_ambiguity(planted):
    classes, _ = planted
    assert class_named("days of the week", classes) == "weekday"
    assert class_named("the word Monday and other weekdays", classes) == "weekday"
    assert class_named("words about countries and nations", classes) == "country"
    assert class_named("past months", classes) is None
    assert class_named(None, classes) is None


def test_revision_from_a_wrong_start_recovers_the_class_on_test(planted):
    from tl_concepts.explain.planted import arevision_effect

    classes, units = planted
    starts = [classes["number"].name, classes["weekday"].name]  # wrong for weekday and month units
    rows = run_sync(arevision_effect(units[:2], starts, OracleLLM(classes), 1, classes=classes))
    for r, want in zip(rows, ("weekday", "month")):
        assert r["final"] == classes[want].name and r["kept"] == 1 and r["named_right_after"]
        assert r["test_before"] < 0.1 < 0.9 < r["test_after"]


def test_bench_truth_oracle_ends_with_the_recovery_line(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_truth.py"
    spec = importlib.util.spec_from_file_location("bench_truth", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--llm", "oracle", "--classes", "weekday,number", "--bootstrap", "100"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "recovered 2/2 planted units"
    assert "2 of 2 above chance" in "\n".join(lines)


def test_a_planted_unit_does_not_depend_on_the_other_classes(planted):
    classes, units = planted
    alone = planted_units(lee_corpus(), classes, keys=["month"], seed=0)[0][1]
    month = dict((c.key, u) for c, u in units)["month"]
    for split in ("train_top", "calibration_random", "test_top", "test_random"):
        assert [(r.start, r.activations) for r in getattr(alone, split)] == \
            [(r.start, r.activations) for r in getattr(month, split)]
