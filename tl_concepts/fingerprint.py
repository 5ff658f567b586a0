"""Stable fingerprints of inputs: what a resumable result is keyed by.

A fingerprint is the SHA-256 (hex, first ``n`` chars) of a canonical JSON rendering: dict
keys sorted, floats by ``repr``, numpy scalars and arrays by value, dataclasses as dicts.
Two inputs get the same fingerprint exactly when they render the same.

Example:
    >>> from tl_concepts.fingerprint import fingerprint
    >>> fingerprint({"b": 1, "a": [1.5, "x"]}) == fingerprint({"a": [1.5, "x"], "b": 1})
    True
    >>> len(fingerprint("anything"))
    16
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON types (dicts, lists, str, int, float, bool, None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return canonical(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(canonical(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return {"dtype": str(obj.dtype), "shape": list(obj.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float):
        return repr(obj)  # nan/inf survive; 0.1 stays 0.1
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def fingerprint(obj: Any, n: int = 16) -> str:
    """Hex digest (``n`` characters) of ``obj``'s canonical JSON."""
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]
