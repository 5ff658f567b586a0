import json

import pytest


from tl_concepts.concepts import ConceptsConfig, discover_concepts, read_tcn, to_dataset, write_tcn
from tl_concepts.concepts.filters import FilterConfig
from tl_concepts.concepts.model import ConceptLabel, ConceptSet


@pytest.fixture
def cs(synth, tmp_path):
    cfg = ConceptsConfig(k=6, filters=FilterConfig(min_count=1, max_per_type=4), out=str(tmp_path / "set"))
    cs = discover_concepts(cfg, synth, progress=False)
    ids = cs.concept_ids()
    cs.add_labels([ConceptLabel(ids[0], "animals", "ok", "label-general", "v1", model="m", raw="Animals."),
                   ConceptLabel(ids[1], None, "refusal", "label-general", "v1", raw="I'm sorry")])
    return cs


def partition(cs):
    return sorted(sorted((cs.points["sentence"][m], cs.points["index"][m], cs.points["text"][m])
                         for m in c.members) for c in cs.concepts())


def test_tcn_round_trip(cs, tmp_path):
    path = write_tcn(cs, tmp_path / "tcn")
    assert path == tmp_path / "tcn" / "layer3" / "clusters-6.txt"
    first = path.read_text().splitlines()[0].split("|||")
    assert len(first) == 5 and first[1] == "4"  # every type kept 4 times
    back = read_tcn(tmp_path / "tcn", layer=3)
    assert back.k == 6 and back.layer == 3 and partition(back) == partition(cs)
    assert back.concept_ids() == cs.concept_ids() and back.sentences == cs.sentences
    labs = {c: [(x.label, x.status, x.raw) for x in v] for c, v in back.labels.items()}
    ids = cs.concept_ids()
    assert labs[ids[0]] == [("animals", "ok", "Animals.")] and labs[ids[1]] == [(None, "refusal", "I'm sorry")]
    ann = json.loads((tmp_path / "tcn" / "layer3" / "annotations.json").read_text())
    assert ann[str(ids[0])]["labels"] == ["animals"] and ann[str(ids[0])]["parent"] == cs.tree.parent_of(ids[0])


def test_tcn_import_of_plain_release(tmp_path):
    d = tmp_path / "layer2"
    d.mkdir()
    (d / "clusters-2.txt").write_text("cat|||2|||0|||1|||0\ncat|||2|||1|||1|||0\nran|||1|||0|||2|||1\n")
    (d / "annotations.json").write_text(json.dumps({"c0": ["Animals"], "1": {"labels": ["Verbs", "Past"]}}))
    cs = read_tcn(tmp_path, layer=2)
    assert cs.k == 2 and [c.words for c in cs.concepts()] == [["cat", "cat"], ["ran"]]
    assert [x.label for x in cs.labels[1]] == ["Verbs", "Past"] and cs.labels[0][0].template == "imported"
    with pytest.raises(ValueError, match="recut"):
        cs.at(1)
    (d / "clusters-3.txt").write_text("bad line\n")
    with pytest.raises(FileNotFoundError, match="pass k="):
        read_tcn(tmp_path, layer=2)
    with pytest.raises(ValueError, match="expected word"):
        read_tcn(tmp_path, layer=2, k=3)


def test_dataset_export(cs):
    ds = to_dataset(cs)
    assert ds.num_rows == 6 and set(ds.column_names) >= {"concept_id", "members", "labels", "parent", "children"}
    ids = cs.concept_ids()
    row = ds[0]
    c = cs.concept(ids[0])
    assert row["concept_id"] == ids[0] and row["label"] == "animals" and row["size"] == c.size
    assert [m["word"] for m in row["members"]] == c.words and row["parent"] == c.parent
    assert row["labels"][0]["raw"] == "Animals." and row["children"] == c.children
    assert ds[1]["label"] is None and ds[1]["labels"][0]["status"] == "refusal"


def test_concept_set_save_load_and_recut(cs, tmp_path):
    back = ConceptSet.load(tmp_path / "set")
    assert partition(back) == partition(cs) and back.meta["mode"] == "exact"
    at3 = ConceptSet.load(tmp_path / "set", k=3)
    assert at3.k == 3 and len(at3.concepts()) == 3
    assert partition(at3) == partition(cs.at(3))


def test_typed_rows_repr_and_html(cs):
    ids = cs.concept_ids()
    df = cs.to_pandas()
    assert list(df["concept_id"]) == ids and len(df) == 6
    for col in ("layer", "hook", "n_occurrences", "n_types", "top_words", "label", "label_status", "label_reason"):
        assert col in df.columns
    first = df.iloc[0]
    c = cs.concept(ids[0])
    assert first["label"] == "animals" and first["label_status"] == "ok" and first["n_occurrences"] == c.size
    assert first["n_types"] == len(set(c.words)) and first["top_words"].split(", ")[0] == c.types[0]
    assert cs.rows()[1]["label"] is None and df.iloc[1]["label_status"] == "refusal"
    assert df["label"].isna().sum() == 5
    assert repr(cs) == "ConceptSet(K=6, blocks.3.hook_resid_post, 64 occurrences, 2 labelled: 1 accepted)"
    ds = cs.to_dataset()
    assert ds.num_rows == 6 and ds[0]["label"] == "animals"
    cs.add_labels([ConceptLabel(ids[2], "<script>x</script>", "ok", "label-general", "v1")])
    html = cs._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "<mark>" in html
    assert html.count("<tr>") == 7 and "refusal" in html and "animals" in html


def test_saved_labels_come_back_only_on_the_same_members(cs, tmp_path):
    ids = cs.concept_ids()
    fp = cs.members_fingerprint(ids[0])
    cs.add_labels([ConceptLabel(ids[0], "kept", "ok", "label-fewshot", "v1", members_fp=fp),
                   ConceptLabel(ids[3], "stale", "ok", "label-fewshot", "v1", members_fp=fp)])
    assert [x.label for x in cs.labels[ids[0]]][-1] == "kept" and ids[3] not in cs.labels
    cs.save(tmp_path / "again")
    back = ConceptSet.load(tmp_path / "again")
    assert [x.label for x in back.labels[ids[0]]] == ["animals", "kept"]
    assert back.label_counts() == cs.label_counts() == {"ok": 1, "refusal": 1}
