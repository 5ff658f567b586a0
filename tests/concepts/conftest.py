"""Concept-stage fixtures (shared by every test module here)."""
from concepts_fakes import synth  # noqa: F401  (the fixture: a synthetic ConceptInput)
