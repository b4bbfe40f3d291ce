"""Fine-tune an inpainting model's LoRA with NearID's identity reward (ReFL / DRaFT-1 style).

The task: an inpainting model fills a masked region of a scene with "the subject" of a prompt; the
identity reward (:class:`nearid.reward.IdentityReward`) says how much the filled-in image is the
subject of the reference photograph(s). Each training step

1. denoises from fresh noise for ``--denoise-steps - 1`` steps without a graph,
2. runs the last step with a graph (the UNet with its LoRA), which lands on the predicted clean latents,
3. decodes them with the VAE (with a graph), scores the image with the reward, and
4. takes an optimizer step on the LoRA weights only, to raise the reward (loss = -reward).

Before training and every ``--eval-every`` steps the same prompt is generated from the same seed
(``--eval-seed``) without a graph and scored: that curve, not the noisy per-step rewards, says whether
the reward rises.

Offline by default: a tiny SDXL inpainting pipeline with random weights (``nearid.tiny.pipelines``) and
the tiny NearID encoder, on a built-in reference and scene -- it runs in seconds on a CPU and exercises
every line a real run does. A real run names a pipeline and an encoder (docs/reward.md, memory)::

    python examples/reward_finetune.py --steps 200 --out runs/lora \\
        --pipeline diffusers/stable-diffusion-xl-1.0-inpainting-0.1 --model nearid --device cuda --dtype bf16 \\
        --reference ref.png --image scene.png --mask mask.png --prompt "a photo of the toy" --size 1024

Outputs, in ``--out`` (a new or empty folder, marked as this example's; never over an input):
``pytorch_lora_weights.safetensors`` (diffusers' LoRA layout: ``pipe.load_lora_weights(out)``),
``rewards.json`` (the evaluation curve and the settings), ``before.png`` and ``after.png`` (the
evaluation image before and after training); each written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import nearid
from nearid.io.errors import NearIDError

COMMAND = "examples/reward_finetune.py"
LORA_FILE = "pytorch_lora_weights.safetensors"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the UNet's attention projections, as diffusers' LoRA scripts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (new or empty; never an input)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps (default 20)")
    parser.add_argument(
        "--pipeline", default="tiny", help="SDXL inpainting pipeline: hub id or folder, or 'tiny' (offline, default)"
    )
    parser.add_argument("--model", default="tiny", help="encoder spec of the reward (default tiny; a real run: nearid)")
    parser.add_argument("--reference", action="append", help="reference image of the subject (repeatable)")
    parser.add_argument("--image", help="scene to inpaint (default: a built-in one)")
    parser.add_argument("--mask", help="inpainting mask of --image, white = fill (default: its central square)")
    parser.add_argument("--prompt", default="a photo of the toy", help="prompt of every generation")
    parser.add_argument("--size", type=int, default=32, help="generation size in pixels (default 32; SDXL: 1024)")
    parser.add_argument("--denoise-steps", type=int, default=4, help="denoising steps per generation (default 4)")
    parser.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (default 1e-2)")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training noise (step i uses seed + 1 + i)")
    parser.add_argument("--eval-seed", type=int, default=1234, help="seed of the evaluation generation")
    parser.add_argument("--eval-every", type=int, default=5, help="evaluate every N steps (and at the end)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="the pipeline's dtype")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="checkpoint the blocks of the UNet, the VAE decoder and the reward's trunk",
    )
    args = parser.parse_args(argv)
    for name in ("steps", "size", "denoise_steps", "rank", "eval_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.size % 16:
        parser.error("--size must be a multiple of 16")
    return args


# --------------------------------------------------------------------------------------- inputs
def builtin_reference(size: int) -> Image.Image:
    """The built-in subject: a red toy with a yellow band and a blue eye on grey."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    s = size / 64
    image.paste((200, 40, 40), (int(16 * s), int(12 * s), int(48 * s), int(54 * s)))
    image.paste((240, 210, 40), (int(16 * s), int(30 * s), int(48 * s), int(36 * s)))
    image.paste((30, 60, 220), (int(26 * s), int(18 * s), int(34 * s), int(26 * s)))
    return image


def builtin_scene(size: int) -> tuple[Image.Image, np.ndarray]:
    """The built-in scene (a green-to-blue gradient) and its mask (the central half, to be filled)."""
    ramp = np.linspace(0, 1, size)[None, :, None]
    pixels = (np.array([40, 160, 60]) * (1 - ramp) + np.array([40, 80, 200]) * ramp).repeat(size, axis=0)
    mask = np.zeros((size, size), dtype=bool)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    return Image.fromarray(pixels.astype(np.uint8)), mask


def load_inputs(args) -> tuple[list, Image.Image, np.ndarray]:
    """References, the scene at ``--size`` and its mask (bool, True = fill)."""
    from nearid.images.decode import load_image, load_mask

    references = args.reference or [builtin_reference(args.size)]
    if args.image is None:
        scene, mask = builtin_scene(args.size)
    else:
        scene = load_image(args.image).resize((args.size, args.size), Image.Resampling.LANCZOS)
        if args.mask is None:
            mask = builtin_scene(args.size)[1]
        else:
            mask = np.asarray(Image.fromarray(load_mask(args.mask)).resize((args.size, args.size), Image.NEAREST))
    return references, scene, mask


def check_arguments(args) -> None:
    """Everything that needs no model, before any loads: outputs never over an input, folders writable,
    a hub pipeline available (offline: one line with the download fix)."""
    from nearid.io.outputs import check_outputs

    inputs = [*(args.reference or []), args.image, args.mask]
    if args.pipeline != "tiny":
        from nearid.io.hub import resolve_model_dir

        inputs.append(resolve_model_dir(args.pipeline))
    check_outputs([], inputs, folders=[args.out])
    out = Path(args.out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise NearIDError(f"{out}: exists and is not an empty folder; choose a new or empty --out")


# --------------------------------------------------------------------------------------- the pipeline
def load_pipeline(name: str, device: torch.device, dtype: torch.dtype):
    if name == "tiny":
        from nearid.tiny.pipelines import build_tiny_sdxl_inpaint

        pipe = build_tiny_sdxl_inpaint("tiny", dtype)
    else:
        from diffusers import StableDiffusionXLInpaintPipeline

        from nearid.io.hub import resolve_model_dir

        folder = resolve_model_dir(name)
        pipe = StableDiffusionXLInpaintPipeline.from_pretrained(folder, torch_dtype=dtype, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def add_lora(unet, rank: int) -> list[torch.nn.Parameter]:
    """Freeze the UNet and add a LoRA (A Gaussian, B zero: the model starts unchanged); its parameters."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS))
    )
    parameters = [p for p in unet.parameters() if p.requires_grad]
    for parameter in parameters:  # LoRA weights train in float32 even on a bf16 base
        parameter.data = parameter.data.float()
    return parameters


@dataclass
class Conditioning:
    """What every generation of the one prompt and scene shares (computed once, without a graph)."""

    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor
    mask: torch.Tensor  # [1, 1, h, w] at latent resolution, 1 = fill
    masked_latents: torch.Tensor


@torch.no_grad()
def conditioning(pipe, prompt: str, scene: Image.Image, mask: np.ndarray) -> Conditioning:
    device, dtype = pipe.unet.device, pipe.unet.dtype
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, device=device, do_classifier_free_guidance=False)
    size = scene.height
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=device, dtype=dtype)  # original, crop, target
    pixels = torch.from_numpy(np.array(scene)).permute(2, 0, 1)[None].to(device, torch.float32) / 127.5 - 1
    keep = torch.from_numpy(~mask)[None, None].to(device, torch.float32)
    masked = (pixels * keep).to(dtype)
    latents = pipe.vae.encode(masked).latent_dist.mode() * pipe.vae.config.scaling_factor
    latent_mask = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=latents.shape[-2:]).to(device, dtype)
    return Conditioning(embeds.to(dtype), pooled.to(dtype), time_ids, latent_mask, latents.to(dtype))


def generate(pipe, cond: Conditioning, seed: int, steps: int, *, grad_last: bool) -> torch.Tensor:
    """One generation, ``[1, 3, H, W]`` in ``[-1, 1]``; with ``grad_last`` the last denoising step and the
    VAE decode keep a graph (to the LoRA weights), the steps before run without one."""
    unet, scheduler = pipe.unet, pipe.scheduler
    scheduler.set_timesteps(steps, device=unet.device)
    shape = (1, unet.config.out_channels, *cond.masked_latents.shape[-2:])
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn(shape, generator=generator).to(unet.device, unet.dtype) * scheduler.init_noise_sigma
    added = {"text_embeds": cond.pooled, "time_ids": cond.time_ids}
    for index, t in enumerate(scheduler.timesteps):
        with torch.set_grad_enabled(grad_last and index == len(scheduler.timesteps) - 1):
            model_input = torch.cat([scheduler.scale_model_input(latents, t), cond.mask, cond.masked_latents], dim=1)
            noise = unet(model_input, t, encoder_hidden_states=cond.prompt_embeds, added_cond_kwargs=added).sample
            latents = scheduler.step(noise, t, latents).prev_sample
    with torch.set_grad_enabled(grad_last):
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return decoded.float().clamp(-1, 1)


def to_picture(image: torch.Tensor) -> Image.Image:
    array = ((image[0].detach().float().cpu().permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255)
    return Image.fromarray(array.numpy().astype(np.uint8))


# --------------------------------------------------------------------------------------- the run
@dataclass
class Finetune:
    """A finished run: the pipeline (with its LoRA), the evaluation curve ``[(step, reward)]``, the
    per-step training rewards and the evaluation images before and after."""

    pipe: object
    curve: list[tuple[int, float]] = field(default_factory=list)
    train_rewards: list[float] = field(default_factory=list)
    before: Image.Image | None = None
    after: Image.Image | None = None


def finetune(pipe, reward, cond: Conditioning, args) -> Finetune:
    parameters = add_lora(pipe.unet, args.rank)
    if args.gradient_checkpointing:  # the UNet's and the VAE decoder's blocks (the reward's trunk: main)
        pipe.unet.enable_gradient_checkpointing()
        pipe.vae.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.0)
    run = Finetune(pipe)

    def evaluate(step: int) -> Image.Image:
        with torch.no_grad():
            image = generate(pipe, cond, args.eval_seed, args.denoise_steps, grad_last=False)
            run.curve.append((step, float(reward(image.to(reward.device)))))
        print(f"step {step:>4}: evaluation reward {run.curve[-1][1]:.4f}", flush=True)
        return to_picture(image)

    run.before = evaluate(0)
    for step in range(1, args.steps + 1):
        image = generate(pipe, cond, args.seed + step, args.denoise_steps, grad_last=True)
        value = reward(image.to(reward.device)).mean()
        optimizer.zero_grad(set_to_none=True)
        (-value).backward()
        optimizer.step()
        run.train_rewards.append(float(value.detach()))
        if step % args.eval_every == 0 or step == args.steps:
            run.after = evaluate(step)
    return run


def save(run: Finetune, args) -> None:
    """The LoRA (diffusers' layout), the curve and the two evaluation images, each atomically."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from nearid.io.atomic import atomic_path, write_text_atomic

    out = Path(args.out)
    lora = convert_state_dict_to_diffusers(get_peft_model_state_dict(run.pipe.unet))
    lora = {f"unet.{k}": v.detach().float().cpu().contiguous() for k, v in lora.items()}
    with atomic_path(out / LORA_FILE) as tmp:
        save_file(lora, str(tmp))
    for name, picture in (("before.png", run.before), ("after.png", run.after)):
        with atomic_path(out / name) as tmp, open(tmp, "wb") as handle:
            picture.save(handle, format="PNG")
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    summary = {"curve": run.curve, "train_rewards": run.train_rewards, "settings": settings}
    write_text_atomic(out / "rewards.json", json.dumps(summary, indent=2) + "\n")


def main(argv=None) -> Finetune:
    from nearid.io.ownership import create_owned, seal_owned
    from nearid.models.encoders import resolve_device, resolve_dtype

    args = parse_args(argv)
    check_arguments(args)
    references, scene, mask = load_inputs(args)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    encoder = nearid.load_encoder(args.model, device=device, dtype="fp32" if device.type == "cpu" else "bf16")
    reward = nearid.reward.IdentityReward(
        encoder, references, value_range="-1-1", gradient_checkpointing=args.gradient_checkpointing
    )
    pipe = load_pipeline(args.pipeline, device, dtype)
    cond = conditioning(pipe, args.prompt, scene, mask)
    create_owned(args.out, COMMAND)
    run = finetune(pipe, reward, cond, args)
    save(run, args)
    seal_owned(args.out, COMMAND)
    first, last = run.curve[0][1], run.curve[-1][1]
    print(f"evaluation reward {first:.4f} -> {last:.4f} ({last - first:+.4f}); outputs in {args.out}")
    return run


if __name__ == "__main__":
    try:
        main()
    except NearIDError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
