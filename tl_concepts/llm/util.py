"""Small helpers shared by the LLM backends: message checks, canonical keys, JSON answers,
secret redaction."""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Mapping, Sequence

from .base import Message

_ROLES = ("system", "user", "assistant")

JSON_HINT = "Answer with a single JSON object and nothing else."


def as_messages(messages: Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    """Messages as :class:`Message` objects (dicts with role/content accepted).

    Raises ``ValueError`` for no messages, an unknown role or an empty prompt (every
    message empty): those are bugs at the call site, not answers to record.
    """
    if isinstance(messages, (str, bytes)):
        raise TypeError("messages must be a list of Message, not a string")
    out: list[Message] = []
    for m in messages:
        if isinstance(m, Message):
            msg = m
        elif isinstance(m, Mapping):
            msg = Message(m.get("role"), m.get("content"))  # type: ignore[arg-type]
        else:
            raise TypeError(f"not a message: {m!r}")
        if msg.role not in _ROLES:
            raise ValueError(f"unknown message role {msg.role!r}; use one of {_ROLES}")
        if not isinstance(msg.content, str):
            raise TypeError(f"message content must be a string, got {type(msg.content).__name__}")
        out.append(msg)
    if not out:
        raise ValueError("empty prompt: no messages")
    if not any(m.content.strip() for m in out):
        raise ValueError("empty prompt: every message is empty")
    return out


def check_distribution_args(prompt: str, positions: Sequence[int],
                            candidates: Sequence[str]) -> tuple[list[int], list[str]]:
    """Validate the arguments of ``next_token_distributions``; raise ``ValueError``."""
    if not isinstance(prompt, str):
        raise TypeError("prompt must be a string")
    if not prompt:
        raise ValueError("empty prompt")
    pos = [int(p) for p in positions]
    if not pos:
        raise ValueError("no positions given")
    bad = [p for p in pos if p < 0 or p > len(prompt)]
    if bad:
        raise ValueError(f"positions {bad[:5]} are outside the prompt (length {len(prompt)})")
    cands = [str(c) for c in candidates]
    if not cands:
        raise ValueError("no candidates given")
    if any(not c for c in cands):
        raise ValueError("empty candidate string")
    if len(set(cands)) != len(cands):
        raise ValueError("duplicate candidates")
    return pos, cands


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, floats as repr) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, Message):
        return {"role": obj.role, "content": obj.content}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot hash {type(obj).__name__}")


def request_key(obj: Any) -> str:
    """sha256 hex of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.S)


def parse_json_answer(text: str | None) -> Any:
    """Parse a JSON answer; tolerates a Markdown code fence and text around one object.

    Raises ``ValueError`` when no JSON value can be read.
    """
    if text is None or not text.strip():
        raise ValueError("empty answer")
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1).strip()
    try:
        return json.loads(s)
    except ValueError:
        pass
    # The first balanced {...} or [...] in the text.
    dec = json.JSONDecoder()
    for i, ch in enumerate(s):
        if ch in "{[":
            try:
                value, _ = dec.raw_decode(s[i:])
                return value
            except ValueError:
                continue
    raise ValueError("no JSON value in the answer")


def json_closed_before_cut(text: str | None) -> bool:
    """True when a JSON answer cut at ``max_tokens`` holds its whole JSON value: the
    value that starts at the first ``{`` or ``[`` closes before the cut (only trailing
    prose was lost). A cut inside the value (``["war", "fin``) is False, even when an inner
    list would parse on its own.

    Example:
        >>> json_closed_before_cut('{"label": "animals"} This JSON lists')
        True
        >>> json_closed_before_cut('["war", "fin')
        False
    """
    if not text:
        return False
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return False
    try:
        json.JSONDecoder().raw_decode(text[min(starts):])
    except ValueError:
        return False
    return True


def finite_prob(x: Any) -> float:
    """A probability in [0, 1] from a JSON value; ``ValueError`` when it is not one."""
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise ValueError(f"not a number: {x!r}")
    v = float(x)
    if not math.isfinite(v) or v < 0 or v > 1:
        raise ValueError(f"not a probability: {x!r}")
    return v


_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-*.]{4,}|hf_[A-Za-z0-9]{8,})")


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """``text`` with the given secrets and anything shaped like an API key masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub("***", text)
