"""executor / ray_address reach every stage: the package-root functions put them in the stage
configs (and the capture of a live model), the main job passes RunConfig's to every stage;
a Ray capture from Python equals a local one and shares its default run folder."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

import tl_concepts as tlc
from tests.helpers.tiny_models import TEXTS
from tl_concepts.capture import ActivationStore, ExemplarConfig
from tl_concepts.errors import ConfigError

HOOK = "blocks.1.mlp.hook_post"
EX = ExemplarConfig(n_train_top=3, n_calibration_top=2, n_test_top=2, n_calibration_random=2, n_test_random=2,
                    n_quantile_bins=0, n_per_quantile=0)
SMALL = dict(context_tokens=16, exemplars=EX, shard_tokens=40, batch_size=2, progress=False)


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_CONCEPTS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def small_store(tiny_bridge, tmp_path_factory):
    return tlc.capture(tiny_bridge, TEXTS, [HOOK], tmp_path_factory.mktemp("s") / "store", **SMALL)


def test_python_capture_on_ray_equals_local_and_shares_the_default_folder(ray_cluster, tiny_bridge, small_store,
                                                                         runs):
    on_ray = tlc.capture(tiny_bridge, TEXTS, [HOOK], executor="ray", **SMALL)
    assert on_ray.path.parent == runs and on_ray.manifest["executor"] == "ray"
    assert len(on_ray.manifest["shards"]) >= 3
    np.testing.assert_array_equal(on_ray.activations(HOOK), small_store.activations(HOOK))
    assert on_ray.manifest["key"] == small_store.manifest["key"]
    for unit in range(4):
        a, b = on_ray.unit_records(HOOK, unit), small_store.unit_records(HOOK, unit)
        assert [r.tokens for r in a.train_top] == [r.tokens for r in b.train_top]
        assert [r.activations for r in a.test_random] == [r.activations for r in b.test_random]
    # the same call locally: the same default folder, found finished (nothing recaptured)
    before = (on_ray.path / "manifest.json").read_bytes()
    local = tlc.capture(tiny_bridge, TEXTS, [HOOK], **SMALL)
    assert local.path == on_ray.path and (local.path / "manifest.json").read_bytes() == before


def test_unknown_executor_is_refused_by_every_function(small_store):
    for call in (lambda: tlc.capture(small_store, TEXTS, [HOOK], executor="dask"),
                 lambda: tlc.explain(small_store, HOOK, units=[0], executor="dask"),
                 lambda: tlc.find_concepts(small_store, hook=HOOK, executor="dask"),
                 lambda: tlc.describe_neurons(small_store, HOOK, executor="dask"),
                 lambda: tlc.probe(small_store, HOOK, executor="dask"),
                 lambda: tlc.rank(small_store, HOOK, executor="dask")):
        with pytest.raises(ConfigError, match="unknown executor 'dask': use 'local' or 'ray'"):
            call()


def _fake_llm(monkeypatch):
    import tl_concepts.llm

    llm = types.SimpleNamespace(name="fake")
    monkeypatch.setattr(tl_concepts.llm, "get_llm", lambda *a, **k: llm)
    return llm


def test_explain_puts_the_executor_in_its_config(small_store, monkeypatch):
    import tl_concepts.explain.runner as runner

    seen = []

    async def fake_arun(sources, llm, cfg, **kw):
        seen.append(cfg)
        return types.SimpleNamespace()

    monkeypatch.setattr(runner, "arun_explain", fake_arun)
    _fake_llm(monkeypatch)
    tlc.explain(small_store, HOOK, units=[0, 1], executor="ray", ray_address="auto")
    tlc.explain(small_store, HOOK, units=[0, 1])
    assert [(c.executor, c.ray_address) for c in seen] == [("ray", "auto"), ("local", None)]
    assert seen[0].out_dir == seen[1].out_dir  # a Ray run resumes the local one's folder


def test_concepts_and_labels_put_the_executor_in_their_config(small_store, monkeypatch):
    import tl_concepts.concepts as concepts

    seen = []

    def fake_discover(cfg, progress=True):
        seen.append(("discover", cfg.executor, cfg.ray_address))
        return types.SimpleNamespace(meta={}, layer=1, hook=HOOK, k=3, points=[1, 2])

    def fake_label(cs, cfg, llm, progress=True):
        seen.append(("label", cfg.executor, cfg.ray_address, cfg.out))
        return []

    monkeypatch.setattr(concepts, "discover_concepts", fake_discover)
    monkeypatch.setattr(concepts, "label", fake_label)
    _fake_llm(monkeypatch)
    cs = tlc.find_concepts(small_store, hook=HOOK, k=3, executor="ray", ray_address="auto")
    tlc.label_concepts(cs, executor="ray", ray_address="10.0.0.1:6379", progress=False)
    tlc.label_concepts(cs, progress=False)
    assert seen[0] == ("discover", "ray", "auto")
    assert seen[1][:3] == ("label", "ray", "10.0.0.1:6379") and seen[2][:3] == ("label", "local", None)
    assert seen[1][3] == seen[2][3]  # the same labels folder whichever executor


def test_describe_neurons_puts_the_executor_in_its_config_and_keeps_the_folder(small_store, monkeypatch):
    import tl_concepts.descriptors.runner as runner

    seen = []

    async def fake_arun(cfg, llm=None, progress=True):
        seen.append(cfg)
        return types.SimpleNamespace()

    monkeypatch.setattr(runner, "arun_descriptors", fake_arun)
    _fake_llm(monkeypatch)
    tlc.describe_neurons(small_store, HOOK, max_sentences=8, executor="ray", ray_address="auto", progress=False)
    tlc.describe_neurons(small_store, HOOK, max_sentences=8, progress=False)
    assert [(c.executor, c.ray_address) for c in seen] == [("ray", "auto"), ("local", None)]
    assert seen[0].out == seen[1].out


def test_a_live_model_is_captured_with_the_stage_executor(tiny_bridge, monkeypatch):
    import tl_concepts.capture as capture_pkg
    import tl_concepts.descriptors.runner as runner

    captured = []
    real = capture_pkg.capture

    def spy(model, corpus, hooks, out, **kw):
        captured.append((kw["executor"], kw["ray_address"]))
        return real(model, corpus, hooks, out, **{**kw, "executor": "local", "ray_address": None})

    async def fake_arun(cfg, llm=None, progress=True):
        return types.SimpleNamespace()

    monkeypatch.setattr(capture_pkg, "capture", spy)
    monkeypatch.setattr(runner, "arun_descriptors", fake_arun)
    _fake_llm(monkeypatch)
    tlc.describe_neurons(tiny_bridge, HOOK, corpus=TEXTS[:4], executor="ray", ray_address="auto", progress=False)
    assert captured == [("ray", "auto")]


def test_run_passes_its_executor_to_every_stage(monkeypatch, tmp_path):
    """RunConfig.executor / ray_address reach the capture, concepts (labels), explain and
    descriptors configs (the stages themselves are stand-ins that record what they got)."""
    import tl_concepts.capture
    import tl_concepts.concepts
    import tl_concepts.corpus
    import tl_concepts.descriptors
    import tl_concepts.explain.runner
    import tl_concepts.llm
    import tl_concepts.models
    import tl_concepts.probing.runner
    from tl_concepts.pipeline import RunConfig, run

    seen: dict[str, tuple] = {}

    class Done(Exception):
        pass

    def fake_capture(model, corpus, hooks, out, **kw):
        seen["capture"] = (kw["executor"], kw["ray_address"], kw["ray"].replica)
        return types.SimpleNamespace(path=out)

    def record(name, result=None):
        def fn(*args, **kw):
            cfg = next(a for a in args if hasattr(a, "executor"))
            seen[name] = (cfg.executor, cfg.ray_address)
            if name == "descriptors":
                raise Done()
            return result
        return fn

    monkeypatch.setattr(tl_concepts.llm, "get_llm", lambda *a, **k: types.SimpleNamespace())
    monkeypatch.setattr(tl_concepts.models, "load", lambda name, **k: types.SimpleNamespace(name=name))
    monkeypatch.setattr(tl_concepts.corpus, "load_corpus", lambda *a, **k: types.SimpleNamespace())
    monkeypatch.setattr(tl_concepts.capture, "capture", fake_capture)
    monkeypatch.setattr(tl_concepts.concepts, "discover_concepts", record("concepts"))
    monkeypatch.setattr(tl_concepts.concepts, "label", record("labels"))
    monkeypatch.setattr(tl_concepts.concepts, "evaluate", lambda *a, **k: None)
    monkeypatch.setattr(tl_concepts.explain.runner, "explain_store", record("explain"))
    monkeypatch.setattr(tl_concepts.probing.runner, "run_probes", lambda *a, **k: None)
    monkeypatch.setattr(tl_concepts.probing.runner, "run_rankings", lambda *a, **k: None)
    monkeypatch.setattr(tl_concepts.descriptors, "run_descriptors", record("descriptors"))
    with pytest.raises(Done):
        run(RunConfig(out=str(tmp_path / "run"), executor="ray", ray_address="auto", progress=False))
    assert seen.pop("capture") == ("ray", "auto", tl_concepts.models.ModelRecipe("minilm"))
    assert seen == {"concepts": ("ray", "auto"), "labels": ("ray", "auto"), "explain": ("ray", "auto"),
                    "descriptors": ("ray", "auto")}
    with pytest.raises(ConfigError, match="unknown executor"):
        run(RunConfig(out=str(tmp_path / "run2"), executor="spark", progress=False))
    assert not (tmp_path / "run2" / "run.json").exists()
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster"):  # port 1: nobody listens
        run(RunConfig(out=str(tmp_path / "run3"), executor="ray", ray_address="127.0.0.1:1", progress=False))
    assert not (tmp_path / "run3").exists()  # refused before anything was written


def test_ray_capture_without_ray_installed_names_the_extra(tiny_bridge, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'tl-concepts\[ray\]'"):
        tlc.capture(tiny_bridge, TEXTS, [HOOK], executor="ray", **SMALL)


def test_store_manifest_records_the_executor_outside_the_key(small_store):
    mf = json.loads((small_store.path / "manifest.json").read_text())
    assert mf["executor"] == "local"
    assert "executor" not in json.dumps(mf["key"]) and "executor" not in mf["settings"]
    assert ActivationStore.open(small_store.path).complete
