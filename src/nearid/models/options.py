"""How a model is loaded: one small frozen value (device, dtype, pickles allowed or not, and a judge's
options), built once from the command line or a Python call and passed whole to
:func:`nearid.models.encoders.load_encoder` and :func:`nearid.judges.loading.load_metric`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JUDGE_READOUTS = ("generate", "expected")


@dataclass(frozen=True)
class JudgeOptions:
    """A ``vlm:`` judge's options (they act on ``vlm:`` specs only): ``prompt_file`` (a rubric instead of
    ours), ``readout`` (``generate``: parse the written score, the paper's; ``expected``: the
    probability-weighted score of one forward pass), ``max_new_tokens``, ``judge_batch_size`` (pairs per
    model call)."""

    prompt_file: str | None = None
    readout: str = "generate"
    max_new_tokens: int = 512
    judge_batch_size: int = 8

    def as_kwargs(self) -> dict:
        """The keyword arguments :func:`nearid.judges.vlm.load_vlm_judge` takes."""
        return {
            "prompt_file": self.prompt_file,
            "readout": self.readout,
            "max_new_tokens": self.max_new_tokens,
            "judge_batch_size": self.judge_batch_size,
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


__all__ = ["JUDGE_READOUTS", "JudgeOptions", "LoadOptions"]
