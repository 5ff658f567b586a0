"""README.md's Python examples run as written, top to bottom, in one real Jupyter kernel, offline
on the embedded defaults. A block that needs an outside service starts with ``# requires:``."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def test_blocks_are_found():
    blocks = python_blocks("a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n")
    assert blocks == ["x = 1\n", "y = 2\n"]


@pytest.mark.slow
def test_readme_python_blocks_run_in_a_kernel(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    runnable = [b for b in blocks if not b.lstrip().startswith("# requires:")]
    assert len(runnable) >= 3, "README.md should show the package in use"
    monkeypatch.setenv("TL_CONCEPTS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_CONCEPTS_LLM_CACHE", str(tmp_path / "llm-cache.sqlite"))
    monkeypatch.delenv("TL_CONCEPTS_LLM", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(b) for b in runnable]
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
