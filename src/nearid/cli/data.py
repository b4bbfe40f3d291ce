"""``nearid synth`` (a synthetic matched-context benchmark), ``distract`` (near-identity distractors
inpainted into real views) and ``mask`` (foreground masks for your photos): the commands that make data.

Their models are named by role, never by a bare ``--model`` (which means the model a command embeds,
scores or benchmarks): distract's ``--generator-model`` and ``--quality-model``, mask's ``--detector``
and ``--sam``."""

from __future__ import annotations

import sys

from nearid.cli.options import (
    add_device_options,
    add_num_workers,
    add_option,
    add_overwrite,
    add_seed,
    finite_float,
    nonnegative_int,
    positive_int,
)
from nearid.io.errors import NearIDError


def cmd_synth(args) -> int:
    from nearid.data.synth import SynthConfig, generate
    from nearid.io.outputs import check_outputs

    check_outputs([], [], folders=[args.out])
    config = SynthConfig(
        identities=args.identities,
        sources=tuple(args.sources),
        size=args.size,
        seed=args.seed,
        val=args.val,
        test=args.test,
        mtg_train=args.mtg_train,
        mtg_test=args.mtg_test,
        image_format=args.image_format,
        output_format=args.dataset_format,
        workers=args.num_workers,
    )
    summary = generate(args.out, config, overwrite=args.overwrite)
    splits = summary["splits"]
    print(
        f"wrote {summary['identities']} identities ({summary['views']} views; train/val/test "
        f"{splits['train']}/{splits['val']}/{splits['test']}), sources {', '.join(summary['config']['sources'])}, "
        f"MTG {summary['mtg']['train']}+{summary['mtg']['test']} to {args.out} in {summary['seconds']['total']:.1f} s"
    )
    return 0


def cmd_distract(args) -> int:
    from nearid.distract import DistractConfig, distract
    from nearid.distract.generators import GENERATORS

    if args.list:
        for name, spec in GENERATORS.items():
            print(f"{name:18s} {spec.pipeline} ({spec.model}): {spec.needs}")
        return 0
    missing = [name for name in ("data", "generator", "source") if getattr(args, name) is None]
    if missing:
        raise NearIDError(f"--{missing[0]} is required (see nearid distract --help; --list shows the generators)")
    fields = DistractConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values["band"] = tuple(values.get("band", DistractConfig.band))
    summary = distract(DistractConfig(**values))
    if summary is not None:
        m = summary["measurements"]
        untrained = " (untrained)" if summary["untrained"] else ""
        outside = {k: "n/a" if v is None else v for k, v in m["outside_mean_abs"].items()}
        if all(v == "n/a" for v in outside.values()):
            outside = "n/a"  # every view's dilated mask covers it whole: no background left to compare
        print(
            f"generated {summary['distractors']} distractors of {summary['identities']} identities "
            f"({summary['generator']}{untrained}; resumed {summary['resumed_identities']}), "
            f"kept {summary['kept']}, filtered {summary['filtered']}; dataset at {summary['out']}"
        )
        print(
            f"quality: {summary['quality']}; outside-mask mean abs difference {outside}; "
            f"{summary['seconds']['per_image']} s per image"
        )
    return 0


def cmd_mask(args) -> int:
    from nearid.distract.masking import MaskConfig, make_masks

    fields = MaskConfig.__dataclass_fields__
    config = MaskConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    result = make_masks(config)
    print(f"wrote {len(result)} masks to {args.out}")
    for image, why in result.failures.items():
        print(f"  no mask for {image}: {why}", file=sys.stderr)
    if not result.written:
        print("nearid mask: error: no mask was written", file=sys.stderr)
        return 2
    return 0


def _add_synth(commands) -> None:
    from nearid.data.synth import SOURCES, SynthConfig

    d = SynthConfig()
    p = commands.add_parser("synth", help="write a synthetic matched-context benchmark in the hub schemas")
    p.add_argument("out", help="output folder (NearID/, NearID-<Source>/, MTG/, splits/)")
    add_option(p, "--identities", type=positive_int, default=d.identities, help=f"identities (default {d.identities})")
    add_option(
        p, "--sources", nargs="+", default=list(SOURCES), help=f"distractor rules (default: {' '.join(SOURCES)})"
    )
    add_option(p, "--size", type=positive_int, default=d.size, help=f"image side in pixels (default {d.size})")
    add_seed(p, f"the drawing: the same seed writes the same data (default {d.seed})", default=d.seed)
    add_option(p, "--val", type=nonnegative_int, help="validation identities (default: 5%%, at most 100)")
    add_option(p, "--test", type=positive_int, help="test identities (default: 25%%, at most 500)")
    for split in ("train", "test"):
        default = getattr(d, f"mtg_{split}")
        add_option(
            p, f"--mtg-{split}", type=nonnegative_int, default=default, help=f"MTG {split} samples (default {default})"
        )
    add_option(
        p,
        "--image-format",
        choices=["jpeg", "png"],
        default=d.image_format,
        help=f"how views are stored; masks are always PNG (default {d.image_format})",
    )
    add_option(
        p,
        "--dataset-format",
        old=("--format",),
        choices=["arrow", "parquet"],
        default=d.output_format,
        help=f"how the datasets are written: arrow (save_to_disk) or parquet (default {d.output_format})",
    )
    add_num_workers(
        p,
        old=("--workers",),
        type=positive_int,
        default=d.workers,
        help="processes drawing identities (default: the CPUs here)",
    )
    add_overwrite(p, "a folder an earlier nearid synth wrote")
    p.set_defaults(run=cmd_synth)


def _distract_inputs(p) -> None:
    """Which positives, which generator, and where the new source goes."""
    add_option(p, "--list", action="store_true", help="list the generators, what they need and their licences")
    add_option(
        p, "--data", help="positives: hub id, save_to_disk/parquet folder, a `nearid synth` root, or a folder layout"
    )
    add_option(p, "--generator", help="flux-fill | sdxl-inpaint | qwen-image | tiny-flux-fill | tiny-sdxl-inpaint")
    add_option(p, "--source", help="name of the new source (bench --sources NAME reads <data>-NAME)")
    add_option(p, "--out", help="output (default: <data>-<source>; for a folder layout <folder>-nearid/)")
    add_option(p, "--split", help="rows to generate: a split name or 'all' (default: all); other rows stay empty")
    add_option(p, "--split-file", help="JSON list of row positions to generate")
    add_option(
        p,
        "--generator-model",
        old=("--model",),
        dest="model",
        help="the generator's model folder or hub id (default: the generator's checkpoint)",
    )


def _distract_generation(p) -> None:
    """The generator's settings (each defaults to the generator's own: nearid distract --list)."""
    add_option(p, "--steps", type=positive_int, help="denoising steps (default: the generator's)")
    add_option(
        p,
        "--guidance",
        type=finite_float,
        help="guidance scale of flux-fill and sdxl-inpaint (default: the generator's)",
    )
    add_option(
        p,
        "--strength",
        type=finite_float,
        help="inpainting strength 0-1: how far the masked region is re-noised (default: the generator's)",
    )
    add_option(p, "--negative-prompt", help="what the image must not show (default: the generator's)")
    add_option(
        p,
        "--true-cfg",
        type=finite_float,
        help="qwen-image: true classifier-free guidance scale (default: the generator's)",
    )
    add_option(p, "--resolution", type=positive_int, help="longer side of the generation canvas (paper: 512 or native)")
    add_option(p, "--dilate", type=int, help="mask dilation in pixels (default 8)")
    add_option(p, "--feather", type=int, help="blend ramp inside the dilated mask, pixels, <= --dilate (default 6)")
    add_option(
        p,
        "--no-paste-back",
        dest="paste_back",
        action="store_const",
        const=False,
        help="keep the pipeline's pixels outside the mask (VAE round trip) instead of the original's",
    )
    add_seed(p, "generation; each view's noise derives from it (default 0)")
    add_option(p, "--prompts", help='JSON {"<id>": "prompt" or ["view 1", "view 2", ...]} instead of retrieval')
    add_option(p, "--template", help="prompt template with {description} and {category} (default {description})")
    add_option(
        p,
        "--band",
        nargs=2,
        type=finite_float,
        metavar=("LOW", "HIGH"),
        help="TF-IDF similarity band (default 0.1 0.8)",
    )


def _add_distract(commands) -> None:
    p = commands.add_parser(
        "distract", help="inpaint near-identity distractors into each view's background (diffusers)"
    )
    _distract_inputs(p)
    _distract_generation(p)
    add_option(
        p,
        "--quality-model",
        old=("--quality-encoder",),
        dest="quality_encoder",
        metavar="SPEC",
        help="encoder spec judging 'not the same object' (default: none)",
    )
    add_option(
        p, "--change-threshold", type=finite_float, help="least mean abs change inside the mask, 0-255 (default 2)"
    )
    add_option(p, "--filter", action="store_true", help="drop distractors that fail the quality checks (slots kept)")
    add_option(p, "--limit", type=positive_int, help="only the first N selected identities")
    add_device_options(p)
    add_option(p, "--offload", action="store_true", help="model CPU offload (GPUs too small for the model)")
    add_option(p, "--controlnet", help="qwen-image: the inpainting ControlNet (folder or hub id)")
    add_option(p, "--lora", help="qwen-image: a LoRA such as the Lightning 8-step one (needs peft)")
    add_option(p, "--keep-shards", action="store_true", help="keep the per-identity shards after assembling")
    add_overwrite(p, "an output an earlier distract run wrote")
    p.set_defaults(run=cmd_distract)


def _add_mask(commands) -> None:
    p = commands.add_parser("mask", help="foreground masks for your photos (text or box -> detector -> SAM)")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    add_option(p, "--prompt", help='what to segment, e.g. "a red mug" (zero-shot detector)')
    add_option(p, "--box", help="x0,y0,x1,y1 in pixels, the same for every image (instead of --prompt)")
    add_option(p, "--out", required=True, help="output folder: <name>_mask.png per image (folder layout beside views)")
    add_option(p, "--detector", help="OWLv2 or Grounding DINO checkpoint (default google/owlv2-base-patch16-ensemble)")
    add_option(p, "--sam", help="SAM checkpoint (default facebook/sam-vit-base)")
    add_option(
        p,
        "--detector-threshold",
        old=("--threshold",),
        dest="threshold",
        type=float,
        help="detector score threshold (default 0.1)",
    )
    add_option(
        p,
        "--layout",
        choices=["score", "folder"],
        help="score: OUT/<relative path>.png (score --mask-folder); folder: OUT/<dir>/<stem>_mask.png (default score)",
    )
    add_device_options(p, dtype=False)
    add_overwrite(p, "masks already in --out")
    p.set_defaults(run=cmd_mask)


def register(commands) -> None:
    _add_synth(commands)
    _add_distract(commands)
    _add_mask(commands)


__all__ = ["cmd_distract", "cmd_mask", "cmd_synth", "register"]
