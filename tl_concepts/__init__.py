"""tl-concepts: ask an LLM what the insides of a TransformerLens model mean, and score every answer.

Stages (each a sub-package, data flows one way):
``corpus`` -> ``capture`` -> (``explain`` | ``concepts`` -> ``probing``) -> ``hub`` / ``report``;
every LLM call goes through ``llm``.

Example:
    >>> from tl_concepts import models, capture              # doctest: +SKIP
    >>> store = capture.capture(models.load("minilm"), "lee", ["blocks.3.mlp.hook_post"], "runs/x")
"""
__version__ = "0.1.0"
