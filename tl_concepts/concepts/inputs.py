"""What concept discovery reads: word-level representations plus the word table.

:class:`ConceptInput` is the plain-array form the whole ``concepts`` package works on;
:func:`from_store` builds one from a capture store at one hook.

Example:
    >>> import numpy as np
    >>> inp = ConceptInput(
    ...     representations=np.zeros((2, 3), dtype=np.float32),
    ...     words={"word_id": [0, 1], "sentence": [0, 0], "index": [0, 1], "text": ["a", "b"]},
    ...     sentences=["a b"], layer=0)
    >>> inp.n_points, inp.dim
    (2, 3)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from tl_concepts.hooks import hook_name, layer_of

WORD_COLUMNS = ("word_id", "doc", "sentence", "index", "text", "pos", "ner")
"""Columns of the word table (``doc``, ``pos`` and ``ner`` are optional)."""
REQUIRED_COLUMNS = ("word_id", "sentence", "index", "text")


class ConceptInputError(ValueError):
    """The input to concept discovery is unusable; the message says what to fix."""


@dataclass
class ConceptInput:
    """Contextual word representations at one layer and the words they belong to."""

    representations: np.ndarray
    """[n_words, d] float array, row i is the representation of word occurrence i."""
    words: dict[str, list[Any]]
    """Equal-length columns (see :data:`WORD_COLUMNS`): ``word_id``, ``sentence`` (global
    sentence id), ``index`` (word position in its sentence), ``text``; optionally ``doc``,
    ``pos`` (Penn tag, "" when untagged) and ``ner`` (entity type, "" for none)."""
    sentences: list[str] = field(default_factory=list)
    """Sentence texts by global sentence id (may be empty when unknown)."""
    layer: int = -1
    """Block index L the representations come from (-1 when unknown)."""
    hook: str = ""
    """Hook name the representations come from."""
    n_uncaptured: int = 0
    """Words of the slice left out because the capture has no representation for them."""

    def __post_init__(self) -> None:
        self.representations = np.asarray(self.representations)
        self.words = {k: list(v) for k, v in self.words.items()}
        validate(self)

    @property
    def n_points(self) -> int:
        """Number of word occurrences."""
        return int(self.representations.shape[0])

    @property
    def dim(self) -> int:
        """Representation width d."""
        return int(self.representations.shape[1])

    def column(self, name: str, default: Any = "") -> list[Any]:
        """A word-table column, or ``default`` repeated when the column is absent."""
        if name in self.words:
            return self.words[name]
        return [default] * self.n_points

    def subset(self, rows: Sequence[int] | np.ndarray) -> "ConceptInput":
        """The input restricted to ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return ConceptInput(
            representations=self.representations[rows],
            words={k: [v[i] for i in rows] for k, v in self.words.items()},
            sentences=self.sentences, layer=self.layer, hook=self.hook)


def validate(inp: ConceptInput) -> None:
    """Raise :class:`ConceptInputError` on empty, ragged or non-finite input."""
    x = inp.representations
    if x.ndim != 2:
        raise ConceptInputError(f"representations must be 2-D [n_words, d]; got shape {x.shape}")
    if x.shape[0] == 0:
        raise ConceptInputError(
            "the corpus slice is empty: no word representations were given "
            "(check the store's corpus, the hook name and any document/sentence selection)")
    if x.shape[1] == 0:
        raise ConceptInputError("representations have width 0")
    if not np.issubdtype(x.dtype, np.floating):
        raise ConceptInputError(f"representations must be floating point; got {x.dtype}")
    missing = [c for c in REQUIRED_COLUMNS if c not in inp.words]
    if missing:
        raise ConceptInputError(f"word table lacks column(s) {missing}; it needs {list(REQUIRED_COLUMNS)}")
    for name, col in inp.words.items():
        if len(col) != x.shape[0]:
            raise ConceptInputError(
                f"word column {name!r} has {len(col)} rows but there are {x.shape[0]} representations")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ConceptInputError(
            f"{len(rows)} word representation(s) contain NaN or inf (first rows: {rows[:5].tolist()}); "
            "recapture the activations (e.g. in float32 instead of float16) or drop those words")


def _layer_or_minus_one(hook: str) -> int:
    layer = layer_of(hook)
    return -1 if layer is None else layer


def from_store(store: Any, hook: str | None = None, *, layer: int | None = None,
               agg: str = "mean", sentences: Sequence[int] | None = None) -> ConceptInput:
    """Build a :class:`ConceptInput` from an ``ActivationStore`` at one hook.

    Give ``hook`` (a name in ``store.hooks``) or ``layer`` (picks
    ``blocks.{layer}.hook_resid_post`` when present, else the only hook of that block).
    ``sentences`` keeps only those global sentence ids (a corpus slice).

    Example:
        >>> from tl_concepts.capture import ActivationStore          # doctest: +SKIP
        >>> inp = from_store(ActivationStore.open("runs/x"), layer=3)  # doctest: +SKIP
    """
    hooks = list(getattr(store, "hooks", []))
    if hook is None:
        if layer is None:
            raise ConceptInputError("give a hook name or a layer")
        preferred = hook_name(int(layer), "resid_post")
        candidates = [h for h in hooks if layer_of(h) == layer]
        if preferred in hooks:
            hook = preferred
        elif len(candidates) == 1:
            hook = candidates[0]
        else:
            raise ConceptInputError(
                f"layer {layer}: the store has hooks {candidates or hooks}; pass hook= to pick one")
    if hooks and hook not in hooks:
        raise ConceptInputError(f"hook {hook!r} is not in the store; it has {hooks}")
    words = {k: list(v) for k, v in store.words().items()}
    reps = np.asarray(store.word_representations(hook, agg=agg))
    inp_layer = _layer_or_minus_one(hook) if layer is None else layer
    n = reps.shape[0]
    for name, col in words.items():
        if len(col) != n:
            raise ConceptInputError(
                f"store mismatch: words()[{name!r}] has {len(col)} rows, representations at {hook} have {n}")
    keep = np.ones(n, dtype=bool)
    if sentences is not None:
        keep_s = set(int(s) for s in sentences)
        keep &= np.array([int(s) in keep_s for s in words["sentence"]], dtype=bool)
        if not keep.any():
            raise ConceptInputError(
                f"the corpus slice is empty: none of the {len(keep_s)} selected sentence ids has words")
    # words the capture never reached (an early-stopped pass) come back as all-NaN rows
    uncaptured = np.isnan(reps).all(axis=1) if n else np.zeros(0, dtype=bool)
    n_uncaptured = int((uncaptured & keep).sum())
    keep &= ~uncaptured
    if n and not keep.any():
        raise ConceptInputError(
            f"the corpus slice is empty: none of its words has a representation at {hook} "
            "(was the capture stopped before reaching them?)")
    if not keep.all():
        rows = np.flatnonzero(keep)
        reps = reps[rows]
        words = {k: [v[i] for i in rows] for k, v in words.items()}
    inp = ConceptInput(representations=reps, words=words, sentences=list(store.sentence_texts()),
                       layer=inp_layer, hook=hook)
    inp.n_uncaptured = n_uncaptured
    return inp


def check_same_dim(inputs: Mapping[str, ConceptInput] | Sequence[ConceptInput]) -> int:
    """Check several layers' inputs have the same width; return it.

    Raises :class:`ConceptInputError` naming the layers when the widths differ (e.g. a
    residual hook mixed with an MLP hook).
    """
    items = list(inputs.items()) if isinstance(inputs, Mapping) else [(i.hook or str(i.layer), i) for i in inputs]
    dims = {name: inp.dim for name, inp in items}
    if len(set(dims.values())) > 1:
        raise ConceptInputError(
            f"mismatched dimensions between layers: {dims}; cluster each hook separately "
            "or use hooks of the same kind (e.g. all hook_resid_post)")
    return next(iter(dims.values()))
