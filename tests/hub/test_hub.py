"""Publish every dataset kind to the stand-in Hub with the real clients and read it back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.hub_data import (DESCRIPTORS, NON_ASCII, OTHER_TOKEN, PROBES, RANKINGS, TOKEN, concept_set,
                                   explain_results)
from tl_concepts.hub import (CardError, CardMeta, EmptyDatasetError, HubAuthError, HubError, HubPermissionError,
                             SchemaError, load, load_from_hub, publish, save_local, to_dataset)
from tl_concepts.hub.cards import parse_metadata, validate_metadata
from tl_concepts.hub.schemas import rows

LEDGER = {"rows": [{"stage": "explain", "backend": "in-process", "model": "smollm2", "calls": 12, "requests": 12,
                    "retries": 0, "cache_hits": 3, "prompt_tokens": 4000, "completion_tokens": 300,
                    "failures": {"unparseable": 1}, "cost_usd": None}],
          "totals": {}, "prices_usd_per_million_tokens": {}}


def meta(name: str = "Días ✓ test") -> CardMeta:
    return CardMeta(pretty_name=name, source_model="tiny-gpt2", model_revision="fp:abc123", tl_version="4.0",
                    hooks=["blocks.1.mlp.hook_post"], layers=[1], corpus_name="lee", corpus_fingerprint="c0ffee",
                    settings={"k": 6, "context_tokens": 64}, llm={"explainer": "rule-llm (fake)"},
                    prompts={"explain": "v1", "simulate": "v1"}, ledger=LEDGER)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("stages")
    return {"explanations": explain_results(d / "explain"), "concepts": concept_set(d / "concepts"),
            "probes": PROBES, "rankings": RANKINGS, "descriptors": DESCRIPTORS}


@pytest.fixture(scope="module")
def published(hub, data):
    out = {}
    for kind, obj in data.items():
        out[kind] = publish(kind, obj, meta(), f"alice/{kind}", token=TOKEN)
    return out


@pytest.mark.parametrize("kind", ["explanations", "concepts", "probes", "rankings", "descriptors"])
def test_round_trip_every_kind(hub, data, published, kind):
    res = published[kind]
    expected = to_dataset(kind, data[kind])
    assert res.n_rows == len(expected) > 0 and res.repo_id == f"alice/{kind}"
    back = load_from_hub(f"alice/{kind}", token=TOKEN)
    assert back.kind == kind
    assert back.dataset.features == expected.features
    assert back.dataset.to_list() == expected.to_list()
    assert hub.unknown == []


def test_explanation_objects_round_trip(hub, data, published):
    back = load_from_hub("alice/explanations", token=TOKEN)
    results = back.objects()
    # result dicts from the Hub give the same rows as the runner's own results
    assert rows("explanations", results) == rows("explanations", data["explanations"])
    first = results[0]
    orig = data["explanations"][0].raw
    assert first["llm"]["explanation"]["text"] == orig["llm"]["explanation"]["text"] == "days of the week"
    assert first["llm"]["scores"]["all"]["correlation"] == orig["llm"]["scores"]["all"]["correlation"]
    assert first["llm"]["simulations"][0]["true"] == orig["llm"]["simulations"][0]["true"]


def test_concepts_keep_non_ascii_labels_sentences_and_tree(hub, data, published):
    back = load_from_hub("alice/concepts", token=TOKEN)
    labels = [r["label"] for r in back.dataset]
    assert NON_ASCII in labels
    cs = data["concepts"]
    assert back.sentences is not None and back.sentences.num_rows > 0
    texts = dict(zip(back.sentences["sentence"], back.sentences["text"]))
    row = back.dataset[0]
    m = row["members"][0]
    assert texts[m["sentence"]] == cs.sentences[m["sentence"]]
    concepts = back.objects()
    assert [c.id for c in concepts] == cs.concept_ids()
    assert concepts[0].parent == cs.concepts()[0].parent
    refusal = [lab for c in concepts for lab in c.labels if lab.status == "refusal"]
    assert refusal and refusal[0].label is None and refusal[0].raw == "I'm sorry"


def test_card_metadata_and_body(hub, published):
    card = hub.file("alice/explanations", "README.md").decode("utf-8")
    md = parse_metadata(card)
    validate_metadata(md)
    assert md["pretty_name"] == "Días ✓ test"
    assert {"interpretability", "transformer-lens"} <= set(md["tags"])
    assert md["size_categories"] == ["n<1K"] and md["license"] == "lgpl-2.1"  # the Lee corpus (gensim, LGPL)
    assert md["source_model"] == "tiny-gpt2" and md["tl_concepts"]["kind"] == "explanations"
    # what `datasets` wrote is kept
    assert md["configs"][0]["data_files"][0]["path"].startswith("data/")
    assert md["dataset_info"]["splits"][0]["num_examples"] == 3
    # only the hooks that produced the data (the planted units' hook), not every hook of the meta
    assert "`blocks.0.mlp.hook_post`" in card and "blocks.1.mlp.hook_post" not in card
    for needle in ("fp:abc123", "c0ffee", "rule-llm (fake)", "| explain | in-process |",
                   "unparseable=1", 'load_dataset("alice/explanations"', "units with correlation >= 0.8: "):
        assert needle in card, needle
    # the "<script>" of an explanation never reaches the card as HTML
    assert "<script>" not in card
    # card pushed after the data: the last commit touches only README.md, an earlier one the parquet
    commits = [paths for rid, paths in hub.commit_log if rid == "alice/explanations"]
    assert commits[-1] == ["README.md"]
    assert any(p.endswith(".parquet") for p in commits[-2])


def test_score_summary_numbers(hub, data, published):
    card = hub.file("alice/explanations", "README.md").decode("utf-8")
    corrs = [r.correlation.value for r in data["explanations"]]
    mean = round(sum(corrs) / len(corrs), 3)
    assert f"mean {mean}," in card
    assert f"units with correlation >= 0.8: {sum(c >= 0.8 for c in corrs)}" in card


def test_token_never_written(hub, data, published, tmp_path):
    save_local("explanations", data["explanations"], meta(), tmp_path / "local")
    roots = [Path(hub.home), tmp_path]
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file():
                blob = f.read_bytes()
                assert TOKEN.encode() not in blob, f
    for repo in hub.repos.values():
        for files in repo.snapshots.values():
            for f in files.values():
                assert TOKEN.encode() not in f.data


def test_no_token(hub):
    before = set(hub.repos)
    with pytest.raises(HubAuthError, match="no Hugging Face token"):
        publish("rankings", RANKINGS, meta(), "alice/no-token")
    assert set(hub.repos) == before


def test_wrong_token(hub):
    before = set(hub.repos)
    with pytest.raises(HubAuthError, match="rejected the token") as ei:
        publish("rankings", RANKINGS, meta(), "alice/wrong-token", token="hf_wrong")
    assert "hf_wrong" not in str(ei.value)
    assert set(hub.repos) == before


def test_repo_of_someone_else(hub):
    hub.create("bob/theirs")
    head = hub.repos[("datasets", "bob/theirs")].head
    with pytest.raises(HubPermissionError, match="403"):
        publish("rankings", RANKINGS, meta(), "bob/theirs", token=OTHER_TOKEN)
    assert hub.repos[("datasets", "bob/theirs")].head == head


def test_empty_dataset_fails_before_any_request(hub):
    n = len(hub.requests)
    with pytest.raises(EmptyDatasetError, match="empty"):
        publish("rankings", [], meta(), "alice/empty", token=TOKEN)
    assert len(hub.requests) == n


def test_bad_template_fails_before_upload(hub, tmp_path):
    from tl_concepts.hub.cards import templates_dir

    for f in templates_dir().glob("*.j2"):
        (tmp_path / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    t = tmp_path / "rankings.md.j2"
    text = t.read_text(encoding="utf-8").replace("{% block summary %}", "{% block summary %}{{ meta.not_a_field }}")
    assert "not_a_field" in text
    t.write_text(text, encoding="utf-8")
    n = len(hub.requests)
    with pytest.raises(CardError, match="not_a_field"):
        publish("rankings", RANKINGS, meta(), "alice/bad-template", token=TOKEN, templates=tmp_path)
    assert len(hub.requests) == n and ("datasets", "alice/bad-template") not in hub.repos


def test_card_upload_failure_is_not_reported_as_published(hub):
    hub.fail_commits_matching = "dataset card"
    try:
        with pytest.raises(HubError, match="NOT published"):
            publish("descriptors", DESCRIPTORS, meta(), "alice/card-fails", token=TOKEN)
        # the data did land, the card did not
        assert any(p.endswith(".parquet") for p in hub.paths("alice/card-fails"))
        assert "tl_concepts:" not in hub.file("alice/card-fails", "README.md").decode()
    finally:
        hub.fail_commits_matching = None


def test_schema_errors():
    rk = dict(RANKINGS[0])
    with pytest.raises(SchemaError, match="lacks neuron"):
        to_dataset("rankings", [{k: v for k, v in rk.items() if k != "neuron"}])
    with pytest.raises(SchemaError, match=r"rows 0 and 1 have the same"):
        to_dataset("rankings", [rk, {**rk, "neuron": 9}])
    with pytest.raises(SchemaError, match="neuron is 'x', not a number"):
        to_dataset("rankings", [{**rk, "neuron": "x"}])
    with pytest.raises(SchemaError, match="rank 0 / neuron -1"):
        to_dataset("rankings", [{**rk, "neuron": -1}])
    pr = PROBES[0]
    with pytest.raises(SchemaError, match="selectivity 0.5 is not test_accuracy - control_accuracy"):
        to_dataset("probes", [{**pr, "selectivity": 0.5}])
    with pytest.raises(SchemaError, match="test_accuracy is 1.5, outside"):
        to_dataset("probes", [{**pr, "test_accuracy": 1.5, "selectivity": None}])
    with pytest.raises(SchemaError, match="task is 'regression'"):
        to_dataset("probes", [{**pr, "task": "regression"}])
    with pytest.raises(SchemaError, match="lacks test_accuracy"):
        to_dataset("probes", [{k: v for k, v in pr.items() if k != "test_accuracy"}])
    with pytest.raises(SchemaError, match="half is 'train'"):
        to_dataset("descriptors", [{**DESCRIPTORS[0], "half": "train"}])
    from datasets import Dataset

    with pytest.raises(SchemaError, match="unexpected: units"):
        to_dataset("rankings", Dataset.from_list([{**rk, "units": [1]}]))
    with pytest.raises(SchemaError, match="not a probes output folder"):
        to_dataset("probes", "/nonexistent/probing")
    with pytest.raises(SchemaError, match="unknown dataset kind"):
        to_dataset("nope", [])


def test_row_dicts_fill_optional_columns():
    ds = to_dataset("probes", PROBES)
    first, bare, multi = ds.to_list()
    assert first == PROBES[0]
    assert (bare["source"], bare["name"], bare["control_accuracy"], bare["selectivity"], bare["seconds"],
            bare["seed"]) == ("", "NUM", None, None, 0.0, 0)
    assert multi["selectivity"] == pytest.approx(0.25)
    rk = to_dataset("rankings", RANKINGS)
    assert rk.column_names == ["hook", "source", "label", "name", "method", "rank", "neuron", "unit", "score"]
    assert rk[3]["name"] == "NUM" and rk[3]["source"] == ""
    assert all(r["unit"] == f"{r['hook']}.{r['neuron']}" for r in rk)  # the one unit id, filled in
    # a Dataset with the optional columns missing is validated and filled the same way
    from datasets import Dataset

    partial = Dataset.from_list([{k: v for k, v in r.items() if k not in ("source", "name")} for r in RANKINGS[3:]])
    assert to_dataset("rankings", partial).to_list() == rk.to_list()[3:]
    d = to_dataset("descriptors", DESCRIPTORS)
    assert d[3]["lift"] == float("inf") and d[1]["descriptor"] == NON_ASCII
    assert (d[0]["hook"], d[0]["unit"]) == ("", "")  # hand-made rows may leave them out


def test_save_local_and_load(hub, data, tmp_path):
    d = save_local("concepts", data["concepts"], meta(), tmp_path / "concepts")
    back = load(d)
    expected = to_dataset("concepts", data["concepts"])
    assert back.kind == "concepts" and back.dataset.to_list() == expected.to_list()
    assert back.sentences is not None
    validate_metadata(back.metadata)
    from datasets import load_dataset

    plain = load_dataset(str(d), "default", split="train")
    assert plain.num_rows == len(expected)
    # rewriting replaces the folder whole
    save_local("concepts", data["concepts"], meta("second"), d)
    assert load(d).metadata["pretty_name"] == "second"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


ROOT = Path(__file__).resolve().parents[2]


def test_installed_wheel_renders_a_card(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(wheel_dir)], check=True, timeout=300)
    whl = next(wheel_dir.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(whl)],
                   check=True, timeout=300)
    code = ("import tl_concepts.hub.cards as c, json; from tl_concepts.hub import CardMeta, to_dataset;"
            "ds = to_dataset('rankings', [dict(hook='h', label='x', method='m', rank=0, neuron=1, score=1.0)]);"
            "t = c.render_card('rankings', ds, CardMeta(pretty_name='P', source_model='m'), 'a/b');"
            "print(json.dumps([c.__file__, str(c.templates_dir()), 'How to load it' in t]))")
    env = {k: v for k, v in os.environ.items() if k != "TL_CONCEPTS_CARDS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=120, check=True)
    mod, tdir, ok = json.loads(out.stdout.strip().splitlines()[-1])
    assert mod.startswith(str(target)) and tdir.startswith(str(target)) and ok
