"""The lazy package face (PEP 562), shared by ``nearid``, ``nearid.data`` and ``nearid.training``.

A package lists ``public name -> submodule`` once; :func:`lazy_face` returns the package's module-level
``__getattr__`` and ``__dir__``, which import a submodule only when one of its names is first used (as
transformers' model packages do). So ``nearid metrics`` never pays for torch, and importing one light
submodule does not pull in its heavy siblings. Standard library only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_face(
    package: str, namespace: dict, names: dict[str, str], extra: dict[str, Callable[[], object]] | None = None
):
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the relative submodule
    defining it; ``extra`` maps a name to a function computing it (e.g. ``__version__``). A resolved
    name is stored in ``namespace`` (the package's globals), so later look-ups skip ``__getattr__``."""
    extra = extra or {}

    def __getattr__(name: str):
        if name in extra:
            value = extra[name]()
        elif name in names:
            value = getattr(importlib.import_module(names[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names) | set(extra))

    return __getattr__, __dir__
