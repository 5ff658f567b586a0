"""The LLM usage that produced a stage's results, read from the results themselves.

Labels (:attr:`ConceptLabel.usage <tl_concepts.concepts.model.ConceptLabel.usage>`),
descriptor answers (:attr:`SentenceDescriptors.usage
<tl_concepts.descriptors.generate.SentenceDescriptors.usage>`) and explained units
(``UnitExplanation.llm_usage``) each store the usage of the LLM calls that produced them,
next to the result, on disk. So the usage of a stage is the sum over the items of its
current result, whichever invocation made the calls: this one, an earlier interrupted one,
or one long ago whose answers a rerun reuses. Cards, ``run.json`` and the report show these
sums, not the ledger of the current process (which only sees this invocation's calls).

**The rule.** An item's usage is the usage of the call(s) that produced it:

* a fresh item asked now stores its own call's usage (``llm.tagged(...).usage()``): a
  request counts ``requests``, ``retries``, tokens and cost; an answer served by the LLM
  answer cache counts ``calls=1, cache_hits=1`` and 0 requests, 0 tokens and cost 0 (the
  ledger counts tokens only for requests actually made);
* an item reused from the label / descriptor / explanation store keeps the usage stored
  when it was produced (a rerun that makes 0 requests reports the original requests and
  tokens);
* an item asked again because its earlier answer failed (transient failure, or
  ``retry_failed``) stores the failed attempt's usage plus the new call's, so retries of
  a flaky endpoint are paid for in the sum;
* items sharing an input key (two concepts with the same members, a repeated sentence)
  share one answer and one request: they are counted once.

Not counted: calls of a batch that was in flight when the process was killed (nothing of
it was saved), and items written by versions that did not store usage (they count as 0;
:func:`items_without_usage` says how many).

Example:
    >>> from tl_concepts.usage import labels_usage, descriptors_usage       # doctest: +SKIP
    >>> labels_usage(cs.all_labels())["requests"]                           # doctest: +SKIP
    40
    >>> descriptors_usage(Descriptors.load("runs/x/descriptors"))["prompt_tokens"]  # doctest: +SKIP
    5312
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from tl_concepts.llm.ledger import Ledger, empty_usage, merge_usage

__all__ = ["stage_usage", "labels_usage", "descriptors_usage", "explanations_usage",
           "explanation_unit_usage", "items_without_usage"]


def _field(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def _distinct(items: Iterable[Any]) -> list[Any]:
    """The items, each input key once (items without a key are all kept)."""
    seen: set[str] = set()
    out = []
    for it in items:
        key = _field(it, "key") or ""
        if key:
            if key in seen:
                continue
            seen.add(key)
        out.append(it)
    return out


def stage_usage(items: Iterable[Any]) -> dict[str, Any]:
    """The sum of the stored usages of ``items`` (objects or dicts with ``usage`` and
    ``key``), each input key counted once (see the module docstring).

    Returns a usage dict with the keys of :data:`tl_concepts.llm.USAGE_KEYS` (all 0 for no
    items).

    Example:
        >>> a = {"key": "k1", "usage": {"calls": 1, "requests": 1, "prompt_tokens": 30}}
        >>> b = {"key": "k1", "usage": {"calls": 1, "requests": 1, "prompt_tokens": 30}}
        >>> c = {"key": "k2", "usage": {"calls": 1, "cache_hits": 1}}
        >>> u = stage_usage([a, b, c])
        >>> u["calls"], u["requests"], u["cache_hits"], u["prompt_tokens"]
        (2, 1, 1, 30)
    """
    return merge_usage(*(_field(it, "usage") or None for it in _distinct(items)))


def items_without_usage(items: Iterable[Any]) -> int:
    """How many distinct items hold no stored usage (written by an older version, or
    imported); their calls are missing from :func:`stage_usage`.

    Example:
        >>> items_without_usage([{"key": "a", "usage": {}}, {"key": "b", "usage": {"calls": 1}}])
        1
    """
    return sum(1 for it in _distinct(items) if not _field(it, "usage"))


def labels_usage(labels: Iterable[Any]) -> dict[str, Any]:
    """Usage of the LLM calls that produced ``labels`` (a list of
    :class:`~tl_concepts.concepts.model.ConceptLabel` or their dicts, e.g. what
    :func:`~tl_concepts.concepts.labelling.label_concepts` returned for the current concept
    set); see :func:`stage_usage`.

    Example:
        >>> labs = label_concepts(cs, llm, "runs/x/labels.jsonl")   # doctest: +SKIP
        >>> labels_usage(labs)["requests"]                          # doctest: +SKIP
        40
    """
    return stage_usage(labels)


def descriptors_usage(descriptors: Any) -> dict[str, Any]:
    """Usage of the LLM calls that produced the descriptor answers of the current sentences.

    ``descriptors`` is either the records of
    :func:`~tl_concepts.descriptors.generate.generate_descriptors` (a list of
    ``SentenceDescriptors`` or their dicts; sentences sharing a key count once) or a
    :class:`~tl_concepts.descriptors.results.Descriptors` result, whose
    ``metrics["llm_usage"]`` holds that sum (written by ``run_descriptors``; a folder written
    before usage was stored gives all zeros).

    Example:
        >>> descriptors_usage(Descriptors.load("runs/x/descriptors"))["requests"]  # doctest: +SKIP
        32
    """
    metrics = getattr(descriptors, "metrics", None)
    if isinstance(metrics, Mapping):
        return merge_usage(metrics.get("llm_usage") or None)
    return stage_usage(descriptors)


def explanation_unit_usage(llm_usage: Mapping[str, Any] | None,
                           provenance: Mapping[str, Any] | None = None, *,
                           ledger: Ledger | None = None) -> dict[str, Any]:
    """One explained unit's stored ``llm_usage`` (``{"explainer": {stage: counts},
    "simulator": {stage: counts}}``, counts ``requests, calls, prompt_tokens,
    completion_tokens, cached, failures``) as a usage dict of
    :data:`~tl_concepts.llm.USAGE_KEYS`.

    Approximate where the unit file stores less than a usage dict: ``retries`` is 0 (not
    stored); ``failures`` is a count without kinds, reported as ``{"unrecorded_kind": n}``;
    ``cost_usd`` is recomputed from the tokens with the price of the role's model (named by
    ``provenance["explainer"]`` / ``["simulator"]``, prices of ``ledger`` or the default
    table), None when that model has no price and made requests.

    Example:
        >>> u = explanation_unit_usage({"explainer": {"explain": {"requests": 1, "calls": 1,
        ...     "prompt_tokens": 1000, "completion_tokens": 100, "cached": 0, "failures": 0}}},
        ...     {"explainer": {"backend": "openai", "model": "gpt-4o-mini"}})
        >>> u["requests"], u["prompt_tokens"], round(u["cost_usd"], 6)
        (1, 1000, 0.00021)
    """
    led = ledger if ledger is not None else Ledger()
    parts = []
    for role, stages in (llm_usage or {}).items():
        ident = (provenance or {}).get(role) or {}
        price = led.price(str(ident.get("backend", "")), str(ident.get("model", ""))) if ident else None
        for counts in (stages or {}).values():
            u = empty_usage()
            u["calls"] = int(counts.get("calls") or 0)
            u["requests"] = int(counts.get("requests") or 0)
            u["cache_hits"] = int(counts.get("cached") or counts.get("cache_hits") or 0)
            u["prompt_tokens"] = int(counts.get("prompt_tokens") or 0)
            u["completion_tokens"] = int(counts.get("completion_tokens") or 0)
            fails = counts.get("failures") or 0
            if isinstance(fails, Mapping):
                u["failures"] = {str(k): int(v) for k, v in fails.items()}
            elif int(fails):
                u["failures"] = {"unrecorded_kind": int(fails)}
            if price is not None:
                u["cost_usd"] = (u["prompt_tokens"] * price["input"]
                                 + u["completion_tokens"] * price["output"]) / 1e6
            elif u["requests"]:
                u["cost_usd"] = None
            parts.append(u)
    return merge_usage(*parts)


def explanations_usage(results: Iterable[Any], *, ledger: Ledger | None = None) -> dict[str, Any]:
    """Usage of the LLM calls that produced the explained units of ``results`` (an
    :class:`~tl_concepts.explain.results.ExplanationResults`, a list of its
    ``UnitExplanation`` or of unit-file dicts), summed with :func:`explanation_unit_usage`
    (see there for what is approximate). Each unit's usage was stored in its unit file by
    the invocation that computed it, so a rerun that reuses every unit reports the same sum.

    Example:
        >>> explanations_usage(ExplanationResults.load("runs/x/explain"))["requests"]  # doctest: +SKIP
        96
    """
    parts = []
    for r in results:
        if isinstance(r, Mapping):
            usage, prov = r.get("llm_usage"), r.get("provenance")
        else:
            usage, prov = getattr(r, "llm_usage", None), getattr(r, "provenance", None)
        parts.append(explanation_unit_usage(usage, prov, ledger=ledger))
    return merge_usage(*parts)
