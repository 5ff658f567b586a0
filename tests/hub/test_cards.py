"""Dataset cards a stranger can reuse, rendered from the real stage outputs of a tiny run:
real model ids, only the dataset's hooks, stage settings and results, per-dataset LLM usage,
measured limitations, citations, corpus licence, load snippets for every config."""
from __future__ import annotations

import json

import pytest

from tests.helpers.hub_data import TOKEN

from tl_concepts.hub import CardMeta, load, meta_from_manifest, publish_all, repo_urls, save_local
from tl_concepts.hub.cards import card_body, model_identity, parse_metadata, validate_metadata

RESID = "blocks.1.hook_resid_post"
MLP = "blocks.1.mlp.hook_post"
LEDGER = {"rows": [
    {"stage": "concepts.label", "backend": "in-process", "model": "smollm2", "calls": 6, "requests": 6,
     "retries": 0, "cache_hits": 0, "prompt_tokens": 1200, "completion_tokens": 60, "failures": {}, "cost_usd": None},
    {"stage": "explain", "backend": "in-process", "model": "smollm2", "calls": 4, "requests": 4, "retries": 0,
     "cache_hits": 1, "prompt_tokens": 4321, "completion_tokens": 99, "failures": {}, "cost_usd": None},
    {"stage": "simulate", "backend": "in-process", "model": "smollm2", "calls": 40, "requests": 40, "retries": 0,
     "cache_hits": 0, "prompt_tokens": 9876, "completion_tokens": 0, "failures": {}, "cost_usd": None}],
    "totals": {}, "prices_usd_per_million_tokens": {}}
VERDICTS = [{"beats_chance": True, "beats_baseline": True, "label": "beats baseline",
             "delta_vs_baseline": {"value": 0.2, "low": 0.1, "high": 0.3}, "vs_lookup_table": None},
            {"beats_chance": False, "beats_baseline": False, "label": "not above chance",
             "delta_vs_baseline": {"value": -0.1, "low": -0.3, "high": 0.1}, "vs_lookup_table": None}]


@pytest.fixture(scope="module")
def stages(tiny_bridge, tmp_path_factory):
    from tests.helpers.explain_fakes import RuleLLM
    from tests.helpers.tiny_models import TEXTS, label_file

    from tl_concepts.capture import capture
    from tl_concepts.concepts import ConceptsConfig, discover_concepts
    from tl_concepts.concepts.filters import FilterConfig
    from tl_concepts.concepts.model import ConceptLabel
    from tl_concepts.explain.runner import ExplainConfig, explain_store
    from tl_concepts.probing.runner import ProbeConfig, run_probes

    rd = tmp_path_factory.mktemp("cards") / "run"
    store = capture(tiny_bridge, TEXTS * 3, [RESID, MLP], rd / "store", context_tokens=32, progress=False)
    cs = discover_concepts(ConceptsConfig(store=str(store.path), hook=RESID, k=6, out=str(rd / "concepts"),
                                          filters=FilterConfig(min_count=2)), progress=False)
    ids = cs.concept_ids()
    rejected = ConceptLabel(ids[1], None, "rejected", "label-general", "v2", model="smollm2")
    rejected.reason = "echo"  # the label gate's reason (shown once the concepts dataset keeps it)
    cs.add_labels([ConceptLabel(ids[0], "sentence punctuation", "ok", "label-general", "v2", model="smollm2"),
                   rejected])
    explain_store(store, MLP, [0, 1, 2], RuleLLM(["days of the week"] * 3),
                  ExplainConfig(out_dir=str(rd / "explain"), n_bootstrap=20, min_activating=1, fuzzing=False,
                                progress=False))
    for i, f in enumerate(sorted((rd / "explain" / "units").glob("*.json"))):
        res = json.loads(f.read_text())
        if i < len(VERDICTS):
            res["llm"]["verdict"] = VERDICTS[i]
        else:  # as a unit file written before verdicts existed
            res["llm"].pop("verdict", None)
        f.write_text(json.dumps(res))
    probes = run_probes(ProbeConfig(store=str(store.path), hook=RESID, labels=label_file(store, rd / "l.tsv"),
                                    min_size=5), progress=False)
    return store, cs, rd, probes


def _meta(store, title):
    m = meta_from_manifest(store.manifest, pretty_name=title, ledger=LEDGER, llm={"labels": "smollm2 (in-process)"})
    m.corpus_name = "lee[:100]"  # as `tl-concepts run` captures it (the tiny store used a list of texts)
    return m


def test_model_ids_are_real():
    assert model_identity("minilm", "ab")["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    s = model_identity("HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)", "ab")
    assert s["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "Q4_1" in s["note"]
    assert model_identity("gpt2", "ab") == {"id": "gpt2", "revision": "weights fingerprint ab", "note": ""}


def test_concepts_card(stages, tmp_path):
    store, cs, rd, _ = stages
    back = load(save_local("concepts", cs, _meta(store, "Concepts"), tmp_path / "concepts", repo_id="me/c"))
    card, md = back.card, back.metadata
    validate_metadata(md)
    from huggingface_hub import DatasetCard

    assert DatasetCard(card).data.to_dict()["license"] == "lgpl-2.1"  # huggingface_hub parses the metadata
    # a local model folder is a path with its weights fingerprint, never a nickname
    assert md["source_model"] == store.manifest["model"]["id"]
    assert f"weights fingerprint {store.manifest['model']['fingerprint']}" in card
    body = card_body(card)
    assert f"`{RESID}`" in body and MLP not in body  # only the clustered hook
    for needle in ("| K (concepts) | `6` |", "| Ward mode | `exact` |", "| word aggregation over sub-tokens | `mean` |",
                   "| filter min_count | `2` |", "1 of 2 accepted (share 0.5), 1 rejected (",
                   "### Alignment with linguistic tags", "| concepts.label | in-process | smollm2 | 6 |",
                   "## Limitations", "Labels from smollm2 (in-process): 1 of 2 accepted, 1 rejected by the label gate",
                   "LGPL-2.1 (not MIT)", "lee_background.cor", "## Citation", "@inproceedings{mousi2023llms",
                   "@misc{bills2023language", "Mondal, Shrayani", "@software{tl_concepts",
                   'ds = load_dataset("me/c", "default", split="train")',
                   'sentences = load_dataset("me/c", "sentences", split="train")'):
        assert needle in card, needle
    assert "| explain |" not in card and "4321" not in card  # the explanation stage's LLM usage is not this dataset's
    # computed from the concept set itself: the tiny corpus has only the gold word classes, no POS / NER tags
    rows = [line for line in body.splitlines() if line.startswith(("| gold |", "| pos |"))]
    assert len(rows) == 1 and rows[0].startswith("| gold | 0.9 | ") and " of 6 |" in rows[0]
    m = _meta(store, "Concepts")
    m.results = {"alignment": {"pos": {"tagset": "pos", "theta": 0.9, "n_concepts": 6, "n_aligned": 2, "n_tags": 5,
                                       "n_tags_covered": 2}}}
    card = load(save_local("concepts", cs, m, tmp_path / "concepts2")).card
    assert "| pos | 0.9 | 2 of 6 | 2 of 5 |" in card
    assert "Alignment with pos tags at theta=0.9: 2 of 6 concepts" in card


def test_explanations_and_probes_cards(stages, tmp_path):
    store, _, rd, probes = stages
    card = load(save_local("explanations", rd / "explain", _meta(store, "Explanations"), tmp_path / "e")).card
    for needle in ("1 of 2 explanations beat the token-lookup baseline at 95%**; 1 of 2 beat chance",
                   "| explain | in-process | smollm2 | 4 |", "| simulate | in-process | smollm2 | 40 |",
                   "| prompt explain |", "| simulator | `all-at-once` |", "| n_bootstrap | `20` |",
                   "| records per split (first unit) |", "Token lookup table itself (no LLM), correlation: mean",
                   "1 of 2 explanations beat the token-lookup baseline at 95%, 1 of 2 beat chance.",
                   "held-out test records per unit", "@misc{bills2023language"):
        assert needle in card, needle
    assert "| concepts.label |" not in card
    # a resumed run's ledger is empty: the usage recorded in the unit files is shown instead
    m = _meta(store, "Explanations")
    m.ledger = {"rows": [], "totals": {}}
    card2 = load(save_local("explanations", rd / "explain", m, tmp_path / "e2")).card
    units = [json.loads(p.read_text()) for p in sorted((rd / "explain" / "units").glob("*.json"))]
    n_sim = sum(u["llm_usage"]["explainer"]["simulate"]["requests"] for u in units)
    assert "Summed over the unit result files" in card2 and f"| simulate | {n_sim} |" in card2
    assert f"`{MLP}`" in card_body(card) and RESID not in card_body(card)
    pcard = load(save_local("probes", probes, _meta(store, "Probes"), tmp_path / "p")).card
    assert "## Limitations" in pcard and "Mean selectivity over the binary probes is" in pcard
    assert "No LLM calls of this dataset's stage were recorded in this invocation's ledger." in pcard and "| explain |" not in pcard
    assert 'load_dataset("<you>/p", "default", split="train")' in pcard and '"sentences"' not in pcard


def test_publish_all_returns_repo_urls(hub, stages):
    store, cs, rd, probes = stages
    res = publish_all({"concepts": (cs, _meta(store, "C")), "probes": (probes, _meta(store, "P"))}, "alice/run1",
                      token=TOKEN)
    urls = repo_urls(res)
    assert set(urls) == {"concepts", "probes"}
    assert urls["concepts"].endswith("/datasets/alice/run1-concepts") and urls["probes"].endswith("alice/run1-probes")
    readme = hub.file("alice/run1-concepts", "README.md").decode("utf-8")
    assert parse_metadata(readme)["source_model"] == store.manifest["model"]["id"]
    assert any(c["config_name"] == "sentences" for c in parse_metadata(readme)["configs"])


def test_descriptors_card_names_only_its_hook():
    from tests.helpers.hub_data import DESCRIPTORS

    from tl_concepts.hub import render_card, to_dataset

    ds = to_dataset("descriptors", DESCRIPTORS)
    meta = CardMeta(pretty_name="D", source_model="smollm2-135m", hooks=[RESID, MLP], layers=[1],
                    stage_settings={"hook": MLP, "top_k": 5}, llm={"descriptors": "smollm2 (in-process)"})
    body = card_body(render_card("descriptors", ds, meta, "me/d"))
    assert f"`{MLP}`" in body and RESID not in body
    assert "`HuggingFaceTB/SmolLM2-135M-Instruct`" in body and "Q4_1" in body and "smollm2-135m" not in body
    assert "Precision@k / recall@k not computed (no labelled subset was given)." in body
    assert "@misc{mondal2024descriptions" in body and "cite the method (Mondal et al.)" in body
