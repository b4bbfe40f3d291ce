"""Batch embedding of many images with any ``Encoder``, and cosine similarity.

Images are read and preprocessed ahead of the model by :mod:`nearid.images.pipeline`: in worker
processes (``num_workers``), or one batch ahead on a thread (PIL decodes and resizes without
holding the GIL), so disk and preprocessing overlap the model's forward pass, and a fixed number
of batches of pixels are in memory however long the input list is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nearid.images.decode import ImageInput
from nearid.io.errors import NearIDError
from nearid.models.encoders import Encoder

#: Inputs longer than this many batches get a progress bar (on a terminal).
PROGRESS_MIN_BATCHES = 4


def embed(
    encoder: Encoder,
    images: Sequence[ImageInput],
    masks: Sequence[ImageInput | None] | None = None,
    *,
    batch_size: int = 32,
    progress: bool | None = None,
    failures: dict[int, str] | None = None,
    num_workers: int | str = 0,
    fast_decode: bool = False,
) -> torch.Tensor:
    """L2-normalised float32 embeddings ``[len(images), encoder.dim]``, in input order.

    ``masks`` (same length, ``None`` entries allowed) black out each image's background first.
    ``progress=None`` shows a bar on long inputs when writing to a terminal. An unreadable image
    raises its :class:`NearIDError`; pass a ``failures`` dict to collect ``{index: message}`` instead
    and get a row of NaN for each image that failed.

    ``num_workers`` processes decode and resize (0: this process, one batch ahead on a thread;
    ``"auto"``: :func:`~nearid.images.pipeline.resolve_num_workers`); the result does not depend on
    it. ``fast_decode`` decodes JPEGs of at least twice the model's input size at a reduced scale
    (``Image.draft``): faster, but the pixels and so the embeddings differ slightly from the exact
    path (measured in docs/input_pipeline.md); it applies to encoders with a ``pixel_split``.
    """
    from nearid.images.pipeline import ImageBatches, batches, resolve_num_workers

    check_inputs(images, masks, batch_size)
    device = torch.device(getattr(encoder, "device", None) or "cpu")
    num_workers = resolve_num_workers(num_workers, device)
    if not len(images):
        return torch.empty(0, encoder.dim)
    split = getattr(encoder, "pixel_split", None)
    dataset = ImageBatches(
        images,
        masks,
        batch_size,
        split=split,
        preprocess=None if split is not None else encoder.preprocess,
        fast_decode=fast_decode,
    )
    if progress is None:  # automatic: long inputs only, and only on a terminal (tqdm's disable=None)
        disable = None if len(dataset) > PROGRESS_MIN_BATCHES else True
    else:
        disable = not progress
    bar = tqdm(total=len(images), desc=f"embedding [{encoder.name}]", unit="img", disable=disable)
    outputs = []
    pin = device.type == "cuda"
    with batches(dataset, num_workers=num_workers, pin_memory=pin) as loader, bar:
        for index, (pixels, failed) in enumerate(loader):
            if failed and failures is None:
                raise failed[0][1]
            if pixels is None:
                vectors = torch.empty(0, encoder.dim)
            elif split is not None:
                vectors = encoder.embed(split.finish(pixels.to(device, non_blocking=pin)))
            else:
                vectors = encoder.embed(pixels)
            for offset, exc in failed:  # keep input order: a NaN row where an image failed
                failures[index * batch_size + offset] = str(exc)
                vectors = torch.cat([vectors[:offset], torch.full((1, encoder.dim), float("nan")), vectors[offset:]])
            outputs.append(vectors)
            bar.update(len(vectors))
    return torch.cat(outputs)


def check_batch_size(batch_size, what: str = "batch_size") -> None:
    """The one batch-size rule of every command and library entry point: an integer of at least 1
    (``what`` is how the message names the setting, e.g. ``--batch-size``)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NearIDError(f"{what} {batch_size!r}: give a batch size of at least 1")


def check_inputs(images: Sequence, masks: Sequence | None = None, batch_size: int = 32) -> None:
    """:func:`embed`'s argument checks, as :class:`NearIDError`; callable before a model is loaded.

    A command calls this first so that a wrong mask count or batch size fails in a moment instead of
    after loading the weights.
    """
    check_batch_size(batch_size)
    if masks is not None and len(masks) != len(images):
        raise NearIDError(f"{len(images)} images but {len(masks)} masks: give one mask per image (None for no mask)")


def image_files(arguments: Sequence[str | os.PathLike], *, masks: bool = False) -> list[str]:
    """Command-line image arguments with each folder replaced by the images in it.

    ``nearid embed FOLDER`` embeds the images below FOLDER as :func:`~nearid.images.decode.list_images`
    finds them (sorted; linked subfolders followed; hidden and macOS ``._*`` files skipped). Files
    are kept as given; a missing one is reported when it is read. Masks must be files, one per image
    in the images' order: two folders would be paired by sort order alone, which silently pairs the
    wrong mask with an image as soon as one file is missing.
    """
    from nearid.images.decode import list_images

    files: list[str] = []
    for argument in arguments:
        if not Path(argument).is_dir():
            files.append(os.fspath(argument))
            continue
        if masks:
            raise NearIDError(
                f"{argument}: is a folder; pass --masks as mask files, one per image in the images' order"
            )
        found = list_images(argument)
        if not found:
            raise NearIDError(
                f"{argument}: a folder with no images in it (looked for png, jpg, webp, bmp, tif, gif below it)"
            )
        files.extend(str(path) for path in found)
    return files


#: Output formats of :func:`save_embeddings`, by file suffix.
EMBEDDING_FORMATS = (".npz", ".safetensors")


def embedding_format(path: str | os.PathLike) -> str:
    """The format (suffix) :func:`save_embeddings` will write to ``path``; checked before any work."""
    suffix = Path(path).suffix
    if suffix not in EMBEDDING_FORMATS:
        raise NearIDError(f"{path}: unknown embedding file format; use a .npz or .safetensors file name")
    return suffix


def save_embeddings(path: str | os.PathLike, vectors, paths: Sequence[str], model: str | None = None) -> Path:
    """Write ``vectors [N, D]`` and the ``paths`` they came from atomically, by ``path``'s suffix.

    ``.npz``: arrays ``embeddings`` and ``paths``. ``.safetensors``: tensor ``embeddings``, with
    ``paths`` (a JSON list) and ``model`` (the encoder spec) as string metadata, since safetensors
    holds only tensors.
    """
    from nearid.io.atomic import atomic_path

    path = Path(path)
    fmt = embedding_format(path)
    vectors = vectors.numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
    if len(vectors) != len(paths):
        raise ValueError(f"{len(vectors)} embeddings but {len(paths)} paths")
    paths = [str(p) for p in paths]
    with atomic_path(path) as tmp:
        if fmt == ".npz":
            with open(tmp, "wb") as handle:
                np.savez(handle, embeddings=vectors, paths=np.array(paths))
        else:
            from safetensors.numpy import save_file

            metadata = {"paths": json.dumps(paths)}
            if model is not None:
                metadata["model"] = model
            save_file({"embeddings": np.ascontiguousarray(vectors)}, str(tmp), metadata=metadata)
    return path


def _unit_rows(x) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return F.normalize(tensor.float(), dim=-1)


def similarity(a, b=None) -> torch.Tensor:
    """Cosine-similarity matrix ``[len(a), len(b)]`` (``b`` defaults to ``a``); rows are re-normalised."""
    a = _unit_rows(a)
    return a @ (a if b is None else _unit_rows(b)).T
