"""Matched-context near-identity distractors (``nearid distract``): the part of NearID never released.

``run`` drives it; ``generators`` (diffusers pipelines, real and tiny), ``prompts`` (which object),
``compositing`` (dilation, feathering, paste-back, measurements) and ``quality`` (verdicts) are the
pieces. Importing this package does not import torch or diffusers.
"""

from nearid.distract.run import DistractConfig, distract

__all__ = ["DistractConfig", "distract"]
