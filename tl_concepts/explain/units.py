"""Units beyond stored neurons, with the capture's exemplar rules for every path.

* :func:`records_from_array`: one unit's activations per context and the token strings of
  every context -> :class:`UnitRecords`, selected exactly as a capture selects them
  (:func:`tl_concepts.capture.exemplars.select_exemplars`: top contexts dealt over disjoint
  train / calibration / test splits, random, quantile and negative contexts, no context twice).
* :func:`project`: activations ``[n_tokens, d]`` onto a direction vector, or through an
  encoder function (e.g. an SAE latent) -> ``[n_tokens]``.
* :func:`records_for_direction`: a direction over a stored hook point.
* :func:`unit_records_from_model`: a live TransformerLens model, captured into a temporary
  store with :func:`tl_concepts.capture.capture` (contexts split at word boundaries, never
  cut), then read back: the same records a store gives.

A unit with fewer than ``min_activating`` contexts whose max is > 0 is still returned;
:func:`n_activating` lets the runner report it.

Example:
    >>> import numpy as np
    >>> from tl_concepts.capture import ExemplarConfig
    >>> acts = np.zeros((30, 4)); acts[:9, 1] = np.arange(9, 0, -1)
    >>> toks = [["a", "b", "c", "d"]] * 30
    >>> ex = ExemplarConfig(n_train_top=3, n_calibration_top=3, n_test_top=3, n_calibration_random=2, n_test_random=2)
    >>> u = records_from_array(acts, toks, hook="h", unit=0, exemplars=ex)
    >>> len(u.train_top), len(u.test_top), len(u.test_random), u.max_activation
    (3, 3, 2, 9.0)
"""
from __future__ import annotations

import tempfile
from typing import Any, Callable, Sequence

import numpy as np

from tl_concepts.capture.exemplars import SPLITS, ExemplarConfig, select_exemplars
from tl_concepts.capture.records import ActivationRecord, UnitRecords

Direction = np.ndarray | Sequence[float] | Callable[[np.ndarray], np.ndarray]


def records_from_array(
    activations: np.ndarray | Sequence[np.ndarray],
    tokens: Sequence[Sequence[str]],
    *,
    hook: str,
    unit: int | str,
    exemplars: ExemplarConfig | None = None,
    starts: Sequence[int] | None = None,
) -> UnitRecords:
    """Mine one unit's records with the capture's rules (:func:`select_exemplars`).

    Args:
        activations: ``[n_contexts, ctx_len]`` (rows may be padded; only ``len(tokens[i])``
            values of row ``i`` are used) or a list of 1-D arrays.
        tokens: token strings of each context.
        hook, unit: recorded in the result.
        exemplars: how many contexts of each kind (default :class:`ExemplarConfig()`).
        starts: optional token-table row of each context (kept in records).
    """
    cfg = exemplars or ExemplarConfig()
    n = len(tokens)
    rows = [np.asarray(activations[i], dtype=np.float64)[: len(tokens[i])] for i in range(n)]
    bad = [i for i, r in enumerate(rows) if r.size and not np.isfinite(r).all()]
    if bad:
        raise ValueError(f"{hook} unit {unit}: non-finite activations in context {bad[0]} "
                         f"({len(bad)} contexts); fix or mask them before mining records")
    ctx_max = np.array([[r.max() if r.size else -np.inf] for r in rows]).reshape(n, 1)
    ctx_min = np.array([[r.min() if r.size else np.inf] for r in rows]).reshape(n, 1)
    sel = select_exemplars(ctx_max, ctx_min, cfg)

    def recs(ids: np.ndarray) -> list[ActivationRecord]:
        return [ActivationRecord(list(tokens[i]), [float(v) for v in rows[i]], doc=int(i),
                                 start=int(starts[i]) if starts is not None else -1)
                for i in (int(c) for c in np.asarray(ids).reshape(-1)) if i >= 0]

    m = float(ctx_max.max()) if n and np.isfinite(ctx_max.max()) else 0.0
    u = UnitRecords(hook=hook, unit=unit, **{name: recs(sel[name][0]) for name in SPLITS},  # type: ignore[arg-type]
                    negative=recs(sel["negative"][0]), max_activation=max(m, 0.0), n_contexts=n)
    u.quantile = {b: recs(sel["quantile"][0, b]) for b in range(sel["quantile"].shape[1])}
    return u


SPLIT_GROUPS = {"train": ("train_top", "train_random"), "calibration": ("calibration_top", "calibration_random"),
                "test": ("test_top", "test_random")}


def _context_key(r: ActivationRecord) -> tuple:
    return ("row", r.start) if r.start >= 0 else ("tokens", r.doc, tuple(r.tokens))


def split_overlaps(unit: UnitRecords) -> list[str]:
    """Pairs of splits (train / calibration / test) that share a context; empty when disjoint.

    A context is identified by its token-table row (``start``) when known, else by its
    document and tokens.

    Example:
        >>> r = ActivationRecord(["a"], [1.0], start=7)
        >>> split_overlaps(UnitRecords("h", 0, train_top=[r], test_random=[r]))
        ['train/test']
    """
    keys = {g: {_context_key(r) for k in ks for r in getattr(unit, k)} for g, ks in SPLIT_GROUPS.items()}
    names = list(keys)
    return [f"{a}/{b}" for i, a in enumerate(names) for b in names[i + 1:] if keys[a] & keys[b]]


def n_activating(unit: UnitRecords) -> int:
    """Number of distinct contexts among the unit's top records with a positive activation."""
    return sum(1 for r in unit.train_top + unit.calibration_top + unit.test_top if r.max_activation > 0)


def project(activations: np.ndarray, direction: Direction) -> np.ndarray:
    """``[n_tokens, d]`` -> ``[n_tokens]``: dot product with a vector, or ``direction(acts)``
    for an encoder function (e.g. ``lambda x: sae.encode(x)[:, 123]``)."""
    a = np.asarray(activations)
    if callable(direction):
        out = np.asarray(direction(a), dtype=np.float64).reshape(-1)
    else:
        v = np.asarray(direction, dtype=np.float64).reshape(-1)
        if v.shape[0] != a.shape[-1]:
            raise ValueError(f"direction has {v.shape[0]} dims but the activations have {a.shape[-1]}")
        out = a.astype(np.float64) @ v
    if out.shape[0] != a.shape[0]:
        raise ValueError(f"encoder returned {out.shape[0]} values for {a.shape[0]} tokens; return one per token")
    return out


def records_for_direction(
    store: Any,
    hook: str,
    direction: Direction,
    *,
    unit: int | str = -1,
    exemplars: ExemplarConfig | None = None,
) -> UnitRecords:
    """Records of a direction (vector or encoder) over a stored hook point.

    Works with :class:`tl_concepts.capture.ActivationStore` (``activations(hook)``,
    ``n_windows``, ``context_rows(i)``, ``context_tokens(i)``) or any object with
    ``activations(hook)`` ``[n_tokens, d]`` and ``contexts()`` (token strings per context,
    laid end to end in that order). ``unit`` labels the direction in outputs (``-1`` by
    default); ``exemplars`` as in :func:`records_from_array`.
    """
    values = project(np.asarray(store.activations(hook)), direction)
    if hasattr(store, "context_rows") and hasattr(store, "n_windows"):
        # tl_concepts.capture.ActivationStore: contexts are windows of the token table
        spans = [store.context_rows(i) for i in range(int(store.n_windows))]
        contexts = [list(store.context_tokens(i)) for i in range(int(store.n_windows))]
        starts = [int(sl.start) for sl in spans]
        rows = [values[sl] for sl in spans]
        if spans and spans[-1].stop > values.shape[0]:
            raise ValueError(f"{hook}: {values.shape[0]} activation rows but the contexts reach row {spans[-1].stop}")
    else:
        contexts = [list(c) for c in store.contexts()]
        total = sum(len(c) for c in contexts)
        if values.shape[0] != total:
            raise ValueError(f"{hook}: {values.shape[0]} activation rows but the contexts hold {total} tokens")
        offsets = np.cumsum([0] + [len(c) for c in contexts])
        starts = offsets[:-1].tolist()
        rows = [values[offsets[i]: offsets[i + 1]] for i in range(len(contexts))]
    return records_from_array(rows, contexts, hook=hook, unit=unit, starts=starts, exemplars=exemplars)


def unit_records_from_model(
    model: Any,
    texts: Sequence[str],
    hook: str,
    units: Sequence[int] | None = None,
    *,
    direction: Direction | None = None,
    context_tokens: int = 64,
    exemplars: ExemplarConfig | None = None,
    progress: bool = False,
) -> list[UnitRecords]:
    """Records for each neuron / dimension in ``units`` (or one ``direction``) at ``hook`` of
    a live model over ``texts``: captured into a temporary store (the same windows, tokens and
    exemplar rules as any capture), read into memory, and the store removed.

    Example:
        >>> recs = unit_records_from_model(model, texts, "blocks.0.mlp.hook_post", units=[0, 5])  # doctest: +SKIP
    """
    from tl_concepts.capture import ActivationStore, capture

    if direction is None and units is None:
        raise ValueError("give units=[...] (neuron / dimension indices) or a direction")
    with tempfile.TemporaryDirectory(prefix="tl-concepts-records-") as tmp:
        store = capture(model, list(texts), [hook], f"{tmp}/store", context_tokens=context_tokens,
                        exemplars=exemplars or ExemplarConfig(), progress=progress)
        if direction is not None:
            return [records_for_direction(ActivationStore.open(store.path), hook, direction, exemplars=exemplars)]
        return [store.unit_records(hook, int(u)) for u in units or []]
