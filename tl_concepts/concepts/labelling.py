"""Label concepts with an LLM, resumably, and never with a stale or unearned label.

Every concept is one chat request through ``tl_concepts.llm``; requests of a batch run
concurrently (``asyncio.gather``; the LLM layer applies its own concurrency cap), and each
finished batch is written atomically to a JSON-lines :class:`LabelStore`.

**What a label is keyed by.** A stored label is reused only for the exact inputs that
produced it: its ``key`` is the fingerprint of the concept's member occurrences (sentence,
word position, word; not the node id, which another clustering gives to other words), the
rendered prompt (template name, version, words shown, context sentences), the label options
and the LLM (``llm.cache_identity()``: backend, model, base URL, weights; plus temperature and
max_tokens). A re-clustering, another template or another LLM means a fresh request.

**Runs heal.** A label that failed for a transient reason (``retries_exhausted``,
``transient``: see :func:`tl_concepts.llm.base.is_transient`) is asked again on the next run;
a permanent per-item answer (``refusal``, ``content_filter``, ``unparseable``, a ``rejected``
label) stays with its reason until ``retry_failed=True``.

**Usage travels with the label.** Each concept's request goes through
``llm.tagged(unit="concept:<id>", stage="concepts.label")`` and the label stores that
request's usage (:attr:`ConceptLabel.usage`, plus the usage of a failed label of the same
inputs it replaces). A label reused from the store keeps the usage of the call that produced
it, so :func:`tl_concepts.usage.labels_usage` reports the same requests and tokens after a
rerun that made no request (see :mod:`tl_concepts.usage`). A fatal LLM error
(:class:`tl_concepts.errors.LLMError`: wrong key, unreachable server, ...) stops labelling;
the batches finished before it stay saved.

**The label gate.** An answer that echoes the member words, is longer than 8 words, is
empty or ``NA``, or was cut at max_tokens is recorded as ``rejected`` with its reason and
its raw text (see :func:`~tl_concepts.concepts.prompts.label_gate`); only status ``ok``
counts as an accepted label.

Example:
    >>> from tl_concepts.llm import get_llm                            # doctest: +SKIP
    >>> labels = label_concepts(cs, get_llm("in-process"), "runs/x/labels.jsonl")  # doctest: +SKIP
    >>> cs                                                             # doctest: +SKIP
    ConceptSet(K=40, blocks.3.hook_resid_post, 1600 occurrences, 40 labelled: 12 accepted)
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from tl_concepts._sync import run_sync
from tl_concepts.fingerprint import fingerprint
from tl_concepts.executor import check_executor
from tl_concepts.llm.workers import ask_chats
from tl_concepts.llm.base import LLM, ChatResult, Message
from tl_concepts.llm.ledger import merge_usage
from tl_concepts.resultstore import ResultStore, needs_compute

from .model import ACCEPTED, Concept, ConceptLabel, ConceptSet
from .prompts import TEMPLATES, LabelTemplate, default_template, label_gate

log = logging.getLogger("tl_concepts.concepts")

LABEL_STAGE = "concepts.label"
"""Ledger stage of labelling requests (each tagged with the unit ``concept:<id>``)."""

PERMANENT_FAILURES = frozenset({"refusal", "content_filter", "unparseable"})
"""Failure kinds recorded under their own name as the label status."""


@dataclass
class LabelOptions:
    """How concepts are shown to the labelling LLM."""

    template: str | None = None
    """Label prompt template (``label-fewshot``, ``label-general``); none picks one for the LLM
    (``label-fewshot`` for the embedded SmolLM2, ``label-general`` otherwise)."""
    words_as: str = "tokens"
    """``tokens`` (every member, with repeats) or ``types`` (distinct words)."""
    n_context: int = 0
    """Context sentences shown per concept (0: words only)."""
    max_words: int = 100
    """At most this many words shown."""
    temperature: float = 0.0
    """Sampling temperature."""
    max_tokens: int | None = None
    """Answer budget (default: the template's)."""
    requests_per_batch: int = 16
    """LLM requests sent together: concepts per concurrent batch (and per atomic save)."""


def llm_identity(llm: LLM) -> dict:
    """What about ``llm`` determines its answers (``llm.cache_identity()``; never secrets)."""
    return dict(llm.cache_identity())


def label_failed(d: dict[str, Any]) -> list[str] | None:
    """None for an accepted label, else why it failed (its reason): the
    :class:`~tl_concepts.resultstore.ResultStore` failure rule of labels."""
    return None if d.get("status") == ACCEPTED else [str(d.get("reason") or d.get("status") or "error")]


class LabelStore:
    """Labels on disk: a :class:`~tl_concepts.resultstore.ResultStore` (JSON lines, atomic
    rewrites) keyed by :attr:`ConceptLabel.key`, the fingerprint of the label's inputs.

    A store keeps every label it was given (several clusterings, templates or LLMs may share a
    file); :func:`label_concepts` picks the ones whose key matches the current inputs. Lines
    without a key (written by an older version) are ignored: what produced them is unknown.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.store = ResultStore(self.path, failed=label_failed, id_field="key", key_field="key", layout="lines")
        if self.store.ignored:
            log.warning("%s: %d labels without an input key (older format) are ignored and will be asked again",
                        self.path, self.store.ignored)

    @property
    def records(self) -> dict[str, ConceptLabel]:
        """Stored labels by key."""
        return {str(d["key"]): ConceptLabel.from_dict(d) for d in self.store.records()}

    def get(self, key: str) -> ConceptLabel | None:
        """The stored label with this key, if any."""
        d = self.store.get(key, key)
        return ConceptLabel.from_dict(d) if d is not None else None

    def add(self, labels: Iterable[ConceptLabel]) -> None:
        """Add labels (appended to the file, fsynced; the stage compacts it when it finishes)."""
        self.store.put_many([lab.to_dict() for lab in labels])

    def labels(self, template: str | None = None) -> list[ConceptLabel]:
        """Stored labels (of one template when given)."""
        return [r for r in self.records.values() if template is None or r.template == template]


def needs_label(lab: ConceptLabel | None, retry_failed: bool = False) -> bool:
    """True when a concept must be (re)labelled: no label yet, a transient failure, or, with
    ``retry_failed``, any label that was not accepted."""
    return needs_compute(None if lab is None else lab.to_dict(), label_failed, retry_failed)


@dataclass
class _Request:
    concept: Concept
    messages: list[Message]
    n_context: int
    key: str
    members_fp: str


def _request(cs: ConceptSet, cid: int, tpl: LabelTemplate, opts: LabelOptions, llm_id: dict,
             max_tokens: int) -> _Request:
    c = cs.concept(cid)
    ctx = cs.contexts(c, opts.n_context) if opts.n_context else []
    msgs = tpl.render(c.words, ctx, opts.words_as, opts.max_words)
    members_fp = cs.members_fingerprint(c)
    key = fingerprint({
        "members": members_fp, "template": [tpl.name, tpl.version],
        "options": {"words_as": opts.words_as, "n_context": opts.n_context, "max_words": opts.max_words},
        "messages": [[m.role, m.content] for m in msgs],
        "llm": llm_id, "temperature": float(opts.temperature), "max_tokens": int(max_tokens),
    })
    return _Request(c, msgs, len(ctx), key, members_fp)


def _to_label(req: _Request, res: ChatResult, tpl: LabelTemplate, opts: LabelOptions, llm: LLM) -> ConceptLabel:
    base: dict[str, Any] = dict(concept_id=req.concept.id, template=tpl.name, template_version=tpl.version,
                model=res.model or llm.model, backend=res.backend or llm.name,
                words_as=opts.words_as, n_context=req.n_context, key=req.key, members_fp=req.members_fp)
    if not res.ok:
        f = res.failure
        kind = f.kind if f else "error"
        msg = f"{kind}: {f.message}" if f else "no answer"
        if kind == "truncated":
            return ConceptLabel(label=None, status="rejected", reason="truncated", raw=f.raw if f else None,
                                message=msg, **base)
        status = kind if kind in PERMANENT_FAILURES else "error"
        return ConceptLabel(label=None, status=status, reason=kind, raw=f.raw if f else None, message=msg, **base)
    parsed = tpl.parse(res.text or "")
    if parsed.status != "ok":
        return ConceptLabel(label=None, status=parsed.status, reason=parsed.status, raw=res.text, **base)
    why = label_gate(parsed.label, req.concept.words)
    if why is not None:
        return ConceptLabel(label=None, status="rejected", reason=why, raw=res.text,
                            message=f"not accepted: {why} (parsed {parsed.label!r})", **base)
    return ConceptLabel(label=parsed.label, status=ACCEPTED, raw=res.text, **base)


async def alabel_concepts(concepts: ConceptSet, llm: LLM, store: LabelStore | str | os.PathLike | None = None,
                          options: LabelOptions | None = None, *, ids: Sequence[int] | None = None,
                          retry_failed: bool = False, progress: bool = True, executor: str = "local",
                          ray_address: str | None = None) -> list[ConceptLabel]:
    """Awaitable :func:`label_concepts` (for code already inside an event loop)."""
    check_executor(executor)
    opts = options or LabelOptions()
    name = opts.template or default_template(llm)
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; choose one of {sorted(TEMPLATES)}")
    tpl = TEMPLATES[name]
    st = store if isinstance(store, LabelStore) or store is None else LabelStore(store)
    llm_id = llm_identity(llm)
    max_tokens = opts.max_tokens or tpl.max_tokens
    wanted = list(ids) if ids is not None else concepts.concept_ids()
    reqs = {cid: _request(concepts, cid, tpl, opts, llm_id, max_tokens) for cid in wanted}
    found: dict[int, ConceptLabel] = {}
    if st is not None:
        for cid, rq in reqs.items():
            lab = st.get(rq.key)
            if lab is not None:  # same members under another node id: the same label
                found[cid] = lab if lab.concept_id == cid else ConceptLabel.from_dict({**lab.to_dict(), "concept_id": cid})
    todo = [cid for cid in wanted if needs_label(found.get(cid), retry_failed)]
    bar = tqdm(total=len(wanted), initial=len(wanted) - len(todo), desc=f"labelling ({tpl.name})",
               disable=not progress, unit="concept")

    def finish(i: int, res: ChatResult, usage: dict[str, Any]) -> ConceptLabel:
        cid = todo[i]
        lab = _to_label(reqs[cid], res, tpl, opts, llm)
        before = found.get(cid)  # a failed label of the same inputs that this one replaces
        lab.usage = merge_usage(before.usage if before is not None else None, usage)
        return lab

    def save(done: list[ConceptLabel]) -> None:
        if st is not None and done:
            st.add(done)
        for lab in done:
            found[int(lab.concept_id)] = lab
        bar.update(len(done))

    requests = [(f"concept:{cid}", LABEL_STAGE, reqs[cid].messages, float(opts.temperature), int(max_tokens))
                for cid in todo]
    try:
        await ask_chats(llm, requests, finish=finish, save=save, batch_size=opts.requests_per_batch,
                        crash="labels.batch", executor=executor, ray_address=ray_address)
    finally:
        bar.close()
        if st is not None:
            st.store.compact()  # one sorted line per label, whatever order they finished in
    result = [found[cid] for cid in wanted if cid in found]
    concepts.add_labels(result)
    return sorted(result, key=lambda r: r.concept_id)


def label_concepts(concepts: ConceptSet, llm: LLM, store: LabelStore | str | os.PathLike | None = None,
                   options: LabelOptions | None = None, *, ids: Sequence[int] | None = None,
                   retry_failed: bool = False, progress: bool = True, executor: str = "local",
                   ray_address: str | None = None) -> list[ConceptLabel]:
    """Label every concept (or ``ids``) of ``concepts``; reuse labels in ``store`` whose inputs
    are unchanged (see the module docstring). Works inside a running event loop too.

    Returns the labels of the requested concepts (old and new) and attaches them to
    ``concepts``. ``retry_failed=True`` asks again for every label that was not accepted.
    ``executor="ray"`` asks for the labels as Ray tasks (each worker with its own LLM client
    or model, see :func:`tl_concepts.llm.workers.llm_recipe`), same keys and store: either
    executor resumes the other.

    Example:
        >>> labs = label_concepts(cs, llm, "runs/x/labels.jsonl",              # doctest: +SKIP
        ...                       LabelOptions(template="label-pos", words_as="types"))
        >>> sum(lab.accepted for lab in labs)                                   # doctest: +SKIP
        31
    """
    return run_sync(alabel_concepts(concepts, llm, store, options, ids=ids, retry_failed=retry_failed,
                                    progress=progress, executor=executor, ray_address=ray_address))


__all__ = ["LabelOptions", "LabelStore", "alabel_concepts", "label_concepts", "llm_identity", "needs_label"]
