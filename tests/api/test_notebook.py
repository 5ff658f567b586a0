"""The researcher's session: a notebook executed by nbclient in a real Jupyter kernel (a running
asyncio loop, as in Jupyter), driving the package-root API end to end on a live MiniLM model,
with the stand-in OpenAI server as the LLM and the stand-in Hub for publishing."""
from __future__ import annotations

import textwrap

import pytest

import nbformat  # noqa: E402  (the dev extra installs nbclient, which requires it)
from nbclient import NotebookClient  # noqa: E402

from tests.helpers.hub_server import HubStandin  # noqa: E402
from tests.helpers.openai_server import OpenAIStandin  # noqa: E402

TOKEN = "hf_notebookALICEtoken0123456789"

CELLS = [
    """
    import asyncio
    import tl_concepts as tlc
    asyncio.get_running_loop()  # the kernel's loop is running: sync calls must still work
    model = tlc.models.load("minilm")
    store = tlc.capture(model, "lee", ["blocks.3.mlp.hook_post", "blocks.3.hook_resid_post"], max_docs=40,
                        progress=False)
    assert store.n_tokens > 5000, store.n_tokens
    """,
    """
    res = tlc.explain(store, "blocks.3.mlp.hook_post", units=[0, 1], llm="openai:standin-model",
                      n_bootstrap=20, fuzzing=False, progress=False)
    assert isinstance(res, tlc.ExplanationResults) and len(res) == 2
    df = res.to_pandas()
    assert {"unit_id", "unit", "explanation", "correlation", "correlation_low", "correlation_high",
            "baseline_correlation", "lookup_table_correlation", "status"} <= set(df.columns), df.columns
    ok = [u for u in res if u.status == "ok"]
    assert ok, [(u.status, u.message) for u in res]
    u = ok[0]
    assert u.id == tlc.unit_id("blocks.3.mlp.hook_post", u.unit) and res[u.id] is u
    assert u.correlation.low <= u.correlation.value <= u.correlation.high
    assert "<span" in u._repr_html_() and u.explanation in u._repr_html_()
    again = tlc.explain(store, "blocks.3.mlp.hook_post", units=[0, 1], llm="openai:standin-model",
                        n_bootstrap=20, fuzzing=False, progress=False)
    assert again.to_pandas().equals(df)  # resumed: same results
    res
    """,
    """
    from tl_concepts.concepts.filters import FilterConfig
    cs = tlc.find_concepts(store, layer=3, k=8, filters=FilterConfig(min_count=3))
    labels = tlc.label_concepts(cs, llm="openai:standin-model", progress=False)
    assert len(labels) == 8, len(labels)
    cdf = cs.to_pandas()
    assert len(cdf) == 8 and {"concept_id", "label", "label_status", "top_words"} <= set(cdf.columns)
    assert "ConceptSet" in repr(cs) and "<" in cs._repr_html_()
    """,
    """
    probes = tlc.probe(store, "blocks.3.hook_resid_post", labels="pos", max_labels=3, progress=False)
    pdf = probes.to_pandas()
    assert len(pdf) >= 3 and "<" in probes._repr_html_()
    rankings = tlc.rank(store, "blocks.3.mlp.hook_post", labels="pos", max_labels=3, progress=False)
    assert len(rankings.to_pandas()) > 0
    d = tlc.describe_neurons(store, "blocks.3.mlp.hook_post", llm="openai:standin-model", max_sentences=40,
                             progress=False)
    assert "Descriptors" in repr(d) and (len(d.to_pandas()) > 0 or d.message), d
    """,
    """
    import os
    pub = tlc.publish(res, "alice/nb-explanations", token=os.environ["NB_HF_TOKEN"])
    back = tlc.load("alice/nb-explanations", token=os.environ["NB_HF_TOKEN"])
    assert len(back.dataset) == len(res)
    """,
]


@pytest.mark.slow
def test_notebook_session_end_to_end(tmp_path, monkeypatch):
    home = tmp_path / "hf-home"
    with OpenAIStandin(api_key="sk-notebook") as llm, HubStandin(tokens={TOKEN: "alice"}) as hub:
        llm.chat_text = "words about time"
        for k, v in hub.env(home).items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-notebook")
        monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
        monkeypatch.setenv("NB_HF_TOKEN", TOKEN)
        monkeypatch.setenv("TL_CONCEPTS_RUNS", str(tmp_path / "runs"))
        monkeypatch.setenv("TL_CONCEPTS_LLM_CACHE", str(tmp_path / "llm-cache.sqlite"))
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in CELLS]
        client = NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    outputs = nb.cells[1].outputs
    html = [o for o in outputs if o.get("output_type") == "execute_result" and "text/html" in o.get("data", {})]
    assert html and "ExplanationResults" in html[0]["data"]["text/html"]
    assert "sk-notebook" not in "".join(str(c.outputs) for c in nb.cells)
