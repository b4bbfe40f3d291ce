"""``nearid train``: :func:`train` is :func:`fit` of :func:`~nearid.training.run.prepare_run`.

:func:`step` is one optimisation step of a prepared :class:`~nearid.training.run.Run`: the slots of
this process's share of the next planned batch -> their trunk tokens (read from the token cache, or
the trunk run on inputs decoded ahead by :func:`step_inputs`) -> head -> loss -> backward -> clip ->
optimizer and scheduler. :func:`fit` takes every planned step, with logging, checkpoints (head as
safetensors, the rest as a tensors-only state file, written atomically; :mod:`nearid.training.run_folder`)
and validation, and saves the final checkpoint. Driving :func:`step` by hand gives the same head.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from nearid.io.atomic import atomic_path
from nearid.io.errors import NearIDError
from nearid.training.batches import TrunkInputs, step_loss
from nearid.training.config import TrainConfig
from nearid.training.run import Run, prepare_run


@dataclass(frozen=True)
class StepNumbers:
    """What one step reports: the step reached, its epoch, the loss (the mean over processes) and the
    learning rate the scheduler set for the next step."""

    step: int
    epoch: int
    loss: float
    lr: float


def _tokens(slots, *, model, preprocess, cache, pixels):
    """The trunk tokens of a step's ``slots`` (:func:`~nearid.training.token_cache.slot_tokens`, looked
    up at each call): cached ones from ``cache``, the rest from the trunk, on ``pixels`` when they were
    decoded ahead, else on pixels built here."""
    from nearid.training.token_cache import slot_tokens

    if pixels is None:  # nothing was decoded ahead (every slot is cached, or the caller built none)
        return slot_tokens(slots, model, preprocess, cache)
    return slot_tokens(slots, model, preprocess, cache, pixels=pixels)


def step(run: Run, pixels: torch.Tensor | None = None) -> StepNumbers:
    """Take the run's next planned step and return its numbers. ``pixels``: the trunk's inputs of the
    step's slots that run it, as :func:`step_inputs` yields them; without, they are built here (the
    same values, decoded in this process)."""
    if run.step >= run.end:
        raise NearIDError(f"{run.out}: the run has taken its planned steps (it stops at step {run.end})")
    epoch, share = run.shares[run.step - run.first_step]
    tokens_of = partial(_tokens, model=run.model, preprocess=run.preprocess, cache=run.cache, pixels=pixels)
    accelerator = run.accelerator
    loss = step_loss(run.head, run.loss_fn, run.training_set.samples(epoch, share), tokens_of, accelerator.device)
    accelerator.backward(loss)
    if run.config.grad_clip:
        accelerator.clip_grad_norm_(run.head.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad()
    run.step += 1
    mean_loss = float(accelerator.reduce(loss.detach(), reduction="mean"))
    return StepNumbers(run.step, epoch, mean_loss, run.scheduler.get_last_lr()[0])


@contextmanager
def step_inputs(run: Run) -> Iterator[Iterator[torch.Tensor | None]]:
    """An iterator over the run's remaining steps giving each step's trunk inputs (``None`` when none
    of its slots runs the trunk), decoded ahead by ``run.workers`` processes (0: one chunk ahead on a
    thread) while the trunk runs, and moved to the device as they come (pinned: without blocking).
    Leaving the block stops the workers (:func:`nearid.images.pipeline.batches`)."""
    from nearid.images.pipeline import batches
    from nearid.training.prefetch import SlotChunks

    shares = run.shares[run.step - run.first_step :]
    trunk_inputs = TrunkInputs(run.training_set, shares if run.streams else [], cached=run.cache is not None)
    dataset = SlotChunks(len(trunk_inputs), trunk_inputs, run.preprocess, dtype=run.trunk_dtype)
    cuda = run.accelerator.device.type == "cuda"
    with batches(dataset, num_workers=run.workers, pin_memory=cuda) as prefetched:
        yield _per_step(run, shares, prefetched)


def _per_step(run: Run, shares, prefetched) -> Iterator[torch.Tensor | None]:
    """Each step's chunks from ``prefetched``, concatenated on the device."""
    for _, share in shares:
        if not run.streams:
            yield None
            continue
        parts = [next(prefetched) for _ in range(TrunkInputs.per_step(share))]
        parts = [p.to(run.accelerator.device, non_blocking=True) for p in parts if p.numel()]
        yield torch.cat(parts) if len(parts) > 1 else parts[0] if parts else None


def save_checkpoint(run: Run) -> Path:
    """``checkpoints/step-N`` of the run as it is now (N = ``run.step``): the head, then the optimizer,
    scheduler and step (``state.pt``, written last: it marks the checkpoint complete). Every process
    calls it; the main process writes, once per step."""
    from safetensors.torch import save_file

    accelerator = run.accelerator
    folder = run.out / "checkpoints" / f"step-{run.step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and not (folder / "state.pt").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        head = accelerator.unwrap_model(run.head)
        weights = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        with atomic_path(folder / "head.safetensors") as tmp:
            save_file(weights, str(tmp))
        state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "step": run.step}
        with atomic_path(folder / "state.pt") as tmp:  # written last: marks the checkpoint complete
            torch.save(state, tmp)
    accelerator.wait_for_everyone()
    return folder


def validate(run: Run) -> None:
    """Score the head on the validation split (main process), print the line and append it to
    ``validation.jsonl``; the head is back in training mode after."""
    run.head.eval()
    if run.accelerator.is_main_process:
        score = run.validation.score()
        print(f"step {run.step} validation ({run.config.val_split}): SSR {score.ssr:.2f} PA {score.pa:.2f}", flush=True)
        with open(run.out / "validation.jsonl", "a") as handle:
            handle.write(json.dumps({"step": run.step, **score.as_dict()}) + "\n")
    run.accelerator.wait_for_everyone()
    run.head.train()


def _after_step(run: Run, numbers: StepNumbers) -> None:
    """What follows a step when its number says so: the log line, a checkpoint, a validation."""
    config = run.config
    if run.accelerator.is_main_process and numbers.step % config.log_steps == 0:
        print(
            f"step {numbers.step}/{run.total_steps} epoch {numbers.epoch} loss {numbers.loss:.4f} lr {numbers.lr:.2e}",
            flush=True,
        )
    if numbers.step % config.save_steps == 0 or numbers.step == run.total_steps:
        save_checkpoint(run)
    if run.validation is not None and numbers.step % config.eval_steps == 0:
        validate(run)


def fit(run: Run) -> dict:
    """Take the run's remaining planned steps, logging, saving and validating on their schedules, then
    save the final checkpoint; returns ``{"step", "loss", "checkpoint"}`` (on every process; the loss is
    the last step's, nan when there was none)."""
    loss = float("nan")
    with step_inputs(run) as inputs:
        for pixels in inputs:
            numbers = step(run, pixels)
            loss = numbers.loss
            _after_step(run, numbers)
    checkpoint = save_checkpoint(run)
    return {"step": run.step, "loss": loss, "checkpoint": str(checkpoint)}


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Train the head; returns ``{"step", "loss", "checkpoint"}`` (on every process).

    ``resume`` continues the run in ``config.out`` (same settings); ``overwrite`` replaces it; without
    either, ``config.out`` must not hold a run (:func:`~nearid.training.run_folder.check_run_folder`,
    before any model loads).

    The token cache (``config.token_cache``, :mod:`nearid.training.cache_policy`) is decided before the
    model loads and the folder changes: ``on`` that does not fit the disk refuses here. A cached run
    fills the cache (workers decode while the trunk runs) and trains from it; a streaming run decodes
    the next steps' inputs in ``num_workers`` processes while the trunk runs on the current one
    (:mod:`nearid.training.prefetch`); either way only filled slots reach the trunk.

    The main process holds the output's lock (:func:`~nearid.io.locks.output_lock`) from the moment every
    check has passed to the last checkpoint (:func:`~nearid.training.run.prepare_run`): a second
    ``nearid train`` into the same ``--out`` is refused in one line before the folder changes.
    """
    run = prepare_run(config, resume=resume, overwrite=overwrite)
    try:
        return fit(run)
    finally:
        run.release()


__all__ = ["StepNumbers", "fit", "save_checkpoint", "step", "step_inputs", "train", "validate"]
