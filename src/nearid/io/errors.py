"""Errors a user can cause.

Every exception here carries a one-line message that names the offending thing (a file, a dataset
row, a model id) and says how to fix it. The CLI prints that line and exits with status 2 instead
of showing a traceback; anything that is *not* a ``NearIDError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class NearIDError(Exception):
    """Base class of all user-facing errors."""


class ImageError(NearIDError):
    """An image or mask that cannot be read, is not an image, or is unsafe to decode."""


class MaskError(NearIDError):
    """A foreground mask that does not fit its image (wrong shape, empty)."""


class ModelNotAvailableError(NearIDError):
    """Weights that are neither a local folder nor in the Hugging Face cache, and cannot be fetched."""


class UnsafeCheckpointError(NearIDError):
    """A checkpoint that could only be loaded by unpickling, which can run arbitrary code."""


class EncoderSpecError(NearIDError):
    """An encoder spec string that names no known encoder family."""
