"""Probes, control tasks and neuron rankings on captured representations.

Example:
    >>> from tl_concepts.probing import train_probe, probeless      # doctest: +SKIP
    >>> r = train_probe(x, labels, types=words)                     # doctest: +SKIP
    >>> probeless(x, labels).top(10)                                # doctest: +SKIP
"""
from .control import control_labels, selectivity
from .data import LabelledData, ProbingInputError, binary_task
from .overlap import Alignment, concept_alignment, top_n_overlap, tree_members
from .probes import ProbeOptions, ProbeResult, probe_data, split_indices, train_probe
from .rankers import RANKERS, NeuronRanking, average_precision, probe_weights, probeless, rank_neurons
from .results import ProbeResults, Rankings
from .schema import PROBE_COLUMNS, RANKING_COLUMNS

__all__ = [
    "Alignment", "LabelledData", "NeuronRanking", "PROBE_COLUMNS", "ProbeOptions", "ProbeResult", "ProbeResults",
    "ProbingInputError", "RANKERS", "RANKING_COLUMNS", "Rankings",
    "average_precision", "binary_task", "concept_alignment", "control_labels", "probe_data", "probe_weights",
    "probeless", "rank_neurons", "selectivity", "split_indices", "top_n_overlap", "train_probe", "tree_members",
]
