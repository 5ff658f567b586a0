"""Text encodings: UTF-8 by default, another on request, and an undecodable byte is a clear
error naming file, line and byte offset (never silently replaced)."""
from __future__ import annotations

import json

import pytest

from tl_concepts.cli import main
from tl_concepts.corpus import from_file, load_corpus
from tl_concepts.errors import ConfigError, InputError

LATIN1 = "First line is plain.\nCaf\xe9 au lait. Cr\xe8me br\xfbl\xe9e.\n".encode("latin-1")


def test_txt_in_latin1_is_refused_with_line_and_offset(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(LATIN1)
    with pytest.raises(InputError) as e:
        load_corpus(str(path))
    msg = str(e.value)
    assert str(path) in msg
    assert "line 2 cannot be read as utf-8: byte(s) e9 at byte offset 24 (byte 3 of the line)" in msg
    assert "encoding=" in msg and "--encoding" in msg


def test_txt_with_the_right_encoding(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(LATIN1)
    c = load_corpus(str(path), encoding="latin-1")
    assert c.sentences[1].words == ["Caf\xe9", "au", "lait."]
    assert "\ufffd" not in " ".join(s.text for s in c.sentences)


def test_jsonl_in_cp1252_and_utf16(tmp_path):
    recs = [{"text": "Plain text."}, {"text": "Smart \u201cquotes\u201d and caf\xe9."}]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in recs)
    (tmp_path / "a.jsonl").write_bytes(body.encode("cp1252"))
    with pytest.raises(InputError, match=r"a.jsonl: line 2 cannot be read as utf-8: byte\(s\) 93 at byte offset 40 \(byte 16 of the line\)"):
        from_file(tmp_path / "a.jsonl")
    assert from_file(tmp_path / "a.jsonl", encoding="cp1252").sentences[1].words[1] == "\u201cquotes\u201d"
    (tmp_path / "b.jsonl").write_bytes(body.encode("utf-16"))
    assert from_file(tmp_path / "b.jsonl", encoding="utf-16").sentences[1].words[-1] == "caf\xe9."


def test_utf8_bom_and_bad_json_lines(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeffHello there.\n".encode("utf-8"))
    assert from_file(tmp_path / "bom.txt").sentences[0].words == ["Hello", "there."]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok."}\n\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl: line 3 is not valid JSON"):
        from_file(tmp_path / "bad.jsonl")
    (tmp_path / "arr.json").write_text(json.dumps([{"text": "One doc."}, {"text": "Two docs."}]))
    assert from_file(tmp_path / "arr.json").n_docs == 2
    with pytest.raises(ConfigError, match="unknown text encoding 'utf-9'"):
        from_file(tmp_path / "bom.txt", encoding="utf-9")


def test_capture_cli_takes_encoding(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_bytes(LATIN1)
    rc = main(["capture", "--corpus", str(path), "--hooks", "blocks.0.mlp.hook_post", "--out",
               str(tmp_path / "s"), "--encoding", "bogus-enc", "--no-progress"])
    assert rc == 2
    assert "unknown text encoding 'bogus-enc'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
