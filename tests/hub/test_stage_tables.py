"""The probes, rankings and descriptors kinds take what the real stages produce: run_probes,
run_rankings and run_descriptors on a tiny capture, saved with save_local and loaded back."""
from __future__ import annotations

import statistics

import pytest

from tests.helpers.hub_data import DESCRIPTORS, NON_ASCII, PROBES, RANKINGS, descriptor_reply
from tests.helpers.tiny_models import hash_embed, label_file

from tl_concepts.hub import CardMeta, load, render_card, save_local, to_dataset
from tl_concepts.hub.schemas import features, from_dataset

RESID = "blocks.1.hook_resid_post"
MLP = "blocks.1.mlp.hook_post"


def meta(**kw) -> CardMeta:
    return CardMeta(pretty_name="Stage tables", source_model="tiny-gpt2", hooks=[RESID, MLP], layers=[1], **kw)


@pytest.fixture(scope="module")
def store(tiny_bridge, tmp_path_factory):
    from tests.helpers.tiny_models import TEXTS

    from tl_concepts.capture import capture

    return capture(tiny_bridge, TEXTS * 3, [RESID, MLP], tmp_path_factory.mktemp("hub-stages") / "run",
                   context_tokens=32, progress=False)


@pytest.fixture(scope="module")
def labels(store, tmp_path_factory):
    return label_file(store, tmp_path_factory.mktemp("labels") / "labels.tsv")


def _round_trip(kind, data, tmp_path, **kw):
    d = save_local(kind, data, meta(**kw), tmp_path / "hub" / kind)
    back = load(d)
    assert back.kind == kind and back.metadata["tl_concepts"]["kind"] == kind
    assert back.dataset.features == features(kind)
    return back


def test_real_probes_round_trip(store, labels, tmp_path):
    from tl_concepts.probing import ProbeOptions
    from tl_concepts.probing.runner import ProbeConfig, run_probes

    ds = run_probes(ProbeConfig(store=str(store.path), hook=RESID, labels=labels, min_size=5,
                                out=str(tmp_path / "probing"), options=ProbeOptions(c_grid=(1.0,))), progress=False)
    assert set(ds["label"]) == {"num", "cap", "the", "*all*"}
    # the stage's Dataset, its rows as dicts, and its out folder give the same hub dataset
    hub_ds = to_dataset("probes", ds)
    assert hub_ds.to_list() == ds.to_list()
    assert to_dataset("probes", ds.to_list()).to_list() == ds.to_list()
    assert to_dataset("probes", tmp_path / "probing").to_list() == ds.to_list()
    back = _round_trip("probes", ds, tmp_path)
    assert back.dataset.to_list() == ds.to_list()
    assert from_dataset("probes", back.dataset) == ds.to_list()
    # card: means over the binary probes, and the multi-class probe on its own
    binary = [r for r in ds if r["task"] == "binary"]
    mean = lambda k: round(statistics.fmean(r[k] for r in binary), 3)  # noqa: E731
    card = back.card
    assert "Probes: 4 (3 binary, 1 multi-class)" in card
    assert f"mean test accuracy: {mean('test_accuracy')} (" in card
    assert f"mean control accuracy: {mean('control_accuracy')}\n" in card
    assert f"mean selectivity: {mean('selectivity')}\n" in card
    multi = next(r for r in ds if r["task"] == "multiclass")
    assert f"test accuracy {round(multi['test_accuracy'], 3)}, control accuracy" in card
    assert "| `the` | the | binary |" in card and "`test_accuracy`" in card


def test_real_rankings_round_trip(store, labels, tmp_path):
    from tl_concepts.probing.runner import RankConfig, run_rankings

    out = run_rankings(RankConfig(store=str(store.path), hook=MLP, labels=labels, min_size=5,
                                  methods=("probeless", "average_precision"), top_n=6,
                                  out=str(tmp_path / "probing")), progress=False)
    rk = out.rankings
    assert len(rk) == 4 * 2 * 6
    # a RankOutput is taken as is (its .rankings), as are the Dataset, its rows and the folder
    assert to_dataset("rankings", out).to_list() == rk.to_list()
    assert to_dataset("rankings", rk.to_list()).to_list() == rk.to_list()
    assert to_dataset("rankings", tmp_path / "probing").to_list() == rk.to_list()
    back = _round_trip("rankings", out, tmp_path)
    assert back.dataset.to_list() == rk.to_list()
    assert from_dataset("rankings", back.dataset) == rk.to_list()
    card = back.card
    assert "Rows: 48: 8 rankings of up to 6 neurons" in card and "- Labels: 4" in card
    assert "Methods: `average_precision`, `probeless`" in card
    for label, method in (("num", "probeless"), ("*all*", "average_precision")):
        top = [r["neuron"] for r in sorted((r for r in rk if r["label"] == label and r["method"] == method),
                                           key=lambda r: r["rank"])][:5]
        assert f"| `{label}` | {label} | {method} | {', '.join(map(str, top))} |" in card


def test_real_descriptors_round_trip(store, tmp_path):
    import json

    from tests.helpers.openai_server import OpenAIStandin
    from tests.helpers.usage import standin_llm
    from tl_concepts.descriptors import DescriptorsConfig, run_descriptors

    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps({"0": ["finance"], "1": ["weather", "animals"], "2": ["news"]}))
    cfg = DescriptorsConfig(store=str(store.path), hook=MLP, out=str(tmp_path / "descriptors"), top_k=5,
                            min_support=2, composition_threshold=0.3, min_lift=1.2, gold=str(gold), requests_per_batch=8)
    with OpenAIStandin(api_key="sk-test") as srv:
        srv.responder = descriptor_reply
        res = run_descriptors(cfg, llm=standin_llm(srv, model="standin-model"), embed=hash_embed, progress=False)
    mp = res.mapping
    assert len(mp) > 0 and set(mp["half"]) == {"calibration", "validation"}
    # the DescriptorOutput, its mapping Dataset, its rows and its out folder give the same hub dataset
    assert to_dataset("descriptors", res).to_list() == mp.to_list()
    assert to_dataset("descriptors", mp.to_list()).to_list() == mp.to_list()
    assert to_dataset("descriptors", tmp_path / "descriptors").to_list() == mp.to_list()
    back = _round_trip("descriptors", res, tmp_path)
    assert back.dataset.to_list() == mp.to_list()
    assert from_dataset("descriptors", back.dataset) == mp.to_list()
    # card: metrics come from the DescriptorOutput; Jaccard recomputed from the table matches the stage's
    m = res.metrics
    card = back.card
    assert f"Vocabulary: {m['entries']} entries, {len(set(mp['entry']))} used in the mapping" in card
    cal = {r["neuron"] for r in mp if r["half"] == "calibration"}
    val = {r["neuron"] for r in mp if r["half"] == "validation"}
    assert f"Neurons with descriptors: {len(cal)} (calibration half), {len(val)} (validation half) of " \
           f"{m['neurons']}" in card
    assert f"Jaccard stability (calibration vs validation): {round(m['jaccard'], 3)}\n" in card
    assert (f"precision@2 {round(m['precision_at_k'], 3)}, recall@2 {round(m['recall_at_k'], 3)}" in card)
    # the out folder carries the same metrics (metrics.json)
    again = load(save_local("descriptors", tmp_path / "descriptors", meta(), tmp_path / "again" / "descriptors"))
    assert again.card == card


def test_fixture_cards_render_the_numbers():
    pr = render_card("probes", to_dataset("probes", PROBES), meta(), "me/p")
    # binary probes: 0.9375 and 0.8 -> 0.869; control only on the first -> 0.625; selectivity 0.3125 -> 0.312
    assert "mean test accuracy: 0.869 (min 0.8, max 0.938; majority baseline 0.55)" in pr
    assert "mean control accuracy: 0.625\n" in pr and "mean selectivity: 0.312\n" in pr
    assert "(52 words): test accuracy 0.75, control accuracy 0.5, selectivity 0.25" in pr
    # empty sources are not listed; a nullable type does not break the schema table
    assert "Label sources: `concepts:runs/x/concepts`, `pos`\n" in pr
    assert "| `control_accuracy` | float64\\|null |" in pr
    assert f"| `3` | {NON_ASCII} | binary | 40 |" in pr and "| `NUM` | NUM | binary | 12 | 0.8 | 0.6 | n/a | n/a |" in pr
    rk = render_card("rankings", to_dataset("rankings", RANKINGS), meta(), "me/r")
    assert "Rows: 5: 2 rankings of up to 3 neurons" in rk
    assert f"| `3` | {NON_ASCII} | probeless | 2, 0, 1 |" in rk and "| `NUM` | NUM | probe_weights | 1, 7 |" in rk
    ds = to_dataset("descriptors", DESCRIPTORS)
    plain = render_card("descriptors", ds, meta(), "me/d")
    # neuron 7: {2, 5} vs {2} -> 0.5; neuron 9: {0} vs {} -> 0 => mean 0.25; no metrics -> no P@k line
    assert "Jaccard stability (calibration vs validation): 0.25\n" in plain
    assert "Neurons with descriptors: 2 (calibration half), 1 (validation half)\n" in plain
    assert "precision@" not in plain and "Vocabulary: 3 used in the mapping" in plain
    assert f"| 7 | weekdays (0.70); {NON_ASCII} (0.30) |" in plain
    with_m = render_card("descriptors", ds, meta(metrics={"entries": 11, "k": 2, "precision_at_k": 0.75,
                                                          "recall_at_k": 0.5}), "me/d")
    assert "Vocabulary: 11 entries, 3 used in the mapping" in with_m
    assert "Labelled subset: precision@2 0.75, recall@2 0.5" in with_m
