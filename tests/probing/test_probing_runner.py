from pathlib import Path

import numpy as np
import pytest

from tests.helpers.scripts import run_python
from tests.helpers.tiny_models import TEXTS, label_file
from tl_concepts.errors import StoreError, ConfigError, InputError
from tl_concepts.probing import (PROBE_COLUMNS, RANKING_COLUMNS, ProbeOptions, ProbeResults, ProbingInputError,
                                 Rankings)
from tl_concepts.probing import runner as probing_runner
from tl_concepts.probing.labels import load_labelled
from tl_concepts.probing.runner import (ProbeConfig, RankConfig, default_out, probe_summary_table, rank_summary_table,
                                        run_probes, run_rankings)

HOOK = "blocks.1.hook_resid_post"
MLP = "blocks.1.mlp.hook_post"


@pytest.fixture(scope="module")
def store(tiny_bridge, tmp_path_factory):
    from tl_concepts.capture import capture

    return capture(tiny_bridge, TEXTS * 3, [HOOK, MLP], tmp_path_factory.mktemp("p") / "run",
                   context_tokens=32, progress=False)


def test_probe_and_rank_runners_on_a_capture(store, tmp_path):
    src = label_file(store, tmp_path / "labels.tsv")
    cfg = ProbeConfig(store=str(store.path), hook=HOOK, labels=src, min_size=5, out=str(tmp_path / "out"),
                      options=ProbeOptions(c_grid=(1.0,)))
    ds = run_probes(cfg, progress=False)
    assert isinstance(ds, ProbeResults)
    assert set(ds["label"]) == {"num", "cap", "the", "*all*"}
    assert set(ds["task"]) == {"binary", "multiclass"}
    for r in ds:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert r["selectivity"] == pytest.approx(r["test_accuracy"] - r["control_accuracy"])
    # 'the' is one word type: a probe on it is pure memorisation -> the control task (one type,
    # one random label) can reach the same accuracy or not, but the accuracy must be high
    the = next(r for r in ds if r["label"] == "the")
    assert the["test_accuracy"] >= 0.9
    assert (tmp_path / "out" / "probes.parquet").exists()
    table = probe_summary_table(ds)
    assert "selectivity" in table and "mean" in table.splitlines()[-1]

    out = run_rankings(RankConfig(store=str(store.path), hook=MLP, labels=src, min_size=5,
                                  methods=("probeless", "average_precision"), top_n=5, out=str(tmp_path / "out")),
                       progress=False)
    assert isinstance(out, Rankings)
    rk = out.rankings
    assert len(rk) == 4 * 2 * 5
    d = store.d(MLP)
    assert all(0 <= n < d for n in rk["neuron"])
    assert all(r["unit"] == f"{MLP}.{r['neuron']}" for r in rk)
    # ranks are ordered by score within each (label, method)
    for lab in ("num", "*all*"):
        sc = [r["score"] for r in rk if r["label"] == lab and r["method"] == "probeless"]
        assert sc == sorted(sc, reverse=True)
        assert out.top(lab, "probeless") == [r["neuron"] for r in rk if r["label"] == lab
                                             and r["method"] == "probeless"]
    assert "probeless" in rank_summary_table(out)
    assert out.alignment is None


def test_typed_results_rows_frames_save_load_and_html(store, tmp_path):
    p = tmp_path / "labels.tsv"
    label_file(store, p)
    text = p.read_text().replace("\tcap\n", "\t<i>cap</i>\n")  # a label that is HTML
    p.write_text(text)
    res = run_probes(ProbeConfig(store=str(store.path), hook=HOOK, labels=str(p), min_size=5,
                                 out=str(tmp_path / "o"), options=ProbeOptions(c_grid=(1.0,))), progress=False)
    rows = res.rows()
    assert len(rows) == len(res) == 4
    df = res.to_pandas()
    assert list(df.columns) == [c for c, _, _ in PROBE_COLUMNS] and len(df) == 4
    assert res.to_dataset().features["size"].dtype == "int64"
    back = ProbeResults.load(tmp_path / "o")
    assert back.rows() == rows and back.hook == HOOK and back.provenance["store_fingerprint"]
    assert repr(res).startswith(f"ProbeResults({HOOK}, {p}: 4 probes, mean binary accuracy ")
    html = res._repr_html_()
    assert "&lt;i&gt;cap&lt;/i&gt;" in html and "<i>cap" not in html

    rk = run_rankings(RankConfig(store=str(store.path), hook=MLP, labels=str(p), min_size=5, top_n=3,
                                 out=str(tmp_path / "o")), progress=False)
    assert list(rk.to_pandas().columns) == [c for c, _, _ in RANKING_COLUMNS]
    assert len(rk.rows()) == 4 * 3
    back = Rankings.load(tmp_path / "o")
    assert back.rows() == rk.rows() and back.alignment is None
    assert repr(rk) == f"Rankings({MLP}, {p}: 4 rankings (probeless))"
    assert "&lt;i&gt;cap" in rk._repr_html_() and "<i>cap" not in rk._repr_html_()


def test_results_are_saved_under_the_store_by_default(store, tmp_path):
    src = label_file(store, tmp_path / "labels.tsv")
    where = default_out(str(store.path), HOOK, src)
    assert where.parent == store.path / "probing" / HOOK and where.name.startswith("labels.tsv-")
    res = run_probes(ProbeConfig(store=str(store.path), hook=HOOK, labels=src, min_size=5,
                                 options=ProbeOptions(c_grid=(1.0,), control=False)), progress=False)
    assert ProbeResults.load(where).rows() == res.rows()
    rk = run_rankings(RankConfig(store=str(store.path), hook=HOOK, labels=src, min_size=5, top_n=2),
                      progress=False)
    assert Rankings.load(where).rows() == rk.rows()
    assert default_out("s", HOOK, "pos") == Path("s/probing") / HOOK / "pos"


def _counting(monkeypatch):
    calls = []
    for name, fn in list(probing_runner.RANKERS.items()):
        def wrapped(*a, _fn=fn, _name=name, **kw):
            calls.append(_name)
            return _fn(*a, **kw)
        monkeypatch.setitem(probing_runner.RANKERS, name, wrapped)
    return calls


CRASH_SCRIPT = """
from tl_concepts.probing.runner import RankConfig, run_rankings
run_rankings(RankConfig(store={store!r}, hook={hook!r}, labels={labels!r}, min_size=5, top_n=4,
                        methods=("probeless", "probe_weights"), out={out!r}), progress=False)
print("finished")
"""


def test_rank_saves_each_ranking_and_resumes_after_a_kill(store, tmp_path, monkeypatch):
    src = label_file(store, tmp_path / "labels.tsv")
    cfg = dict(store=str(store.path), hook=MLP, labels=src, min_size=5, top_n=4, methods=("probeless", "probe_weights"))
    script = CRASH_SCRIPT.format(store=str(store.path), hook=MLP, labels=src, out=str(tmp_path / "crashed"))
    p = run_python(script, crash_at="rank.ranking:3")
    assert p.returncode == 137, p.stderr[-2000:]
    assert "finished" not in p.stdout
    assert len(list((tmp_path / "crashed" / "rankings.parts").glob("*.json"))) == 3
    assert not (tmp_path / "crashed" / "rankings.parquet").exists()

    calls = _counting(monkeypatch)
    resumed = run_rankings(RankConfig(out=str(tmp_path / "crashed"), **cfg), progress=False)
    assert len(calls) == 4 * 2 - 3 and resumed.resumed == 3  # the 3 saved rankings are not computed again
    fresh = run_rankings(RankConfig(out=str(tmp_path / "fresh"), **cfg), progress=False)
    assert resumed.rows() == fresh.rows()
    calls.clear()
    # a finished run is not recomputed; a changed method setting or label file is
    run_rankings(RankConfig(out=str(tmp_path / "crashed"), **cfg), progress=False)
    assert calls == []
    run_rankings(RankConfig(out=str(tmp_path / "crashed"), mass=0.9, **cfg), progress=False)
    assert calls == ["probe_weights"] * 4
    calls.clear()
    lines = Path(src).read_text().splitlines()
    Path(src).write_text("\n".join(lines[:-3]) + "\n")  # three labelled words fewer
    run_rankings(RankConfig(out=str(tmp_path / "crashed"), **cfg), progress=False)
    assert len(calls) == 8
    # a second writer of the same folder is refused
    from tl_concepts.atomic import folder_lock
    from tl_concepts.errors import FolderLockedError

    with folder_lock(tmp_path / "crashed"), pytest.raises(FolderLockedError, match="being written by"):
        run_rankings(RankConfig(out=str(tmp_path / "crashed"), **cfg), progress=False)


def test_rankings_with_concepts_give_alignment(store, tmp_path):
    from tl_concepts.concepts import ConceptsConfig, discover_concepts

    discover_concepts(ConceptsConfig(store=str(store.path), hook=HOOK, k=6, out=str(tmp_path / "cs"),
                                     agreement_sample=0), progress=False)
    out = run_rankings(RankConfig(store=str(store.path), hook=HOOK, labels=f"concepts:{tmp_path / 'cs'}",
                                  min_size=3, top_n=3, align_n=5, out=str(tmp_path / "o")), progress=False)
    assert out.alignment is not None and len(out.alignment) >= 1
    for r in out.alignment:
        assert 1 <= len(r["children"]) <= 2 and all(0 <= o <= 1 for o in r["overlaps"])
        assert r["mean"] == pytest.approx(np.mean(r["overlaps"]))
    assert "alignment" in rank_summary_table(out)
    assert Rankings.load(tmp_path / "o").alignment.to_list() == out.alignment.to_list()


def test_bad_input_is_a_clear_error(store, tmp_path):
    src = label_file(store, tmp_path / "l.tsv")
    with pytest.raises(ProbingInputError, match="unknown label source"):
        load_labelled(store, HOOK, "nope.tsv")
    p = tmp_path / "bad.tsv"
    p.write_text("word_id\tlabel\n999999\tx\n")
    with pytest.raises(ProbingInputError, match="not words of this store"):
        load_labelled(store, HOOK, str(p))
    p.write_text("word_id\tlabel\n3\tx\nseven\ty\n")
    with pytest.raises(ProbingInputError, match="line 3: word_id 'seven' is not a whole number"):
        load_labelled(store, HOOK, str(p))
    p.write_text("id,tag\n3,x\n")
    with pytest.raises(ProbingInputError, match="needs a header with columns word_id and label; got id,tag"):
        load_labelled(store, HOOK, str(p))
    with pytest.raises(InputError, match=r"no label of .* has 10000 or more rows \(the largest has \d+\)"):
        run_probes(ProbeConfig(store=str(store.path), hook=HOOK, labels=src, min_size=10_000), progress=False)
    with pytest.raises(InputError, match="hook blocks.7.hook_resid_post was not captured"):
        run_probes(ProbeConfig(store=str(store.path), hook="blocks.7.hook_resid_post", labels=src), progress=False)
    with pytest.raises(InputError, match="concept set folder .* does not exist"):
        run_rankings(RankConfig(store=str(store.path), hook=HOOK, labels=f"concepts:{tmp_path / 'none'}"),
                     progress=False)
    with pytest.raises(StoreError, match="there is no capture at"):
        run_rankings(RankConfig(store=str(tmp_path / "none"), hook=HOOK, labels=src), progress=False)
    with pytest.raises(ConfigError, match="unknown ranking method"):
        run_rankings(RankConfig(store=str(store.path), hook=HOOK, labels=src, methods=("magic",)), progress=False)
    with pytest.raises(ConfigError, match="--min-size must be >= 2"):
        run_probes(ProbeConfig(store=str(store.path), hook=HOOK, labels=src, min_size=1), progress=False)
    assert issubclass(ProbingInputError, InputError)


def test_cli_probe_and_rank(store, tmp_path, capsys):
    from tl_concepts.cli import main

    src = label_file(store, tmp_path / "labels.tsv")
    assert main(["probe", "--store", str(store.path), "--hook", HOOK, "--labels", src, "--min-size", "5",
                 "--c-grid", "1", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "selectivity" in text and (tmp_path / "o" / "probes.parquet").exists()
    assert main(["rank", "--store", str(store.path), "--hook", HOOK, "--labels", src, "--min-size", "5",
                 "--method", "probeless", "probe_weights", "--top-n", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "probe_weights" in text and "top 5 neurons" in text
    where = default_out(str(store.path), HOOK, src)
    assert f"written to {where}" in text and (where / "rankings.parquet").exists()
    # a rerun reads every ranking back
    assert main(["rank", "--store", str(store.path), "--hook", HOOK, "--labels", src, "--min-size", "5",
                 "--method", "probeless", "probe_weights", "--top-n", "3", "--no-progress"]) == 0
    assert "8 rankings read back" in capsys.readouterr().out
