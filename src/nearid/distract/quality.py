"""Per-distractor quality verdicts, written to the ``quality`` column and used by ``--filter``.

Two questions per distractor (one per view slot):

* **changed** — did the generator change the object region at all? The mean absolute pixel difference
  inside the view's mask must reach ``change_threshold`` (0-255 scale); a pipeline that returns the
  background unchanged would otherwise give an "easy" distractor that is the positive itself.
* **different** — is the inpainted object not the same object? With a chosen encoder, the distractor's
  similarity to an anchor (another view of the identity) must stay below the true view's similarity to
  that anchor. A distractor the encoder finds *more* similar than the real view is likely the same
  object again. Without an encoder only the first check is made.
* **background left** — when the dilated mask covers the whole view, the pipeline regenerated all of
  it: nothing of the original context is kept, so it is no matched-context distractor
  (``no-background``, dropped by ``--filter``; its outside difference is n/a, not 0).

The row's ``quality`` is ``view1=ok;view2=unchanged;...``; ``ok`` only when every present view is ok.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, UNCHANGED, SAME, NO_BACKGROUND = "ok", "unchanged", "same-object", "no-background"


@dataclass(frozen=True)
class Verdict:
    slot: int
    changed: float
    distractor_similarity: float | None = None
    view_similarity: float | None = None
    change_threshold: float = 2.0
    background: bool = True  # any pixel of the view outside the dilated mask

    @property
    def label(self) -> str:
        if not self.background:
            return NO_BACKGROUND
        if self.changed < self.change_threshold:
            return UNCHANGED
        known = self.distractor_similarity is not None and self.view_similarity is not None
        if known and self.distractor_similarity >= self.view_similarity:
            return SAME
        return OK

    @property
    def ok(self) -> bool:
        return self.label == OK


def quality_string(verdicts: list[Verdict]) -> str:
    return ";".join(f"view{v.slot + 1}={v.label}" for v in sorted(verdicts, key=lambda v: v.slot))


def parse_quality(text: str | None) -> dict[int, str]:
    """``view1=ok;view2=unchanged`` -> ``{0: "ok", 1: "unchanged"}`` (empty for other strings)."""
    out = {}
    for part in (text or "").split(";"):
        name, sep, label = part.partition("=")
        if sep and name.startswith("view") and name[4:].isdigit():
            out[int(name[4:]) - 1] = label
    return out


def anchor_slot(slots: list[int], slot: int) -> int | None:
    """The view a distractor in ``slot`` is compared against: the first other view."""
    others = [j for j in slots if j != slot]
    return others[0] if others else None
