"""One prompt-template type for every stage: a name, a version and the text parts.

Every stage that asks an LLM something (concept labels, descriptors, explanations,
simulations, detection/fuzzing scores) does it with a :class:`PromptTemplate` or a thin
subclass that adds what only that stage needs (a parser, an answer budget). A template
travels with every result made with it in two ways:

* :meth:`PromptTemplate.provenance` -- ``{"template": name, "template_version": version}``,
  written into every output row/file, and :attr:`PromptTemplate.id` (``name@version``), the
  short form;
* :meth:`PromptTemplate.key` -- name, version *and* a digest of the text parts, the piece of
  every resumable result's input key: a changed template (even one whose version was not
  bumped) never reuses an answer made with the old wording.

Templates of a stage sit in a :class:`TemplateRegistry`, a read-only mapping by name whose
lookup of an unknown name raises :class:`~tl_concepts.errors.NotFoundError` listing the known
names; :func:`get_template` looks a name up across every registry.

Example:
    >>> t = PromptTemplate("demo/echo", "1", system="Repeat the text.", task="Text: {text}")
    >>> t.id, t.provenance()
    ('demo/echo@1', {'template': 'demo/echo', 'template_version': '1'})
    >>> t.key()["digest"] == PromptTemplate("demo/echo", "1", system="Repeat it.", task="Text: {text}").key()["digest"]
    False
    >>> reg = TemplateRegistry("demo", [t])
    >>> reg["demo/echo"] is t, sorted(reg)
    (True, ['demo/echo'])
    >>> reg["nope"]
    Traceback (most recent call last):
    ...
    tl_concepts.errors.NotFoundError: unknown demo prompt template 'nope'; choose one of: demo/echo
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tl_concepts.errors import NotFoundError
from tl_concepts.fingerprint import fingerprint

__all__ = ["PromptTemplate", "TemplateRegistry", "all_templates", "get_template"]


@dataclass(frozen=True)
class PromptTemplate:
    """A named, versioned prompt; stored with every result made with it.

    Subclasses add stage-only fields as keyword-only dataclass fields; every field except
    ``name`` and ``version`` counts as text and goes into :meth:`digest` (a callable, such as
    an answer parser, by its qualified name).
    """

    name: str
    """Template name, e.g. ``label-fewshot`` or ``explain/token-activation``; what users pass."""
    version: str
    """Version string; bump it whenever the wording, format or parsing changes."""
    system: str = ""
    """System instruction (the header of a completion-style prompt)."""
    task: str = ""
    """The request (or its fixed part), placed after any examples."""
    examples: tuple[Any, ...] = ()
    """Worked examples shown before the request, in the stage's own shape."""

    @property
    def id(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    def text_parts(self) -> dict[str, Any]:
        """Every field except name and version, callables by their qualified name."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("name", "version"):
                continue
            v = getattr(self, f.name)
            if callable(v):
                v = f"{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', repr(v))}"
            out[f.name] = v
        return out

    def digest(self) -> str:
        """Fingerprint of :meth:`text_parts` (changes with any change of wording or parser)."""
        return fingerprint(self.text_parts())

    def provenance(self) -> dict[str, str]:
        """What an output records about the template: ``{"template", "template_version"}``."""
        return {"template": self.name, "template_version": self.version}

    def key(self) -> dict[str, str]:
        """What every input key holds about the template: name, version and text digest."""
        return {"name": self.name, "version": self.version, "digest": self.digest()}


T = TypeVar("T", bound=PromptTemplate)

_REGISTRIES: dict[str, TemplateRegistry[Any]] = {}
"""Registry of each kind (a registry made again for a kind, e.g. on reload, replaces it)."""


class TemplateRegistry(Mapping[str, T], Generic[T]):
    """A stage's templates by name (read-only). ``registry[name]`` of an unknown name raises
    :class:`~tl_concepts.errors.NotFoundError` (also a ``KeyError``) listing the known names.

    Args:
        kind: what the templates are for, used in the error (``label``, ``descriptors``, ...).
        templates: the templates; names must be unique across every registry.
    """

    def __init__(self, kind: str, templates: Iterable[T]) -> None:
        self.kind = kind
        self._by_name: dict[str, T] = {}
        taken = {n for k, r in _REGISTRIES.items() if k != kind for n in r}
        for t in templates:
            if t.name in self._by_name or t.name in taken:
                raise ValueError(f"prompt template name {t.name!r} is used twice")
            self._by_name[t.name] = t
        _REGISTRIES[kind] = self

    def __getitem__(self, name: str) -> T:
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFoundError(f"unknown {self.kind} prompt template {name!r}; choose one of: "
                                f"{', '.join(sorted(self._by_name))}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"TemplateRegistry({self.kind!r}, {sorted(self._by_name)})"


def _load_stage_templates() -> None:
    # The stages' prompt modules register their templates when imported.
    import tl_concepts.concepts.prompts  # noqa: F401
    import tl_concepts.descriptors.prompts  # noqa: F401
    import tl_concepts.explain.prompts  # noqa: F401


def all_templates() -> dict[str, PromptTemplate]:
    """Every registered template by name (all stages).

    Example:
        >>> all_templates()["descriptors"].id
        'descriptors@v2'
    """
    _load_stage_templates()
    return {n: t for r in _REGISTRIES.values() for n, t in r.items()}


def get_template(name: str) -> PromptTemplate:
    """The template called ``name``, whichever stage it belongs to.

    Example:
        >>> get_template("label-fewshot").id
        'label-fewshot@v1'
    """
    known = all_templates()
    if name not in known:
        raise NotFoundError(f"unknown prompt template {name!r}; choose one of: {', '.join(sorted(known))}")
    return known[name]

