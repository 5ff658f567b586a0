"""Exemplar selection for every unit from per-context activation summaries.

During the capture pass each context's max (and min) activation per unit is stored next
to the activations; selection then runs on those [n_contexts, d] tables, so the model
runs once and the result is exact:

* top-k contexts by max activation, dealt round-robin into disjoint train /
  calibration / test splits (every split sees the whole range of top activations);
* random contexts (excluding that unit's top contexts) for calibration / test;
* contexts sampled from equal-count quantile bins of the max activation;
* optionally the most negative contexts (by min activation).

No context is used twice for one unit. Missing entries (too few contexts) are -1. A context
whose summary is not finite (NaN or inf, for one unit) is never drawn for that unit, so a
NaN can neither be shown as a "top" context nor sort past the contexts already used.

Two presets: the default (10 top contexts shown to the explainer; 5 top + 5 random for
calibration, 5 top + 10 random for the test) and :meth:`ExemplarConfig.bills`, the split of
Bills et al. 2023 (5 top-only training contexts; 5 top + 5 random in calibration and in the
test), for figures comparable with the paper.

Example:
    >>> sel = select_exemplars(ctx_max, ctx_min, ExemplarConfig())   # doctest: +SKIP
    >>> sel["test_top"].shape       # [d, n_test_top] context ids     # doctest: +SKIP
    >>> ExemplarConfig.bills().n_test_random
    5
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from tl_concepts.errors import ConfigError

SPLITS = ("train_top", "calibration_top", "test_top", "train_random", "calibration_random", "test_random")


@dataclass
class ExemplarConfig:
    """How many exemplar contexts to keep per unit, and of which kind.

    ``ExemplarConfig()`` is the default split; ``ExemplarConfig.bills()`` (or
    ``ExemplarConfig.preset("bills")``) the split of Bills et al. 2023.
    """

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

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or (f.name != "seed" and v < 0):
                raise ConfigError(f"exemplar setting {f.name} must be a whole number >= 0, got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def bills(cls, **overrides: int) -> "ExemplarConfig":
        """The split of Bills et al. 2023 ("Language models can explain neurons in language
        models"): the explainer sees 5 top-activating contexts only; calibration and test
        each hold top and random contexts 1:1 (5 + 5). Keyword overrides change single fields.

        Example:
            >>> c = ExemplarConfig.bills()
            >>> (c.n_train_top, c.n_train_random, c.n_test_top, c.n_test_random)
            (5, 0, 5, 5)
        """
        base = dict(n_train_top=5, n_train_random=0, n_calibration_top=5, n_calibration_random=5,
                    n_test_top=5, n_test_random=5)
        return cls(**{**base, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: int) -> "ExemplarConfig":
        """A named split: ``"default"`` or ``"bills"`` (see :meth:`bills`)."""
        if name == "default":
            return cls(**overrides)
        if name == "bills":
            return cls.bills(**overrides)
        raise ConfigError(f"unknown exemplar split '{name}': use 'default' or 'bills'")


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


def _take(keys: np.ndarray, n: int) -> np.ndarray:
    """Per column, the row indices of the ``n`` smallest finite keys (stable); -1 where a
    column has fewer than ``n`` finite keys. ``inf`` marks rows that must not be taken."""
    order = np.argsort(keys, axis=0, kind="stable")[:n]  # [n, d]
    ok = np.isfinite(np.take_along_axis(keys, order, axis=0))
    return np.where(ok, order, -1)


def _mark(used: np.ndarray, picks: np.ndarray) -> None:
    """Set ``used[picks[i, u], u]`` for every valid pick (picks: [n, d], -1 = none)."""
    rows, cols = np.nonzero(picks >= 0)
    used[picks[rows, cols], cols] = True


def select_exemplars(ctx_max: np.ndarray, ctx_min: np.ndarray | None, cfg: ExemplarConfig) -> dict[str, np.ndarray]:
    """Pick exemplar contexts for every unit. Returns name -> int64 [d, n] context ids.

    Vectorised over units: one sort per kind of draw over the [n_contexts, d] table.
    Contexts with a non-finite max (or min, when given) are skipped for that unit.
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
    ctx_min_arr = None if ctx_min is None else np.asarray(ctx_min, np.float64)
    # "used" holds the contexts a unit may no longer draw: those already drawn and those
    # whose summary is not finite (they sort nowhere, so they are simply never eligible).
    used = ~np.isfinite(ctx_max)
    if ctx_min_arr is not None:
        used |= ~np.isfinite(ctx_min_arr)
    # top-k per unit, ties broken by context index (stable sort on the negated values)
    kk = min(k, n_ctx)
    if kk:
        top = _take(np.where(used, np.inf, -ctx_max), kk)  # [kk, d]
        slots = _deal(np.arange(kk), top_counts)  # which ranks go to which split (same for all units)
        for name, ranks in zip(SPLITS[:3], slots):
            ok = ranks[ranks >= 0]
            out[name][:, : len(ok)] = top[ok].T
        _mark(used, top)
    rng = np.random.default_rng(cfg.seed)
    # random contexts: the unused contexts with the smallest random keys
    n_rnd = min(sum(rnd_counts), n_ctx - kk)
    if n_rnd > 0:
        pick = _take(np.where(used, np.inf, rng.random((n_ctx, d))), n_rnd)  # [n_rnd, d]
        _mark(used, pick)
        off = 0
        for name, c in zip(SPLITS[3:], rnd_counts):
            part = pick[off: off + c]
            out[name][:, : len(part)] = part.T
            off += len(part)
    # quantile bins of the per-context max over the contexts still unused (per unit; units
    # with the same number of free contexts are binned together)
    n_free = (~used).sum(0)  # [d]
    if cfg.n_quantile_bins and cfg.n_per_quantile and n_free.max() > 0:
        max_free = int(n_free.max())
        by_value_all = np.argsort(np.where(used, np.inf, ctx_max), axis=0, kind="stable")[:max_free]
        keys = rng.random((max_free, d))
        for nf in np.unique(n_free):
            nf = int(nf)
            if nf == 0:
                continue
            units = np.nonzero(n_free == nf)[0]
            by_value = by_value_all[:nf][:, units]  # [nf, |units|], all free contexts
            for b, ranks in enumerate(np.array_split(np.arange(nf), cfg.n_quantile_bins)):
                if not len(ranks):
                    continue
                take = min(cfg.n_per_quantile, len(ranks))
                chosen = ranks[np.argsort(keys[ranks][:, units], axis=0)[:take]]  # [take, |units|]
                ctx = np.take_along_axis(by_value, chosen, axis=0)
                out["quantile"][units, b, :take] = ctx.T
                used[ctx, units] = True
    if cfg.n_negative and ctx_min_arr is not None:
        # the most negative contexts not already used for this unit
        m = min(cfg.n_negative, n_ctx)
        out["negative"][:, :m] = _take(np.where(used, np.inf, ctx_min_arr), m).T
    return out
