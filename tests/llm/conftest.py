"""Fixtures of the LLM-layer tests (the models are in tests/conftest.py)."""
from __future__ import annotations

import pytest

from tests.helpers.openai_server import OpenAIStandin


@pytest.fixture
def standin():
    """The stand-in OpenAI-compatible server (no API key required)."""
    with OpenAIStandin() as srv:
        yield srv
