"""The one resumable-results store of the LLM stages (explanations, labels, descriptors): an
answer is served only for the inputs that produced it; transient failures are recomputed,
permanent ones kept until retry_failed; both layouts write atomically and skip torn data."""
from __future__ import annotations

import json

import pytest

from tl_concepts.errors import StoreError
from tl_concepts.explain.results import load_unit_dicts, unit_store
from tl_concepts.resultstore import ResultStore, needs_compute


def failed(rec):
    return None if rec["status"] == "ok" else [rec["kind"]]


@pytest.mark.parametrize("name", ["units", "labels.jsonl"])
def test_served_only_for_the_same_inputs_and_by_the_failure_rule(tmp_path, name):
    st = ResultStore(tmp_path / name, failed=failed)
    assert st.layout == ("lines" if name.endswith(".jsonl") else "files")
    st.put({"id": "a", "input_key": "k1", "status": "ok", "answer": 1})
    st.put({"id": "b", "input_key": "k1", "status": "failed", "kind": "retries_exhausted"})
    st.put({"id": "c", "input_key": "k1", "status": "failed", "kind": "refusal"})
    again = ResultStore(tmp_path / name, failed=failed)  # what a rerun sees
    assert again.get("a", "k1")["answer"] == 1
    assert again.get("a", "k2") is None and again.latest("a")["input_key"] == "k1"  # other inputs: never served
    assert again.reusable("a", "k1") is not None
    assert again.reusable("b", "k1") is None  # transient: asked again by itself
    assert again.reusable("c", "k1")["kind"] == "refusal"  # permanent: kept with its reason
    assert again.reusable("c", "k1", retry_failed=True) is None
    assert again.ids() == ["a", "b", "c"] and len(again) == 3
    again.remove("b")
    assert ResultStore(tmp_path / name, failed=failed).ids() == ["a", "c"]
    with pytest.raises(ValueError):
        again.put({"id": "d", "status": "ok"})  # no input key: refused, never stored


def test_needs_compute():
    assert needs_compute(None, failed)
    assert not needs_compute({"status": "ok"}, failed)
    assert needs_compute({"status": "x", "kind": "transient"}, failed)
    assert not needs_compute({"status": "x", "kind": "unparseable"}, failed)
    assert needs_compute({"status": "x", "kind": "unparseable"}, failed, retry_failed=True)


def test_lines_append_skip_torn_and_keyless_lines_and_compact_sorted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "z", "input_key": "k", "status": "ok"}) + "\n"
                    + json.dumps({"id": "old", "status": "ok"}) + "\n" + '{"id": "y", "inpu')
    st = ResultStore(path, failed=failed)
    assert st.ids() == ["z"] and st.ignored == 1
    st.put({"id": "m", "input_key": "k", "status": "ok"}, flush=False)
    assert '"m"' not in path.read_text()  # kept until flushed
    st.flush()  # appended after the torn line, which is closed off
    assert ResultStore(path, failed=failed).ids() == ["m", "z"]
    st.put({"id": "z", "input_key": "k2", "status": "ok"})  # a newer answer for z: the last line wins
    assert ResultStore(path, failed=failed).get("z", "k2") is not None
    st.compact()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["id"], x["input_key"]) for x in lines] == [("m", "k"), ("z", "k2")]  # one sorted line per item
    assert not list(tmp_path.glob(".*tmp"))  # the atomic rewrite left no temp file
    before = path.stat().st_mtime_ns
    ResultStore(path, failed=failed).compact()  # already compact: not rewritten
    assert path.stat().st_mtime_ns == before


def test_unit_files_one_reader(tmp_path):
    st = unit_store(tmp_path)
    st.put({"id": "blocks.0.mlp.hook_post.1", "input_key": "k", "status": "ok", "x": 1})
    st.put({"id": "blocks.0.mlp.hook_post.0", "input_key": "k", "status": "ok"})
    unit_store(tmp_path, "errors").put({"id": "blocks.0.mlp.hook_post.2", "input_key": "k", "status": "error"})
    assert [d["id"] for d in load_unit_dicts(tmp_path)] == ["blocks.0.mlp.hook_post.0", "blocks.0.mlp.hook_post.1"]
    ids = ["blocks.0.mlp.hook_post.2", "blocks.0.mlp.hook_post.1", "blocks.0.mlp.hook_post.9"]
    assert [d["id"] for d in load_unit_dicts(tmp_path, ids)] == ["blocks.0.mlp.hook_post.1"]
    assert [d["status"] for d in load_unit_dicts(tmp_path, ids, with_errors=True)] == ["error", "ok"]
    (tmp_path / "units" / "blocks.0.mlp.hook_post.0.json").write_text('{"id": "blocks.0')  # torn by hand
    assert st.get("blocks.0.mlp.hook_post.0", "k") is None  # unreadable: recomputed
    with pytest.raises(StoreError, match="delete it and rerun"):
        load_unit_dicts(tmp_path, strict=True)
