"""A tiny random OWLv2 detector and a tiny random SAM, saved as checkpoints: what ``nearid mask`` runs
offline in tests and examples (they find boxes and masks, just not meaningful ones)."""

from __future__ import annotations

import os
from pathlib import Path


def build_tiny_models(folder: str | os.PathLike, *, seed: int = 0) -> tuple[Path, Path]:
    """A tiny random OWLv2 and a tiny random SAM, saved as checkpoints (tests and offline examples)."""
    import torch
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,
        SamConfig,
        SamImageProcessorPil,
        SamModel,
    )

    from nearid.tiny.tokenizers import tiny_clip_tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    owl = Owlv2ForObjectDetection(
        Owlv2Config(
            text_config=dict(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=16,
                bos_token_id=len(tokenizer) - 2,
                eos_token_id=len(tokenizer) - 1,
                pad_token_id=len(tokenizer) - 1,
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=64,
                patch_size=16,
            ),
            projection_dim=32,
        )
    )
    tokenizer.model_max_length = 16
    detector = folder / "tiny-owlv2"
    owl.save_pretrained(detector)
    tokenizer.save_pretrained(detector)
    Owlv2ImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(detector)
    sam = SamModel(
        SamConfig(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=64,
                patch_size=16,
                output_channels=16,
                global_attn_indexes=[1],
                window_size=2,
                num_pos_feats=8,
                mlp_dim=37,
            ),
            prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
            mask_decoder_config=dict(
                hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16
            ),
        )
    )
    segmenter = folder / "tiny-sam"
    sam.save_pretrained(segmenter)
    SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}).save_pretrained(segmenter)
    return detector, segmenter
