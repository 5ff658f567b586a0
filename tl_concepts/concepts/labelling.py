"""Label concepts with an LLM, resumably.

Every concept is one chat request through ``tl_concepts.llm``; requests of a batch run
concurrently (``asyncio.gather``; the LLM layer applies its own concurrency cap), and each
finished batch is written atomically to a JSON-lines :class:`LabelStore`, so a rerun
skips the concepts already answered. Refusals and content-filter blocks are recorded as
such (with the raw answer), never replaced by a made-up label. Transport errors
(``error``) are retried on the next run.

Example:
    >>> from tl_concepts.llm import get_llm                            # doctest: +SKIP
    >>> labels = label_concepts(cs, get_llm("in-process"), "runs/x/labels.jsonl")  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from tl_concepts.llm.base import LLM, ChatResult

from .model import Concept, ConceptLabel, ConceptSet, _atomic_text
from .prompts import TEMPLATES, LabelTemplate

RETRY_STATUSES = frozenset({"error"})
"""Label statuses that a rerun asks again."""


@dataclass
class LabelOptions:
    """How concepts are shown to the labelling LLM."""

    template: str = "label-general"
    """Template name in :data:`~tl_concepts.concepts.prompts.TEMPLATES`."""
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
    batch_size: int = 16
    """Concepts per concurrent batch (and per atomic save)."""


class LabelStore:
    """Labels on disk: one JSON line per (concept, template, version); atomic rewrites."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records: dict[tuple[int, str, str], ConceptLabel] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    lab = ConceptLabel.from_dict(json.loads(line))
                    self.records[(lab.concept_id, lab.template, lab.template_version)] = lab

    def done(self, concept_id: int, template: LabelTemplate) -> bool:
        """True when the concept has an answer for this template that needs no retry."""
        lab = self.records.get((concept_id, template.name, template.version))
        return lab is not None and lab.status not in RETRY_STATUSES

    def add(self, labels: Iterable[ConceptLabel]) -> None:
        """Add labels and rewrite the file atomically."""
        for lab in labels:
            self.records[(lab.concept_id, lab.template, lab.template_version)] = lab
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_text(self.path, "".join(json.dumps(r.to_dict()) + "\n" for r in self.records.values()))

    def labels(self, template: str | None = None) -> list[ConceptLabel]:
        """Stored labels (of one template when given)."""
        return [r for r in self.records.values() if template is None or r.template == template]


def _to_label(concept: Concept, res: ChatResult, tpl: LabelTemplate, opts: LabelOptions,
              n_ctx: int, llm: LLM) -> ConceptLabel:
    base = dict(concept_id=concept.id, template=tpl.name, template_version=tpl.version,
                model=res.model or llm.model, backend=res.backend or llm.name,
                words_as=opts.words_as, n_context=n_ctx)
    if not res.ok:
        f = res.failure
        kind = f.kind if f else "error"
        status = kind if kind in ("refusal", "content_filter", "unparseable") else "error"
        return ConceptLabel(label=None, status=status, raw=f.raw if f else None,
                            message=f"{kind}: {f.message}" if f else "no answer", **base)
    parsed = tpl.parse(res.text or "")
    return ConceptLabel(label=parsed.label, status=parsed.status, raw=res.text, **base)


async def alabel_concepts(concepts: ConceptSet, llm: LLM, store: LabelStore | str | os.PathLike | None = None,
                          options: LabelOptions | None = None, *, ids: Sequence[int] | None = None,
                          progress: bool = True) -> list[ConceptLabel]:
    """Async :func:`label_concepts`."""
    opts = options or LabelOptions()
    if opts.template not in TEMPLATES:
        raise ValueError(f"unknown template {opts.template!r}; choose one of {sorted(TEMPLATES)}")
    tpl = TEMPLATES[opts.template]
    st = store if isinstance(store, LabelStore) or store is None else LabelStore(store)
    todo_ids = list(ids) if ids is not None else concepts.concept_ids()
    todo = [i for i in todo_ids if st is None or not st.done(i, tpl)]
    out: list[ConceptLabel] = []
    bar = tqdm(total=len(todo_ids), initial=len(todo_ids) - len(todo), desc=f"labelling ({tpl.name})",
               disable=not progress, unit="concept")

    async def one(cid: int) -> ConceptLabel:
        c = concepts.concept(cid)
        ctx = concepts.contexts(c, opts.n_context) if opts.n_context else []
        msgs = tpl.render(c.words, ctx, opts.words_as, opts.max_words)
        res = await llm.achat(msgs, temperature=opts.temperature,
                              max_tokens=opts.max_tokens or tpl.max_tokens, stage="concepts.label")
        return _to_label(c, res, tpl, opts, len(ctx), llm)

    try:
        for start in range(0, len(todo), opts.batch_size):
            batch = await asyncio.gather(*(one(i) for i in todo[start:start + opts.batch_size]))
            if st is not None:
                st.add(batch)
            out.extend(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    done = st.labels(tpl.name) if st is not None else out
    wanted = set(todo_ids)
    result = [lab for lab in done if lab.concept_id in wanted and lab.template_version == tpl.version]
    concepts.add_labels(result)
    return sorted(result, key=lambda r: r.concept_id)


def label_concepts(concepts: ConceptSet, llm: LLM, store: LabelStore | str | os.PathLike | None = None,
                   options: LabelOptions | None = None, *, ids: Sequence[int] | None = None,
                   progress: bool = True) -> list[ConceptLabel]:
    """Label every concept (or ``ids``) of ``concepts``; skip those already in ``store``.

    Returns the labels of the requested concepts for this template (old and new) and
    attaches them to ``concepts``.

    Example:
        >>> labs = label_concepts(cs, llm, "runs/x/labels.jsonl",              # doctest: +SKIP
        ...                       LabelOptions(template="label-pos", words_as="types"))
    """
    return asyncio.run(alabel_concepts(concepts, llm, store, options, ids=ids, progress=progress))
