"""How a model is loaded: one small frozen value (device, dtype, pickles allowed or not, and a judge's
options), built once from the command line or a Python call and passed whole to
:func:`nearid.models.encoders.load_encoder` and :func:`nearid.judges.loading.load_metric`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JUDGE_READOUTS = ("generate", "expected")
#: ``--judge-parser``: the authors' parse (default) or ours (:mod:`nearid.judges.prompt`).
JUDGE_PARSERS = ("authors", "lenient")
#: ``--judge-pixels``: Qwen's fast processor's pixels (default, as the authors ran) or the PIL one's.
JUDGE_PIXELS = ("fast", "pil")


@dataclass(frozen=True)
class JudgeOptions:
    """A ``vlm:`` judge's options (they act on ``vlm:`` specs only): ``prompt_file`` (a rubric instead of
    ours), ``readout`` (``generate``: parse the written score, the paper's; ``expected``: the
    probability-weighted score of one forward pass), ``max_new_tokens``, ``judge_batch_size`` (pairs per
    model call), ``parser`` (``authors``: their parse exactly; ``lenient``: ours, which reads more
    malformed answers) and ``pixels`` (``fast``: Qwen's fast image processor, as the authors ran it;
    ``pil``: transformers' PIL processor). The defaults are the authors', so the published judge numbers
    are what the default computes."""

    prompt_file: str | None = None
    readout: str = "generate"
    max_new_tokens: int = 512
    judge_batch_size: int = 8
    parser: str = "authors"
    pixels: str = "fast"

    def as_kwargs(self) -> dict:
        """The keyword arguments :func:`nearid.judges.vlm.load_vlm_judge` takes."""
        return {
            "prompt_file": self.prompt_file,
            "readout": self.readout,
            "max_new_tokens": self.max_new_tokens,
            "judge_batch_size": self.judge_batch_size,
            "parser": self.parser,
            "pixels": self.pixels,
        }


@dataclass(frozen=True)
class LoadOptions:
    """``device`` / ``dtype`` (``"auto"``, a name or a torch object; encoders' builders receive them
    resolved), ``allow_pickle`` (read ``.bin`` / ``.pt`` checkpoints, which can run code: only on the
    user's request), ``judge`` (:class:`JudgeOptions`)."""

    device: Any = "auto"
    dtype: Any = "auto"
    allow_pickle: bool = False
    judge: JudgeOptions = field(default_factory=JudgeOptions)


__all__ = ["JUDGE_PARSERS", "JUDGE_PIXELS", "JUDGE_READOUTS", "JudgeOptions", "LoadOptions"]
