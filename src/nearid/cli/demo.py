"""``nearid demo`` (``make demo``): the offline end-to-end run, synthetic data to a trained NearID head,
with its settings' defaults read from :class:`nearid.demo.DemoConfig`."""

from __future__ import annotations

from nearid.cli.options import add_option, add_seed


def cmd_demo(args) -> int:
    from nearid.demo import DemoConfig, run_demo
    from nearid.io.outputs import check_outputs

    check_outputs([], [], folders=[args.out])
    overrides = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in vars(args).items()
        if k in DemoConfig.__dataclass_fields__ and v is not None
    }
    run_demo(args.out, DemoConfig(**overrides))
    return 0


def register(commands) -> None:
    from nearid.demo import DemoConfig

    d = DemoConfig()
    p = commands.add_parser(
        "demo", help="offline end-to-end run: synth data, stand-in backbone, baselines, NearID training (make demo)"
    )
    add_option(p, "--out", default="runs/demo", help="output folder (emptied first)")
    add_option(p, "--identities", type=int, help=f"synthetic identities (default {d.identities})")
    add_option(p, "--test", type=int, help=f"test identities (default {d.test})")
    add_option(p, "--val", type=int, help=f"validation identities (default {d.val})")
    add_option(
        p, "--standin-epochs", type=int, help=f"stand-in backbone pretraining epochs (default {d.standin_epochs})"
    )
    add_option(
        p,
        "--standin-foreground-weight",
        type=float,
        help=f"weight of the stand-in's dense foreground term; 0 = contrastive only (default {d.standin_foreground_weight})",
    )
    add_option(p, "--train-epochs", type=int, help=f"NearID head training epochs (default {d.train_epochs})")
    add_option(
        p, "--sources", nargs="+", type=str, help=f"synthetic distractor sources (default {' '.join(d.sources)})"
    )
    add_option(
        p,
        "--headline-sources",
        nargs="+",
        type=str,
        help=f"sources that results.json's baseline/trained report (default {' '.join(d.headline_sources)})",
    )
    add_seed(p, f"the data, the stand-in and the training (default {d.seed})")
    p.set_defaults(run=cmd_demo)


__all__ = ["cmd_demo", "register"]
