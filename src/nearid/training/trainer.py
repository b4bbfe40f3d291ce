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
all positives with gradients and normalises by global counts (:func:`nearid.losses.global_mean`),
so DDP's averaged gradient equals the one-process gradient of the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import NearIDError
from ..io import atomic_path, write_text_atomic


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
    mixed_precision: str = "auto"  # auto: fp16 on CUDA (the authors' config, spec 12.3), "no" on the CPU; or no/fp16/bf16
    jitter_prob: float = 0.0  # per-slot colour jitter probability (the authors' default 0; spec 12.5)
    affine_prob: float = 0.0  # per-slot translate + scale "disalignment" probability (default 0)
    split: str = "train"
    max_steps: int | None = None  # stop early (tests, smoke runs); the schedule still spans all epochs
    cache_tokens: bool = True  # False: run the frozen trunk every step; True caches all but augmented slots
    eval_steps: int = 0  # validate (SSR/PA on `val_split`, main process) every N steps; 0 = never
    val_split: str = "val"

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
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {}
        if config_file is not None:
            try:
                values = json.loads(Path(config_file).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise NearIDError(f"{config_file}: cannot read the training config ({exc})") from None
            if not isinstance(values, dict):
                raise NearIDError(f"{config_file}: a training config is a JSON object of settings")
            unknown = set(values) - names
            if unknown:
                raise NearIDError(f"{config_file}: unknown setting(s) {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if k in names and v is not None})
        missing = [name for name in ("data", "out") if values.get(name) is None]
        if missing:
            where = f"neither {config_file} nor the options set it" if config_file is not None else "or give --config FILE"
            raise NearIDError(f"--{missing[0]} is required ({where})")
        return cls(**values)


def _latest_checkpoint(out: Path) -> Path | None:
    done = [p for p in (out / "checkpoints").glob("step-*") if (p / "state.pt").is_file() and (p / "head.safetensors").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def train(config: TrainConfig, *, resume: bool = False) -> dict:
    """Train the head; returns ``{"step", "loss", "checkpoint"}`` (on every process)."""
    from accelerate import Accelerator
    from safetensors.torch import load_file, save_file
    from transformers import get_scheduler

    from ..backbones import load_backbone
    from ..data import load_mtg, load_nearid
    from ..losses import CombinedLoss
    from ..processors import preprocessor
    from .samples import SampleRecipe, TrainingSet
    from .token_cache import TokenCache, fill, pixel_values, slot_tokens

    precision = mixed_precision(config.mixed_precision, cuda=torch.cuda.is_available())
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision)
    out = Path(config.out)
    loss_fn = CombinedLoss(config.loss)
    model, processor = load_backbone(config.backbone)
    model = model.to(accelerator.device)
    preprocess = preprocessor(processor)
    bench = load_nearid(config.data, config.sources, split=config.split)
    mtg = load_mtg(config.mtg, split="train") if config.mtg else None
    recipe = SampleRecipe(seed=config.seed, mask_probs=tuple(config.mask_probs), flip_prob=config.flip_prob,
                          mtg_repeat=config.mtg_repeat, jitter_prob=config.jitter_prob, affine_prob=config.affine_prob)
    training_set = TrainingSet(bench, config.sources, mtg, recipe)
    batches_per_epoch = len(training_set.batches(0, config.batch_size))
    total_steps = config.epochs * batches_per_epoch

    # the validation encoder casts the model to fp32 when it is made, so it comes before the half trunk
    validation = _validation(config, model, processor, accelerator.device) if config.eval_steps else None
    half_trunk(model, precision)
    computed = 0
    if config.cache_tokens:  # fill the token cache once: each process computes its share, then all read everything
        # jittered / disaligned slots are drawn afresh per (epoch, item, slot): they run the trunk when used
        cache = TokenCache.for_model(out / "token_cache", model, processor)
        slots = sorted(training_set.slots(range(config.epochs), cacheable_only=True), key=lambda s: s.key)
        mine = [s for i, s in enumerate(slots) if i % accelerator.num_processes == accelerator.process_index]
        computed = fill(cache, model, mine, preprocess, progress=False)
        accelerator.wait_for_everyone()
        cache.refresh()
        tokens_of = lambda slots: slot_tokens(slots, model, preprocess, cache)  # noqa: E731
    else:
        tokens_of = lambda slots: model.encode_tokens(pixel_values(slots, preprocess).to(accelerator.device))  # noqa: E731

    head = model.head
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps)
    step = 0
    if resume and (checkpoint := _latest_checkpoint(out)) is not None:
        head.load_state_dict(load_file(checkpoint / "head.safetensors"))
        state = torch.load(checkpoint / "state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    head, optimizer = accelerator.prepare(head, optimizer)
    if accelerator.is_main_process:
        write_text_atomic(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        print(f"training {len(training_set)} items x {config.epochs} epochs = {total_steps} steps on "
              f"{accelerator.num_processes} process(es); {computed} trunk inputs cached by this process"
              + (f"; resuming at step {step}" if step else ""), flush=True)

    last_loss = float("nan")
    head.train()
    for epoch in range(step // batches_per_epoch, config.epochs):
        for batch_index, indices in enumerate(training_set.batches(epoch, config.batch_size)):
            if epoch * batches_per_epoch + batch_index < step:
                continue  # already trained before the resume point
            if config.max_steps is not None and step >= config.max_steps:
                break
            share = _share(indices, accelerator.process_index, accelerator.num_processes)
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
                print(f"step {step}/{total_steps} epoch {epoch} loss {last_loss:.4f} lr {scheduler.get_last_lr()[0]:.2e}", flush=True)
            if step % config.save_steps == 0 or step == total_steps:
                _save(accelerator, head, optimizer, scheduler, step, out, save_file)
            if validation is not None and step % config.eval_steps == 0:
                head.eval()
                if accelerator.is_main_process:
                    score = validation()
                    print(f"step {step} validation ({config.val_split}): SSR {score.ssr:.2f} PA {score.pa:.2f}", flush=True)
                    with open(out / "validation.jsonl", "a") as handle:
                        handle.write(json.dumps({"step": step, **score.as_dict()}) + "\n")
                accelerator.wait_for_everyone()
                head.train()
    checkpoint = _save(accelerator, head, optimizer, scheduler, step, out, save_file)
    return {"step": step, "loss": last_loss, "checkpoint": str(checkpoint)}


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
    from ..data import load_nearid
    from ..encoders import nearid_encoder
    from ..evaluate import pooled_scores, similarity_tables

    bench = load_nearid(config.data, config.sources, split=config.val_split)
    encoder = nearid_encoder(model, processor, name=f"{config.backbone} (training)", device=device, dtype=torch.float32)

    def run():
        return pooled_scores(similarity_tables(encoder, bench, config.sources, progress=False)[0])

    return run


def _step_loss(head, loss_fn, samples, tokens_of, device) -> torch.Tensor:
    """Embed the present slots of ``samples`` (cached or fresh trunk tokens) and apply the loss."""
    present = [(b, s, slot) for b, sample in enumerate(samples) for s, slot in enumerate(sample.slots) if slot is not None]
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


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, backbone: str | None = None) -> Path:
    """A full :class:`NearIDModel` (trunk + trained head) and its processor, which ``from_pretrained``
    and the ``nearid:DIR`` encoder load. The trunk is rebuilt from the run's backbone spec by the same
    :func:`~nearid.backbones.load_backbone` that training started from."""
    from safetensors.torch import load_file

    from ..backbones import load_backbone

    checkpoint = Path(checkpoint)
    config_file = checkpoint.parent.parent / "config.json"
    if backbone is None:
        if not config_file.is_file():
            raise NearIDError(f"{checkpoint}: no run config.json two levels up; pass --backbone")
        backbone = json.loads(config_file.read_text())["backbone"]
    if not (checkpoint / "head.safetensors").is_file():
        raise NearIDError(f"{checkpoint}: no head.safetensors; pass a checkpoints/step-N folder")
    model, processor = load_backbone(backbone)
    model.head.load_state_dict(load_file(checkpoint / "head.safetensors"))
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
