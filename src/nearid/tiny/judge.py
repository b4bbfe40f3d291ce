"""A tiny Qwen3-VL judge built offline: configs, random weights, a local tokenizer, a PIL processor.

Hugging Face downloads are impossible in tests, and a real judge is 8-60 GB; the code path of
:class:`~nearid.judges.vlm.VLMJudge` (chat text, image-token expansion, left padding, generate, the
forced-prefix readout) is the same for a model of a few hundred thousand parameters. Its answers are
random bytes: any score it gives is meaningless, only the machinery is tested.

The tokenizer is Qwen's byte-level BPE reduced to its alphabet (256 byte characters, no merges) plus
Qwen's special tokens, so digits are single tokens as in Qwen's own tokenizer (which splits numbers
digit by digit). ``Qwen3VLProcessor`` is not built: its video processor imports torchvision, so the
judge expands ``<|image_pad|>`` itself (:mod:`nearid.judges.vlm`).
"""

from __future__ import annotations

from pathlib import Path

from nearid.judges.prompt import CHAT_TEMPLATE

#: Qwen's special tokens, in Qwen2/Qwen3's order (ids follow the 256 byte characters).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Pixel budget of the tiny processor: images are resized to 64-128 px a side (4-16 patches of 16 px).
TINY_MIN_PIXELS = 64 * 64
TINY_MAX_PIXELS = 128 * 128


def tiny_tokenizer():
    """Qwen's byte-level tokenizer reduced to its 256-character alphabet plus Qwen's special tokens,
    with the chat template, left padding (``<|endoftext|>`` pads, as in Qwen) and ``<|im_end|>`` as EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from nearid.tiny.tokenizers import bytes_to_unicode

    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        padding_side="left",
        model_max_length=32768,
    )
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_image_processor(model_type: str = "qwen3_vl"):
    """The family's image preprocessing through transformers' PIL backend (Qwen3-VL: 16 px patches,
    mean/std 0.5; Qwen2.5-VL: 14 px patches, CLIP's mean/std; both a 2x2 merge), with a small pixel
    budget so that test images make a handful of tokens."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if model_type == "qwen2_5_vl":
        return Qwen2VLImageProcessorPil(
            size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}, patch_size=14, merge_size=2
        )
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def tiny_config(tokenizer, model_type: str = "qwen3_vl"):
    """A Qwen3-VL, Qwen3-VL-MoE or Qwen2.5-VL config (``model_type``) of the real shape rules at toy
    sizes, its special-token ids taken from ``tokenizer``."""
    import transformers

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
    )
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, spatial_merge_size=2, out_hidden_size=64)
    tokens = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    if model_type == "qwen2_5_vl":
        text.update(rope_parameters=rope)
        vision.update(patch_size=14, window_size=56, fullatt_block_indexes=[1])
        return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    text.update(head_dim=16, rope_parameters={**rope, "mrope_interleaved": True})
    vision.update(patch_size=16, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0])
    if model_type == "qwen3_vl_moe":
        text.update(moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1)
        return transformers.Qwen3VLMoeConfig(text_config=text, vision_config=vision, **tokens)
    if model_type != "qwen3_vl":
        raise ValueError(f"no tiny judge of model_type '{model_type}'")
    return transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)


def save_tiny_judge(folder: str | Path, *, seed: int = 0, model_type: str = "qwen3_vl") -> Path:
    """Write a tiny, randomly initialised judge (``model_type``: ``qwen3_vl``, ``qwen3_vl_moe`` or
    ``qwen2_5_vl``) to ``folder`` as ``save_pretrained`` lays a hub checkpoint out (config,
    safetensors weights, tokenizer files, ``preprocessor_config.json``, ``chat_template.json``), so that
    ``vlm:<folder>`` loads it through the same path as a real one."""
    import json

    import torch
    import transformers
    from transformers import GenerationConfig

    from nearid.judges.vlm import MODEL_CLASSES

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    config = tiny_config(tokenizer, model_type)
    torch.manual_seed(seed)
    model = getattr(transformers, MODEL_CLASSES[model_type])(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=config.text_config.pad_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tiny_image_processor(model_type).save_pretrained(folder)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    return folder


__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "save_tiny_judge",
    "tiny_config",
    "tiny_image_processor",
    "tiny_tokenizer",
]
