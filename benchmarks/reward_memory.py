"""Memory of a reward fine-tuning step on a real pipeline, estimated from the configs (no weights, no GPU).

Every model is built on PyTorch's ``meta`` device from its published configuration (SDXL inpainting's
UNet, FLUX.1 Fill's transformer, their VAEs and text encoders, SigLIP2-so400m's trunk), so parameter
counts are exact and nothing is allocated. The activations one step keeps for its backward pass are
counted the same way: the forward runs on ``meta`` tensors under ``torch.autograd.graph.saved_tensors_hooks``
and the bytes of every tensor saved for backward are summed (attention counted as a flash kernel
saves it: q, k, v, output -- not the N x N matrix). Views of one tensor saved twice are counted twice,
so the activation numbers are upper bounds. Printed per model, in GiB:

    weights (bf16) | LoRA params + AdamW states (fp32: weights, grads, 2 moments = 16 B/param) | activations

    python benchmarks/reward_memory.py
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

GIB = 1024**3
LORA = ["to_q", "to_k", "to_v", "to_out.0"]


class _FlashLike(torch.autograd.Function):
    """Attention that saves what a flash kernel saves (q, k, v, output), never the attention matrix."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        ctx.save_for_backward(q, k, v, out)
        return out

    @staticmethod
    def backward(ctx, grad):  # never called: the forward runs on meta tensors only
        raise NotImplementedError


@contextlib.contextmanager
def flash_attention():
    original = F.scaled_dot_product_attention
    names = ("query", "key", "value")

    def attention(*args, **kwargs):
        q, k, v = (args[i] if len(args) > i else kwargs[name] for i, name in enumerate(names))
        return _FlashLike.apply(q, k, v)

    F.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def saved_bytes(run) -> int:
    total = {}

    def pack(tensor):
        total[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), flash_attention():
        run()
    return sum(total.values())


def params(module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def with_lora(model, rank: int):
    from peft import LoraConfig

    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(LORA)))
    return model


def sdxl_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(  # diffusers/stable-diffusion-xl-1.0-inpainting-0.1 unet/config.json
        sample_size=128,
        in_channels=9,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )


def flux_fill_transformer():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(  # black-forest-labs/FLUX.1-Fill-dev transformer/config.json
        patch_size=1,
        in_channels=384,
        out_channels=64,
        num_layers=19,
        num_single_layers=38,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    )


def vae(latent_channels: int, **kw):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=2,
        **kw,
    )


def report(name: str, weights: int, lora: int, activations: int) -> None:
    print(
        f"{name:<44} weights {weights * 2 / GIB:6.2f}  LoRA+AdamW {lora * 16 / GIB:5.2f}  "
        f"activations {activations / GIB:6.2f}   ({weights / 1e9:.3f} B params, LoRA {lora / 1e6:.2f} M)"
    )


def report_sdxl(dtype) -> None:
    unet = with_lora(sdxl_unet().to(dtype), 4)
    latents = torch.randn(1, 9, 128, 128, dtype=dtype)
    added = {"text_embeds": torch.randn(1, 1280, dtype=dtype), "time_ids": torch.randn(1, 6, dtype=dtype)}
    hidden = torch.randn(1, 77, 2048, dtype=dtype)

    def step():
        return unet(latents, torch.tensor([500.0]), encoder_hidden_states=hidden, added_cond_kwargs=added)

    report("SDXL inpainting UNet, 1024 px, LoRA r=4", params(unet), params(unet, True), saved_bytes(step))
    unet.enable_gradient_checkpointing()
    report("  the same, UNet gradient checkpointing", params(unet), params(unet, True), saved_bytes(step))


def report_flux(dtype) -> None:
    transformer = with_lora(flux_fill_transformer().to(dtype), 4)
    tokens = 64 * 64  # 1024 px: 128 x 128 latents packed 2 x 2

    def step():
        return transformer(
            hidden_states=torch.randn(1, tokens, 384, dtype=dtype),
            encoder_hidden_states=torch.randn(1, 512, 4096, dtype=dtype),
            pooled_projections=torch.randn(1, 768, dtype=dtype),
            timestep=torch.tensor([0.5]),
            guidance=torch.tensor([30.0]),
            img_ids=torch.zeros(tokens, 3),
            txt_ids=torch.zeros(512, 3),
        )

    name, total, lora = "FLUX.1 Fill transformer, 1024 px, LoRA r=4", params(transformer), params(transformer, True)
    report(name, total, lora, saved_bytes(step))
    transformer.enable_gradient_checkpointing()
    report("  the same, transformer gradient checkpointing", total, lora, saved_bytes(step))


def report_vae(name: str, latent: int, dtype, **kw) -> None:
    model = vae(latent, **kw).to(dtype).requires_grad_(False)
    z = torch.randn(1, latent, 128, 128, dtype=dtype, requires_grad=True)

    def decode():
        return model.decode(z)

    report(f"{name}, 1024 px (graph to the latents)", params(model), 0, saved_bytes(decode))
    model.enable_gradient_checkpointing()
    report("  the same, VAE gradient checkpointing", params(model), 0, saved_bytes(decode))


def main() -> None:
    print("GiB; weights in bf16; activations: what one step with a graph keeps for backward (upper bound)")
    report_sdxl(torch.bfloat16)
    report_flux(torch.bfloat16)
    report_vae("SDXL VAE decode", 4, torch.bfloat16)
    report_vae("FLUX VAE decode", 16, torch.bfloat16, use_quant_conv=False, use_post_quant_conv=False)
    report_siglip(torch.bfloat16)


def report_siglip(dtype) -> None:
    from nearid.models.differentiable import checkpointed
    from nearid.models.nearid_model import NearIDConfig, NearIDModel

    model = NearIDModel(NearIDConfig()).to(dtype).requires_grad_(False).eval()
    pixels = torch.randn(1, 3, 384, 384, dtype=dtype, requires_grad=True)

    def run():
        backbone = model.backbone
        hidden = backbone.encoder(inputs_embeds=backbone.embeddings(pixels)).last_hidden_state
        return model.pool(backbone.post_layernorm(hidden))

    plain = saved_bytes(run)
    with checkpointed(model):
        checkpointed_bytes = saved_bytes(run)
    report("NearID (SigLIP2 so400m) reward, 384 px", params(model), 0, plain)
    report("  the same, gradient_checkpointing=True", params(model), 0, checkpointed_bytes)


if __name__ == "__main__":
    with torch.device("meta"):
        main()
