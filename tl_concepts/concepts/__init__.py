"""Latent concepts: Ward clustering of contextual word representations (ConceptX /
Mousi et al. 2023), LLM labels with provenance, alignment and judge evaluation, TCN and
``datasets`` export.

Example:
    >>> from tl_concepts.concepts import ConceptsConfig, discover_concepts   # doctest: +SKIP
    >>> cs = discover_concepts(ConceptsConfig(store="runs/x", layer=3, k=200))  # doctest: +SKIP
    >>> cs.at(50).concepts()[0].children                                     # doctest: +SKIP
"""
from .dataset import sentences_dataset, to_dataset
from .evaluation import (AgreementReport, AlignmentReport, JudgeReport, alignment, alignment_reports,
                         judge_labels, label_agreement)
from .filters import FilterConfig, FilterReport, TooFewPointsError, apply_filters
from .inputs import ConceptInput, ConceptInputError, check_same_dim, from_store
from .labelling import LabelOptions, LabelStore, alabel_concepts, label_concepts
from .model import Concept, ConceptLabel, ConceptSet
from .evaluation import ajudge_labels
from .prompts import TEMPLATES, label_gate
from .runner import (ConceptsConfig, EvaluationReport, aevaluate, alabel, describe_labels, discover_concepts,
                     discover_layers, evaluate, label, summary)
from .tcn import read_tcn, write_tcn
from .tree import ConceptTree
from .ward import WardResult, agreement_with_exact, choose_mode, exact_memory_bytes, ward

__all__ = [
    "AgreementReport", "AlignmentReport", "Concept", "ConceptInput", "ConceptInputError", "ConceptLabel",
    "ConceptSet", "ConceptTree", "ConceptsConfig", "EvaluationReport", "FilterConfig", "FilterReport",
    "JudgeReport", "LabelOptions", "LabelStore", "TEMPLATES", "TooFewPointsError", "WardResult",
    "aevaluate", "ajudge_labels", "alabel", "alabel_concepts", "describe_labels", "label_gate",
    "agreement_with_exact", "alignment", "alignment_reports", "apply_filters", "check_same_dim",
    "choose_mode", "discover_concepts", "discover_layers", "evaluate", "exact_memory_bytes", "from_store", "judge_labels",
    "label", "label_agreement", "label_concepts", "read_tcn", "sentences_dataset", "summary",
    "to_dataset", "ward", "write_tcn",
]
