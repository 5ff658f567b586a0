"""The CLI fails loudly and clearly: a wrong key or bad input is one line and a non-zero exit,
nothing is written for refused input, and a bug keeps its traceback."""
from __future__ import annotations

import pytest

from tests.helpers.tiny_models import TEXTS
from tl_concepts import cli
from tl_concepts.capture import ExemplarConfig, capture

HOOK = "blocks.1.mlp.hook_post"


@pytest.fixture(scope="module")
def store_dir(tiny_bridge, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "store"
    ex = ExemplarConfig(n_train_top=3, n_calibration_top=2, n_test_top=2, n_calibration_random=2,
                        n_test_random=2, n_quantile_bins=0, n_per_quantile=0)
    capture(tiny_bridge, TEXTS, [HOOK], d, context_tokens=16, exemplars=ex, progress=False)
    return d


@pytest.fixture()
def standin():
    from tests.helpers.openai_server import OpenAIStandin

    with OpenAIStandin(api_key="sk-right-key") as srv:
        yield srv


def _explain(store_dir, out, *extra):
    return cli.main(["explain", "--store", str(store_dir), "--hook", HOOK, "--out", str(out),
                     "--no-progress", *extra])


def test_wrong_api_key_stops_explain_with_exit_1(store_dir, standin, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-WRONG-secret-123")
    monkeypatch.setenv("TL_CONCEPTS_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    rc = _explain(store_dir, tmp_path / "x", "--units", "0:2", "--llm", "openai:standin-model",
                  "--base-url", standin.base_url)
    err = capsys.readouterr().err
    assert rc == 1
    lines = [x for x in err.splitlines() if x.startswith("tl-concepts: error:")]
    assert len(lines) == 1 and ("401" in lines[0] or "key" in lines[0].lower()), err
    assert "Traceback" not in err and "sk-WRONG-secret-123" not in err
    assert not list((tmp_path / "x" / "explain" / "units").glob("*.json"))  # no unit recorded as done


def test_unreachable_endpoint_stops_explain(store_dir, tmp_path, capsys, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setenv("OPENAI_API_KEY", "sk-any")
    monkeypatch.setenv("TL_CONCEPTS_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    rc = _explain(store_dir, tmp_path / "x", "--units", "0:1", "--llm", "openai:m",
                  "--base-url", f"http://127.0.0.1:{port}/v1")
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert "tl-concepts: error:" in err and str(port) in err


@pytest.mark.parametrize("units, expect", [("0:99999", "out of range"), ("a:b", "START:STOP"), (" , ", "no units")])
def test_bad_units_are_one_line_exit_2_and_write_nothing(store_dir, tmp_path, capsys, units, expect):
    out = tmp_path / "x"
    rc = _explain(store_dir, out, "--units", units)
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_bug_keeps_its_traceback(monkeypatch):
    def boom(args):
        raise ZeroDivisionError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices.values():  # every subcommand
        action.set_defaults(func=boom)
    with pytest.raises(ZeroDivisionError):
        cli.main(["explain", "--hook", HOOK])


RESID = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def words_store(tiny_bridge, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-words") / "store"
    capture(tiny_bridge, TEXTS * 3, [RESID, HOOK], d, context_tokens=32, progress=False)
    return d


@pytest.mark.parametrize("stage", ["concepts", "descriptors"])
def test_wrong_key_stops_concepts_label_and_descriptors(stage, words_store, standin, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-WRONG-secret-456")
    monkeypatch.setenv("TL_CONCEPTS_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    llm = ["--llm", "openai:standin-model", "--base-url", standin.base_url]
    if stage == "concepts":
        args = ["concepts", "--store", str(words_store), "--hook", RESID, "-k", "4", "--min-count", "1",
                "--out", str(tmp_path / "c"), "--label", "--no-progress", *llm]
    else:
        args = ["descriptors", "--store", str(words_store), "--hook", HOOK, "--out", str(tmp_path / "d"), *llm]
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert len([x for x in err.splitlines() if x.startswith("tl-concepts: error:")]) == 1, err
    assert "Traceback" not in err and "sk-WRONG-secret-456" not in err
    assert "401" in err or "key" in err.lower()


def test_corrupt_manifest_and_interrupted_store_are_one_line(words_store, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(words_store, bad)
    (bad / "manifest.json").write_text("{ not json", encoding="utf-8")
    rc = _explain(bad, tmp_path / "x", "--units", "0:1")
    err = capsys.readouterr().err
    assert rc == 2 and "manifest.json" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_unreadable_llm_cache_names_the_file(store_dir, standin, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"this is not a sqlite database" * 100)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-right-key")
    monkeypatch.setenv("TL_CONCEPTS_LLM_CACHE", str(cache))
    rc = _explain(store_dir, tmp_path / "x", "--units", "0:1", "--llm", "openai:standin-model",
                  "--base-url", standin.base_url)
    err = capsys.readouterr().err
    assert rc == 2 and str(cache) in err and "mv" in err, err
