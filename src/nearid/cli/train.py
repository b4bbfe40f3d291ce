"""``nearid train`` (the NearID head on a frozen backbone) and ``export`` (a full model from a head-only
checkpoint). Both keep ``--backbone`` for the trunk they start from: it is not a model they score."""

from __future__ import annotations

from nearid.cli.options import (
    add_batch_size,
    add_num_workers,
    add_option,
    add_overwrite,
    add_seed,
    nonnegative_int,
    positive_float,
    positive_int,
    workers,
)


def cmd_train(args) -> int:
    from nearid.training.config import TrainConfig
    from nearid.training.loop import train

    config = TrainConfig.from_options(args.config, **vars(args))
    from nearid.io.outputs import check_outputs

    check_outputs([], [config.data, config.mtg, args.config], folders=[config.out])
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    print(f"done: step {result['step']}, loss {result['loss']:.4f}, checkpoint {result['checkpoint']}")
    return 0


def cmd_export(args) -> int:
    from nearid.io.outputs import check_outputs
    from nearid.training.export import export

    check_outputs([], [args.checkpoint], folders=[args.out])
    print(
        f"wrote {export(args.checkpoint, args.out, args.backbone)} (load with NearIDModel.from_pretrained or nearid:DIR)"
    )
    return 0


def _train_inputs(p) -> None:
    """What training reads and where it writes (each defaults to the config file's, then TrainConfig's)."""
    add_option(p, "--config", help="JSON training config; the options below override it")
    add_option(p, "--data", help="positives (hub id, folder, or a `nearid synth` folder)")
    add_option(p, "--sources", nargs="+", help="distractor sources (default: Flux Flux_1024 Qwen Qwen_1328)")
    add_option(p, "--mtg", help="MTG dataset mixed in (train split, repeated)")
    add_option(p, "--out", help="run folder: token_cache/, checkpoints/step-N/, config.json")
    add_option(
        p,
        "--backbone",
        help="the frozen trunk to start from: a SigLIP checkpoint (default google/siglip2-so400m-patch14-384), "
        "tiny[:seed] or nearid:DIR",
    )


def _train_schedule(p) -> None:
    """The loss, the optimiser's schedule and how often the run logs, saves and validates."""
    add_option(p, "--loss", help="loss spec, e.g. nearid:1.0+cohesion:0.1 (default nearid:1.0)")
    add_option(p, "--lr", type=positive_float, help="peak learning rate of the head (default 1e-4)")
    add_option(p, "--epochs", type=int, help="passes over the training rows (default 11)")
    add_batch_size(
        p, default=None, help="global batch: training samples per optimiser step, all processes (default 128)"
    )
    add_option(p, "--warmup-steps", type=nonnegative_int, help="linear learning-rate warm-up steps (default 100)")
    add_seed(p, "sampling, augmentation and the head's initialisation (default 0)")
    add_option(p, "--save-steps", type=positive_int, help="write a checkpoint every N steps (default 100)")
    add_option(p, "--log-steps", type=positive_int, help="print the loss every N steps (default 10)")
    add_option(
        p,
        "--max-steps",
        type=positive_int,
        help="stop after N steps; the schedule still spans every epoch (smoke runs)",
    )
    add_option(
        p,
        "--mixed-precision",
        choices=["auto", "no", "fp16", "bf16"],
        help="auto (default): fp16 on CUDA as the authors trained, no on the CPU; the frozen trunk then runs in half",
    )
    add_option(
        p, "--jitter-prob", type=float, help="per-slot colour jitter probability (default 0, as the authors' code)"
    )
    add_option(p, "--affine-prob", type=float, help="per-slot translate + scale disalignment probability (default 0)")
    add_option(
        p, "--eval-steps", type=nonnegative_int, help="validation SSR/PA every N steps on --val-split (default: never)"
    )
    add_option(p, "--val-split", help="split validated on (default val)")


def _add_train(commands) -> None:
    p = commands.add_parser(
        "train", help="train the NearID head on a frozen backbone (accelerate launch for N processes)"
    )
    _train_inputs(p)
    _train_schedule(p)
    add_option(
        p,
        "--token-cache",
        choices=["auto", "on", "off"],
        help="auto (default): cache the trunk's tokens when the estimate fits the disk (keeping 10%% + 1 GiB free), "
        "else stream; on: cache or refuse; off: stream (run the trunk every step)",
    )
    add_option(p, "--uncached", dest="token_cache", action="store_const", const="off", help="--token-cache off")
    add_num_workers(
        p,
        default=None,
        type=workers,
        help="processes decoding the trunk's inputs while it runs (default auto: min(8, CPUs) on CUDA, 0 on CPU)",
    )
    add_option(p, "--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    add_overwrite(p, "the run in --out (one nearid train made)")
    p.set_defaults(run=cmd_train)


def register(commands) -> None:
    _add_train(commands)

    p = commands.add_parser("export", help="write a full NearIDModel from a head-only checkpoint")
    p.add_argument("checkpoint", help="RUN/checkpoints/step-N")
    p.add_argument("out", help="output folder (save_pretrained layout)")
    add_option(p, "--backbone", help="the trunk the head sits on (default: the run's, from its config.json)")
    p.set_defaults(run=cmd_export)


__all__ = ["cmd_export", "cmd_train", "register"]
