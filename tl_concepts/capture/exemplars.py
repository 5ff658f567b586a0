"""Exemplar selection for every unit from per-context activation summaries.

During the capture pass each context's max (and min) activation per unit is stored next
to the activations; selection then runs on those [n_contexts, d] tables, so the model
runs once and the result is exact:

* top-k contexts by max activation, dealt round-robin into disjoint train /
  calibration / test splits (every split sees the whole range of top activations);
* random contexts (excluding that unit's top contexts) for calibration / test;
* contexts sampled from equal-count quantile bins of the max activation;
* optionally the most negative contexts (by min activation).

No context is used twice for one unit. Missing entries (too few contexts) are -1.

Example:
    >>> sel = select_exemplars(ctx_max, ctx_min, ExemplarConfig())   # doctest: +SKIP
    >>> sel["test_top"].shape       # [d, n_test_top] context ids
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SPLITS = ("train_top", "calibration_top", "test_top", "train_random", "calibration_random", "test_random")


@dataclass
class ExemplarConfig:
    """How many exemplar contexts to keep per unit, and of which kind."""

    n_train_top: int = 10
    """Top-activating contexts shown to the explainer."""
    n_calibration_top: int = 5
    """Top-activating contexts held out for calibration / best-of-n."""
    n_test_top: int = 5
    """Top-activating contexts held out for scoring."""
    n_train_random: int = 0
    """Random contexts shown to the explainer."""
    n_calibration_random: int = 5
    """Random contexts held out for calibration."""
    n_test_random: int = 10
    """Random contexts held out for scoring."""
    n_quantile_bins: int = 5
    """Equal-count bins of the per-context max activation."""
    n_per_quantile: int = 2
    """Contexts sampled from each quantile bin."""
    n_negative: int = 0
    """Most negative contexts (by min activation); 0 to skip."""
    seed: int = 0
    """Seed of the random and quantile draws (per unit: ``[seed, unit]``)."""

    def to_dict(self) -> dict:
        return asdict(self)


def _deal(order: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Deal ranked items into groups proportionally (the least-filled group takes the next)."""
    groups: list[list[int]] = [[] for _ in counts]
    for item in order:
        open_ = [g for g, c in enumerate(counts) if len(groups[g]) < c]
        if not open_:
            break
        g = min(open_, key=lambda k: (len(groups[k]) / counts[k], k))
        groups[g].append(int(item))
    return [np.asarray(g + [-1] * (c - len(g)), np.int64) for g, c in zip(groups, counts)]


def select_exemplars(ctx_max: np.ndarray, ctx_min: np.ndarray | None, cfg: ExemplarConfig) -> dict[str, np.ndarray]:
    """Pick exemplar contexts for every unit. Returns name -> int64 [d, n] context ids."""
    n_ctx, d = ctx_max.shape
    top_counts = [cfg.n_train_top, cfg.n_calibration_top, cfg.n_test_top]
    rnd_counts = [cfg.n_train_random, cfg.n_calibration_random, cfg.n_test_random]
    k = sum(top_counts)
    out = {name: np.full((d, c), -1, np.int64) for name, c in zip(SPLITS, top_counts + rnd_counts)}
    out["quantile"] = np.full((d, cfg.n_quantile_bins, cfg.n_per_quantile), -1, np.int64)
    out["negative"] = np.full((d, cfg.n_negative), -1, np.int64)
    if n_ctx == 0:
        return out
    kk = min(k, n_ctx)
    # top-k per unit, ties broken by context index (stable sort on the negated values)
    if kk:
        top = np.argsort(-np.asarray(ctx_max, np.float64), axis=0, kind="stable")[:kk].T  # [d, kk]
    else:
        top = np.zeros((d, 0), np.int64)
    neg = None
    if cfg.n_negative and ctx_min is not None:
        n_cand = cfg.n_negative + kk + sum(rnd_counts) + cfg.n_quantile_bins * cfg.n_per_quantile
        neg = np.argsort(np.asarray(ctx_min, np.float64), axis=0, kind="stable")[:n_cand].T
    all_ctx = np.arange(n_ctx)
    for u in range(d):
        for name, arr in zip(SPLITS[:3], _deal(top[u], top_counts) if k else [np.zeros(0, np.int64)] * 3):
            out[name][u, : len(arr)] = arr
        used = np.zeros(n_ctx, bool)
        used[top[u]] = True
        rng = np.random.default_rng([cfg.seed, u])
        free = all_ctx[~used]
        n_rnd = sum(rnd_counts)
        pick = rng.permutation(free)[:n_rnd] if n_rnd else np.zeros(0, np.int64)
        used[pick] = True
        off = 0
        for name, c in zip(SPLITS[3:], rnd_counts):
            part = pick[off: off + c]
            out[name][u, : len(part)] = part
            off += c
        if cfg.n_quantile_bins and cfg.n_per_quantile:
            free = all_ctx[~used]
            if len(free):
                vals = np.asarray(ctx_max[free, u], np.float64)
                order = free[np.argsort(vals, kind="stable")]
                for b, chunk in enumerate(np.array_split(order, cfg.n_quantile_bins)):
                    if len(chunk):
                        s = rng.choice(chunk, size=min(cfg.n_per_quantile, len(chunk)), replace=False)
                        out["quantile"][u, b, : len(s)] = s
                        used[s] = True
        if neg is not None:
            # the most negative contexts not already used for this unit
            cand = [int(c) for c in neg[u] if not used[c]][: cfg.n_negative]
            out["negative"][u, : len(cand)] = cand
    return out
