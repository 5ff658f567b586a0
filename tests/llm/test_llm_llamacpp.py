"""Integration with a real llama.cpp OpenAI-compatible server on the embedded GGUF.

Marked ``llamacpp``: it runs only where ``llama-cpp-python[server]`` is installed (the
optional ``server`` extra, a 13-minute compile that scripts/setup.sh and CI leave out) and
is skipped with that reason elsewhere (tests/conftest.py). Where ``llama_cpp`` is installed,
any failure to import or start it fails the test.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tl_concepts.llm import Ledger, Message, get_llm
from tl_concepts.models.embedded import smollm2_gguf_path

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llamacpp_url():
    gguf = smollm2_gguf_path()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
         "127.0.0.1", "--port", str(port), "--logits_all", "true", "--n_ctx", "2048",
         "--model_alias", "smollm2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("the llama.cpp server did not come up")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_llamacpp_chat_and_prompt_logprobs(llamacpp_url, smollm2):
    llm = get_llm("llamacpp:smollm2", base_url=llamacpp_url, cache=False, ledger=Ledger())
    r = llm.chat([Message("user", "What is the capital of France? One word.")],
                 max_tokens=12)
    assert r.ok and r.text.strip()

    prompt = "Rate each word from 0 to 10.\ncat\t7\ndog\t"
    cands = [str(i) for i in range(10)]
    positions = [len(prompt), prompt.index("7")]
    d = llm.next_token_distributions(prompt, positions, cands)
    assert d.ok and d.method == "prompt_logprobs", d.failure
    assert llm.backend.alignment in ("standard", "shifted")  # checked, not assumed
    # the same weights in-process (dequantized from the same GGUF): close numbers
    ref = smollm2.next_token_distributions(prompt, positions, cands)
    for row, ref_row, absent in zip(d.probs, ref.probs, d.absent):
        for c in cands:
            if c not in absent:
                assert row[c] == pytest.approx(ref_row[c], abs=0.05)
