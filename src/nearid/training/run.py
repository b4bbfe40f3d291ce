"""A training run up to its first step: :func:`prepare_run` builds a :class:`Run`, the one value that
:func:`~nearid.training.loop.step` and :func:`~nearid.training.loop.fit` work on.

Preparing a run checks everything that can refuse it before anything changes: the run folder (new,
resume, overwrite), the loss spec, the data (and, on resume, that it is the data the run started on),
the token cache's fit on the disk (``--token-cache on`` refuses before the model loads), the
backbone. Then it writes the folder's ``config.json``, fills the token cache (each process its share),
builds the optimizer and scheduler, and restores them, the head and the position from the newest
checkpoint on ``--resume``.

Determinism and resume. Samples and batch order are pure functions of (seed, epoch, index)
(:mod:`nearid.training.samples`), so the only state a run carries is the head, the optimizer, the
scheduler and the position (the step). A checkpoint holds exactly that, so a resumed run sees exactly
the batches an uninterrupted run would have seen.

Several processes. Each process takes a contiguous share of every global batch; the loss gathers
all positives with gradients and normalises by global counts (:func:`nearid.training.losses.global_mean`),
so DDP's averaged gradient equals the one-process gradient of the same global batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nearid.io.atomic import write_text_atomic
from nearid.io.errors import NearIDError
from nearid.training.batches import planned_batches, present_slots, process_share
from nearid.training.config import TrainConfig
from nearid.training.precision import half_trunk, mixed_precision
from nearid.training.run_folder import (
    INPUTS_FILE,
    TOKEN_CACHE,
    check_run_folder,
    check_same_inputs,
    checkpoint_step,
    latest_checkpoint,
    prepare_run_folder,
    replace_foreign_cache,
    run_inputs,
    streamed,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

    from nearid.models.nearid_model import NearIDModel
    from nearid.training.samples import TrainingSet
    from nearid.training.token_cache import TokenCache


@dataclass
class Run:
    """A prepared training run: what its steps read (the samples, this process's share of each planned
    step, the frozen trunk and its inputs' preprocessing, the token cache) and what they change (the
    head, the optimizer, the scheduler and ``step``, the number of steps taken)."""

    config: TrainConfig
    accelerator: Accelerator
    model: NearIDModel  # the frozen trunk (half precision under fp16 / bf16) and the head
    preprocess: Callable  # images + masks -> the trunk's pixel values
    head: torch.nn.Module  # the model's head as accelerate prepared it (DDP-wrapped on several processes)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: torch.nn.Module
    training_set: TrainingSet
    cache: TokenCache | None  # the filled token cache; None: the trunk runs on every step's inputs
    shares: list[tuple[int, list[int]]]  # (epoch, this process's sample indices) of each planned step
    first_step: int  # the step the run starts (or resumes) at: ``shares[0]`` is step ``first_step + 1``
    step: int  # steps taken, resumed ones included
    total_steps: int  # every epoch's steps: the schedule's length, whatever ``max_steps``
    workers: int  # processes decoding the trunk's inputs
    validation: Validation | None
    #: releases the output's lock (main process; :func:`_hold_output`); :func:`~nearid.training.loop.train`
    #: calls it when the run ends, a run prepared by hand holds the lock until it is released or collected
    release: Callable[[], None] = lambda: None

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def end(self) -> int:
        """The step this run stops at (``max_steps``, or the last of the last epoch)."""
        return self.first_step + len(self.shares)

    @property
    def streams(self) -> bool:
        """Some slots run the trunk in the steps: all of them without a token cache, the augmented ones
        (drawn afresh per epoch, item and slot) with one."""
        recipe = self.training_set.recipe
        return self.cache is None or recipe.jitter_prob > 0 or recipe.affine_prob > 0

    @property
    def trunk_dtype(self) -> torch.dtype:
        return self.model.backbone.embeddings.patch_embedding.weight.dtype


class Validation:
    """SSR / PA of the current head on the validation split, computed as ``nearid bench`` computes them
    for the exported model: an encoder over the live model (its head is the one being trained), the
    full images of ``config.sources``, sources pooled by concatenation. The trunk runs: val images are
    few. Made before the trunk is cast to half precision (the encoder casts the model to float32)."""

    def __init__(self, config: TrainConfig, model, processor, device):
        from nearid.data import load_nearid
        from nearid.images.pipeline import resolve_num_workers
        from nearid.models.encoders import nearid_encoder

        self.sources = config.sources
        self.bench = load_nearid(config.data, config.sources, split=config.val_split)
        self.encoder = nearid_encoder(
            model, processor, name=f"{config.backbone} (training)", device=device, dtype=torch.float32
        )
        self.workers = resolve_num_workers(config.num_workers, device)  # decode val images in workers, as bench does

    def score(self):
        """The pooled :class:`~nearid.eval.metrics.DiscriminationScore` of the head as it is now."""
        from nearid.eval.evaluate import pooled_scores, similarity_tables

        tables = similarity_tables(self.encoder, self.bench, self.sources, progress=False, num_workers=self.workers)
        return pooled_scores(tables[0])


@dataclass
class _Plan:
    """What a run will do, known before any model loads: its loss, samples and planned steps, the record
    of its inputs and the checkpoint it resumes from."""

    loss_fn: torch.nn.Module
    training_set: TrainingSet
    inputs: dict
    latest: Path | None
    total_steps: int
    start: int
    planned: list[tuple[int, list[int]]]


def _plan(config: TrainConfig, resume: bool) -> _Plan:
    """The loss spec, the data (the same as the run started on, when resuming) and the steps to take."""
    from nearid.data import load_mtg, load_nearid
    from nearid.training.losses import CombinedLoss
    from nearid.training.samples import SampleRecipe, TrainingSet

    out = Path(config.out)
    loss_fn = CombinedLoss(config.loss)
    bench = load_nearid(config.data, config.sources, split=config.split)
    mtg = load_mtg(config.mtg, split="train") if config.mtg else None
    inputs = run_inputs(bench, mtg)
    latest = latest_checkpoint(out) if resume else None
    if latest is not None:
        check_same_inputs(out, inputs)
    recipe = SampleRecipe(
        seed=config.seed,
        mask_probs=tuple(config.mask_probs),
        flip_prob=config.flip_prob,
        mtg_repeat=config.mtg_repeat,
        jitter_prob=config.jitter_prob,
        affine_prob=config.affine_prob,
    )
    training_set = TrainingSet(bench, config.sources, mtg, recipe)
    per_epoch = len(training_set.batches(0, config.batch_size))
    total_steps = config.epochs * per_epoch
    start = checkpoint_step(latest) if latest is not None else 0
    end = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    planned = planned_batches(training_set, config.batch_size, start, end, per_epoch)
    return _Plan(loss_fn, training_set, inputs, latest, total_steps, start, planned)


def _main_decides(accelerator, decide: Callable[[], object]):
    """``decide()`` on the main process, its value on every process; a refusal (:class:`NearIDError`) it
    raises is raised by every process alike, so no process waits for a main process that has stopped."""
    from accelerate.utils import broadcast_object_list

    outcome: list = [None]
    if accelerator.is_main_process:
        try:
            outcome = [decide()]
        except NearIDError as exc:
            outcome = [exc]
    if accelerator.num_processes > 1:
        broadcast_object_list(outcome)
    if isinstance(outcome[0], NearIDError):
        raise NearIDError(str(outcome[0]))
    return outcome[0]


def _decide_cache(
    config: TrainConfig, accelerator, training_set, planned, shape, *, resumed_streaming: bool, keep_cached: bool
):
    """``(cache?, the distinct cacheable slots of the planned steps)``: the main process decides
    (:func:`nearid.training.cache_policy.plan`) and prints the line; every process follows it (or raises
    the same refusal). The slots are listed only when the setting may cache. ``keep_cached``: count the
    inputs already in the run's cache as done (not under ``--overwrite``, which may replace the cache)."""
    from nearid.training.cache_policy import plan
    from nearid.training.token_cache import DEFAULT_FILL_BATCH, stored_keys

    slots: list = []
    if config.token_cache != "off":
        seen: dict = {}
        for epoch, indices in planned:
            for _, _, slot in present_slots(training_set.samples(epoch, indices)):
                if slot.cacheable and slot.key not in seen:
                    seen[slot.key] = slot
        slots = list(seen.values())

    def decide() -> bool:
        folder = Path(config.out) / TOKEN_CACHE
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
        return decided.cache

    cache = bool(_main_decides(accelerator, decide))
    return cache, (slots if cache else [])


def _model_and_cache_decision(config: TrainConfig, accelerator, plan: _Plan, action: str):
    """``(model, processor, the slots to cache or [] to stream)``. The decision needs only the trunk's
    token shape, read from the backbone's config where it can be, so ``--token-cache on`` that does not
    fit refuses before any weights load."""
    from nearid.models.backbones import load_backbone
    from nearid.training.cache_policy import backbone_token_shape
    from nearid.training.token_cache import token_shape

    model = processor = None
    shape = backbone_token_shape(config.backbone)  # from the config: no weights loaded yet
    if shape is None:  # not readable that way: the loader loads it, or names the problem
        model, processor = load_backbone(config.backbone)
        shape = token_shape(model)
    decision, cache_slots = _decide_cache(
        config,
        accelerator,
        plan.training_set,
        plan.planned,
        shape,
        resumed_streaming=plan.latest is not None and streamed(Path(config.out)),
        keep_cached=action != "overwrite",
    )
    if model is None:
        model, processor = load_backbone(config.backbone)
    return model, processor, (cache_slots if decision else None)


def _fill_cache(config: TrainConfig, accelerator, model, processor, preprocess, slots, *, action: str, workers: int):
    """``(the token cache, inputs this process computed)``: each process fills its share of ``slots``
    (workers decode while the trunk runs), then every process reads all of them. Under ``--overwrite``
    a cache of another trunk is removed first."""
    from nearid.training.token_cache import TokenCache, fill, model_signature, token_shape

    out = Path(config.out)
    signature = model_signature(model, processor)  # hashes the trunk's weights: once
    if action == "overwrite" and accelerator.is_main_process:
        replace_foreign_cache(out / TOKEN_CACHE, signature)
    accelerator.wait_for_everyone()
    cache = TokenCache(out / TOKEN_CACHE, signature, *token_shape(model))
    # jittered / disaligned slots are drawn afresh per (epoch, item, slot): they run the trunk when used
    slots = sorted(slots, key=lambda s: s.key)
    mine = [s for i, s in enumerate(slots) if i % accelerator.num_processes == accelerator.process_index]
    cuda = accelerator.device.type == "cuda"
    computed = fill(cache, model, mine, preprocess, progress=False, num_workers=workers, pin_memory=cuda)
    accelerator.wait_for_everyone()
    cache.refresh()
    return cache, computed


def _optimisation(config: TrainConfig, accelerator, head, plan: _Plan):
    """``(head, optimizer, scheduler, step)``: AdamW and the cosine schedule over every epoch's steps,
    restored with the head from the newest checkpoint when resuming, then prepared by accelerate."""
    from safetensors.torch import load_file
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=plan.total_steps
    )
    step = plan.start
    if plan.latest is not None:
        head.load_state_dict(load_file(plan.latest / "head.safetensors"))
        state = torch.load(plan.latest / "state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    head, optimizer = accelerator.prepare(head, optimizer)
    return head, optimizer, scheduler, step


def _hold_output(config: TrainConfig, accelerator, *, resume: bool, overwrite: bool) -> tuple[str, Callable[[], None]]:
    """Lock ``config.out`` for this run (:func:`~nearid.io.locks.output_lock`, main process) and check the
    run folder again under the lock: ``(the folder action, the lock's release)``.

    Taken when everything that can refuse the run has been checked (so a bad invocation leaves no lock
    file) and before the folder first changes. A second ``nearid train`` into a folder a run is writing --
    with the same settings or others, which would both have passed the empty-folder check and then
    written one folder together -- is refused in one line; one that starts after the first finished
    sees its run (the usual ``--resume`` / ``--overwrite`` refusal). Every process raises the same refusal.
    """
    from contextlib import ExitStack

    from nearid.io.locks import output_lock

    stack = ExitStack()

    def decide() -> str:
        try:
            stack.enter_context(output_lock(config.out, "nearid train"))
            return check_run_folder(config, resume=resume, overwrite=overwrite)
        except NearIDError:
            stack.close()  # refused: the lock (if taken) is released at once
            raise

    return _main_decides(accelerator, decide), stack.close


def prepare_run(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Run:
    """Everything before a run's first step, as a :class:`Run`; on every process.

    ``resume`` continues the run in ``config.out`` (same settings); ``overwrite`` replaces it; without
    either, ``config.out`` must not hold a run (:func:`~nearid.training.run_folder.check_run_folder`,
    before any model loads). The token cache (``config.token_cache``,
    :mod:`nearid.training.cache_policy`) is decided before the model loads and the folder changes. The
    main process then holds the output's lock (:func:`_hold_output`) until :attr:`Run.release`.
    """
    from accelerate import Accelerator

    from nearid.training.prefetch import default_workers

    action = check_run_folder(config, resume=resume, overwrite=overwrite)  # every process, before any changes
    cuda = torch.cuda.is_available()
    precision = mixed_precision(config.mixed_precision, cuda=cuda)
    accelerator = Accelerator(cpu=not cuda, mixed_precision=precision)
    workers = default_workers(cuda) if config.num_workers == "auto" else int(config.num_workers)
    # everything that can refuse the run (loss spec, data, changed inputs, a cache that cannot fit, backbone)
    # before the folder changes
    plan = _plan(config, resume)
    model, processor, cache_slots = _model_and_cache_decision(config, accelerator, plan, action)
    action, release = _hold_output(config, accelerator, resume=resume, overwrite=overwrite)
    try:
        return _ready_run(
            config,
            accelerator,
            plan,
            model,
            processor,
            cache_slots,
            action=action,
            precision=precision,
            workers=workers,
            release=release,
        )
    except BaseException:
        release()  # a run that fails before its first step leaves the output free
        raise


def _ready_run(config, accelerator, plan: _Plan, model, processor, cache_slots, *, action, precision, workers, release):
    """The part of :func:`prepare_run` under the output's lock: the folder, the trunk, the token cache,
    the optimisation state, and the :class:`Run`."""
    from nearid.images.processors import preprocessor

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        prepare_run_folder(config, action)
    accelerator.wait_for_everyone()
    model = model.to(accelerator.device)
    preprocess = preprocessor(processor)
    # the validation encoder casts the model to fp32 when it is made, so it comes before the half trunk
    validation = Validation(config, model, processor, accelerator.device) if config.eval_steps else None
    half_trunk(model, precision)
    cache, computed = None, 0
    if cache_slots is not None:  # fill the token cache once: each process computes its share
        cache, computed = _fill_cache(
            config, accelerator, model, processor, preprocess, cache_slots, action=action, workers=workers
        )
        plan.inputs["trunk"] = cache.signature
    head, optimizer, scheduler, step = _optimisation(config, accelerator, model.head, plan)
    if accelerator.is_main_process:
        write_text_atomic(Path(config.out) / INPUTS_FILE, json.dumps(plan.inputs, indent=2) + "\n")
        print(
            f"training {len(plan.training_set)} items x {config.epochs} epochs = {plan.total_steps} steps on "
            f"{accelerator.num_processes} process(es); {computed} trunk inputs cached by this process"
            + (f"; resuming at step {step}" if step else ""),
            flush=True,
        )
    rank, world = accelerator.process_index, accelerator.num_processes
    head.train()
    return Run(
        config=config,
        accelerator=accelerator,
        model=model,
        preprocess=preprocess,
        head=head,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=plan.loss_fn,
        training_set=plan.training_set,
        cache=cache,
        shares=[(epoch, process_share(indices, rank, world)) for epoch, indices in plan.planned],
        first_step=step,
        step=step,
        total_steps=plan.total_steps,
        workers=workers,
        validation=validation,
        release=release,
    )


__all__ = ["Run", "Validation", "prepare_run"]
