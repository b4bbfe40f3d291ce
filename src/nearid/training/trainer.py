"""``nearid train``: the NearID head on a frozen backbone, from cached trunk tokens, on 1..N processes.

The recipe defaults are the paper's (spec 5.3): AdamW lr 1e-4, weight decay 1e-4, cosine schedule
with 100 warm-up steps, gradient clipping 1.0, global batch 128, 11 epochs, L_NearID (tau 0.07,
alpha 0.5), role-aware masking (0.5 / 0.2 / 0.6), MTG repeated 4x.

Determinism and resume. Samples and batch order are pure functions of (seed, epoch, index)
(:mod:`nearid.training.samples`), so the only state a run carries is the head, the optimizer, the
scheduler and the position (epoch, batch). A checkpoint holds exactly that, written atomically
(head as safetensors, the rest as a tensors-only state file loaded with ``weights_only=True``);
``resume=True`` continues from the newest complete checkpoint and sees exactly the batches an
uninterrupted run would have seen.

Several processes. Each process takes a contiguous share of every global batch; the loss gathers
all positives with gradients and normalises by global counts (:func:`nearid.training.losses.global_mean`),
so DDP's averaged gradient equals the one-process gradient of the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from nearid.io.atomic import atomic_path, write_text_atomic
from nearid.io.errors import NearIDError


@dataclass
class TrainConfig:
    data: str
    out: str
    sources: list[str] = field(default_factory=lambda: ["Flux", "Flux_1024", "Qwen", "Qwen_1328"])
    mtg: str | None = None
    backbone: str = "google/siglip2-so400m-patch14-384"  # a SigLIP checkpoint, "tiny[:seed]" or "nearid:<dir>"
    loss: str = "nearid:1.0"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    epochs: int = 11
    batch_size: int = 128
    grad_clip: float = 1.0
    seed: int = 0
    mask_probs: tuple[float, float, float] = (0.5, 0.2, 0.6)
    flip_prob: float = 0.5
    mtg_repeat: int = 4
    save_steps: int = 100
    log_steps: int = 10
    mixed_precision: str = (
        "auto"  # auto: fp16 on CUDA (the authors' config, spec 12.3), "no" on the CPU; or no/fp16/bf16
    )
    jitter_prob: float = 0.0  # per-slot colour jitter probability (the authors' default 0; spec 12.5)
    affine_prob: float = 0.0  # per-slot translate + scale "disalignment" probability (default 0)
    split: str = "train"
    max_steps: int | None = None  # stop early (tests, smoke runs); the schedule still spans all epochs
    token_cache: str = "auto"  # auto: cache when it fits on the disk, else stream; on: cache or refuse; off: stream
    num_workers: int | str = "auto"  # processes decoding the trunk's inputs; auto: min(8, CPUs) on CUDA, 0 on CPU
    eval_steps: int = 0  # validate (SSR/PA on `val_split`, main process) every N steps; 0 = never
    val_split: str = "val"

    def __post_init__(self) -> None:
        try:
            _check_settings(self.__dict__)
        except _SettingError as exc:
            raise NearIDError(f"TrainConfig.{exc.name} {exc.why}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        """A JSON config file, with command-line overrides on top (``None`` overrides are ignored)."""
        return cls.from_options(path, **overrides)

    @classmethod
    def from_options(cls, config_file: str | os.PathLike | None = None, **overrides) -> TrainConfig:
        """A config from an optional JSON file and options on top (``None`` options are ignored).

        ``data`` and ``out`` have no default: when neither the file nor the options give one, the
        error names the missing field (as its command-line option) instead of a dataclass TypeError.
        Options that are not fields of the config (the command's other arguments) are ignored.
        A meaningless value (``--epochs 0``, ``"lr": "fast"``) is one line naming the option or the
        file and setting, before any model loads.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {}
        overrides = _legacy_cache_tokens(overrides, "--uncached")
        if config_file is not None:
            try:
                values = json.loads(Path(config_file).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise NearIDError(f"{config_file}: cannot read the training config ({exc})") from None
            if not isinstance(values, dict):
                raise NearIDError(f"{config_file}: a training config is a JSON object of settings")
            values = _legacy_cache_tokens(values, f"{config_file}: 'cache_tokens'")
            unknown = set(values) - names
            if unknown:
                raise NearIDError(f"{config_file}: unknown setting(s) {', '.join(sorted(unknown))}")
        options = {k: v for k, v in overrides.items() if k in names and v is not None}
        values.update(options)
        missing = [name for name in ("data", "out") if values.get(name) is None]
        if missing:
            where = (
                f"neither {config_file} nor the options set it" if config_file is not None else "or give --config FILE"
            )
            raise NearIDError(f"--{missing[0]} is required ({where})")
        try:
            _check_settings(values)
        except _SettingError as exc:
            where = f"--{exc.name.replace('_', '-')}" if exc.name in options else f"{config_file}: {exc.name!r}"
            raise NearIDError(f"{where} {exc.why}") from None
        return cls(**values)


def _legacy_cache_tokens(values: dict, where: str) -> dict:
    """``cache_tokens`` (before ``token_cache``; every earlier run's config.json holds it) as
    ``token_cache``: ``false`` (``--uncached``) is ``off``; ``true`` was the default written into every
    config, whether chosen or not, so it is ``auto`` (which caches wherever the cache fits, as before).
    A value that is not a bool, or one that contradicts a ``token_cache`` beside it, is an error."""
    if values.get("cache_tokens") is None:
        return {k: v for k, v in values.items() if k != "cache_tokens"}
    values = dict(values)
    legacy = values.pop("cache_tokens")
    if not isinstance(legacy, bool):
        raise NearIDError(f"{where} must be true or false, not {legacy!r} (it is now token_cache: auto, on or off)")
    mode = "auto" if legacy else "off"
    if values.get("token_cache") not in (None, mode) and not (legacy and values["token_cache"] == "on"):
        raise NearIDError(f"{where} {legacy!r} contradicts token_cache {values['token_cache']!r}; keep one of them")
    values.setdefault("token_cache", None)
    if values["token_cache"] is None:
        values["token_cache"] = mode
    return values


# ------------------------------------------------------------------------------ settings checked up front
class _SettingError(Exception):
    def __init__(self, name: str, why: str):
        super().__init__(f"{name} {why}")
        self.name, self.why = name, why


#: integer settings and their least meaningful value (max_steps may also be None: run every epoch)
_INTS = {
    "epochs": 1,
    "batch_size": 1,
    "save_steps": 1,
    "log_steps": 1,
    "max_steps": 1,
    "warmup_steps": 0,
    "eval_steps": 0,
    "mtg_repeat": 0,
    "seed": 0,
}
_TEXTS = ("data", "out", "backbone", "loss", "split", "val_split")
_MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


def _number(name: str, value, low: float, high: float | None = None, *, open_low: bool = False) -> float:
    bound = f"> {low:g}" if open_low else f">= {low:g}"
    what = f"a number {bound}" + (f" and <= {high:g}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _SettingError(name, f"must be {what}, not {value!r}")
    if value < low or (open_low and value == low) or (high is not None and value > high):
        raise _SettingError(name, f"must be {what}, not {value!r}")
    return float(value)


def _check_settings(values: dict) -> None:
    """Check and normalise ``values`` (a TrainConfig's fields) in place: numbers are numbers in range,
    texts are texts, ``mask_probs`` is 3 probabilities. ``1`` is accepted for a float and ``2.0`` for an
    int (JSON writes both), ``True`` for neither."""
    for name, low in _INTS.items():
        if name not in values or (name == "max_steps" and values[name] is None):
            continue
        value = values[name]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _SettingError(name, f"must be an integer >= {low}, not {value!r}")
        values[name] = value
    if "lr" in values:
        values["lr"] = _number("lr", values["lr"], 0.0, open_low=True)
    for name in ("weight_decay", "grad_clip"):
        if name in values:
            values[name] = _number(name, values[name], 0.0)
    if "flip_prob" in values:
        values["flip_prob"] = _number("flip_prob", values["flip_prob"], 0.0, 1.0)
    if "mask_probs" in values:
        probs = values["mask_probs"]
        if not isinstance(probs, (list, tuple)) or len(probs) != 3:
            raise _SettingError("mask_probs", f"must be 3 probabilities (anchor, positive, distractor), not {probs!r}")
        values["mask_probs"] = tuple(_number("mask_probs", p, 0.0, 1.0) for p in probs)
    for name in _TEXTS:
        if name in values and (not isinstance(values[name], str) or not values[name]):
            raise _SettingError(name, f"must be a non-empty text, not {values[name]!r}")
    if values.get("mtg") is not None and (not isinstance(values["mtg"], str) or not values["mtg"]):
        raise _SettingError("mtg", f"must be a dataset (a text) or null, not {values['mtg']!r}")
    if "sources" in values:
        sources = values["sources"]
        if not isinstance(sources, (list, tuple)) or not sources or not all(isinstance(s, str) and s for s in sources):
            raise _SettingError("sources", f"must be a non-empty list of source names, not {sources!r}")
        values["sources"] = list(sources)
    if "mixed_precision" in values and values["mixed_precision"] not in _MIXED_PRECISION:
        raise _SettingError(
            "mixed_precision", f"must be one of {', '.join(_MIXED_PRECISION)}, not {values['mixed_precision']!r}"
        )
    if "token_cache" in values and values["token_cache"] not in ("auto", "on", "off"):
        raise _SettingError("token_cache", f"must be one of auto, on, off, not {values['token_cache']!r}")
    if "num_workers" in values:
        workers = values["num_workers"]
        if isinstance(workers, float) and workers.is_integer():
            workers = int(workers)
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise _SettingError("num_workers", f"must be auto or an integer >= 0, not {workers!r}")
        values["num_workers"] = workers


def _latest_checkpoint(out: Path) -> Path | None:
    done = [
        p
        for p in (out / "checkpoints").glob("step-*")
        if (p / "state.pt").is_file() and (p / "head.safetensors").is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


# ------------------------------------------------------------------------------ the run folder
#: What a run writes into its folder, and so all that ``--overwrite`` removes. The token cache stays: it is
#: keyed by content (the trunk's signature, and image keys versioned by the data's fingerprint), so an
#: overwritten run reads only tokens of exactly its own inputs and equals a run in a new folder, while a
#: re-run on real data does not pay hours of trunk passes again. A cache of another trunk is replaced
#: (:func:`_replace_foreign_cache`).
RUN_FILES = ("checkpoints", "config.json", "inputs.json", "validation.jsonl")
TOKEN_CACHE = "token_cache"
#: Settings a resumed run may change: they cannot change the head it trains (where the folder is, how
#: often it logs, saves or validates, and where it stops; the schedule spans all epochs whatever max_steps).
#: ``num_workers`` changes who decodes, not the pixels; ``token_cache`` changes the tokens by at most the
#: cache's fp16 rounding (none under fp16 mixed precision, where the trunk's own output is fp16), and a resumed
#: ``auto`` run keeps the mode it started in (:func:`_streamed`).
RESUME_FREE = (
    "out",
    "log_steps",
    "save_steps",
    "eval_steps",
    "val_split",
    "max_steps",
    "token_cache",
    "num_workers",
)
_LOCAL_PATHS = ("data", "mtg", "backbone")


def _holds_run(out: Path) -> bool:
    return (out / "config.json").exists() or (out / "checkpoints").exists()


def _same(name: str, old, new) -> bool:
    """Equal settings; a local path given once relative and once absolute is the same setting."""
    if old == new:
        return True
    if name in _LOCAL_PATHS and isinstance(old, str) and isinstance(new, str):
        old_path, new_path = Path(old.removeprefix("nearid:")), Path(new.removeprefix("nearid:"))
        return (
            old.startswith("nearid:") == new.startswith("nearid:")
            and old_path.exists()
            and new_path.exists()
            and old_path.resolve() == new_path.resolve()
        )
    return False


def _resume_differences(out: Path, config: TrainConfig) -> list[str]:
    """``name: old -> new`` for each setting that differs from the run's ``config.json`` and may not."""
    try:
        saved = json.loads((out / "config.json").read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise NearIDError(
            f"{out}: holds checkpoints but no config.json, so a resume cannot be checked against "
            "the run's settings; start a new run in another --out"
        ) from None
    except (OSError, ValueError) as exc:
        raise NearIDError(f"{out}/config.json: not readable ({exc}); start a new run in another --out") from None
    now = json.loads(json.dumps(dataclasses.asdict(config)))  # as config.json holds it (tuples as lists)
    default = json.loads(json.dumps(dataclasses.asdict(TrainConfig(data="-", out="-"))))
    return [
        f"{name}: {saved.get(name, default[name])!r} -> {value!r}"
        for name, value in now.items()
        if name not in RESUME_FREE and not _same(name, saved.get(name, default[name]), value)
    ]


def check_run_folder(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> str:
    """What this run may do with ``config.out``: ``"new"``, ``"resume"`` or ``"overwrite"``; reads only.

    A folder holding a run (``config.json`` or ``checkpoints/``) is refused unless ``resume`` (every
    setting outside :data:`RESUME_FREE` as the run's ``config.json`` has it) or ``overwrite`` (only a
    folder a ``nearid train`` made, by its marker). Any other non-empty folder is refused. Every process
    calls this before any process changes the folder.
    """
    from nearid.io.ownership import MARKER, check_removable, owned_by

    out = Path(config.out)
    if resume and overwrite:
        raise NearIDError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise NearIDError(f"{out}: exists and is not a folder; choose another --out")
    contents = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    holds_run, ours = _holds_run(out), owned_by(out) == "train"
    if overwrite:
        if contents and not ours:
            check_removable(out)  # a folder without nearid's marker: its one-line refusal
            raise NearIDError(
                f"{out}: made by `nearid {owned_by(out)}`, not by `nearid train`, so --overwrite "
                "will not delete it; choose another --out"
            )
        return "overwrite"
    if resume and holds_run:
        differences = _resume_differences(out, config)
        if differences:
            raise NearIDError(
                f"{out}: --resume with settings that differ from the run's config.json "
                f"({'; '.join(differences)}); resume with the run's settings, or train into "
                "another --out (or --overwrite)"
            )
        latest = _latest_checkpoint(out)
        at = int(latest.name.split("-")[1]) if latest is not None else 0
        if config.max_steps is not None and config.max_steps < at:
            raise NearIDError(
                f"{out}: the run is at step {at}, past --max-steps {config.max_steps}; "
                f"pass a --max-steps of at least {at}"
            )
        return "resume"
    if holds_run:
        raise NearIDError(
            f"{out}: holds a training run (config.json, checkpoints/); pass --resume to continue "
            "it, --overwrite to replace it, or choose another --out"
        )
    if contents and not (ours and contents == [MARKER]):
        raise NearIDError(f"{out}: not empty and not a run folder made by nearid; choose a new or empty --out")
    return "new"


def _prepare_run_folder(config: TrainConfig, action: str) -> None:
    """The main process's side of :func:`check_run_folder`: mark a new folder, or remove what an
    earlier run made (:data:`RUN_FILES`, nothing else), then write this run's ``config.json``."""
    import shutil

    from nearid.io.ownership import create_owned, owned_by

    out = Path(config.out)
    if action == "overwrite":
        for name in RUN_FILES:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    if owned_by(out) is None and (action != "resume" or not _holds_run(out)):
        create_owned(out, "train")  # a missing or empty folder (checked); an unmarked earlier run stays unmarked
    write_text_atomic(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def _replace_foreign_cache(folder: Path, signature: str) -> None:
    """Under ``--overwrite``, remove the run's token cache when it holds another trunk's tokens (the run
    folder is nearid train's, checked before): a cache of this trunk is kept, since it is content-keyed."""
    import shutil

    manifest = folder / "manifest.json"
    if not folder.is_dir() or folder.is_symlink():
        return
    try:
        same = json.loads(manifest.read_text()).get("signature") == signature
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        shutil.rmtree(folder)


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Train the head; returns ``{"step", "loss", "checkpoint"}`` (on every process).

    ``resume`` continues the run in ``config.out`` (same settings); ``overwrite`` replaces it; without
    either, ``config.out`` must not hold a run (:func:`check_run_folder`, before any model loads).

    The token cache (``config.token_cache``, :mod:`nearid.training.cache_policy`) is decided before the
    model loads and the folder changes: ``on`` that does not fit the disk refuses here. A cached run
    fills the cache (workers decode while the trunk runs) and trains from it; a streaming run decodes
    the next steps' inputs in ``num_workers`` processes while the trunk runs on the current one
    (:mod:`nearid.training.prefetch`); either way only filled slots reach the trunk.
    """
    from accelerate import Accelerator
    from safetensors.torch import load_file, save_file
    from transformers import get_scheduler

    from nearid.data import load_mtg, load_nearid
    from nearid.images.pipeline import batches as prefetched_batches
    from nearid.images.processors import preprocessor
    from nearid.models.backbones import load_backbone
    from nearid.training.cache_policy import backbone_token_shape
    from nearid.training.losses import CombinedLoss
    from nearid.training.prefetch import CHUNK_SAMPLES, SlotChunks, default_workers
    from nearid.training.samples import SampleRecipe, TrainingSet
    from nearid.training.token_cache import TokenCache, fill, model_signature, slot_tokens, token_shape

    action = check_run_folder(config, resume=resume, overwrite=overwrite)  # every process, before any changes
    cuda = torch.cuda.is_available()
    precision = mixed_precision(config.mixed_precision, cuda=cuda)
    accelerator = Accelerator(cpu=not cuda, mixed_precision=precision)
    workers = default_workers(cuda) if config.num_workers == "auto" else int(config.num_workers)
    out = Path(config.out)
    # everything that can refuse the run (loss spec, data, changed inputs, a cache that cannot fit, backbone)
    # before the folder changes
    loss_fn = CombinedLoss(config.loss)
    bench = load_nearid(config.data, config.sources, split=config.split)
    mtg = load_mtg(config.mtg, split="train") if config.mtg else None
    inputs = _inputs(bench, mtg)
    latest = _latest_checkpoint(out) if resume else None
    if latest is not None:
        _check_same_inputs(out, inputs)
    recipe = SampleRecipe(
        seed=config.seed,
        mask_probs=tuple(config.mask_probs),
        flip_prob=config.flip_prob,
        mtg_repeat=config.mtg_repeat,
        jitter_prob=config.jitter_prob,
        affine_prob=config.affine_prob,
    )
    training_set = TrainingSet(bench, config.sources, mtg, recipe)
    batches_per_epoch = len(training_set.batches(0, config.batch_size))
    total_steps = config.epochs * batches_per_epoch
    step = int(latest.name.split("-")[1]) if latest is not None else 0
    end = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    planned = _planned_batches(training_set, config.batch_size, step, end, batches_per_epoch)

    model = processor = None
    shape = backbone_token_shape(config.backbone)  # from the config: no weights loaded yet
    if shape is None:  # not readable that way: the loader loads it, or names the problem
        model, processor = load_backbone(config.backbone)
        shape = token_shape(model)
    decision, cache_slots = _decide_cache(
        config,
        accelerator,
        training_set,
        planned,
        shape,
        resumed_streaming=latest is not None and _streamed(out),
        keep_cached=action != "overwrite",
    )
    if model is None:
        model, processor = load_backbone(config.backbone)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _prepare_run_folder(config, action)
    accelerator.wait_for_everyone()
    model = model.to(accelerator.device)
    preprocess = preprocessor(processor)

    # the validation encoder casts the model to fp32 when it is made, so it comes before the half trunk
    validation = _validation(config, model, processor, accelerator.device) if config.eval_steps else None
    half_trunk(model, precision)
    trunk_dtype = model.backbone.embeddings.patch_embedding.weight.dtype
    computed, cache = 0, None
    if decision:  # fill the token cache once: each process computes its share, then all read everything
        signature = model_signature(model, processor)  # hashes the trunk's weights: once
        if action == "overwrite" and accelerator.is_main_process:
            _replace_foreign_cache(out / TOKEN_CACHE, signature)
        accelerator.wait_for_everyone()
        cache = TokenCache(out / TOKEN_CACHE, signature, *token_shape(model))
        inputs["trunk"] = cache.signature
        # jittered / disaligned slots are drawn afresh per (epoch, item, slot): they run the trunk when used
        slots = sorted(cache_slots, key=lambda s: s.key)
        mine = [s for i, s in enumerate(slots) if i % accelerator.num_processes == accelerator.process_index]
        computed = fill(cache, model, mine, preprocess, progress=False, num_workers=workers, pin_memory=cuda)
        accelerator.wait_for_everyone()
        cache.refresh()

    head = model.head
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps)
    if latest is not None:
        head.load_state_dict(load_file(latest / "head.safetensors"))
        state = torch.load(latest / "state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    head, optimizer = accelerator.prepare(head, optimizer)
    if accelerator.is_main_process:
        write_text_atomic(out / INPUTS_FILE, json.dumps(inputs, indent=2) + "\n")
        print(
            f"training {len(training_set)} items x {config.epochs} epochs = {total_steps} steps on "
            f"{accelerator.num_processes} process(es); {computed} trunk inputs cached by this process"
            + (f"; resuming at step {step}" if step else ""),
            flush=True,
        )

    # the trunk's inputs of each step: all filled slots when streaming, the augmented ones when cached
    def needs_trunk(slot) -> bool:
        return cache is None or not slot.cacheable

    shares = [
        (epoch, _share(indices, accelerator.process_index, accelerator.num_processes)) for epoch, indices in planned
    ]
    streams = cache is None or recipe.jitter_prob > 0 or recipe.affine_prob > 0
    chunks = [
        (k, start) for k, (_, share) in enumerate(shares) if streams for start in range(0, len(share), CHUNK_SAMPLES)
    ]

    def chunk_slots(index: int) -> list:  # runs in the worker processes
        k, start = chunks[index]
        epoch, share = shares[k]
        samples = training_set.samples(epoch, share[start : start + CHUNK_SAMPLES])
        return [slot for _, _, slot in _present(samples) if needs_trunk(slot)]

    last_loss = float("nan")
    head.train()
    dataset = SlotChunks(len(chunks), chunk_slots, preprocess, dtype=trunk_dtype)
    with prefetched_batches(dataset, num_workers=workers, pin_memory=cuda) as prefetched:
        for epoch, share in shares:
            pixels = None
            if streams:  # this step's chunks, moved to the device as they come (pinned: without blocking)
                parts = [next(prefetched) for _ in range(0, len(share), CHUNK_SAMPLES)]
                parts = [p.to(accelerator.device, non_blocking=True) for p in parts if p.numel()]
                pixels = torch.cat(parts) if len(parts) > 1 else parts[0] if parts else None

            def tokens_of(slots, pixels=pixels):
                if pixels is None:  # nothing runs the trunk in this step: every slot is cached
                    return slot_tokens(slots, model, preprocess, cache)
                return slot_tokens(slots, model, preprocess, cache, pixels=pixels)

            loss = _step_loss(head, loss_fn, training_set.samples(epoch, share), tokens_of, accelerator.device)
            accelerator.backward(loss)
            if config.grad_clip:
                accelerator.clip_grad_norm_(head.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            last_loss = float(accelerator.reduce(loss.detach(), reduction="mean"))
            if accelerator.is_main_process and step % config.log_steps == 0:
                print(
                    f"step {step}/{total_steps} epoch {epoch} loss {last_loss:.4f} lr {scheduler.get_last_lr()[0]:.2e}",
                    flush=True,
                )
            if step % config.save_steps == 0 or step == total_steps:
                _save(accelerator, head, optimizer, scheduler, step, out, save_file)
            if validation is not None and step % config.eval_steps == 0:
                head.eval()
                if accelerator.is_main_process:
                    score = validation()
                    print(
                        f"step {step} validation ({config.val_split}): SSR {score.ssr:.2f} PA {score.pa:.2f}",
                        flush=True,
                    )
                    with open(out / "validation.jsonl", "a") as handle:
                        handle.write(json.dumps({"step": step, **score.as_dict()}) + "\n")
                accelerator.wait_for_everyone()
                head.train()
    checkpoint = _save(accelerator, head, optimizer, scheduler, step, out, save_file)
    return {"step": step, "loss": last_loss, "checkpoint": str(checkpoint)}


def _planned_batches(
    training_set, batch_size: int, start: int, end: int, per_epoch: int
) -> list[tuple[int, list[int]]]:
    """``(epoch, global batch indices)`` of the steps ``start .. end - 1`` this run will take."""
    planned = []
    for epoch in range(start // per_epoch, -(-end // per_epoch)):
        for batch_index, indices in enumerate(training_set.batches(epoch, batch_size)):
            if start <= epoch * per_epoch + batch_index < end:
                planned.append((epoch, indices))
    return planned


def _streamed(out: Path) -> bool:
    """The run in ``out`` trained without a token cache (its ``inputs.json`` records no trunk)."""
    try:
        recorded = json.loads((out / INPUTS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and "trunk" in recorded and recorded["trunk"] is None


def _decide_cache(
    config: TrainConfig, accelerator, training_set, planned, shape, *, resumed_streaming: bool, keep_cached: bool
):
    """``(cache?, the distinct cacheable slots of the planned steps)``: the main process decides
    (:func:`nearid.training.cache_policy.plan`) and prints the line; every process follows it (or raises
    the same refusal). The slots are listed only when the setting may cache. ``keep_cached``: count the
    inputs already in the run's cache as done (not under ``--overwrite``, which may replace the cache)."""
    from accelerate.utils import broadcast_object_list

    from nearid.training.cache_policy import plan
    from nearid.training.token_cache import DEFAULT_FILL_BATCH, stored_keys

    slots: list = []
    if config.token_cache != "off":
        seen: dict = {}
        for epoch, indices in planned:
            for _, _, slot in _present(training_set.samples(epoch, indices)):
                if slot.cacheable and slot.key not in seen:
                    seen[slot.key] = slot
        slots = list(seen.values())
    outcome: list = [None]
    if accelerator.is_main_process:
        folder = Path(config.out) / TOKEN_CACHE
        try:
            decided = plan(
                config.token_cache,
                keys=[slot.key for slot in slots],
                already=stored_keys(folder) if keep_cached else frozenset(),
                n_tokens=shape[0],
                hidden=shape[1],
                folder=folder,
                shard_size=DEFAULT_FILL_BATCH,
                resumed_streaming=resumed_streaming,
            )
            print(decided.line(), flush=True)
            outcome = [decided.cache]
        except NearIDError as exc:
            outcome = [exc]
    if accelerator.num_processes > 1:
        broadcast_object_list(outcome)
    if isinstance(outcome[0], NearIDError):
        raise NearIDError(str(outcome[0]))
    return bool(outcome[0]), (slots if outcome[0] else [])


#: What a run was trained on, by content: each table's fingerprint (and the token cache's trunk).
INPUTS_FILE = "inputs.json"


def _inputs(bench, mtg) -> dict:
    """The data fingerprints of a run (:attr:`nearid.data.loading.Table.fingerprint`): ``positives``,
    each source by name, and ``MTG`` (the token cache's ``trunk`` signature is added when tokens are
    cached). Recorded in ``inputs.json`` beside ``config.json``."""
    data = {"positives": bench.positives.fingerprint, **{name: t.fingerprint for name, t in bench.sources.items()}}
    if mtg is not None:
        data["MTG"] = mtg.table.fingerprint
    return {"data": data, "trunk": None}


def _check_same_inputs(out: Path, inputs: dict) -> None:
    """A resumed run continues on the data it started on: a checkpoint trained on other data is refused."""
    path = out / INPUTS_FILE
    if not path.is_file():
        return  # a run from before inputs were recorded: nothing to compare
    before = json.loads(path.read_text()).get("data", {})
    changed = sorted(name for name in set(before) | set(inputs["data"]) if before.get(name) != inputs["data"].get(name))
    if changed:
        raise NearIDError(
            f"{out}: --resume onto other data than the run started on ({', '.join(changed)} changed "
            f"since, see {INPUTS_FILE}); start a new run in another --out"
        )


def mixed_precision(setting: str, *, cuda: bool) -> str:
    """accelerate's ``mixed_precision`` for a ``--mixed-precision`` setting: ``auto`` is fp16 on CUDA
    (the authors' training config, spec 12.3) and ``no`` on the CPU; ``no``, ``fp16``, ``bf16`` as given."""
    if setting == "auto":
        return "fp16" if cuda else "no"
    if setting not in ("no", "fp16", "bf16"):
        raise NearIDError(f"--mixed-precision '{setting}': use auto, no, fp16 or bf16")
    return setting


def half_trunk(model, precision: str) -> None:
    """Under fp16 / bf16 mixed precision, cast the frozen trunk (embeddings, blocks, post-LN) to that
    half dtype: it runs without a graph (``encode_tokens``), so nothing is lost to autocast, and it
    halves its memory and time. The head stays float32: it trains, autocast handles its matmuls."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if dtype is None:
        return
    tower = model.backbone
    for part in (tower.embeddings, tower.encoder, tower.post_layernorm):
        part.to(dtype)


def _share(indices: list[int], rank: int, world: int) -> list[int]:
    """A contiguous slice per process, so the gathered pool keeps the one-process order."""
    per = -(-len(indices) // world)
    return indices[rank * per : (rank + 1) * per]


def _validation(config: TrainConfig, model, processor, device):
    """SSR / PA of the current head on the validation split, computed as ``nearid bench`` computes them
    for the exported model: an encoder over the live model (its head is the one being trained), the
    full images of ``config.sources``, sources pooled by concatenation. The trunk runs: val images are few.
    """
    from nearid.data import load_nearid
    from nearid.eval.evaluate import pooled_scores, similarity_tables
    from nearid.models.encoders import nearid_encoder

    bench = load_nearid(config.data, config.sources, split=config.val_split)
    encoder = nearid_encoder(model, processor, name=f"{config.backbone} (training)", device=device, dtype=torch.float32)

    from nearid.images.pipeline import resolve_num_workers

    workers = resolve_num_workers(config.num_workers, device)  # decode val images in workers, as bench does

    def run():
        return pooled_scores(similarity_tables(encoder, bench, config.sources, progress=False, num_workers=workers)[0])

    return run


def _present(samples) -> list[tuple[int, int, object]]:
    """``(sample, slot index, Slot)`` of every filled slot, sample by sample: the order in which a step's
    inputs are embedded (and prefetched). Empty slots never reach the trunk."""
    return [(b, s, slot) for b, sample in enumerate(samples) for s, slot in enumerate(sample.slots) if slot is not None]


def _step_loss(head, loss_fn, samples, tokens_of, device) -> torch.Tensor:
    """Embed the present slots of ``samples`` (cached or fresh trunk tokens) and apply the loss."""
    present = _present(samples)
    tokens = tokens_of([slot for _, _, slot in present]).to(device=device, dtype=torch.float32)
    pooled = F.normalize(head(tokens), dim=-1)
    embeddings = pooled.new_zeros(len(samples), 6, pooled.shape[-1])
    rows = torch.tensor([b for b, _, _ in present], device=device)
    cols = torch.tensor([s for _, s, _ in present], device=device)
    embeddings = embeddings.index_put((rows, cols), pooled)
    pos_mask = torch.tensor([s.pos_mask for s in samples], device=device)
    neg_mask = torch.tensor([s.neg_mask for s in samples], device=device)
    oracle = torch.tensor([s.oracle for s in samples], device=device, dtype=torch.float32)
    return loss_fn(embeddings[:, 0], embeddings[:, 1:3], embeddings[:, 3:6], pos_mask, neg_mask, oracle=oracle)


def _save(accelerator, head, optimizer, scheduler, step: int, out: Path, save_file) -> Path:
    folder = out / "checkpoints" / f"step-{step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and not (folder / "state.pt").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(head).state_dict().items()}
        with atomic_path(folder / "head.safetensors") as tmp:
            save_file(weights, str(tmp))
        with atomic_path(folder / "state.pt") as tmp:  # written last: marks the checkpoint complete
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step}, tmp)
    accelerator.wait_for_everyone()
    return folder


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
