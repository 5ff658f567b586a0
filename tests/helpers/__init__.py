"""Shared test code, imported as ``tests.helpers.<module>`` (pytest runs from the repo root).

- ``openai_server``: loopback stand-in for an OpenAI-compatible server (also ``python -m``).
- ``hub_server``: loopback stand-in for the Hugging Face Hub HTTP API.
- ``tiny_models``: tiny tokenizers and causal LMs built from configs, the test corpus, label files.
- ``explain_fakes`` / ``concepts_fakes``: rule-following fake LLMs, planted units, synthetic concepts.
- ``hub_data``: real stage outputs and producer rows for the hub and report tests.
- ``usage``: the real LLM layer on a stand-in server, and the usage counts tests compare.
- ``scripts``: child Python processes for the crash (kill -9) tests.

Fixtures (one per model) are in ``tests/conftest.py``.
"""
