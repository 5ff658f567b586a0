"""Hub tests: a stand-in Hub on 127.0.0.1 and the real huggingface_hub / datasets clients.

The clients read HF_ENDPOINT, HF_HUB_DISABLE_XET and HF_HOME into module constants when
imported. Other test folders may have imported them already, so the session fixture sets
the environment and reloads those constant modules in place (and restores both after).
"""
from __future__ import annotations

import importlib
import os
import sys

import pytest

from tests.helpers.hub_data import OTHER_TOKEN, TOKEN
from tests.helpers.hub_server import HubStandin

CONSTANT_MODULES = ("huggingface_hub.constants", "datasets.config")


def _reload() -> None:
    for name in CONSTANT_MODULES:
        if name in sys.modules:
            importlib.reload(sys.modules[name])


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """The stand-in Hub (user ``alice`` with ``TOKEN``, ``mallory`` with ``OTHER_TOKEN``)."""
    home = tmp_path_factory.mktemp("hf-home")
    with HubStandin(tokens={TOKEN: "alice", OTHER_TOKEN: "mallory"}) as srv:
        env = srv.env(home)
        saved = {k: os.environ.get(k) for k in list(env) + ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]}
        os.environ.update(env)
        os.environ.pop("HF_TOKEN", None)
        os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)
        _reload()
        import datasets  # noqa: F401  (imported after the environment is set)
        import huggingface_hub

        assert huggingface_hub.constants.ENDPOINT == srv.url
        srv.home = home  # type: ignore[attr-defined]
        try:
            yield srv
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _reload()
