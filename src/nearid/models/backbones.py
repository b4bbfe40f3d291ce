"""The one factory of NearID models: a backbone spec -> ``(NearIDModel, image processor)``.

Training starts from it, ``export`` rebuilds the trunk with it, and the ``nearid``, ``siglip2-map``,
``siglip2-mean`` and ``tiny`` encoders are readouts of the model it returns, so every path that turns a
spec into a model loads the same weights the same way and preprocesses with the same processor
(open_clip style: the factory returns the model *and* its preprocessing). The spec grammar lives in
:mod:`nearid.models.specs`.

Loading is safe and strict for every family (:func:`nearid.models.loading.load_pretrained`).
"""

from __future__ import annotations

from nearid.models.loading import load_pretrained, quiet_transformers  # noqa: F401  (re-exported: their old home)
from nearid.models.specs import BackboneSpec, parse_backbone


def load_backbone(spec: str | BackboneSpec, *, allow_pickle: bool = False):
    """``(NearIDModel in float32 on the CPU, its image processor)`` for a backbone spec.

    ``tiny[:SEED]``: the deterministic untrained tiny model with SigLIP preprocessing at its size;
    ``nearid[:X]``: a NearID checkpoint (ours or the authors' release layout);
    anything else: a SigLIP folder or hub id, whose pretrained MAP head becomes the initial head.
    The processor is the checkpoint's own ``preprocessor_config.json`` when it has one, else SigLIP's
    defaults at the tower's image size.
    """
    from nearid.images.processors import load_processor, siglip_processor
    from nearid.models.nearid_model import NearIDModel, seeded_model, tiny_vision_config

    parsed = spec if isinstance(spec, BackboneSpec) else parse_backbone(spec)
    if parsed.kind == "tiny":
        model = seeded_model(tiny_vision_config(), parsed.seed)
        return model, siglip_processor(model.config.vision_config.image_size)
    if parsed.kind == "nearid":
        folder, model = load_pretrained(NearIDModel, parsed.argument, allow_pickle=allow_pickle)
    else:
        from transformers import SiglipVisionModel

        folder, siglip = load_pretrained(SiglipVisionModel, parsed.argument, allow_pickle=allow_pickle)
        model = NearIDModel.from_siglip(siglip, copy=False)
    return model, load_processor(folder, siglip_processor(model.config.vision_config.image_size))


__all__ = ["load_backbone", "load_pretrained"]
