"""How good are the concepts and their labels?

* :func:`alignment`: ConceptX's measure. A concept is *aligned* with a tag when at least
  ``theta`` (0.9 by default) of its members carry that tag. Reported: the share of
  concepts aligned with some tag, and *tag coverage*, the share of tags (those carried by
  at least ``min_tag_count`` clustered occurrences) that at least one concept aligns with.
  :func:`tags_from_points` gives per-member tag sets for POS, NER (entity types only; a
  word outside any entity carries no NER tag) and gold word categories.
* :func:`judge_labels`: an LLM judge rates each accepted label acceptable/unacceptable and,
  when acceptable, precise/imprecise (the human protocol of Mousi et al.; they report 90.7%
  acceptable). Each verdict is read from the next-token distribution of a yes/no question
  (P(yes) vs P(no)), so a small model still gives one; without distributions the chat
  answer is parsed and the report says so. Failed judgements are counted, not dropped.
* :func:`label_agreement`: two labelling runs/models compared: exact match after
  normalising, mean word-Jaccard, Cohen's kappa (meaningful for the POS/lexical
  templates), and optionally an LLM's same-concept verdict.

Example:
    >>> members = {1: [0, 1, 2], 2: [3, 4]}
    >>> tags = [{"NN"}, {"NN"}, {"NN"}, {"VB"}, {"JJ"}]
    >>> r = alignment(members, tags, theta=0.9)
    >>> r.n_aligned, r.n_concepts, round(r.tag_coverage, 3)
    (1, 2, 0.333)
"""
from __future__ import annotations

from tl_concepts.errors import ConfigError

import asyncio
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

from tl_concepts._sync import run_sync
from tl_concepts.llm.base import LLM, Message

from .model import ConceptLabel, ConceptSet
from .prompts import parse_agree, parse_judge, render_agree, render_judge, render_judge_question


@dataclass
class AlignmentReport:
    """Concept/tag alignment at one threshold."""

    tagset: str
    """Which tags (``pos``, ``ner``, ``gold``, or a caller's name)."""
    theta: float
    """Minimum share of members carrying the tag."""
    n_concepts: int
    """Concepts evaluated."""
    n_aligned: int
    """Concepts aligned with at least one tag."""
    n_tags: int
    """Tags in the vocabulary (carried by >= min_tag_count clustered occurrences)."""
    n_tags_covered: int
    """Tags with at least one aligned concept."""
    aligned: dict[int, str] = field(default_factory=dict)
    """Concept id -> the tag it aligns with."""
    tag_concepts: dict[str, list[int]] = field(default_factory=dict)
    """Tag -> ids of the concepts aligned with it."""

    @property
    def aligned_share(self) -> float:
        return self.n_aligned / self.n_concepts if self.n_concepts else 0.0

    @property
    def tag_coverage(self) -> float:
        return self.n_tags_covered / self.n_tags if self.n_tags else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(aligned_share=self.aligned_share, tag_coverage=self.tag_coverage)
        d["aligned"] = {str(k): v for k, v in self.aligned.items()}
        return d

    def describe(self) -> str:
        return (f"{self.tagset} (theta={self.theta}): {self.n_aligned}/{self.n_concepts} concepts aligned "
                f"({self.aligned_share:.1%}), {self.n_tags_covered}/{self.n_tags} tags covered "
                f"({self.tag_coverage:.1%})")


def alignment(members: Mapping[int, Sequence[int]], tags: Sequence[Iterable[str]], *, theta: float = 0.9,
              min_tag_count: int = 1, tagset: str = "tags") -> AlignmentReport:
    """Aligned-concept share and tag coverage.

    ``members``: concept id -> member rows; ``tags[row]``: the tags that occurrence carries
    (an empty set for none).
    """
    if not 0 < theta <= 1:
        raise ConfigError(f"theta must be in (0, 1]; got {theta}")
    tag_sets = [frozenset(t) for t in tags]
    used_rows = sorted({r for rows in members.values() for r in rows})
    freq = Counter(t for r in used_rows for t in tag_sets[r])
    vocab = {t for t, c in freq.items() if c >= min_tag_count}
    aligned: dict[int, str] = {}
    tag_concepts: dict[str, list[int]] = {}
    for cid, rows in members.items():
        if not rows:
            continue
        cnt = Counter(t for r in rows for t in tag_sets[r])
        best = sorted(((c, t) for t, c in cnt.items() if c >= theta * len(rows)), key=lambda ct: (-ct[0], ct[1]))
        if best:
            aligned[int(cid)] = best[0][1]
            for _, t in best:
                tag_concepts.setdefault(t, []).append(int(cid))
    covered = {t for t in tag_concepts if t in vocab}
    return AlignmentReport(tagset, theta, sum(1 for r in members.values() if r), len(aligned), len(vocab),
                           len(covered), aligned, tag_concepts)


def tags_from_points(cs: ConceptSet, tagset: str,
                     gold: Mapping[str, set[str]] | None = None) -> list[frozenset[str]] | None:
    """Per-occurrence tag sets for ``pos``, ``ner`` or ``gold``; None when the corpus has none."""
    if tagset == "pos":
        col = cs.column("pos")
        return None if not any(col) else [frozenset([p]) if p else frozenset() for p in col]
    if tagset == "ner":
        col = cs.column("ner")
        return None if not any(col) else [frozenset([e]) if e and e != "O" else frozenset() for e in col]
    if tagset == "gold":
        if gold is None:
            try:
                from tl_concepts.corpus import gold_word_categories
            except ImportError:
                return None
            gold = gold_word_categories()
        by_word: dict[str, set[str]] = {}
        for cat, words in gold.items():
            for w in words:
                by_word.setdefault(w.lower(), set()).add(cat)
        return [frozenset(by_word.get(_strip(t).lower(), ())) for t in cs.column("text")]
    raise ConfigError(f"unknown tagset {tagset!r}; use pos, ner or gold")


def _strip(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word)


def alignment_reports(cs: ConceptSet, *, theta: float = 0.9, tagsets: Sequence[str] = ("pos", "ner", "gold"),
                      gold: Mapping[str, set[str]] | None = None, min_tag_count: int = 1) -> dict[str, AlignmentReport]:
    """:func:`alignment` for every tagset the corpus has (untagged ones are left out)."""
    members = {c: [int(r) for r in rows] for c, rows in _members(cs).items()}
    out = {}
    for ts in tagsets:
        tags = tags_from_points(cs, ts, gold)
        if tags is not None and any(tags):
            out[ts] = alignment(members, tags, theta=theta, min_tag_count=min_tag_count, tagset=ts)
    return out


def _members(cs: ConceptSet) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for row, node in enumerate(cs.assignment.tolist()):
        out.setdefault(int(node), []).append(row)
    return out


# -- LLM judge ---------------------------------------------------------------------------
@dataclass
class Judgement:
    """One judged label."""

    concept_id: int
    """The concept judged."""
    label: str
    """The label judged."""
    acceptable: bool | None
    """Does the label describe what most words share? None when the judge gave no verdict."""
    precise: bool | None
    """Acceptable and specific to the group (never True for an unacceptable label)."""
    raw: str | None
    """The judge's chat answer (fallback path only)."""
    model: str = ""
    """The judge model."""
    failure: str = ""
    """Why there is no verdict (a failure kind), else empty."""
    p_acceptable: float | None = None
    """P(yes) / (P(yes) + P(no)) of the next token after the acceptability question."""
    p_precise: float | None = None
    """The same for the precision question."""
    method: str = ""
    """How the verdict was read: the distribution method (``logits``, ``prompt_logprobs``,
    ``chat_top_logprobs``) or ``chat`` (the chat answer parsed, because the LLM gave no
    next-token distributions)."""


@dataclass
class JudgeReport:
    """Label quality as rated by an LLM judge."""

    n_labels: int
    """Labels sent to the judge (accepted labels only; the others are counted apart)."""
    n_judged: int
    """Labels with a verdict."""
    n_acceptable: int
    n_precise: int
    """Acceptable and precise."""
    n_failed: int
    """Judge calls that failed or were unparseable."""
    n_refused_labels: int = 0
    """Concepts whose labelling was refused / filtered (not judged)."""
    judgements: list[Judgement] = field(default_factory=list)
    n_rejected_labels: int = 0
    """Concepts whose label the gate rejected (not judged)."""
    methods: dict[str, int] = field(default_factory=dict)
    """How many verdicts were read each way (see :attr:`Judgement.method`)."""

    @property
    def acceptable_rate(self) -> float:
        return self.n_acceptable / self.n_judged if self.n_judged else 0.0

    @property
    def precise_rate(self) -> float:
        """Precise among acceptable."""
        return self.n_precise / self.n_acceptable if self.n_acceptable else 0.0

    @property
    def mean_p_acceptable(self) -> float | None:
        """Mean P(yes) of the acceptability question over the distribution verdicts."""
        ps = [j.p_acceptable for j in self.judgements if j.p_acceptable is not None]
        return sum(ps) / len(ps) if ps else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(acceptable_rate=self.acceptable_rate, precise_rate=self.precise_rate,
                 mean_p_acceptable=self.mean_p_acceptable)
        return d

    def describe(self) -> str:
        how = ", ".join(f"{n} from {'parsed chat answers (no next-token distributions)' if m == 'chat' else m + ' P(yes)'}"
                        for m, n in sorted(self.methods.items()))
        mp = self.mean_p_acceptable
        return (f"judge: {self.n_acceptable}/{self.n_judged} acceptable ({self.acceptable_rate:.1%}), "
                f"{self.n_precise}/{self.n_acceptable} of those precise ({self.precise_rate:.1%})"
                + (f", mean P(acceptable) {mp:.2f}" if mp is not None else "")
                + f"; {self.n_failed} judge failures, {self.n_refused_labels} refused and "
                f"{self.n_rejected_labels} rejected labels not judged" + (f"; verdicts: {how}" if how else ""))


YES = ("Yes", "yes", " Yes", " yes")
NO = ("No", "no", " No", " no")
DISTRIBUTION_METHODS = frozenset({"logits", "prompt_logprobs", "chat_top_logprobs"})
"""Distribution methods a verdict is read from (``json``, numbers asked as text, is not one)."""


def prompt_text(llm: LLM, messages: Sequence[Message]) -> str:
    """The plain prompt for next-token questions: the backend's chat template when it has one
    (the in-process backend), else a ``Role: text`` layout ending in ``Assistant:``."""
    render = getattr(llm, "render_chat", None)
    if callable(render):
        return render(list(messages))
    return "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in messages) + "\n\nAssistant:"


async def ayes_probability(llm: LLM, messages: Sequence[Message], *, stage: str = "concepts.judge"
                           ) -> tuple[float | None, str, str]:
    """(P(yes) / (P(yes) + P(no)), method, failure kind) of the answer's first token.

    Yes and no are each summed over their spellings (``Yes``, ``yes``, with and without a
    leading space). A failed call, the ``json`` fallback or zero mass gives ``(None, method,
    kind)``.
    """
    prompt = prompt_text(llm, messages)
    dist = await llm.anext_token_distributions(prompt, [len(prompt)], [*YES, *NO], stage=stage)
    if not dist.ok or dist.probs is None:
        return None, "", dist.failure.kind if dist.failure else "error"
    if dist.method not in DISTRIBUTION_METHODS:
        return None, str(dist.method), "no_logprobs"
    row = dist.probs[0]
    py, pn = sum(row.get(c, 0.0) for c in YES), sum(row.get(c, 0.0) for c in NO)
    if py + pn <= 0:
        return None, str(dist.method), "no_mass"
    return py / (py + pn), str(dist.method), ""


async def ajudge_labels(cs: ConceptSet, labels: Sequence[ConceptLabel], judge: LLM, *, n_context: int = 0,
                        batch_size: int = 16) -> JudgeReport:
    """Awaitable :func:`judge_labels`."""
    usable = [lab for lab in labels if lab.accepted]
    refused = sum(1 for lab in labels if lab.status in ("refusal", "content_filter"))
    rejected = sum(1 for lab in labels if lab.status == "rejected")

    async def by_chat(lab: ConceptLabel, words: list[str], ctx: list[tuple[str, str]]) -> Judgement:
        res = await judge.achat(render_judge(words, lab.label or "", ctx), temperature=0.0,
                                max_tokens=48, json_output=True, stage="concepts.judge")
        text = res.text if res.ok else (res.failure.raw if res.failure and res.failure.kind == "unparseable" else None)
        if text is None:
            return Judgement(lab.concept_id, lab.label or "", None, None, None, res.model,
                             res.failure.kind if res.failure else "error", method="chat")
        # the layer's JSON check failed: the raw answer may still say yes/no in words
        verdict = parse_judge(text)
        if verdict is None:
            return Judgement(lab.concept_id, lab.label or "", None, None, text, res.model, "unparseable",
                             method="chat")
        return Judgement(lab.concept_id, lab.label or "", verdict[0], verdict[1], text, res.model, method="chat")

    async def one(lab: ConceptLabel) -> Judgement:
        c = cs.concept(lab.concept_id)
        ctx = cs.contexts(c, n_context) if n_context else []
        (pa, method, fail), (pp, _, _) = await asyncio.gather(
            ayes_probability(judge, render_judge_question(c.words, lab.label or "", "acceptable", ctx)),
            ayes_probability(judge, render_judge_question(c.words, lab.label or "", "precise", ctx)))
        if pa is None:  # no distributions from this LLM: read the chat answer instead
            return await by_chat(lab, c.words, ctx)
        acceptable = pa > 0.5
        precise = bool(acceptable and pp is not None and pp > 0.5)
        return Judgement(lab.concept_id, lab.label or "", acceptable, precise, None, getattr(judge, "model", ""),
                         p_acceptable=pa, p_precise=pp, method=method)

    js: list[Judgement] = []
    for s in range(0, len(usable), batch_size):
        js.extend(await asyncio.gather(*(one(lab) for lab in usable[s:s + batch_size])))
    ok = [j for j in js if j.acceptable is not None]
    methods = dict(Counter(j.method for j in ok))
    return JudgeReport(len(usable), len(ok), sum(bool(j.acceptable) for j in ok), sum(bool(j.precise) for j in ok),
                       len(js) - len(ok), refused, js, rejected, methods)


def judge_labels(cs: ConceptSet, labels: Sequence[ConceptLabel], judge: LLM, *, n_context: int = 0,
                 batch_size: int = 16) -> JudgeReport:
    """Rate every accepted label acceptable/unacceptable and precise/imprecise.

    The judge answers two yes/no questions; the verdict is read from the next-token
    distribution (P(yes) vs P(no)), so even a small model gives a verdict and a probability.
    An LLM without distributions is asked for a JSON answer instead (``method="chat"``).
    Works inside a running event loop.

    Example:
        >>> rep = judge_labels(cs, labels, get_llm("in-process"))          # doctest: +SKIP
        >>> print(rep.describe())                                          # doctest: +SKIP
    """
    return run_sync(ajudge_labels(cs, labels, judge, n_context=n_context, batch_size=batch_size))


# -- agreement between two runs -----------------------------------------------------------
@dataclass
class AgreementReport:
    """Agreement between two labellings of the same concepts."""

    n_common: int
    """Concepts with a usable label in both runs."""
    n_exact: int
    """Identical after normalising (case, punctuation, spaces)."""
    mean_jaccard: float
    """Mean word-set Jaccard similarity."""
    kappa: float
    """Cohen's kappa over the normalised labels (categorical agreement)."""
    n_llm_same: int | None = None
    """Pairs an LLM judged to name the same concept (None when no judge was given)."""
    n_llm_judged: int | None = None

    @property
    def exact_rate(self) -> float:
        return self.n_exact / self.n_common if self.n_common else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exact_rate"] = self.exact_rate
        return d


def normalise_label(label: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s$]", " ", label.lower()).split())


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two equally long label sequences (1.0 when both are constant and equal)."""
    n = len(a)
    if n == 0:
        return 0.0
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def label_agreement(a: Sequence[ConceptLabel], b: Sequence[ConceptLabel], *, judge: LLM | None = None,
                    cs: ConceptSet | None = None) -> AgreementReport:
    """Compare two labellings concept by concept (only concepts labelled ``ok`` in both).

    Example:
        >>> from tl_concepts.concepts.model import ConceptLabel as L
        >>> x = [L(1, "Verbs", "ok", "t", "v1"), L(2, "colours", "ok", "t", "v1")]
        >>> y = [L(1, "verbs.", "ok", "t", "v1"), L(2, "animals", "ok", "t", "v1")]
        >>> r = label_agreement(x, y); (r.n_common, r.n_exact)
        (2, 1)
    """
    la = {x.concept_id: x.label for x in a if x.accepted and x.label is not None}
    lb = {x.concept_id: x.label for x in b if x.accepted and x.label is not None}
    common = sorted(set(la) & set(lb))
    na = [normalise_label(la[i]) for i in common]
    nb = [normalise_label(lb[i]) for i in common]
    jac = [len(set(x.split()) & set(y.split())) / max(len(set(x.split()) | set(y.split())), 1)
           for x, y in zip(na, nb)]
    rep = AgreementReport(len(common), sum(x == y for x, y in zip(na, nb)),
                          sum(jac) / len(jac) if jac else 0.0, cohen_kappa(na, nb))
    if judge is not None:
        if cs is None:
            raise ConfigError("an LLM agreement judge needs the ConceptSet (cs=) to show the words")

        async def run() -> list[bool | None]:
            async def one(i: int) -> bool | None:
                res = await judge.achat(render_agree(cs.concept(i).words, la[i], lb[i]), max_tokens=16,
                                        json_output=True, stage="concepts.agree")
                return parse_agree(res.text or "") if res.ok else None
            return list(await asyncio.gather(*(one(i) for i in common)))

        verdicts = [v for v in run_sync(run()) if v is not None]
        rep.n_llm_same, rep.n_llm_judged = sum(verdicts), len(verdicts)
    return rep
