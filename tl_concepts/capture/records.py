"""Exemplar records: one context and one unit's activations on it.

The meaning matches OpenAI's neuron-explainer ``ActivationRecord`` so explanation and
simulation prompts map one to one.

Example:
    >>> r = ActivationRecord(tokens=["The", " cat"], activations=[0.0, 2.5])
    >>> r.max_activation
    2.5
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ActivationRecord:
    """One context window and one unit's activation on every token of it."""

    tokens: list[str]
    """Decoded model tokens of the context, in order (subword strings, spaces kept)."""
    activations: list[float]
    """The unit's activation on each token; same length as ``tokens``."""
    doc: int = -1
    """Document index of the context in the corpus (-1 when unknown)."""
    start: int = -1
    """Row of the first token of the context in the store's token table (-1 when unknown)."""

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.activations):
            raise ValueError(
                f"ActivationRecord needs one activation per token: got {len(self.tokens)} tokens "
                f"and {len(self.activations)} activations"
            )

    @property
    def max_activation(self) -> float:
        """Largest activation in the record (0.0 for an empty record)."""
        return max(self.activations, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "activations": [float(a) for a in self.activations],
                "doc": self.doc, "start": self.start}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ActivationRecord":
        return cls(tokens=list(d["tokens"]), activations=[float(a) for a in d["activations"]],
                   doc=int(d.get("doc", -1)), start=int(d.get("start", -1)))


@dataclass
class UnitRecords:
    """The exemplars of one unit, split into disjoint sets (no context appears twice).

    ``train_*`` records are shown to the explainer, ``calibration_*`` fit the simulator's
    calibration and pick best-of-n, ``test_*`` give the reported score.
    """

    hook: str
    """Hook point name, e.g. ``blocks.3.mlp.hook_post``."""
    unit: int
    """Index of the unit (neuron / dimension / direction) at the hook."""
    train_top: list[ActivationRecord] = field(default_factory=list)
    """Top-activating contexts shown to the explainer."""
    train_random: list[ActivationRecord] = field(default_factory=list)
    """Random contexts shown to the explainer (may be empty)."""
    calibration_top: list[ActivationRecord] = field(default_factory=list)
    """Top-activating contexts held out for calibration / best-of-n selection."""
    calibration_random: list[ActivationRecord] = field(default_factory=list)
    """Random contexts held out for calibration."""
    test_top: list[ActivationRecord] = field(default_factory=list)
    """Top-activating contexts held out for the reported score."""
    test_random: list[ActivationRecord] = field(default_factory=list)
    """Random contexts held out for the reported score."""
    quantile: dict[int, list[ActivationRecord]] = field(default_factory=dict)
    """Contexts sampled from activation-quantile bins (bin index -> records)."""
    negative: list[ActivationRecord] = field(default_factory=list)
    """Most negative contexts (only when asked for)."""
    max_activation: float = 0.0
    """Largest activation of the unit over the whole corpus (used to normalise to 0..10)."""
    n_contexts: int = 0
    """Number of contexts the unit was mined over."""

    def all_records(self) -> list[ActivationRecord]:
        out = self.train_top + self.train_random + self.calibration_top + self.calibration_random
        out += self.test_top + self.test_random + self.negative
        for recs in self.quantile.values():
            out += recs
        return out
