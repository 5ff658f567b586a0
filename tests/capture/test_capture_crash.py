"""Crash anywhere: a capture killed at a crash point reruns to the same store; a refused input
leaves nothing behind; a second concurrent writer is refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.scripts import run_python
from tests.helpers.tiny_models import TEXTS
from tl_concepts.atomic import folder_lock
from tl_concepts.capture import ActivationStore, capture
from tl_concepts.errors import FolderLockedError, StoreError

HOOK = "blocks.1.mlp.hook_post"
MANY = [f"{t} Number {i} follows." for i, t in enumerate(TEXTS * 2)]
SETTINGS = dict(context_tokens=24, batch_size=4, shard_tokens=60, progress=False)


def _crash_capture(model_dir: Path, out: Path, crash_at: str) -> subprocess.CompletedProcess:
    """Run the capture in a fresh process that dies like kill -9 at ``crash_at``."""
    script = textwrap.dedent(f"""
        from transformer_lens.model_bridge import TransformerBridge
        from tl_concepts.capture import capture
        from tests.capture.test_capture_crash import MANY, HOOK, SETTINGS
        model = TransformerBridge.boot_transformers({str(model_dir)!r}); model.eval()
        capture(model, MANY, [HOOK], {str(out)!r}, **SETTINGS)
        print("finished without crashing")
    """)
    return run_python(script, crash_at=crash_at)


def _assert_same_store(a: Path, b: Path) -> None:
    """Every file byte-equal (the lock aside), manifests equal but for the timing."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != ".lock")
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != ".lock")
    assert files_a == files_b
    for rel in files_a:
        if rel.name == "manifest.json":
            ma, mb = (json.loads((d / rel).read_text()) for d in (a, b))
            ma.pop("seconds"), mb.pop("seconds")
            assert ma == mb
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def uninterrupted(tiny_bridge, tmp_path_factory):
    return capture(tiny_bridge, MANY, [HOOK], tmp_path_factory.mktemp("fresh") / "store", **SETTINGS).path


def test_crash_before_first_manifest_then_rerun(tiny_gpt2_dir, tiny_bridge, uninterrupted, tmp_path):
    out = tmp_path / "store"
    proc = _crash_capture(tiny_gpt2_dir, out, "capture.before_manifest")
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert (out / "windows.safetensors").exists() and not (out / "manifest.json").exists()
    with pytest.raises(StoreError, match=f"capture of {out} was interrupted: rerun it"):
        ActivationStore.open(out)  # a later stage is told what happened, not "hooks []"
    store = capture(tiny_bridge, MANY, [HOOK], out, **SETTINGS)  # the same command again
    assert store.complete
    _assert_same_store(out, uninterrupted)


def test_crash_between_shard_and_manifest_then_rerun(tiny_gpt2_dir, tiny_bridge, uninterrupted, tmp_path):
    out = tmp_path / "store"
    proc = _crash_capture(tiny_gpt2_dir, out, "capture.after_shard:3")
    assert proc.returncode == 137, proc.stderr[-2000:]
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["status"] == "capturing" and len(mf["shards"]) == 2
    assert (out / "shards" / "shard-00002.safetensors").exists()  # written, never listed
    store = capture(tiny_bridge, MANY, [HOOK], out, **SETTINGS)
    assert store.complete and len(store.manifest["shards"]) > 3
    _assert_same_store(out, uninterrupted)
    np.testing.assert_array_equal(store.activations(HOOK), ActivationStore.open(uninterrupted).activations(HOOK))


def test_refused_hook_leaves_nothing_and_corrected_rerun_works(tiny_bridge, tmp_path):
    out = tmp_path / "store"
    with pytest.raises(ValueError, match="not per-token"):
        capture(tiny_bridge, TEXTS, [HOOK, "blocks.1.attn.hook_pattern"], out, progress=False)
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not per-token"):
        capture(tiny_bridge, TEXTS, ["blocks.1.attn.hook_pattern"], tmp_path / "empty", progress=False)
    assert list((tmp_path / "empty").iterdir()) == []
    store = capture(tiny_bridge, TEXTS, [HOOK], out, progress=False)
    assert store.complete and store.hooks == [HOOK]


def test_second_writer_gets_folder_locked(tiny_bridge, tmp_path):
    out = tmp_path / "store"
    capture(tiny_bridge, TEXTS[:3], [HOOK], out, progress=False)
    with folder_lock(out):  # another writer holds the folder
        with pytest.raises(FolderLockedError, match=f"{out} is being written by pid {os.getpid()}"):
            capture(tiny_bridge, TEXTS[:3], [HOOK], out, progress=False)
        assert ActivationStore.open(out).complete  # readers need no lock
    assert capture(tiny_bridge, TEXTS[:3], [HOOK], out, progress=False).complete


def test_second_writer_process_is_refused(tiny_bridge, tmp_path):
    out = tmp_path / "store"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from tl_concepts.atomic import folder_lock
            with folder_lock({str(out)!r}):
                print("locked", flush=True)
                sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            capture(tiny_bridge, TEXTS[:3], [HOOK], out, progress=False)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert capture(tiny_bridge, TEXTS[:3], [HOOK], out, progress=False).complete
