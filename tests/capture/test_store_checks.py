"""Store input checks: every way a store can be missing, damaged or interrupted, and bad unit or
hook selections, give one clear error that says what to do."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import ActivationStore, capture
from tl_concepts.errors import InputError, StoreError

HOOK = "blocks.1.mlp.hook_post"
RERUN = r"rerun the capture \(same command\) or pass --overwrite"


@pytest.fixture(scope="module")
def store_dir(tiny_bridge, tmp_path_factory):
    return capture(tiny_bridge, TEXTS, [HOOK], tmp_path_factory.mktemp("s") / "store", context_tokens=16,
                   shard_tokens=80, progress=False).path


@pytest.fixture
def copy_of(store_dir, tmp_path):
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(store_dir, dst)
    return dst


def test_missing_folder_says_to_capture(tmp_path):
    with pytest.raises(StoreError, match=r"no capture at .*nothere: run `tl-concepts capture"):
        ActivationStore.open(tmp_path / "nothere")


def test_folder_without_manifest(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(StoreError, match="not a tl-concepts store .*`tl-concepts capture"):
        ActivationStore.open(tmp_path / "x")


@pytest.mark.parametrize("text,why", [
    ('{"format": "tl-concepts-store/1", "status": "comp', "corrupt or unreadable"),
    ("", "corrupt or unreadable"),
    ("[1, 2]", "not a JSON object"),
    ('{"format": "tl-concepts-store/1", "status": "complete"}', "no 'hooks' field"),
])
def test_corrupt_or_incomplete_manifest_names_the_file(copy_of, text, why):
    (copy_of / "manifest.json").write_text(text)
    with pytest.raises(StoreError, match=rf"{copy_of / 'manifest.json'} .*{why}.*{RERUN}"):
        ActivationStore.open(copy_of)


def test_damaged_manifest_is_healed_by_rerunning_the_capture(tiny_bridge, copy_of, store_dir):
    (copy_of / "manifest.json").write_text("{ half a manif")
    store = capture(tiny_bridge, TEXTS, [HOOK], copy_of, context_tokens=16, shard_tokens=80, progress=False)
    np.testing.assert_array_equal(store.activations(HOOK), ActivationStore.open(store_dir).activations(HOOK))


def test_interrupted_store_given_to_a_later_stage(copy_of):
    mf = json.loads((copy_of / "manifest.json").read_text())
    mf["status"], mf["shards"] = "capturing", mf["shards"][:1]
    (copy_of / "manifest.json").write_text(json.dumps(mf))
    done = mf["shards"][0]["windows"][1]
    with pytest.raises(StoreError, match=rf"capture of {copy_of} was interrupted: rerun it .*\({done} of "
                                         rf"{mf['n_windows']} contexts were captured\)"):
        ActivationStore.open(copy_of)


def test_missing_or_truncated_files(tiny_bridge, copy_of, store_dir):
    shard = copy_of / "shards" / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(StoreError, match=rf"{shard} is damaged .*{RERUN}"):
        ActivationStore.open(copy_of).activations(HOOK)
    (copy_of / "windows.safetensors").unlink()
    with pytest.raises(StoreError, match=rf"{copy_of / 'windows.safetensors'} is missing from the store; {RERUN}"):
        ActivationStore.open(copy_of).n_tokens
    (copy_of / "exemplars" / f"{HOOK}.safetensors").unlink()
    with pytest.raises(StoreError, match="did not finish mining exemplars; rerun it"):
        ActivationStore.open(copy_of).unit_records(HOOK, 0)
    # the same capture command heals all of it
    store = capture(tiny_bridge, TEXTS, [HOOK], copy_of, context_tokens=16, shard_tokens=80, progress=False)
    np.testing.assert_array_equal(store.activations(HOOK), ActivationStore.open(store_dir).activations(HOOK))
    assert store.unit_records(HOOK, 0).test_top


def test_truncated_shard_alone_is_captured_again(tiny_bridge, copy_of, store_dir, monkeypatch):
    import tl_concepts.capture.runner as runner

    shard = copy_of / "shards" / "shard-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    starts = []
    real = runner._run_pass
    monkeypatch.setattr(runner, "_run_pass", lambda fw, w, cfg, out, mf, start, p: (starts.append(start),
                                                                                    real(fw, w, cfg, out, mf, start, p)))
    store = capture(tiny_bridge, TEXTS, [HOOK], copy_of, context_tokens=16, shard_tokens=80, progress=False)
    assert starts == [store.manifest["shards"][2]["windows"][0]] and starts[0] > 0
    np.testing.assert_array_equal(store.activations(HOOK), ActivationStore.open(store_dir).activations(HOOK))


def test_unit_and_hook_selection(store_dir):
    store = ActivationStore.open(store_dir)
    with pytest.raises(InputError, match=rf"unit 128 is out of range for {HOOK}: valid units are 0..127"):
        store.unit_records(HOOK, 128)
    with pytest.raises(InputError, match="unit -1 is out of range"):
        store.unit_records(HOOK, -1)
    with pytest.raises(InputError, match="not a whole number"):
        store.unit_records(HOOK, 1.5)
    with pytest.raises(InputError, match=rf"hook 'blocks.9.mlp.hook_post' was not captured .*hooks are: {HOOK}"):
        store.unit_records("blocks.9.mlp.hook_post", 0)
    with pytest.raises(InputError, match="hooks are: "):
        store.activations("blocks.0.mlp.hook_post")
    with pytest.raises(InputError, match=rf"context {store.n_windows} is out of range"):
        store.record(HOOK, 0, store.n_windows)
    assert store.unit_records(HOOK, np.int64(127)).unit == 127


def test_store_being_captured_says_wait(copy_of):
    import os

    from tl_concepts.atomic import folder_lock

    mf = json.loads((copy_of / "manifest.json").read_text())
    mf["status"] = "capturing"
    (copy_of / "manifest.json").write_text(json.dumps(mf))
    with folder_lock(copy_of):
        with pytest.raises(StoreError, match=rf"capture of {copy_of} is still running \(pid {os.getpid()};"
                                             r".*wait for it to finish"):
            ActivationStore.open(copy_of)
    with pytest.raises(StoreError, match="was interrupted: rerun it"):
        ActivationStore.open(copy_of)
