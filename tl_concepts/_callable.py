"""Sub-packages that are also the package-root function of the same name.

``tlc.capture(...)``, ``tlc.explain(...)`` and ``tlc.report(...)`` are the stage functions of
:mod:`tl_concepts.api`, while ``tl_concepts.capture``, ``tl_concepts.explain`` and
``tl_concepts.report`` stay importable sub-packages (``import tl_concepts.capture.runner``
works). Each of the three modules is made callable: calling it calls the API function, and
``inspect.signature`` / ``help`` show that function's signature and docstring.

Example:
    >>> import tl_concepts as tlc
    >>> import inspect
    >>> list(inspect.signature(tlc.capture).parameters)[:3]
    ['model', 'corpus', 'hooks']
"""
from __future__ import annotations

import inspect
import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    """A module whose call runs ``tl_concepts.api.<__api_function__>``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tl_concepts import api

        return getattr(api, self.__dict__["__api_function__"])(*args, **kwargs)


def make_callable(module_name: str, function: str) -> None:
    """Make the module ``module_name`` callable as ``tl_concepts.api.<function>``."""
    from tl_concepts import api

    mod = sys.modules[module_name]
    fn = getattr(api, function)
    mod.__class__ = _CallableModule
    mod.__dict__["__api_function__"] = function
    mod.__dict__["__signature__"] = inspect.signature(fn)
    mod.__doc__ = f"{fn.__doc__}\n\nAlso the sub-package:\n\n{mod.__doc__ or ''}"
