"""Fixtures of the LLM-layer tests: the stand-in OpenAI server and tiny causal LMs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so `tests.standins` imports however pytest is started
    sys.path.insert(0, str(ROOT))

from tests.llm.tiny_models import make_tiny_tokenizer  # noqa: E402
from tests.standins.openai_server import OpenAIStandin  # noqa: E402


@pytest.fixture
def standin():
    with OpenAIStandin() as srv:
        yield srv


@pytest.fixture(scope="session")
def tiny_tok():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2 backend (skipped when the embedded package is missing)."""
    from tl_concepts.llm import InProcessBackend

    try:
        from tl_concepts.models.embedded import smollm2_hf_dir

        smollm2_hf_dir()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(f"embedded SmolLM2 unavailable: {e}")
    return InProcessBackend()
