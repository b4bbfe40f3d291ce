"""Images in: safe decoding to 8-bit RGB, masks and the authors' mask cleaning, each checkpoint's
preprocessing, and the worker input pipeline. Names resolve on first use (no torch for ``load_image``)."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "ALPHA_BACKGROUND": "nearid.images.decode",
    "IMAGE_SUFFIXES": "nearid.images.decode",
    "ImageInput": "nearid.images.decode",
    "ImageRef": "nearid.images.decode",
    "MAX_PIXELS": "nearid.images.decode",
    "apply_mask": "nearid.images.decode",
    "clean_mask": "nearid.images.mask_cleaning",
    "dilate_mask": "nearid.images.mask_cleaning",
    "evaluation_mask": "nearid.images.mask_cleaning",
    "is_metadata_name": "nearid.images.decode",
    "list_images": "nearid.images.decode",
    "load_image": "nearid.images.decode",
    "load_mask": "nearid.images.decode",
    "load_masked": "nearid.images.decode",
    "preprocess_images": "nearid.images.processors",
    "to_rgb": "nearid.images.decode",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
