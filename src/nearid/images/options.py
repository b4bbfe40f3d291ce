"""How images are read and how masks are treated: two small frozen values, built once (from the command
line or a Python call) and passed whole, instead of the same keyword arguments forwarded through
every layer between the command and :func:`nearid.embed`."""

from __future__ import annotations

from dataclasses import dataclass

from nearid.images.mask_cleaning import MASK_CLEANINGS
from nearid.io.errors import NearIDError


class OptionError(NearIDError, ValueError):
    """An option value out of its range (one line naming the option and what it accepts)."""


@dataclass(frozen=True)
class ReadOptions:
    """How images reach the encoder: ``batch_size`` images per forward pass; ``num_workers`` decoding
    processes (``"auto"``: min(8, CPUs) on CUDA, 0 on the CPU); ``fast_decode``: JPEG draft decoding
    of images at least twice the model's size (its embeddings are stored apart from exact ones)."""

    batch_size: int = 32
    num_workers: int | str = 0
    fast_decode: bool = False

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise OptionError(f"batch size {self.batch_size!r}: must be a whole number >= 1")
        workers = self.num_workers
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise OptionError(f"number of workers {workers!r}: must be 'auto' or a whole number >= 0")

    def as_kwargs(self) -> dict:
        """The keyword arguments :func:`nearid.embed` takes."""
        return {"batch_size": self.batch_size, "num_workers": self.num_workers, "fast_decode": self.fast_decode}


@dataclass(frozen=True)
class MaskOptions:
    """How evaluation masks are treated: ``cleaning`` ``"authors"`` (blur, threshold, close/open,
    largest contour: the authors' evaluation, spec 12.2) or ``"none"`` (as given); ``dilate``: an odd
    kernel size to grow the cleaned mask by (0: none)."""

    cleaning: str = "authors"
    dilate: int = 0

    def __post_init__(self):
        if self.cleaning not in MASK_CLEANINGS:
            raise OptionError(f"mask cleaning {self.cleaning!r}: use one of {', '.join(MASK_CLEANINGS)}")
        dilate = self.dilate
        if isinstance(dilate, bool) or not isinstance(dilate, int) or dilate < 0 or (dilate and dilate % 2 == 0):
            raise OptionError(f"mask dilation {dilate!r}: must be 0 (none) or an odd number >= 1")


__all__ = ["MASK_CLEANINGS", "MaskOptions", "OptionError", "ReadOptions"]
