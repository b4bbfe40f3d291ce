"""The base layer: user-facing errors, lazy package faces, atomic files, output checks, ownership
markers, content fingerprints and hub access. Every other package builds on it; it imports none of them.

``nearid.io.atomic_path`` and ``nearid.io.write_text_atomic`` keep their old paths."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "NearIDError": "nearid.io.errors",
    "atomic_path": "nearid.io.atomic",
    "write_text_atomic": "nearid.io.atomic",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
