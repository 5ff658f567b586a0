"""Ask an LLM for the descriptors of every sentence; resumable, one record per sentence.

Answers are appended to a JSON-lines file as they arrive (flushed and fsynced per
batch), so an interrupted run loses at most one batch and a rerun asks only for the
sentences without a final answer. Transport failures (``error``, ``retries_exhausted``)
are retried on a rerun; ``unparseable`` and ``refusal`` answers are final and kept with
their raw text. A torn last line (a crash mid-write) is ignored on reading.

Record fields: ``sentence`` (global id), ``text``, ``status``, ``descriptors`` (list),
``raw``, ``message``, ``model``, ``backend``, ``template``, ``template_version``.

Example:
    >>> from tl_concepts.llm import get_llm                                      # doctest: +SKIP
    >>> recs = generate_descriptors({0: "Shares fell."}, get_llm(), "runs/d.jsonl")  # doctest: +SKIP
    >>> recs[0].descriptors                                                       # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from tl_concepts.llm.base import LLM, ChatResult

from .prompts import TEMPLATE, DescriptorTemplate

RETRY_STATUSES = frozenset({"error", "retries_exhausted"})
"""Statuses asked again on a rerun."""


@dataclass
class SentenceDescriptors:
    """The LLM's answer for one sentence."""

    sentence: int
    """Global sentence id."""
    text: str
    """Sentence text."""
    status: str
    """``ok``, ``unparseable``, ``refusal``, ``content_filter``, ``context_overflow``,
    ``retries_exhausted`` or ``error``."""
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

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def read_records(path: str | os.PathLike, template: DescriptorTemplate = TEMPLATE) -> dict[int, SentenceDescriptors]:
    """Latest record per sentence for ``template`` (torn or foreign lines are skipped)."""
    p = Path(path)
    out: dict[int, SentenceDescriptors] = {}
    if not p.exists():
        return out
    names = SentenceDescriptors.__dataclass_fields__.keys()
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn line from an interrupted write
        if not isinstance(d, dict) or (d.get("template"), d.get("template_version")) != (template.name, template.version):
            continue
        rec = SentenceDescriptors(**{k: v for k, v in d.items() if k in names})
        out[rec.sentence] = rec
    return out


def _append(path: Path, recs: list[SentenceDescriptors]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"  # an interrupted write left half a line: close it off
    with path.open("a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        f.write("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in recs))
        f.flush()
        os.fsync(f.fileno())


def to_record(sid: int, text: str, res: ChatResult, template: DescriptorTemplate, llm: LLM) -> SentenceDescriptors:
    """Turn an LLM answer into a record (failures stay failures)."""
    base = dict(sentence=int(sid), text=text, model=res.model or llm.model, backend=res.backend or llm.name,
                template=template.name, template_version=template.version)
    if not res.ok:
        f = res.failure
        return SentenceDescriptors(status=f.kind if f else "error", raw=f.raw if f else None,
                                   message=f.message if f else "no answer", **base)
    p = template.parse(res.text or "")
    return SentenceDescriptors(status=p.status, descriptors=p.descriptors, raw=res.text, message=p.message, **base)


async def agenerate_descriptors(sentences: Mapping[int, str], llm: LLM, path: str | os.PathLike | None = None, *,
                                template: DescriptorTemplate = TEMPLATE, batch_size: int = 16,
                                temperature: float = 0.0, progress: bool = True) -> list[SentenceDescriptors]:
    """Async :func:`generate_descriptors`."""
    p = Path(path) if path is not None else None
    done = read_records(p, template) if p is not None else {}
    todo = [s for s in sentences if s not in done or done[s].status in RETRY_STATUSES]
    bar = tqdm(total=len(sentences), initial=len(sentences) - len(todo), desc="descriptors", unit="sentence",
               disable=not progress)

    async def one(sid: int) -> SentenceDescriptors:
        res = await llm.achat(template.render(sentences[sid]), temperature=temperature,
                              max_tokens=template.max_tokens, stage="descriptors.generate")
        return to_record(sid, sentences[sid], res, template, llm)

    try:
        for start in range(0, len(todo), batch_size):
            batch = await asyncio.gather(*(one(s) for s in todo[start:start + batch_size]))
            if p is not None:
                _append(p, batch)
            for r in batch:
                done[r.sentence] = r
            bar.update(len(batch))
            n_ok = sum(r.ok for r in done.values())
            bar.set_postfix(ok=n_ok, failed=len(done) - n_ok)
    finally:
        bar.close()
    return [done[s] for s in sentences]


def generate_descriptors(sentences: Mapping[int, str], llm: LLM, path: str | os.PathLike | None = None,
                         **kw: Any) -> list[SentenceDescriptors]:
    """Descriptors for every sentence (id -> text), resuming from ``path`` when it exists.

    Returns one record per requested sentence, in the given order.
    """
    return asyncio.run(agenerate_descriptors(sentences, llm, path, **kw))
