"""tl-concepts: ask an LLM what the insides of a TransformerLens model mean, and score every answer.

One call per stage at the package root (see :mod:`tl_concepts.api`); the stages are
sub-packages, and data flows one way:
``corpus`` -> ``capture`` -> (``explain`` | ``concepts`` -> ``probing``) -> ``hub`` / ``report``;
every LLM call goes through ``llm``.

Example:
    >>> import tl_concepts as tlc                                              # doctest: +SKIP
    >>> store = tlc.capture(tlc.models.load("minilm"), "lee", ["blocks.3.mlp.hook_post"], max_docs=20)  # doctest: +SKIP
    >>> tlc.explain(store, "blocks.3.mlp.hook_post", units=2).to_pandas()     # doctest: +SKIP
"""
__version__ = "0.1.0"

from tl_concepts import capture, errors, explain, models, report  # capture/explain/report are callable
from tl_concepts.api import (
    adescribe_neurons,
    aexplain,
    alabel_concepts,
    describe_neurons,
    find_concepts,
    label_concepts,
    load,
    probe,
    publish,
    rank,
)
from tl_concepts.errors import (
    ConfigError,
    InputError,
    LLMAuthError,
    LLMError,
    LLMUnavailableError,
    StoreError,
    TLConceptsError,
)
from tl_concepts.explain.results import ExplanationResults, UnitExplanation
from tl_concepts.ids import unit_id

__all__ = [
    "__version__", "errors", "models",
    "capture", "explain", "aexplain", "find_concepts", "label_concepts", "alabel_concepts", "probe", "rank",
    "describe_neurons", "adescribe_neurons", "publish", "load", "report",
    "TLConceptsError", "ConfigError", "InputError", "StoreError", "LLMError", "LLMAuthError",
    "LLMUnavailableError", "ExplanationResults", "UnitExplanation", "unit_id",
]
