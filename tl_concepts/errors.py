"""One exception hierarchy for everything a user can cause or fix.

Every error that tl-concepts raises on purpose is a :class:`TLConceptsError`; the CLI prints
such an error as one line (exit 2 for bad input, 1 for a failed run) and shows a full
traceback for anything else, so a bug never looks like a user error.

Example:
    >>> import tl_concepts as tlc
    >>> try:
    ...     raise tlc.errors.ConfigError("k must be >= 2; pass k=40")
    ... except tlc.TLConceptsError as e:
    ...     print(e)
    k must be >= 2; pass k=40
"""
from __future__ import annotations


class TLConceptsError(Exception):
    """Base class of every error tl-concepts raises on purpose. The message says what to do."""

    exit_code: int = 1
    """Process exit code the CLI uses for this error."""


class ConfigError(TLConceptsError, ValueError):
    """A setting or argument is invalid (checked before any work starts)."""

    exit_code = 2


class InputError(TLConceptsError, ValueError):
    """An input file, corpus or unit selection cannot be used as given."""

    exit_code = 2


class NotFoundError(InputError, KeyError):
    """A named thing (hook point, column, concept, unit) does not exist; the message lists
    what does. Also a ``KeyError``, for callers that catch that."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(TLConceptsError):
    """An activation store (or another output folder) is missing, incomplete, corrupt or
    holds a different run."""

    exit_code = 2


class StaleResultError(StoreError):
    """A folder holds results computed from other inputs and the caller asked to keep it.
    The message names what changed."""


class FolderLockedError(StoreError):
    """Another process is writing the same folder."""


class LLMError(TLConceptsError, RuntimeError):
    """An LLM problem that no retry can fix; it stops the job.

    ``kind``: ``auth``, ``unknown_model``, ``bad_request``, ``unreachable``, ``config``,
    ``cache``. The message says what to fix and never contains an API key.
    """

    def __init__(self, message: str, kind: str = "config") -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        """2 for a bad setting or an unreadable cache file (fix the input); 1 otherwise."""
        return 2 if self.kind in ("config", "cache", "bad_request") else 1


class LLMAuthError(LLMError):
    """The endpoint refused the credentials (HTTP 401/403)."""

    def __init__(self, message: str, kind: str = "auth") -> None:
        super().__init__(message, kind)


class LLMUnavailableError(LLMError):
    """The endpoint could not be reached, or does not serve the model, after the retries."""

    def __init__(self, message: str, kind: str = "unreachable") -> None:
        super().__init__(message, kind)


__all__ = [
    "TLConceptsError", "ConfigError", "InputError", "NotFoundError", "StoreError", "StaleResultError",
    "FolderLockedError", "LLMError", "LLMAuthError", "LLMUnavailableError",
]
