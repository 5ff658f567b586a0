"""End to end: ``tl-concepts run`` on a reduced budget, published to a stand-in Hub."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.hub_server import HubStandin

pytestmark = pytest.mark.slow
TOKEN = "hf_e2e_standin_token_0123456789abcdef"
KINDS = ("concepts", "explanations", "probes", "rankings", "descriptors")


def _run(out: Path, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "tl_concepts.cli", "run", "--out", str(out), "--max-docs", "10", "-k", "6",
           "--n-units", "1", "--push-to-hub", "alice/lee-minilm", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TOKEN not in proc.stdout + proc.stderr
    result = json.loads((out / "run.json").read_text())
    # the printed summary counts verdicts and accepted labels, and names every pushed repo
    assert result["verdicts"] in proc.stdout and "beat the baseline at 95%" in result["verdicts"]
    assert result["labels_summary"] in proc.stdout and result["labels_summary"].startswith("labels: ")
    assert "LLM better on" not in proc.stdout
    for url in result["published"].values():
        assert f"hub       {url}" in proc.stdout
    return result


def test_main_job_end_to_end(tmp_path):
    with HubStandin(tokens={TOKEN: "alice"}) as hub:
        env = {**os.environ, **hub.env(tmp_path / "hf-home"), "HF_TOKEN": TOKEN}
        env.pop("TL_CONCEPTS_LLM", None)
        out = tmp_path / "run"
        # killed between two dataset cards: the same command resumes to a finished run
        crash = subprocess.run([sys.executable, "-m", "tl_concepts.cli", "run", "--out", str(out), "--max-docs", "10",
                                "-k", "6", "--n-units", "1", "--no-progress"],
                               env={**env, "TL_CONCEPTS_CRASH_AT": "cards.dataset:2"}, capture_output=True, text=True)
        assert crash.returncode == 137 and not (out / "run.json").exists(), crash.stderr[-2000:]
        first = _run(out, env)

        assert first["tokens"] > 500 and first["concepts"] == 6
        assert first["units_reported"] == 1
        # every kind is saved and pushed, except an empty one, which is named with the reason
        assert set(first["datasets"]) | set(first["empty_datasets"]) == set(KINDS)
        assert set(first["published"]) == set(first["datasets"]) and set(first["empty_datasets"]) <= {"descriptors"}
        assert (out / "report" / "index.html").exists()
        stages = [s["stage"] for s in first["stages"]]
        assert stages[:3] == ["capture", "concepts", "labels"] and "report" in stages

        # every dataset folder and every Hub repo loads back
        from tl_concepts.hub import load

        for kind in first["datasets"]:
            loaded = load(out / "datasets" / kind)
            assert len(loaded.dataset) > 0 or (kind == "descriptors" and first["descriptors"]["message"]), kind
        assert {name for (_, name) in hub.repos} >= {f"alice/lee-minilm-{k}" for k in first["published"]}

        # secrets never reach disk
        for f in out.rglob("*"):
            if f.is_file() and f.stat().st_size < 50_000_000:
                assert TOKEN.encode() not in f.read_bytes(), f

        # a rerun of the finished job makes no LLM request: every stage resumes from its files
        second = _run(out, env)
        assert second["llm_ledger"]["totals"]["requests"] == 0
        # the usage that produced the data survives resumes: stored with the results, not the invocation
        assert second["llm_usage"]["totals"] == first["llm_usage"]["totals"]
        assert first["llm_usage"]["totals"]["requests"] > 0
        assert {r["stage"] for r in first["llm_usage"]["rows"]} >= {"concepts.label", "explain"}
        assert second["units_reported"] == first["units_reported"]
        assert second["concepts"] == first["concepts"]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tl_concepts.cli", *args], env=env, capture_output=True,
                          text=True, timeout=900)


def test_run_with_a_wrong_key_fails_fresh_and_resumed(tmp_path):
    from tests.helpers.openai_server import OpenAIStandin

    with OpenAIStandin(api_key="sk-right") as llm:
        base = {**os.environ, "OPENAI_BASE_URL": llm.base_url}
        base.pop("TL_CONCEPTS_LLM", None)
        args = ["run", "--out", str(tmp_path / "run"), "--max-docs", "10", "-k", "6", "--n-units", "1",
                "--llm", "openai:standin-model", "--no-progress"]
        # fresh: the first LLM stage stops the job, naming the cause, without the key
        p = _cli(args, {**base, "OPENAI_API_KEY": "sk-WRONG-abc123"})
        assert p.returncode == 1, p.stderr[-2000:]
        assert "tl-concepts: error:" in p.stderr and "Traceback" not in p.stderr
        assert "sk-WRONG-abc123" not in p.stdout + p.stderr
        assert not (tmp_path / "run" / "run.json").exists()
        # resumed: interrupted after the labels with the right key, rerun with a revoked key
        p = _cli(args, {**base, "OPENAI_API_KEY": "sk-right", "TL_CONCEPTS_CRASH_AT": "run.stage:3"})
        assert p.returncode == 137, p.stderr[-2000:]
        p = _cli(args, {**base, "OPENAI_API_KEY": "sk-revoked-xyz"})
        assert p.returncode == 1 and "tl-concepts: error:" in p.stderr, p.stderr[-2000:]
        assert "sk-revoked-xyz" not in p.stdout + p.stderr
        assert not (tmp_path / "run" / "run.json").exists()
        # the right key resumes to a finished run
        p = _cli(args, {**base, "OPENAI_API_KEY": "sk-right"})
        assert p.returncode == 0, p.stderr[-2000:]
        assert json.loads((tmp_path / "run" / "run.json").read_text())["units_reported"] == 1
