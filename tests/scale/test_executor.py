"""map_items: local and Ray runs give the same results in input order; each Ray worker
builds its own LLM from a picklable spec; an item's exception reaches the caller as is.
The Ray tests run on a local two-CPU cluster."""
from __future__ import annotations

import os

import pytest

from tl_concepts.errors import ConfigError, LLMError
from tl_concepts.executor import LLMSpec, map_items

PROMPTS = ["the cat sat on the mat", "a dog ran in the park\t", "numbers 0 1 2 3 4 5",
           "Activations:\ncat\t3\ndog\t", "The quick brown fox jumps over the lazy dog."]


def square_plus(item: int, ctx: dict) -> tuple[int, int]:
    return item * item + ctx["offset"], ctx["pid"]


def make_ctx() -> dict:
    return {"offset": 7, "pid": os.getpid()}


def next_token(prompt: str, llm) -> dict:
    d = llm.next_token_distributions(prompt, [len(prompt)], ["3", "5", " the"], stage="test")
    return {"probs": d.probs, "model": d.model, "pid": os.getpid()}


def fail_on_three(item: int, ctx) -> int:
    if item == 3:
        raise LLMError("the endpoint refused the key; set OPENAI_API_KEY", "auth")
    return item


@pytest.fixture(scope="module")
def ray_cluster():
    import sys

    import ray
    from ray import cloudpickle

    # pytest imports this file as a top-level module the workers cannot import: send
    # its functions by value (a stage's functions live in tl_concepts, importable there)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_local_map_keeps_order_and_builds_context_once():
    calls = []

    def setup():
        calls.append(1)
        return make_ctx()

    out = map_items(square_plus, list(range(6)), setup=setup)
    assert [r[0] for r in out] == [i * i + 7 for i in range(6)]
    assert calls == [1] and {r[1] for r in out} == {os.getpid()}
    assert map_items(square_plus, [], setup=setup) == []
    with pytest.raises(ConfigError, match="'local' or 'ray'"):
        map_items(square_plus, [1], executor="dask")
    with pytest.raises(LLMError, match="refused"):
        map_items(fail_on_three, [1, 2, 3, 4])


def test_llm_spec_hides_secrets():
    spec = LLMSpec("openai:m", {"api_key": "sk-secret-123", "max_concurrency": 4})
    assert "sk-secret" not in repr(spec) and "max_concurrency" in repr(spec)


def test_ray_equals_local_in_input_order(ray_cluster):
    items = list(range(23))
    local = map_items(square_plus, items, setup=make_ctx)
    remote = map_items(square_plus, items, setup=make_ctx, executor="ray", num_workers=2)
    assert [r[0] for r in remote] == [r[0] for r in local]
    pids = {r[1] for r in remote}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # ran in the Ray workers


def test_ray_workers_build_their_own_llm_from_a_spec(ray_cluster, tiny_llama_dir):
    spec = LLMSpec(f"in-process:{tiny_llama_dir}", {"batch_window_s": 0.0})
    local = map_items(next_token, PROMPTS, setup=spec.build)
    remote = map_items(next_token, PROMPTS, setup=spec.build, executor="ray", num_workers=2)
    assert [r["model"] for r in remote] == ["tiny-llama"] * len(PROMPTS)
    assert os.getpid() not in {r["pid"] for r in remote}
    for a, b in zip(local, remote):
        for ra, rb in zip(a["probs"], b["probs"]):
            assert ra == pytest.approx(rb, abs=1e-6)


def test_ray_reraises_the_items_exception(ray_cluster):
    with pytest.raises(LLMError, match="refused") as e:
        map_items(fail_on_three, [1, 2, 3, 4], executor="ray", num_workers=2)
    assert e.value.kind == "auth"


def test_unreachable_ray_address_is_one_clear_error_at_once():
    """A host:port nobody listens on: a ConfigError within seconds, not minutes of ray.init retries."""
    import socket
    import time

    from tl_concepts.errors import ConfigError
    from tl_concepts.executor import ensure_ray

    with socket.socket() as s:  # a free port, closed again: nothing answers there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster"):  # connected or not
        ensure_ray(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 10
