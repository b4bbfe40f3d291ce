"""``nearid export``: a training checkpoint's head on its backbone, as a model folder that
``NearIDModel.from_pretrained`` and the ``nearid:DIR`` encoder load.

Only the head is checkpointed (the trunk is frozen), so export rebuilds the trunk from the run's
backbone spec by the same :func:`~nearid.models.backbones.load_backbone` that training started from.
What is passed as a checkpoint but is not one (a run folder, its ``checkpoints/`` folder, a model
folder) and a head that does not fit the backbone's width are each one line that names the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nearid.io.errors import NearIDError


def _check_checkpoint(checkpoint: Path) -> None:
    """``checkpoint`` must be a ``RUN/checkpoints/step-N`` folder; say what it is otherwise."""
    if (checkpoint / "head.safetensors").is_file():
        return
    if not checkpoint.exists():
        raise NearIDError(f"{checkpoint}: no such checkpoint folder; pass RUN/checkpoints/step-N")
    runs = [checkpoint / "checkpoints", checkpoint]  # a run folder, or its checkpoints/ folder
    for folder in runs:
        done = [p for p in folder.glob("step-*") if (p / "head.safetensors").is_file() and p.name[5:].isdigit()]
        if done:
            newest = max(done, key=lambda p: int(p.name[5:]))
            what = "a run folder" if folder is runs[0] else "a run's checkpoints folder"
            raise NearIDError(f"{checkpoint}: is {what}; pass one checkpoint in it, e.g. the newest: {newest}")
    if (checkpoint / "config.json").is_file() and any(checkpoint.glob("*.safetensors")):
        raise NearIDError(
            f"{checkpoint}: is a model folder, not a training checkpoint; a model is used as it is "
            f"(nearid:{checkpoint}, or --backbone for training): pass RUN/checkpoints/step-N to export"
        )
    raise NearIDError(
        f"{checkpoint}: no head.safetensors; pass a RUN/checkpoints/step-N folder written by nearid train"
    )


def _check_head_fits(weights: dict, head, checkpoint: Path, backbone: str) -> None:
    """A head trained on one backbone cannot sit on a trunk of another width: say so, naming both."""
    expected = head.state_dict()
    for name, tensor in weights.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise NearIDError(
                f"{checkpoint}: its head does not fit backbone '{backbone}' ({name} is {list(tensor.shape)} in the "
                f"checkpoint, {list(expected[name].shape)} on that backbone: another width); export onto the backbone "
                "the run trained on (leave out --backbone to use the run's config.json)"
            )
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise NearIDError(
            f"{checkpoint}: its head does not fit backbone '{backbone}' ({detail}); "
            "export onto the backbone the run trained on"
        )


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, backbone: str | None = None) -> Path:
    """A full :class:`NearIDModel` (trunk + trained head) and its processor, which ``from_pretrained``
    and the ``nearid:DIR`` encoder load. The trunk is rebuilt from the run's backbone spec by the same
    :func:`~nearid.models.backbones.load_backbone` that training started from."""
    from safetensors.torch import load_file

    from nearid.models.backbones import load_backbone

    checkpoint = Path(checkpoint)
    _check_checkpoint(checkpoint)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NearIDError(f"{out}: is a file; export writes a model folder: pass a new folder name")
    config_file = checkpoint.parent.parent / "config.json"
    if backbone is None:
        if not config_file.is_file():
            raise NearIDError(
                f"{checkpoint}: its run folder {checkpoint.parent.parent} has no config.json naming the "
                "backbone it trained on; pass --backbone (the run's --backbone)"
            )
        backbone = json.loads(config_file.read_text())["backbone"]
    head = load_file(checkpoint / "head.safetensors")
    model, processor = load_backbone(backbone)
    _check_head_fits(head, model.head, checkpoint, backbone)
    model.head.load_state_dict(head)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


__all__ = ["export"]
