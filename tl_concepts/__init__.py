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

from tl_concepts import errors, models
from tl_concepts.explain.results import ExplanationResults, UnitExplanation  # loads the stage packages first
from tl_concepts.ids import unit_id
# Bound last: the functions ``capture`` etc. shadow the sub-package attributes of the same name
# (``from tl_concepts.capture import ActivationStore`` still imports the sub-package).
from tl_concepts.api import (
    aexplain,
    alabel_concepts,
    capture,
    describe_neurons,
    explain,
    find_concepts,
    label_concepts,
    load,
    probe,
    publish,
    rank,
    report,
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

__all__ = [
    "__version__", "errors", "models",
    "capture", "explain", "aexplain", "find_concepts", "label_concepts", "alabel_concepts", "probe", "rank",
    "describe_neurons", "publish", "load", "report",
    "TLConceptsError", "ConfigError", "InputError", "StoreError", "LLMError", "LLMAuthError",
    "LLMUnavailableError", "ExplanationResults", "UnitExplanation", "unit_id",
]
