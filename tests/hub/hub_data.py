"""Real stage outputs for the hub and report tests: explain-runner results on planted units
(rule-following LLM) and a labelled ConceptSet from Ward clustering of synthetic words."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "tests" / "explain", ROOT / "tests" / "concepts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from concepts_fakes import make_input  # noqa: E402
from explain_fakes import RuleLLM, planted_unit  # noqa: E402

from tl_concepts.concepts import ConceptsConfig, discover_concepts  # noqa: E402
from tl_concepts.concepts.filters import FilterConfig  # noqa: E402
from tl_concepts.concepts.model import ConceptLabel  # noqa: E402
from tl_concepts.explain.runner import ExplainConfig, run_explain  # noqa: E402

TOKEN = "hf_standinALICEtoken0123456789"
"""Write token of the stand-in Hub's user ``alice``."""
OTHER_TOKEN = "hf_standinMALLORYtoken987654321"
"""Token of ``mallory``, who owns nothing the tests write to."""
NON_ASCII = "días de la semana — ünïcode ✓"


def explain_results(out: Path) -> list[dict]:
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


PROBES = [
    {"probe_id": "p0", "concept_id": 3, "concept": NON_ASCII, "hook": "blocks.1.mlp.hook_post", "layer": 1,
     "method": "logistic-l1", "n_train": 80, "n_test": 20, "accuracy": 0.95, "control_accuracy": 0.6,
     "selectivity": 0.35, "weights": [0.5, -1.25, 0.0], "bias": 0.1, "settings": {"l1": 0.01}},
    {"concept": "digits", "hook": "blocks.1.mlp.hook_post", "layer": 1, "method": "logistic-l1",
     "n_train": 80, "n_test": 20, "accuracy": 0.8, "weights": [1.0, 2.0, 3.0], "bias": -0.5},
]
RANKINGS = [
    {"concept_id": 3, "concept": NON_ASCII, "hook": "blocks.1.mlp.hook_post", "layer": 1, "method": "probeless",
     "units": [2, 0, 1], "scores": [0.9, 0.4, 0.1]},
    {"concept_id": 4, "concept": "digits", "hook": "blocks.1.mlp.hook_post", "layer": 1, "method": "probe-weights",
     "units": [1], "scores": [3.0]},
]
DESCRIPTORS = [
    {"hook": "blocks.1.mlp.hook_post", "layer": 1, "unit": 7, "n_sentences": 40,
     "descriptors": [{"text": "weekdays", "score": 0.8}, {"text": NON_ASCII, "score": 0.5}]},
    {"hook": "blocks.1.mlp.hook_post", "layer": 1, "unit": 9, "descriptors": [("numbers", 0.7)]},
]
