"""Fixtures for the concept tests."""
import pytest

from concepts_fakes import make_input
from tl_concepts.concepts.inputs import ConceptInput


@pytest.fixture
def synth() -> ConceptInput:
    return make_input()
