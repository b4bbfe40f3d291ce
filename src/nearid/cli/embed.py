"""``nearid embed``, ``compare`` and ``encoders``: a model's vectors for some images, their cosine
matrix, and the model specs there are. ``encoders`` needs no torch (tests/test_encoders.py)."""

from __future__ import annotations

from pathlib import Path

from nearid.cli.options import (
    add_load_options,
    add_mask_files,
    add_model_option,
    add_read_options,
    load_options,
    read_options,
)


def _encoder(args):
    from nearid.models.encoders import load_encoder

    return load_encoder(args.model, load_options(args))


def cmd_embed(args) -> int:
    from nearid.io.outputs import check_outputs
    from nearid.models.embedding import check_inputs, embed, embedding_format, image_files, save_embeddings

    images, masks = image_files(args.images), args.masks and image_files(args.masks, masks=True)
    check_outputs([args.out], [*args.images, *(args.masks or [])])  # input errors before any model is loaded
    embedding_format(args.out)
    check_inputs(images, masks, args.batch_size)
    vectors = embed(_encoder(args), images, masks, **read_options(args).as_kwargs())
    save_embeddings(args.out, vectors, images, model=args.model)
    print(f"wrote {len(vectors)} embeddings of width {vectors.shape[1]} to {args.out}")
    return 0


def cmd_compare(args) -> int:
    from nearid.models.embedding import check_inputs, embed, image_files, similarity

    images, masks = image_files(args.images), args.masks and image_files(args.masks, masks=True)
    check_inputs(images, masks, args.batch_size)
    encoder = _encoder(args)
    vectors = embed(encoder, images, masks, **read_options(args).as_kwargs())
    sims = similarity(vectors).numpy()
    names = [Path(p).name for p in images]
    width = max(8, *(len(n) for n in names))
    print(f"cosine similarity [{encoder.name}]")
    print(" " * width + "".join(f"{i:>9d}" for i in range(len(names))))
    for i, (name, row) in enumerate(zip(names, sims)):
        print(f"{name:>{width}}" + "".join(f"{v:9.4f}" for v in row) + f"   [{i}]")
    return 0


def cmd_encoders(args) -> int:
    from nearid.models.specs import available_encoders

    for spec, description in available_encoders().items():
        print(f"{spec:50s} {description}")
    return 0


def _image_inputs(parser) -> None:
    """What embed and compare read: images, their optional masks, the model and how it runs."""
    parser.add_argument("images", nargs="+", help="image files or folders (the images below a folder)")
    add_mask_files(parser)
    add_model_option(parser, "the encoder spec")
    add_load_options(parser)
    add_read_options(parser)


def register(commands) -> None:
    p = commands.add_parser("embed", help="embed images and save the vectors")
    _image_inputs(p)
    p.add_argument("--out", required=True, help="output .npz (embeddings, paths) or .safetensors")
    p.set_defaults(run=cmd_embed)

    p = commands.add_parser("compare", help="print the cosine-similarity matrix of some images")
    _image_inputs(p)
    p.set_defaults(run=cmd_compare)

    p = commands.add_parser("encoders", help="list the encoder specs (what --model takes)")
    p.set_defaults(run=cmd_encoders)


__all__ = ["cmd_compare", "cmd_embed", "cmd_encoders", "register"]
