"""Lazy package faces (PEP 562) and the aliases that keep the old flat module paths importing.

A package lists ``public name -> submodule`` once; :func:`lazy_face` returns the package's module-level
``__getattr__`` and ``__dir__``, which import a submodule only when one of its names is first used (as
transformers' model packages do). So ``nearid metrics`` never pays for torch, and importing one light
submodule does not pull in its heavy siblings.

:func:`install_aliases` keeps users' scripts working after the modules moved into packages: importing
an old path such as ``nearid.store`` gives a small module whose names resolve, on first use, in the
module(s) that define them now (``nearid.bench.store``). The same mechanism gives a few public short
paths (``nearid.reward`` -> ``nearid.models.reward``) without another entry directly under ``nearid/``.
Standard library only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Callable


def lazy_face(
    package: str, namespace: dict, names: dict[str, str], extra: dict[str, Callable[[], object]] | None = None
):
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the submodule defining
    it (relative to ``package`` when it starts with a dot, else absolute); ``extra`` maps a name to a
    function computing it (e.g. ``__version__``). A resolved name is stored in ``namespace`` (the
    package's globals), so later look-ups skip ``__getattr__``."""
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


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the module paths listed in ``aliases`` (path -> the modules that hold its names), each with
    the docstring its alias module gets (``{targets}`` is replaced by the modules' names)."""

    def __init__(self):
        self.aliases: dict[str, tuple[tuple[str, ...], str]] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.aliases:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        targets, doc = self.aliases[module.__name__]
        module.__doc__ = doc.format(targets=", ".join(targets))

        def __getattr__(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            for target in targets:
                found = importlib.import_module(target)
                if hasattr(found, name):
                    value = getattr(found, name)
                    setattr(module, name, value)
                    return value
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

        def __dir__() -> list[str]:
            return sorted({n for t in targets for n in dir(importlib.import_module(t)) if not n.startswith("_")})

        module.__getattr__ = __getattr__
        module.__dir__ = __dir__


#: The docstring of an old path's alias module.
OLD_PATH_DOC = "Old path of {targets} (kept so that existing scripts keep importing)."


def install_aliases(aliases: dict[str, tuple[str, ...]], doc: str = OLD_PATH_DOC) -> None:
    """Make every path in ``aliases`` importable; its module's docstring is ``doc``. One finder per
    interpreter holds every call's paths (old paths, and short public paths such as ``nearid.reward``);
    ``aliases`` itself is copied, never changed."""
    finder = next((f for f in sys.meta_path if isinstance(f, _AliasFinder)), None)
    if finder is None:
        finder = _AliasFinder()
        sys.meta_path.append(finder)
    for path, targets in aliases.items():
        finder.aliases.setdefault(path, (tuple(targets), doc))
