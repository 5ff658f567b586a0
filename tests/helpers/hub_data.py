"""Real stage outputs for the hub and report tests: explain-runner results on planted units
(rule-following LLM) and a labelled ConceptSet from Ward clustering of synthetic words."""
from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.concepts_fakes import make_input
from tests.helpers.explain_fakes import RuleLLM, planted_unit
from tests.helpers.openai_server import Reply
from tl_concepts.concepts import ConceptsConfig, discover_concepts
from tl_concepts.concepts.filters import FilterConfig
from tl_concepts.concepts.model import ConceptLabel
from tl_concepts.explain.runner import ExplainConfig, run_explain

TOKEN = "hf_standinALICEtoken0123456789"
"""Write token of the stand-in Hub's user ``alice``."""
OTHER_TOKEN = "hf_standinMALLORYtoken987654321"
"""Token of ``mallory``, who owns nothing the tests write to."""
NON_ASCII = "días de la semana — ünïcode ✓"


def explain_results(out: Path):
    units = [planted_unit("weekday", unit=0, seed=1), planted_unit("digit", unit=1, seed=2),
             planted_unit("past", unit=2, seed=3)]
    llm = RuleLLM(["days of the week", "digits", "<script>alert(1)</script> past-tense verbs"])
    return run_explain(units, llm, ExplainConfig(out_dir=str(out), n_bootstrap=50, progress=False))


def concept_set(out: Path):
    cfg = ConceptsConfig(k=6, filters=FilterConfig(min_count=1, max_per_type=4), out=str(out))
    cs = discover_concepts(cfg, make_input(), progress=False)
    ids = cs.concept_ids()
    cs.add_labels([ConceptLabel(ids[0], NON_ASCII, "ok", "label-general", "v1", model="m", backend="fake",
                                raw=NON_ASCII),
                   ConceptLabel(ids[1], None, "refusal", "label-general", "v1", raw="I'm sorry")])
    return cs


H = "blocks.1.hook_resid_post"
M = "blocks.1.mlp.hook_post"
PROBES = [
    # the row of run_probes (every column), non-ASCII concept name
    {"hook": H, "source": "concepts:runs/x/concepts", "label": "3", "name": NON_ASCII, "task": "binary",
     "size": 40, "n_train": 48, "n_dev": 16, "n_test": 16, "train_accuracy": 1.0, "dev_accuracy": 0.9375,
     "test_accuracy": 0.9375, "majority_accuracy": 0.5, "control_accuracy": 0.625, "selectivity": 0.3125,
     "c": 1.0, "seconds": 0.02, "seed": 0},
    # optional columns left out: source, name (-> label), no control task (-> null control/selectivity)
    {"hook": H, "label": "NUM", "task": "binary", "size": 12, "n_train": 14, "n_dev": 5, "n_test": 5,
     "train_accuracy": 1.0, "dev_accuracy": 0.8, "test_accuracy": 0.8, "majority_accuracy": 0.6, "c": 0.1},
    # selectivity left out: computed as test - control
    {"hook": H, "source": "pos", "label": "*all*", "name": "*all*", "task": "multiclass", "size": 52,
     "n_train": 31, "n_dev": 10, "n_test": 11, "train_accuracy": 0.9, "dev_accuracy": 0.7, "test_accuracy": 0.75,
     "majority_accuracy": 0.25, "control_accuracy": 0.5, "c": 10.0, "seconds": 0.1, "seed": 0},
]
RANKINGS = [
    {"hook": M, "source": "pos", "label": "3", "name": NON_ASCII, "method": "probeless", "rank": r, "neuron": n,
     "score": s} for r, (n, s) in enumerate([(2, 0.9), (0, 0.4), (1, 0.1)])
] + [
    {"hook": M, "label": "NUM", "method": "probe_weights", "rank": 0, "neuron": 1, "score": 3.0},
    {"hook": M, "label": "NUM", "method": "probe_weights", "rank": 1, "neuron": 7, "score": 0.5},
]
DESCRIPTORS = [
    {"half": "calibration", "neuron": 7, "rank": 0, "entry": 2, "descriptor": "weekdays", "composition": 0.8,
     "base_rate": 0.1, "lift": 8.0, "excess": 0.7, "support": 12},
    {"half": "calibration", "neuron": 7, "rank": 1, "entry": 5, "descriptor": NON_ASCII, "composition": 0.5,
     "base_rate": 0.2, "lift": 2.5, "excess": 0.3, "support": 20},
    {"half": "validation", "neuron": 7, "rank": 0, "entry": 2, "descriptor": "weekdays", "composition": 0.6,
     "base_rate": 0.1, "lift": 6.0, "excess": 0.5, "support": 10},
    {"half": "calibration", "neuron": 9, "rank": 0, "entry": 0, "descriptor": "numbers", "composition": 0.4,
     "base_rate": 0.0, "lift": float("inf"), "excess": 0.4, "support": 3},
]
"""Rows in the producers' formats: run_probes, run_rankings().rankings, run_descriptors().mapping."""


# -- real producers on a tiny capture (tiny_bridge) --------------------------------------------
TOPICS = {"cat": "animals", "dog": "animals", "market": "finance", "bank": "finance", "fire": "disaster",
          "minister": "politics", "rain": "weather", "sunny": "weather"}


def descriptor_reply(request):
    """Stand-in OpenAI answer of the descriptor prompt: topic words found in the sentence + ``news``."""
    s = json.loads(request["json"]["messages"][-1]["content"].split("Sentence: ", 1)[1]).lower()
    tags = sorted({t for k, t in TOPICS.items() if k in s}) or ["other"]
    return Reply.chat(json.dumps(tags + ["news"]))
