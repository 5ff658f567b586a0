"""Ask an LLM for the descriptors of every sentence; resumable, healing, one record per answer.

Every answer is keyed by a fingerprint of what produced it (:func:`sentence_key`): the
sentence text, the prompt template (name and version), the LLM's identity
(``llm.cache_identity()``: backend, model, endpoint, weights) and the sampling settings
(temperature, max_tokens). A rerun reuses a record only when its key matches, so a changed
sentence, template or LLM means a new request, never a stale answer.

Answers are appended to a JSON-lines file batch by batch (flushed and fsynced), so an
interrupted run loses at most the batch in flight. On a rerun:

* ``ok`` records are reused;
* transient failures (:func:`tl_concepts.llm.base.is_transient`: retries exhausted on
  5xx / 429 / timeouts) are asked again by themselves;
* permanent failures (``unparseable``, ``refusal``, ``truncated``, ``content_filter``, ...)
  are kept with their reason and raw text, unless ``retry_failed=True``.

A truncated completion (the answer hit max_tokens) is a failure, never a shortened list. A
fatal LLM error (wrong key, unknown model, unreachable endpoint:
:class:`tl_concepts.errors.LLMError`) stops the stage after saving the batch's finished
answers. A torn last line (a crash mid-write) is ignored on reading.

Record fields: ``sentence`` (global id), ``text``, ``status``, ``descriptors`` (list),
``raw``, ``message``, ``model``, ``backend``, ``template``, ``template_version``, ``key``,
``usage``.

Usage travels with the answer: each sentence's request goes through
``llm.tagged(unit="sentence:<id>", stage="descriptors.generate")`` and its record stores that
request's usage (plus the usage of a failed record of the same key it replaces); a reused
record keeps it, so a rerun that makes no request still reports what the answers cost (see
:mod:`tl_concepts.usage`).

Example:
    >>> from tl_concepts.llm import get_llm                                      # doctest: +SKIP
    >>> recs = generate_descriptors({0: "Shares fell."}, get_llm(), "runs/d.jsonl")  # doctest: +SKIP
    >>> recs[0].descriptors                                                       # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from tl_concepts._sync import run_sync
from tl_concepts.fingerprint import fingerprint
from tl_concepts.executor import check_executor
from tl_concepts.llm.workers import ask_chats
from tl_concepts.llm.base import LLM, ChatResult
from tl_concepts.llm.ledger import merge_usage
from tl_concepts.resultstore import ResultStore, needs_compute

from .prompts import TEMPLATE, DescriptorTemplate

log = logging.getLogger(__name__)

DESCRIPTOR_STAGE = "descriptors.generate"
"""Ledger stage of descriptor requests (each tagged with the unit ``sentence:<id>``)."""


@dataclass
class SentenceDescriptors:
    """The LLM's answer for one sentence."""

    sentence: int
    """Global sentence id."""
    text: str
    """Sentence text."""
    status: str
    """``ok``, or why there are no descriptors: ``unparseable``, ``refusal``, ``truncated``,
    ``content_filter``, ``context_overflow``, ``retries_exhausted``, ``transient`` or ``error``."""
    descriptors: list[str] = field(default_factory=list)
    """Normalised descriptors ([] unless ``ok``)."""
    raw: str | None = None
    """Raw answer text, when there was one."""
    message: str = ""
    """Failure detail."""
    model: str = ""
    """Model that answered."""
    backend: str = ""
    """LLM backend."""
    template: str = TEMPLATE.name
    """Prompt template name."""
    template_version: str = TEMPLATE.version
    """Prompt template version."""
    key: str = ""
    """Fingerprint of the inputs that produced this answer (:func:`sentence_key`)."""
    usage: dict[str, Any] = field(default_factory=dict)
    """LLM usage that produced this answer (keys of :data:`tl_concepts.llm.USAGE_KEYS`),
    including earlier failed answers to the same inputs that it replaced; kept when the
    record is reused, empty for records written before usage was stored. Sentences that
    share a key share one record and one request: sum usage per distinct ``key``
    (:func:`tl_concepts.usage.descriptors_usage` does)."""

    @property
    def ok(self) -> bool:
        """True when the sentence got descriptors."""
        return self.status == "ok"


def sentence_key(text: str, template: DescriptorTemplate, llm_identity: Mapping[str, Any], *,
                 temperature: float, max_tokens: int) -> str:
    """Fingerprint of everything that determines a sentence's answer.

    Example:
        >>> a = sentence_key("Rain.", TEMPLATE, {"backend": "x", "model": "m"}, temperature=0.0, max_tokens=80)
        >>> a == sentence_key("Rain!", TEMPLATE, {"backend": "x", "model": "m"}, temperature=0.0, max_tokens=80)
        False
    """
    return fingerprint({"text": text, "template": template.name, "template_version": template.version,
                        "llm": dict(llm_identity), "temperature": float(temperature), "max_tokens": int(max_tokens)})


def descriptor_failed(d: Mapping[str, Any]) -> list[str] | None:
    """None for an answered sentence, else its failure kind (the
    :class:`~tl_concepts.resultstore.ResultStore` failure rule of descriptors)."""
    return None if d.get("status") == "ok" else [str(d.get("status") or "error")]


def descriptor_store(path: str | os.PathLike[str]) -> ResultStore:
    """The answers of ``path`` (JSON lines, one record per distinct input key)."""
    return ResultStore(path, failed=descriptor_failed, id_field="key", key_field="key", layout="lines")


def _from_dict(d: Mapping[str, Any]) -> SentenceDescriptors | None:
    names = {f.name for f in dataclasses.fields(SentenceDescriptors)}
    if not {"sentence", "text", "status"} <= set(d):
        return None
    kw = {k: v for k, v in d.items() if k in names}
    kw["usage"] = dict(kw.get("usage") or {})  # older lines have none
    return SentenceDescriptors(**kw)


def _read_lines(path: Path) -> list[SentenceDescriptors]:
    out = []
    for d in descriptor_store(path).records():
        r = _from_dict(d)
        if r is not None:
            out.append(r)
    return out


def read_records(path: str | os.PathLike, template: DescriptorTemplate | None = None
                 ) -> dict[int, SentenceDescriptors]:
    """One record per sentence id (of ``template`` when given); torn lines and records
    without an input key are skipped."""
    out: dict[int, SentenceDescriptors] = {}
    for r in _read_lines(Path(path)):
        if template is None or (r.template, r.template_version) == (template.name, template.version):
            out[r.sentence] = r
    return out


def records_by_key(path: str | os.PathLike) -> dict[str, SentenceDescriptors]:
    """The record of each input key."""
    return {r.key: r for r in _read_lines(Path(path)) if r.key}


def to_record(sid: int, text: str, res: ChatResult, template: DescriptorTemplate, llm: LLM,
              key: str = "") -> SentenceDescriptors:
    """Turn an LLM answer into a record (failures stay failures, a cut-off answer is ``truncated``)."""
    base: dict[str, Any] = dict(sentence=int(sid), text=text, model=res.model or llm.model, backend=res.backend or llm.name,
                template=template.name, template_version=template.version, key=key)
    if not res.ok:
        f = res.failure
        return SentenceDescriptors(status=f.kind if f else "error", raw=f.raw if f else None,
                                   message=f.message if f else "no answer", **base)
    p = template.parse(res.text or "")
    return SentenceDescriptors(status=p.status, descriptors=p.descriptors, raw=res.text, message=p.message, **base)


def _reusable(rec: SentenceDescriptors, retry_failed: bool) -> bool:
    return not needs_compute(asdict(rec), descriptor_failed, retry_failed)


async def agenerate_descriptors(sentences: Mapping[int, str], llm: LLM, path: str | os.PathLike | None = None, *,
                                template: DescriptorTemplate = TEMPLATE, batch_size: int = 16,
                                temperature: float = 0.0, retry_failed: bool = False,
                                progress: bool = True, executor: str = "local",
                                ray_address: str | None = None) -> list[SentenceDescriptors]:
    """Async :func:`generate_descriptors`."""
    check_executor(executor)
    store = descriptor_store(path) if path is not None else None
    ident = llm.cache_identity()
    keys = {s: sentence_key(t, template, ident, temperature=temperature, max_tokens=template.max_tokens)
            for s, t in sentences.items()}
    done = {r.key: r for r in (_from_dict(d) for d in store.records()) if r is not None} if store else {}
    todo: list[int] = []
    asked: set[str] = set()
    for s in sentences:
        k = keys[s]
        if k in asked or (k in done and _reusable(done[k], retry_failed)):
            continue
        asked.add(k)  # one request per distinct input, even when a text repeats
        todo.append(s)
    n_todo_sentences = sum(1 for s in sentences if keys[s] in asked)
    if len(sentences) - n_todo_sentences:
        log.info("descriptors: %d of %d sentences answered before (same inputs); asking %d",
                 len(sentences) - n_todo_sentences, len(sentences), len(todo))
    bar = tqdm(total=len(sentences), initial=len(sentences) - n_todo_sentences, desc="descriptors",
               unit="sentence", disable=not progress)

    def finish(i: int, res: ChatResult, usage: dict[str, Any]) -> SentenceDescriptors:
        sid = todo[i]
        rec = to_record(sid, sentences[sid], res, template, llm, keys[sid])
        before = done.get(keys[sid])  # a failed answer to the same inputs that this one replaces
        rec.usage = merge_usage(before.usage if before is not None else None, usage)
        return rec

    def save(batch: list[SentenceDescriptors]) -> None:
        if store is not None and batch:
            store.put_many([asdict(r) for r in batch])
        for r in batch:
            done[r.key] = r
        answered = {r.key for r in batch}
        bar.update(sum(1 for s in sentences if keys[s] in answered))
        n_ok = sum(1 for r in batch if r.ok)
        bar.set_postfix(batch_ok=n_ok, batch_failed=len(batch) - n_ok)

    requests = [(f"sentence:{sid}", DESCRIPTOR_STAGE, template.render(sentences[sid]), float(temperature),
                 int(template.max_tokens)) for sid in todo]
    try:
        await ask_chats(llm, requests, finish=finish, save=save, batch_size=batch_size, crash="descriptors.batch",
                        executor=executor, ray_address=ray_address)
    finally:
        bar.close()
        if store is not None:
            store.compact()  # one sorted line per answer, whatever order they finished in
    return [dataclasses.replace(done[keys[s]], sentence=int(s), text=sentences[s], usage=dict(done[keys[s]].usage))
            for s in sentences]


def generate_descriptors(sentences: Mapping[int, str], llm: LLM, path: str | os.PathLike | None = None,
                         **kw: Any) -> list[SentenceDescriptors]:
    """Descriptors for every sentence (id -> text), resuming from ``path`` when it exists.

    Works from plain scripts and inside a running event loop (a notebook cell); the
    awaitable twin is :func:`agenerate_descriptors`. Returns one record per requested
    sentence, in the given order. ``executor="ray"`` asks as Ray tasks (same keys and file:
    either executor resumes the other).
    """
    return run_sync(agenerate_descriptors(sentences, llm, path, **kw))
