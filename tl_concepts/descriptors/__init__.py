"""Data-driven neuron descriptors (Mondal et al.): an LLM tags sentences with short
descriptors, the descriptors are clustered into a vocabulary, and every neuron is mapped
to the entries over-represented among its top sentences.

Example:
    >>> from tl_concepts.descriptors import DescriptorsConfig, run_descriptors   # doctest: +SKIP
    >>> out = run_descriptors(DescriptorsConfig(store="runs/x", hook="blocks.3.mlp.hook_post",
    ...                                         out="runs/x/descriptors"))        # doctest: +SKIP
    >>> out.to_pandas()                                                           # doctest: +SKIP
"""
from .embed import MiniLMEmbedder
from .generate import (SentenceDescriptors, agenerate_descriptors, generate_descriptors, read_records,
                       sentence_key)
from .mapping import (CorpusTooSmallError, NeuronDescriptorMap, map_neurons, sentence_activations,
                      split_halves)
from .metrics import jaccard_stability, precision_recall_at_k
from .prompts import TEMPLATE, TEMPLATES, DescriptorTemplate, ParsedDescriptors
from .results import Descriptors
from .runner import (DescriptorOutput, DescriptorsConfig, arun_descriptors, describe_neurons, run_descriptors,
                     summary_table)
from .schema import MAPPING_COLUMNS, mapping_features
from .vocabulary import DescriptorCluster, Vocabulary, build_vocabulary

__all__ = [
    "CorpusTooSmallError", "DescriptorCluster", "DescriptorOutput", "DescriptorTemplate", "Descriptors",
    "DescriptorsConfig", "MAPPING_COLUMNS", "MiniLMEmbedder", "NeuronDescriptorMap", "ParsedDescriptors",
    "SentenceDescriptors", "TEMPLATE", "TEMPLATES", "Vocabulary", "agenerate_descriptors", "arun_descriptors",
    "build_vocabulary", "describe_neurons", "generate_descriptors", "jaccard_stability", "map_neurons",
    "mapping_features", "precision_recall_at_k", "read_records", "run_descriptors", "sentence_activations",
    "sentence_key", "split_halves", "summary_table",
]
