"""Concept-stage fixtures (shared by every test module here)."""
import pytest

from tests.helpers.concepts_fakes import make_input
from tl_concepts.concepts.inputs import ConceptInput


@pytest.fixture
def synth() -> ConceptInput:
    """The default synthetic input: 4 categories x 4 word types (:func:`make_input`)."""
    return make_input()
