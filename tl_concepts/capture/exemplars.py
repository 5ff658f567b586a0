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
    """Seed of the random and quantile draws."""

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
    """Pick exemplar contexts for every unit. Returns name -> int64 [d, n] context ids.

    Vectorised over units: one sort per kind of draw over the [n_contexts, d] table.
    """
    ctx_max = np.asarray(ctx_max, np.float64)
    n_ctx, d = ctx_max.shape
    top_counts = [cfg.n_train_top, cfg.n_calibration_top, cfg.n_test_top]
    rnd_counts = [cfg.n_train_random, cfg.n_calibration_random, cfg.n_test_random]
    k = sum(top_counts)
    out = {name: np.full((d, c), -1, np.int64) for name, c in zip(SPLITS, top_counts + rnd_counts)}
    out["quantile"] = np.full((d, cfg.n_quantile_bins, cfg.n_per_quantile), -1, np.int64)
    out["negative"] = np.full((d, cfg.n_negative), -1, np.int64)
    if n_ctx == 0:
        return out
    cols = np.arange(d)
    used = np.zeros((n_ctx, d), bool)
    # top-k per unit, ties broken by context index (stable sort on the negated values)
    kk = min(k, n_ctx)
    top = np.argsort(-ctx_max, axis=0, kind="stable")[:kk]  # [kk, d]
    if kk:
        slots = _deal(np.arange(kk), top_counts)  # which ranks go to which split (same for all units)
        for name, ranks in zip(SPLITS[:3], slots):
            ok = ranks[ranks >= 0]
            out[name][:, : len(ok)] = top[ok].T
        used[top, cols] = True
    rng = np.random.default_rng(cfg.seed)
    # random contexts: the unused contexts with the smallest random keys
    n_rnd = min(sum(rnd_counts), n_ctx - kk)
    if n_rnd > 0:
        keys = np.where(used, np.inf, rng.random((n_ctx, d)))
        pick = np.argsort(keys, axis=0)[:n_rnd]  # [n_rnd, d]
        used[pick, cols] = True
        off = 0
        for name, c in zip(SPLITS[3:], rnd_counts):
            part = pick[off: off + c]
            out[name][:, : len(part)] = part.T
            off += len(part)
    # quantile bins of the per-context max over the contexts still unused
    n_free = n_ctx - kk - max(n_rnd, 0)
    if cfg.n_quantile_bins and cfg.n_per_quantile and n_free > 0:
        by_value = np.argsort(np.where(used, np.inf, ctx_max), axis=0, kind="stable")[:n_free]  # [n_free, d]
        bins = np.array_split(np.arange(n_free), cfg.n_quantile_bins)
        keys = rng.random((n_free, d))
        for b, ranks in enumerate(bins):
            if not len(ranks):
                continue
            take = min(cfg.n_per_quantile, len(ranks))
            chosen = ranks[np.argsort(keys[ranks], axis=0)[:take]]  # [take, d] ranks within the bin
            ctx = by_value[chosen, cols]
            out["quantile"][:, b, :take] = ctx.T
            used[ctx, cols] = True
    if cfg.n_negative and ctx_min is not None:
        # the most negative contexts not already used for this unit
        neg_keys = np.where(used, np.inf, np.asarray(ctx_min, np.float64))
        n_neg = min(cfg.n_negative, n_ctx - int(used[:, 0].sum()))
        if n_neg > 0:
            out["negative"][:, :n_neg] = np.argsort(neg_keys, axis=0, kind="stable")[:n_neg].T
    return out
