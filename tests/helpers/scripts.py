"""Child Python processes for the crash tests (a stage killed like ``kill -9``, then rerun).

A child runs with the repository root first on ``PYTHONPATH``, so its script imports shared
test code as ``tests.helpers...`` (and constants of a test module as ``tests.<folder>.<module>``)
from any working directory, the same way the tests themselves do.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""


def child_env(crash_at: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a child: the repository root first on ``PYTHONPATH``,
    ``TL_CONCEPTS_CRASH_AT`` set to ``crash_at`` (or removed when None), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "TL_CONCEPTS_CRASH_AT"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if crash_at is not None:
        env["TL_CONCEPTS_CRASH_AT"] = crash_at
    env.update(extra)
    return env


def run_python(code: str, *args: str, crash_at: str | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (Python source) with ``args`` as ``sys.argv[1:]`` in a child process
    (:func:`child_env`); its output is captured as text.

    Example:
        >>> p = run_python("import sys; print(sys.argv[1])", "hi")   # doctest: +SKIP
        >>> p.returncode, p.stdout                                   # doctest: +SKIP
        (0, 'hi\\n')
    """
    return subprocess.run([sys.executable, "-c", code, *args], env=child_env(crash_at), capture_output=True,
                          text=True, timeout=timeout)


DESCRIPTORS_SCRIPT = """
from tests.helpers.tiny_models import hash_embed
from tl_concepts.descriptors import DescriptorsConfig, run_descriptors
from tl_concepts.llm import get_llm
from tl_concepts.llm.ledger import Ledger
llm = get_llm({llm!r}, base_url={url!r}, api_key="sk-test", cache=False, ledger=Ledger())
run_descriptors(DescriptorsConfig(store={store!r}, hook={hook!r}, out={out!r}, top_k=3, min_support=2,
                                  requests_per_batch=4), llm=llm, embed=hash_embed, progress=False)
print("finished")
"""
"""The descriptor stage (top 3, support 2, batches of 4, :func:`hash_embed`) on a stand-in server."""


def run_descriptors_child(url: str, store: str, hook: str, out: str, *, llm: str,
                          crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run :data:`DESCRIPTORS_SCRIPT` in a child process (which dies like kill -9 at ``crash_at``)."""
    return run_python(DESCRIPTORS_SCRIPT.format(llm=llm, url=url, store=store, hook=hook, out=out), crash_at=crash_at)
