"""Tiny diffusers inpainting pipelines (FLUX Fill and SDXL inpainting classes built from small configs,
random weights, local tokenizers): what ``nearid distract --generator tiny-*`` runs offline in tests and
examples. They make noise; they exercise every line of the real pipelines' calling code."""

from __future__ import annotations

from nearid.tiny.tokenizers import tiny_clip_tokenizer, tiny_t5_tokenizer


def _tiny_clip_text(vocab_size: int, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        max_position_embeddings=77,
        hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_tiny_sdxl_inpaint(model: str, dtype, *, seed: int = 0, **_):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel

    torch.manual_seed(seed)  # random weights, but the same ones every time
    tokenizer = tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=64,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        text_encoder=_tiny_clip_text(len(tokenizer), False),
        text_encoder_2=_tiny_clip_text(len(tokenizer), True),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return _evaluation_mode(pipe).to(dtype=dtype)


def _evaluation_mode(pipe):
    """Modules built from configs start in training mode; T5's dropout would make every call differ."""
    for component in pipe.components.values():
        if hasattr(component, "eval") and hasattr(component, "parameters"):
            component.eval()
    return pipe


def build_tiny_flux_fill(model: str, dtype, *, seed: int = 0, **_):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    clip, t5 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    latent, scale = 4, 2  # latent channels; VAE downscale (2 blocks)
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        latent_channels=latent,
        sample_size=32,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        layers_per_block=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    transformer = FluxTransformer2DModel(  # packed latents + packed masked-image latents + packed mask
        patch_size=1,
        in_channels=8 * latent + 4 * scale * scale,
        out_channels=4 * latent,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    text_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    pipe = FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        transformer=transformer,
        text_encoder=_tiny_clip_text(len(clip), False),
        tokenizer=clip,
        text_encoder_2=text_2,
        tokenizer_2=t5,
    )
    return _evaluation_mode(pipe).to(dtype=dtype)
