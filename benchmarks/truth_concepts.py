"""Planted concepts: can the LLM name word groups whose meaning we know?

Each planted concept is one gold word category of gensim's ``questions-words.txt``
(capital cities, countries, currencies, nationalities, past-tense verbs, plural nouns, ...),
made of that category's words where they occur in the Lee news corpus (each occurrence with
its sentence, as a concept found by clustering would be). Every concept is labelled by the
LLM through the real labelling path (prompt template, label gate); a label counts as correct
when its nearest category name, by cosine similarity of MiniLM sentence embeddings (the
embedded all-MiniLM-L6-v2), is the concept's true category.

Printed per prompt template: accepted / rejected (with reasons) / failed counts, and label
accuracy = correct accepted labels / accepted labels (and / all concepts).

    .venv/bin/python benchmarks/truth_concepts.py --llm in-process        # embedded SmolLM2, ~1-3 min
    .venv/bin/python benchmarks/truth_concepts.py --llm openai:gpt-4o-mini --templates label-general

From Python (another benchmark can call it)::

    from benchmarks.truth_concepts import planted_concept_accuracy
    res = planted_concept_accuracy(llm, ["label-general", "label-fewshot"])
"""
from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from tl_concepts.concepts.labelling import LabelOptions, label_concepts
from tl_concepts.concepts.model import ConceptLabel, ConceptSet

CATEGORY_NAMES: dict[str, tuple[str, ...]] = {
    "capital cities": ("capital-common-countries:a", "capital-world:a"),
    "countries": ("capital-common-countries:b", "capital-world:b", "currency:a"),
    "currencies": ("currency:b",),
    "American cities": ("city-in-state:a",),
    "American states": ("city-in-state:b",),
    "male relatives": ("family:a",),
    "female relatives": ("family:b",),
    "adverbs": ("gram1-adjective-to-adverb:b",),
    "comparative adjectives": ("gram3-comparative:b",),
    "superlative adjectives": ("gram4-superlative:b",),
    "verbs ending in -ing": ("gram5-present-participle:b",),
    "nationalities": ("gram6-nationality-adjective:b",),
    "past tense verbs": ("gram7-past-tense:b",),
    "plural nouns": ("gram8-plural:b",),
    "verbs in third person singular": ("gram9-plural-verbs:b",),
}
"""Planted concept name -> the ``questions-words.txt`` classes it is made of."""


@dataclass
class TemplateResult:
    """Label accuracy of one prompt template on the planted concepts."""

    template: str
    """Template name."""
    n_concepts: int
    """Planted concepts labelled."""
    n_accepted: int
    """Labels that passed the gate."""
    n_correct: int
    """Accepted labels whose nearest category name is the true one."""
    statuses: dict[str, int] = field(default_factory=dict)
    """Count per label status."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Count per reason of the labels not accepted."""
    examples: list[tuple[str, str, str]] = field(default_factory=list)
    """(true category, status, label or raw answer) per concept."""
    seconds: float = 0.0
    """Wall time of the labelling."""

    @property
    def accuracy(self) -> float:
        """Correct / accepted (0 when nothing was accepted)."""
        return self.n_correct / self.n_accepted if self.n_accepted else 0.0

    @property
    def recall(self) -> float:
        """Correct / all planted concepts."""
        return self.n_correct / self.n_concepts if self.n_concepts else 0.0

    def describe(self) -> str:
        rest = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        return (f"{self.template:14s} accepted {self.n_accepted}/{self.n_concepts}"
                + (f" (not accepted: {rest})" if rest else "")
                + f"; label accuracy {self.n_correct}/{self.n_accepted} = {self.accuracy:.1%} of accepted, "
                f"{self.recall:.1%} of all concepts ({self.seconds:.0f} s)")


def _strip(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word).lower()


def planted_concepts(min_types: int = 3, max_per_type: int = 3, max_occurrences: int = 30) -> ConceptSet:
    """The planted concepts over the Lee corpus as a flat :class:`ConceptSet` (one concept per
    entry of :data:`CATEGORY_NAMES` with at least ``min_types`` of its words in the corpus;
    a word in two categories is left out). ``meta["truth"]`` maps concept id -> category."""
    from tl_concepts.corpus import gold_word_categories, lee_corpus

    gold = gold_word_categories()
    words_of = {name: set().union(*(gold[s] for s in secs)) for name, secs in CATEGORY_NAMES.items()}
    owners = Counter(w for ws in words_of.values() for w in ws)
    cat_of = {w: name for name, ws in words_of.items() for w in ws if owners[w] == 1}
    corpus = lee_corpus()
    occ: dict[str, list[tuple[int, int, str]]] = {name: [] for name in CATEGORY_NAMES}
    per_type: Counter[str] = Counter()
    sentences = []
    for s, sent in enumerate(corpus.sentences):
        sentences.append(" ".join(sent.words))
        for i, w in enumerate(sent.words):
            key = _strip(w)
            if key in cat_of and per_type[key] < max_per_type:
                per_type[key] += 1
                occ[cat_of[key]].append((s, i, w))
    pts: dict[str, list[Any]] = {"word_id": [], "sentence": [], "index": [], "text": []}
    assign, truth = [], {}
    for cid, (name, members) in enumerate((n, m) for n, m in occ.items()
                                          if len({_strip(w) for _, _, w in m}) >= min_types):
        truth[cid] = name
        for s, i, w in members[:max_occurrences]:
            pts["word_id"].append(len(pts["text"]))
            pts["sentence"].append(s)
            pts["index"].append(i)
            pts["text"].append(_strip(w) if w[:1].islower() else re.sub(r"^\W+|\W+$", "", w))
            assign.append(cid)
    return ConceptSet(pts, k=0, assignment=np.asarray(assign), sentences=sentences, layer=0,
                      meta={"truth": truth, "source": "planted: questions-words.txt categories in Lee contexts"})


def minilm_embedder() -> Callable[[Sequence[str]], np.ndarray]:
    """Unit-norm MiniLM sentence embeddings (the embedded all-MiniLM-L6-v2)."""
    from tl_concepts.descriptors.embed import MiniLMEmbedder

    return MiniLMEmbedder()


def nearest_category(labels: Sequence[str], names: Sequence[str],
                     embed: Callable[[Sequence[str]], np.ndarray]) -> list[str]:
    """For each label, the category name with the highest cosine similarity."""
    if not labels:
        return []
    sims = embed(list(labels)) @ embed(list(names)).T
    return [names[int(j)] for j in sims.argmax(axis=1)]


def planted_concept_accuracy(llm: Any, templates: Sequence[str] = ("label-general", "label-fewshot"), *,
                             words_as: str = "types", n_context: int = 0, concepts: ConceptSet | None = None,
                             embed: Callable[[Sequence[str]], np.ndarray] | None = None,
                             progress: bool = False) -> dict[str, TemplateResult]:
    """Label the planted concepts with each template; return accuracy per template.

    Example:
        >>> from tl_concepts.llm import get_llm                                   # doctest: +SKIP
        >>> res = planted_concept_accuracy(get_llm("in-process"))                # doctest: +SKIP
        >>> print(res["label-fewshot"].describe())                               # doctest: +SKIP
    """
    cs = concepts if concepts is not None else planted_concepts()
    truth: dict[int, str] = {int(k): v for k, v in cs.meta["truth"].items()}
    names = sorted(set(truth.values()))
    embed = embed or minilm_embedder()
    out = {}
    for tpl in templates:
        t0 = time.time()
        labels: list[ConceptLabel] = label_concepts(cs, llm, None, LabelOptions(template=tpl, words_as=words_as,
                                                                                n_context=n_context),
                                                    progress=progress)
        secs = time.time() - t0
        acc = [lab for lab in labels if lab.accepted]
        guess = nearest_category([lab.label or "" for lab in acc], names, embed)
        correct = sum(g == truth[lab.concept_id] for lab, g in zip(acc, guess))
        out[tpl] = TemplateResult(
            tpl, len(labels), len(acc), correct, dict(Counter(lab.status for lab in labels)),
            dict(Counter(lab.reason or lab.status for lab in labels if not lab.accepted)),
            [(truth[lab.concept_id], lab.status, lab.label if lab.accepted else (lab.raw or "")) for lab in labels],
            secs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="in-process", help="LLM spec for tl_concepts.llm.get_llm")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--templates", nargs="+", default=["label-general", "label-fewshot"])
    ap.add_argument("--words-as", choices=["tokens", "types"], default="types")
    ap.add_argument("--context", type=int, default=0, help="context sentences per concept")
    ap.add_argument("--show", action="store_true", help="print every concept's label")
    args = ap.parse_args()
    from tl_concepts.llm import get_llm

    llm = get_llm(args.llm, cache=False, **({"base_url": args.base_url} if args.base_url else {}))
    cs = planted_concepts()
    truth = cs.meta["truth"]
    print(f"{len(truth)} planted concepts, {cs.n_points} occurrences: " + ", ".join(sorted(truth.values())))
    res = planted_concept_accuracy(llm, args.templates, words_as=args.words_as, n_context=args.context,
                                   concepts=cs)
    print(f"LLM: {args.llm} ({getattr(llm, 'model', '')}); words as {args.words_as}, {args.context} context sentences")
    for r in res.values():
        print(r.describe())
        if args.show:
            for cat, status, text in r.examples:
                print(f"    {cat:32s} {status:9s} {text!r}")


if __name__ == "__main__":
    main()
