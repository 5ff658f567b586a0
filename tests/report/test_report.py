"""The static report: content from real stage outputs, escaping, offline, and headless Chromium."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "hub"))
from hub_data import NON_ASCII, concept_set, explain_results  # noqa: E402

from tl_concepts.hub import to_dataset  # noqa: E402
from tl_concepts.report import build_report, unit_file  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install -y chromium)")
SECRET = "hf_reportSECRETtoken42"


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    d = tmp_path_factory.mktemp("stages")
    return explain_results(d / "explain"), concept_set(d / "concepts")


@pytest.fixture(scope="module")
def report(stages, tmp_path_factory):
    results, cs = stages
    out = tmp_path_factory.mktemp("rep") / "report"
    import os
    os.environ["HF_TOKEN"] = SECRET  # a token in the environment must not leak into the report
    try:
        index = build_report(out, explanations=results, concepts=cs, meta={"model": "tiny", "corpus": "planted"})
    finally:
        os.environ.pop("HF_TOKEN", None)
    return index.parent, results.to_dicts(), cs


def test_files_and_unit_pages(report):
    out, results, cs = report
    assert (out / "index.html").is_file() and (out / "concepts.html").is_file()
    pages = sorted(p.name for p in (out / "units").iterdir())
    assert pages == sorted(unit_file(f"{r['hook']}:{r['unit']}") for r in results)
    index = (out / "index.html").read_text(encoding="utf-8")
    for r in results:
        assert f"units/{unit_file(r['hook'] + ':' + str(r['unit']))}" in index
    assert index.count("<svg") == 2  # histogram and explainer-vs-baseline scatter


def test_unit_page_colours_scores_and_escaping(report):
    out, results, _ = report
    r = results[2]  # its explanation holds a <script> tag
    page = (out / "units" / unit_file(f"{r['hook']}:{r['unit']}")).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    c = r["llm"]["scores"]["all"]["correlation"]
    assert f"{c['value']:.3f}" in page and f"[{c['low']:.3f}, {c['high']:.3f}]" in page
    assert r["baseline"]["explanation"]["text"].replace('"', "&quot;") in page
    sims = r["llm"]["simulations"]
    n_true_lines = page.count("<span class=who>true</span>")
    assert n_true_lines == len(sims) == page.count("<span class=who>simulated</span>")
    # the most active token is fully coloured in the true line, silent tokens are not coloured
    scale = max([r["max_activation"]] + [max(s["true"]) for s in sims])
    full = [a for s in sims for a in s["true"] if a == scale]
    assert page.count("rgba(0,170,60,1.000)") == len(full) > 0
    zeros = sum(1 for s in sims for a in s["true"] if a <= 0)
    assert page.count("class='tok true' style=''") == zeros


def test_concept_browser(report):
    out, _, cs = report
    page = (out / "concepts.html").read_text(encoding="utf-8")
    assert NON_ASCII in page and "unlabelled" in page
    for c in cs.concepts():
        assert f"id='c{c.id}'" in page
        if c.parent is not None:
            assert f"#{c.parent}" in page
    assert page.count("<mark>") > 0
    first = cs.concepts()[0]
    assert f"{first.size} occurrences" in page


def test_offline_and_no_secrets(report):
    out, _, _ = report
    for f in out.rglob("*"):
        if f.is_file():
            text = f.read_text(encoding="utf-8")
            assert SECRET not in text
            refs = re.findall(r"(?:src|href)=['\"]([^'\"]+)", text)
            assert all(not re.match(r"[a-z]+://", u) for u in refs), refs


def test_accepts_datasets_and_rebuilds_atomically(stages, tmp_path):
    results, cs = stages
    ds = to_dataset("explanations", results)
    index = build_report(tmp_path / "r", explanations=ds, concepts=to_dataset("concepts", cs),
                         sentences=cs.sentences)
    first = index.read_text(encoding="utf-8")
    assert "days of the week" in first
    build_report(tmp_path / "r", explanations=results[:1])
    assert not (tmp_path / "r" / "concepts.html").exists()
    assert len(list((tmp_path / "r" / "units").iterdir())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chrome-profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@needs_chromium
@pytest.mark.parametrize("page", ["index.html", "concepts.html", "unit"])
def test_pages_load_without_console_errors(report, tmp_path, page):
    out, results, _ = report
    path = out / "units" / unit_file(f"{results[0]['hook']}:{results[0]['unit']}") if page == "unit" else out / page
    p = _chromium(["--dump-dom", path.as_uri()], tmp_path)
    assert 'data-ready="1"' in p.stdout, p.stderr[-2000:]  # report.js ran to the end
    assert _console(p.stderr) == []


def _png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif typ == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    pixels = []
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels.extend((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp))
        prev = line
    return w, h, pixels


@needs_chromium
def test_screenshot_shows_highlights(report, tmp_path):
    out, results, _ = report
    path = out / "units" / unit_file(f"{results[0]['hook']}:{results[0]['unit']}")
    shot = tmp_path / "shot.png"
    p = _chromium([f"--screenshot={shot}", "--window-size=1100,1400", "--hide-scrollbars", path.as_uri()], tmp_path)
    assert shot.is_file(), p.stderr[-2000:]
    w, h, px = _png_pixels(shot.read_bytes())
    assert (w, h) == (1100, 1400)
    green = sum(1 for r, g, b in px if g > 150 and r < 80 and b < 120)      # true activation highlights
    blue = sum(1 for r, g, b in px if b > 200 and r < 90 and g < 140)       # simulated highlights
    assert green > 200 and blue > 200, (green, blue)
