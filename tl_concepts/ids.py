"""The one id of a unit, used by files, datasets, the report and typed results.

Example:
    >>> from tl_concepts.ids import unit_id, parse_unit_id
    >>> unit_id("blocks.0.mlp.hook_post", 7)
    'blocks.0.mlp.hook_post.7'
    >>> parse_unit_id('blocks.0.mlp.hook_post.7')
    ('blocks.0.mlp.hook_post', 7)
"""
from __future__ import annotations

import re

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def safe_id(name: object) -> str:
    """``name`` with anything but letters, digits, ``_ . -`` replaced by ``_`` (a file name)."""
    return _SAFE.sub("_", str(name))


def unit_id(hook: str, unit: int | str) -> str:
    """``<hook>.<unit>`` made safe as a file name (:func:`safe_id`); stable across runs."""
    return safe_id(f"{hook}.{unit}")


def unit_file_name(uid: str, suffix: str) -> str:
    """The file name of a unit's file (``.json`` result, ``.html`` report page): the id made safe
    (:func:`safe_id`) plus ``suffix``.

    Example:
        >>> unit_file_name(unit_id("blocks.3.mlp.hook_post", 17), ".html")
        'blocks.3.mlp.hook_post.17.html'
    """
    return safe_id(uid) + suffix


def parse_unit_id(uid: str) -> tuple[str, int | str]:
    """Inverse of :func:`unit_id` for ids whose unit part has no dot."""
    hook, _, unit = uid.rpartition(".")
    return hook, int(unit) if unit.isdigit() else unit
