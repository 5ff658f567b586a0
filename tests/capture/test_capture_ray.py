"""Capture on Ray: shards run on Ray workers (each with its own model replica) and written
here in order give the same store as a local capture, file for file; a capture interrupted
under one executor resumes under the other to the same store; a worker whose replica differs
from the capture's model is refused. One local two-CPU Ray cluster serves the module."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import ActivationStore, RayCapture, capture
from tl_concepts.capture.runner import plan_shards
from tl_concepts.corpus.windows import Windows
from tl_concepts.errors import ConfigError, InputError
from tl_concepts.models import ModelRecipe

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
MANY = [f"{t} Number {i} follows." for i, t in enumerate(TEXTS * 2)]
SETTINGS = dict(context_tokens=24, batch_size=4, shard_tokens=60, progress=False)
TWO = RayCapture(num_workers=2)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def local_store(tiny_bridge, tmp_path_factory) -> Path:
    return capture(tiny_bridge, MANY, HOOKS, tmp_path_factory.mktemp("local") / "store", **SETTINGS).path


def _manifest(path: Path) -> dict:
    mf = json.loads((path / "manifest.json").read_text())
    for k in ("seconds", "executor"):  # how long and where it ran: not part of the result
        mf.pop(k, None)
    return mf


def assert_same_store(a: Path, b: Path) -> None:
    """Every file byte-equal (the lock aside), the manifests equal but for timing and executor,
    and every array equal as numbers."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != ".lock")
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != ".lock")
    assert files_a == files_b
    for rel in files_a:
        if rel.name != "manifest.json":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert _manifest(a) == _manifest(b)
    sa, sb = ActivationStore.open(a), ActivationStore.open(b)
    assert sa.manifest["key"] == sb.manifest["key"] and sa.manifest["settings_key"] == sb.manifest["settings_key"]
    for h in HOOKS:
        np.testing.assert_array_equal(sa.activations(h), sb.activations(h))
        for unit in (0, 5):
            ra, rb = sa.unit_records(h, unit), sb.unit_records(h, unit)
            for part in ("train_top", "test_top", "test_random"):
                got_a, got_b = getattr(ra, part), getattr(rb, part)
                assert [r.tokens for r in got_a] == [r.tokens for r in got_b]
                for x, y in zip(got_a, got_b):
                    np.testing.assert_array_equal(x.activations, y.activations)


def test_plan_cuts_whole_batches_like_the_local_pass(tiny_bridge, local_store):
    store = ActivationStore.open(local_store)
    t = load_file(str(local_store / "windows.safetensors"))
    w = Windows(t["window_start"], t["token_id"], t["doc"], t["sentence"], t["word_id"], t["position"])
    plan = plan_shards(w, SETTINGS["batch_size"], SETTINGS["shard_tokens"])
    assert [[s.first, s.last] for s in plan] == [sh["windows"] for sh in store.manifest["shards"]]
    assert [s.index for s in plan] == list(range(len(plan)))
    assert len(plan) >= 4
    resumed = plan_shards(w, SETTINGS["batch_size"], SETTINGS["shard_tokens"], plan[2].first, 2)
    assert [(s.index, s.first, s.last) for s in resumed] == [(s.index, s.first, s.last) for s in plan[2:]]


def test_ray_capture_equals_local(ray_cluster, tiny_bridge, local_store, tmp_path):
    out = tmp_path / "store"
    store = capture(tiny_bridge, MANY, HOOKS, out, executor="ray", ray=TWO, **SETTINGS)
    assert store.complete and store.manifest["executor"] == "ray"
    assert ActivationStore.open(local_store).manifest["executor"] == "local"
    assert len(store.manifest["shards"]) >= 4
    assert_same_store(out, local_store)
    # the same call again, now locally: a finished capture of the same key, nothing rewritten
    before = (out / "manifest.json").read_bytes()
    assert capture(tiny_bridge, MANY, HOOKS, out, **SETTINGS).complete
    assert (out / "manifest.json").read_bytes() == before


def test_ray_workers_load_their_own_replica_from_a_recipe(ray_cluster, tiny_gpt2_dir, local_store, tmp_path):
    out = tmp_path / "store"
    # the model given as a recipe: loaded here and by each worker, which checks its fingerprint
    store = capture(ModelRecipe(str(tiny_gpt2_dir)), MANY, HOOKS, out, executor="ray", ray=TWO, **SETTINGS)
    assert store.complete
    assert_same_store(out, local_store)


def test_a_model_name_is_loaded_here_too(tiny_gpt2_dir, local_store, tmp_path):
    store = capture(str(tiny_gpt2_dir), MANY, HOOKS, tmp_path / "store", **SETTINGS)  # a folder, loaded by name
    assert_same_store(store.path, local_store)


def test_worker_with_another_model_is_refused(ray_cluster, tiny_bridge, tiny_gpt2_dir, tmp_path):
    changed = copy.deepcopy(tiny_bridge)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1.0
    out = tmp_path / "store"
    with pytest.raises(InputError, match="differs from the capture's model \\(weights"):
        capture(changed, MANY, HOOKS, out, executor="ray",
                ray=RayCapture(num_workers=1, replica=ModelRecipe(str(tiny_gpt2_dir))), **SETTINGS)
    assert not out.exists()  # a refused input leaves nothing behind


def test_model_with_user_hooks_is_refused_on_ray(ray_cluster, tiny_bridge, tmp_path):
    """Only weights travel to the workers: a hook that changes the activations would be lost."""
    hp = tiny_bridge.get_hook_point(HOOKS[0])
    hp.add_hook(lambda t, hook: t * 2)
    try:
        out = tmp_path / "store"
        with pytest.raises(InputError, match=f"has hooks attached at {HOOKS[0]} = blocks.0.hook_out, which Ray workers do not get"):
            capture(tiny_bridge, MANY, HOOKS, out, executor="ray", ray=RayCapture(num_workers=1), **SETTINGS)
        assert not out.exists()
        doubled = capture(tiny_bridge, MANY[:4], HOOKS, tmp_path / "local", **SETTINGS)  # locally it applies
    finally:
        tiny_bridge.reset_hooks(including_permanent=False)
    plain = capture(tiny_bridge, MANY[:4], HOOKS, tmp_path / "plain", **SETTINGS)
    np.testing.assert_allclose(doubled.activations(HOOKS[0]), 2 * plain.activations(HOOKS[0]), rtol=1e-6)


def _crash_capture(model_dir: Path, out: Path, crash_at: str, executor: str, address: str | None) \
        -> subprocess.CompletedProcess:
    """Run the capture in a fresh process that dies like kill -9 at ``crash_at`` (a Ray run
    joins the test's cluster as a second driver)."""
    script = textwrap.dedent(f"""
        from transformer_lens.model_bridge import TransformerBridge
        from tl_concepts.capture import RayCapture, capture
        from test_capture_ray import MANY, HOOKS, SETTINGS
        model = TransformerBridge.boot_transformers({str(model_dir)!r}); model.eval()
        capture(model, MANY, HOOKS, {str(out)!r}, executor={executor!r}, ray_address={address!r},
                ray=RayCapture(num_workers=2), **SETTINGS)
        print("finished without crashing")
    """)
    env = {**os.environ, "TL_CONCEPTS_CRASH_AT": crash_at,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("first,then", [("local", "ray"), ("ray", "local")])
def test_interrupted_capture_resumes_under_the_other_executor(ray_cluster, tiny_gpt2_dir, tiny_bridge, local_store,
                                                              tmp_path, first, then):
    out = tmp_path / "store"
    proc = _crash_capture(tiny_gpt2_dir, out, "capture.after_shard:3", first,
                          ray_cluster if first == "ray" else None)
    assert proc.returncode == 137, proc.stderr[-2000:]
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["status"] == "capturing" and len(mf["shards"]) == 2 and mf["executor"] == first
    assert (out / "shards" / "shard-00002.safetensors").exists()  # written, never listed
    store = capture(tiny_bridge, MANY, HOOKS, out, executor=then, ray=TWO, **SETTINGS)
    assert store.complete and store.manifest["executor"] == then
    assert_same_store(out, local_store)


def test_unreachable_address_is_one_line_config_error(tiny_bridge, tmp_path):
    out = tmp_path / "store"
    with pytest.raises(ConfigError) as e:
        capture(tiny_bridge, TEXTS[:3], HOOKS, out, executor="ray", ray_address="127.0.0.1:1", progress=False)
    msg = str(e.value)
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in msg and "ray start --head" in msg and "\n" not in msg
    assert not out.exists()


def test_without_ray_installed_says_what_to_install(tiny_bridge, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "store"
    with pytest.raises(ConfigError, match=r"pip install 'tl-concepts\[ray\]'"):
        capture(tiny_bridge, TEXTS[:3], HOOKS, out, executor="ray", progress=False)
    assert not out.exists()
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        capture(tiny_bridge, TEXTS[:3], HOOKS, out, executor="dask", progress=False)
    with pytest.raises(ConfigError, match=r"pip install 'tl-concepts\[ray\]'"):  # before any model is loaded
        capture("no-such-model-folder", TEXTS[:3], HOOKS, out, executor="ray", progress=False)
