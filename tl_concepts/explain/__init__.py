"""Neuron explanations (Bills et al. 2023): explain -> simulate -> score, with baselines,
held-out splits, calibration, and cheaper detection / fuzzing scorers.

Example:
    >>> from tl_concepts.explain import ExplainConfig, run_explain, summary_table   # doctest: +SKIP
    >>> run_explain(units, llm, ExplainConfig(out_dir="runs/explain"))               # doctest: +SKIP
"""
from tl_concepts.explain.calibration import CalibratedSimulator, LinearCalibration
from tl_concepts.explain.detection import ClassificationScore, DetectionScorer, FuzzingScorer
from tl_concepts.explain.explainers import (
    Explainer,
    Explanation,
    LLMExplainer,
    TokenLookupExplainer,
    best_of_n,
)
from tl_concepts.explain.prompts import (
    EXPLAIN_TEMPLATE,
    SIMULATE_TEMPLATE,
    PromptTemplate,
    explanation_messages,
    normalize_activations,
    simulation_prompt,
)
from tl_concepts.explain.runner import (
    ExplainConfig,
    arun_explain,
    explain_model,
    explain_store,
    explain_unit,
    load_results,
    parse_units,
    run_explain,
    summary_table,
)
from tl_concepts.explain.scoring import Interval, SimulationScores, auroc, balanced_accuracy, score
from tl_concepts.explain.simulators import (
    AllAtOnceSimulator,
    JsonSimulator,
    LookupTableSimulator,
    Simulation,
    Simulator,
)
from tl_concepts.explain.units import (
    project,
    records_for_direction,
    records_from_array,
    unit_records_from_model,
)

__all__ = [
    "AllAtOnceSimulator", "CalibratedSimulator", "ClassificationScore", "DetectionScorer", "EXPLAIN_TEMPLATE",
    "ExplainConfig", "Explainer", "Explanation", "FuzzingScorer", "Interval", "JsonSimulator", "LLMExplainer",
    "LinearCalibration", "LookupTableSimulator", "PromptTemplate", "SIMULATE_TEMPLATE", "Simulation",
    "SimulationScores", "Simulator", "TokenLookupExplainer", "arun_explain", "auroc", "balanced_accuracy",
    "best_of_n", "explain_model", "explain_store", "parse_units", "explain_unit", "explanation_messages", "load_results", "normalize_activations",
    "project", "records_for_direction", "records_from_array", "run_explain", "score", "simulation_prompt",
    "summary_table", "unit_records_from_model",
]

from tl_concepts._callable import make_callable  # noqa: E402  (tlc.explain(...) calls tl_concepts.api.explain)

make_callable(__name__, "explain")
