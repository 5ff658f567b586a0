"""Units beyond stored neurons: records from any activation array, any direction.

* :func:`records_from_array`: an ``[n_contexts, ctx_len]`` activation array (one unit) and
  the token strings of every context -> :class:`UnitRecords` with disjoint splits.
* :func:`project`: activations ``[n_tokens, d]`` onto a direction vector, or through an
  encoder function (e.g. an SAE latent) -> ``[n_tokens]``.
* :func:`records_for_direction`: the same from an ``ActivationStore`` (``store.activations(hook)``
  and ``store.contexts()``).
* :func:`model_activations`: a live TransformerLens model (``run_with_cache`` with a names
  filter) -> ``[n_contexts, ctx_len, d]`` plus the token strings, for MLP neurons,
  residual-stream dimensions or directions without writing a store.

Splitting: contexts are ranked by their largest activation; the ``n_top`` strongest are
dealt round-robin to train / calibration / test (so each split sees strong and weaker top
contexts), then random contexts are drawn without replacement from the rest. No context
is in two splits. A unit with fewer than ``min_activating`` contexts whose max is > 0 is
still returned; :func:`n_activating` lets the runner report it.

Example:
    >>> import numpy as np
    >>> acts = np.zeros((30, 4)); acts[:9, 1] = np.arange(9, 0, -1)
    >>> toks = [["a", "b", "c", "d"]] * 30
    >>> u = records_from_array(acts, toks, hook="h", unit=0, n_top=9, n_random=6)
    >>> len(u.train_top), len(u.test_top), len(u.test_random), u.max_activation
    (3, 3, 2, 9.0)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from tl_concepts.capture.records import ActivationRecord, UnitRecords

Direction = np.ndarray | Sequence[float] | Callable[[np.ndarray], np.ndarray]


def records_from_array(
    activations: np.ndarray,
    tokens: Sequence[Sequence[str]],
    *,
    hook: str,
    unit: int,
    n_top: int = 30,
    n_random: int = 30,
    split: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
    seed: int = 0,
    starts: Sequence[int] | None = None,
) -> UnitRecords:
    """Mine disjoint train / calibration / test records of one unit.

    Args:
        activations: ``[n_contexts, ctx_len]`` (rows may be padded; only ``len(tokens[i])``
            values of row ``i`` are used) or a list of 1-D arrays.
        tokens: token strings of each context.
        hook, unit: recorded in the result.
        n_top: top-activating contexts in all (dealt over the splits in proportion).
        n_random: random contexts in all (from contexts not among the top ones).
        split: fractions for train, calibration, test.
        seed: random selection seed.
        starts: optional token-table row of each context (kept in records).
    """
    n = len(tokens)
    rows = [np.asarray(activations[i], dtype=np.float64)[: len(tokens[i])] for i in range(n)]
    maxes = np.array([r.max() if r.size else -np.inf for r in rows])
    order = [int(i) for i in np.argsort(-maxes, kind="stable")]
    top = [i for i in order[: min(n_top, n)] if maxes[i] > 0]
    rest = sorted(set(range(n)) - set(top))
    rng = np.random.default_rng(seed)
    rand = [int(i) for i in rng.permutation(rest)[: min(n_random, len(rest))]]

    def rec(i: int) -> ActivationRecord:
        return ActivationRecord(list(tokens[i]), [float(v) for v in rows[i]],
                                doc=i, start=int(starts[i]) if starts is not None else -1)

    def deal_round_robin(idx: list[int]) -> list[list[int]]:
        # Repeat the split pattern so that e.g. (1/3,1/3,1/3) deals train, cal, test, train...
        weights = np.asarray(split, dtype=np.float64) / float(sum(split))
        out: list[list[int]] = [[], [], []]
        for k, i in enumerate(idx):
            # pick the split furthest below its target share after k items
            deficit = weights * (k + 1) - np.array([len(o) for o in out])
            out[int(np.argmax(deficit))].append(i)
        return out

    def deal_blocks(idx: list[int]) -> list[list[int]]:
        weights = np.asarray(split, dtype=np.float64) / float(sum(split))
        cuts = np.round(np.cumsum(weights) * len(idx)).astype(int)
        return [idx[: cuts[0]], idx[cuts[0]: cuts[1]], idx[cuts[1]:]]

    t = deal_round_robin(top)
    r = deal_blocks(rand)
    m = float(maxes.max()) if n and np.isfinite(maxes.max()) else 0.0
    return UnitRecords(
        hook=hook, unit=unit,
        train_top=[rec(i) for i in t[0]], calibration_top=[rec(i) for i in t[1]], test_top=[rec(i) for i in t[2]],
        train_random=[rec(i) for i in r[0]], calibration_random=[rec(i) for i in r[1]],
        test_random=[rec(i) for i in r[2]],
        max_activation=max(m, 0.0), n_contexts=n,
    )


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
    unit: int = -1,
    **kw: Any,
) -> UnitRecords:
    """Records of a direction (vector or encoder) over a stored hook point.

    Works with :class:`tl_concepts.capture.ActivationStore` (``activations(hook)``,
    ``n_windows``, ``context_rows(i)``, ``context_tokens(i)``) or any object with
    ``activations(hook)`` ``[n_tokens, d]`` and ``contexts()`` (token strings per context,
    laid end to end in that order). ``unit`` labels the
    direction in outputs (``-1`` by default). Other arguments go to :func:`records_from_array`.
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
    return records_from_array(rows, contexts, hook=hook, unit=unit, starts=starts, **kw)


def model_activations(
    model: Any,
    texts: Sequence[str],
    hook: str,
    *,
    ctx_len: int = 64,
    batch_size: int = 8,
) -> tuple[np.ndarray, list[list[str]]]:
    """Run a live TransformerLens model (``HookedTransformer`` or ``TransformerBridge``) and
    return ``(activations [n_contexts, ctx_len, d], token strings per context)``.

    Each text is tokenised (with the model's BOS when it adds one), cut to ``ctx_len``
    tokens; shorter contexts are padded and their padding is not returned in the token
    lists (so :func:`records_from_array` ignores it).
    """
    import torch

    all_toks: list[list[str]] = []
    chunks: list[np.ndarray] = []
    for i in range(0, len(texts), batch_size):
        batch = list(texts[i:i + batch_size])
        ids = [model.to_tokens(t)[0, :ctx_len] for t in batch]
        width = max(len(x) for x in ids)
        pad = getattr(getattr(model, "tokenizer", None), "pad_token_id", None) or 0
        mat = torch.full((len(ids), width), int(pad), dtype=torch.long)
        for j, x in enumerate(ids):
            mat[j, : len(x)] = x
        with torch.no_grad():
            _, cache = model.run_with_cache(mat, names_filter=lambda n: n == hook)
        acts = cache[hook].float().cpu().numpy()
        for j, x in enumerate(ids):
            all_toks.append([str(t) for t in model.to_str_tokens(x)])
            row = np.zeros((ctx_len, acts.shape[-1]), dtype=np.float32)
            row[: len(x)] = acts[j, : len(x)]
            chunks.append(row)
    return np.stack(chunks), all_toks


def unit_records_from_model(
    model: Any,
    texts: Sequence[str],
    hook: str,
    units: Sequence[int] | None = None,
    *,
    direction: Direction | None = None,
    ctx_len: int = 64,
    **kw: Any,
) -> list[UnitRecords]:
    """Records for each neuron / dimension in ``units`` (or one ``direction``) at ``hook``
    of a live model over ``texts``. Other arguments go to :func:`records_from_array`."""
    acts, toks = model_activations(model, texts, hook, ctx_len=ctx_len)
    if direction is not None:
        flat = acts.reshape(-1, acts.shape[-1])
        vals = project(flat, direction).reshape(acts.shape[0], acts.shape[1])
        return [records_from_array(vals, toks, hook=hook, unit=-1, **kw)]
    if units is None:
        raise ValueError("give units=[...] (neuron / dimension indices) or a direction")
    return [records_from_array(acts[:, :, u], toks, hook=hook, unit=int(u), **kw) for u in units]
