"""Deterministic crash points for resume tests.

``TL_CONCEPTS_CRASH_AT=<name>`` makes the process exit at once (``os._exit(137)``, like a
``kill -9``: no cleanup, no ``finally``) when it reaches :func:`crashpoint` with that name;
``<name>:<n>`` exits on the n-th time that point is reached. Unset, a crash point costs a
dictionary lookup.

Names in use: ``capture.before_manifest``, ``capture.after_shard``, ``labels.batch``,
``explain.unit``, ``descriptors.batch``, ``cards.dataset``, ``run.stage``.

Example:
    >>> from tl_concepts.crash import crashpoint
    >>> crashpoint("explain.unit")          # no-op unless TL_CONCEPTS_CRASH_AT=explain.unit
"""
from __future__ import annotations

import os
import sys
from collections import Counter

_hits: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    """Exit the process abruptly here when ``$TL_CONCEPTS_CRASH_AT`` names this point."""
    want = os.environ.get("TL_CONCEPTS_CRASH_AT")
    if not want:
        return
    target, _, nth = want.partition(":")
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(nth or 1):
        sys.stderr.write(f"tl-concepts: crash point {name} reached (TL_CONCEPTS_CRASH_AT)\n")
        sys.stderr.flush()
        os._exit(137)
