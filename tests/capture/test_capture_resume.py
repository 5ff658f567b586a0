"""Interrupted captures resume with no duplicated or missing rows; partial files are ignored."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.helpers.scripts import child_env
from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import capture

HOOK = "blocks.1.mlp.hook_post"
MANY = [f"{t} Number {i} follows." for i, t in enumerate(TEXTS * 2)]


def _run(model, out, **kw):
    return capture(model, MANY, [HOOK], out, context_tokens=24, batch_size=4, shard_tokens=60,
                   progress=False, **kw)


def test_kill_minus_nine_then_resume(tiny_gpt2_dir, tiny_bridge, tmp_path):
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import time
        from transformer_lens.model_bridge import TransformerBridge
        import tl_concepts.capture.runner as runner
        from tests.capture.test_capture_resume import MANY, HOOK
        model = TransformerBridge.boot_transformers({str(tiny_gpt2_dir)!r}); model.eval()
        real = runner.write_tensors
        def slow(*a, **k):
            real(*a, **k); time.sleep(0.3)
        runner.write_tensors = slow
        runner.capture(model, MANY, [HOOK], {str(out)!r}, context_tokens=24, batch_size=4,
                       shard_tokens=60, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    n_shards = 0
    while time.time() < deadline and proc.poll() is None:
        mf = out / "manifest.json"
        if mf.exists():
            try:
                n_shards = len(json.loads(mf.read_text())["shards"])
            except ValueError:
                n_shards = 0
            if n_shards >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "capturing"
    done = manifest["shards"][-1]["windows"][1]
    assert 0 < done < manifest["n_windows"]

    resumed = _run(tiny_bridge, out)
    fresh = _run(tiny_bridge, tmp_path / "fresh")
    assert resumed.complete and resumed.n_tokens == fresh.n_tokens
    np.testing.assert_allclose(resumed.activations(HOOK), fresh.activations(HOOK), atol=1e-6)
    rows = [tuple(s["rows"]) for s in resumed.manifest["shards"]]
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:])) and rows[0][0] == 0
    assert rows[-1][1] == fresh.n_tokens


def test_half_written_and_unlisted_shards_are_not_taken(tiny_bridge, tmp_path):
    out = tmp_path / "r"
    store = _run(tiny_bridge, out)
    want = store.activations(HOOK)
    # simulate a killed run: drop the last shards from the manifest, leave debris behind
    mf = json.loads((out / "manifest.json").read_text())
    mf["shards"] = mf["shards"][:2]
    mf["status"] = "capturing"
    (out / "manifest.json").write_text(json.dumps(mf))
    (out / "shards" / ".shard-00002.safetensors.x.tmp").write_bytes(b"garbage")
    (out / "shards" / "shard-00003.safetensors").write_bytes(b"garbage that looks finished")
    again = _run(tiny_bridge, out)
    np.testing.assert_allclose(again.activations(HOOK), want, atol=1e-6)
    assert not list((out / "shards").glob(".*.tmp"))


def test_disk_full_leaves_a_resumable_store(tiny_bridge, tmp_path, monkeypatch):
    import tl_concepts.capture.runner as runner

    real = runner.write_tensors
    calls = {"n": 0}

    def full_disk(path, *a, **k):
        if "shards" in str(path):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(runner, "write_tensors", full_disk)
    out = tmp_path / "full"
    with pytest.raises(OSError, match="disk full.*rerun the same capture to resume"):
        _run(tiny_bridge, out)
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["status"] == "capturing" and len(mf["shards"]) == 2
    from tl_concepts.capture import ActivationStore
    from tl_concepts.errors import StoreError

    with pytest.raises(StoreError, match=rf"capture of {out} was interrupted: rerun it .*\({mf['shards'][-1]['windows'][1]} "
                                         rf"of {mf['n_windows']} contexts were captured\)"):
        ActivationStore.open(out)
    with pytest.raises(StoreError, match="interrupted"):
        ActivationStore.open(out, allow_incomplete=True).activations(HOOK)
    monkeypatch.setattr(runner, "write_tensors", real)
    resumed = _run(tiny_bridge, out)
    fresh = _run(tiny_bridge, tmp_path / "fresh")
    np.testing.assert_allclose(resumed.activations(HOOK), fresh.activations(HOOK), atol=1e-6)
