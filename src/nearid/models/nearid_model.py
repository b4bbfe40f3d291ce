"""NearIDConfig and NearIDModel: a frozen SigLIP vision tower whose MAP head is the only trainable part.

The model *is* a ``SiglipVisionModel`` (``self.backbone``) whose attention-pooling head holds the
NearID weights. Everything else in the tower is frozen, so the trunk runs without a graph and its
tokens can be cached during training (``encode_tokens`` / ``pool``).

Checkpoint layout. The authors' release (``Aleksandar/nearid-siglip2``) stores transformers-4.x keys
``backbone.vision_model.{embeddings,encoder,post_layernorm,head}.*`` in fp16, plus an ``auto_map``
pointing at Python files shipped beside the weights. transformers 5.x's ``SiglipVisionModel`` has no
``vision_model`` level, so we register a key renaming for ``model_type = "nearid"``; transformers
applies it on load and reverses it on save. Our checkpoints therefore use the very same layout as
the release, and the release loads here without ``trust_remote_code``: the ``nearid`` model type is
registered locally, so the shipped code is never imported.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, SiglipVisionConfig, SiglipVisionModel
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.utils import ModelOutput

from nearid.models.specs import DEFAULT_BACKBONE, RELEASE_MODEL  # noqa: F401  (re-exported: the names' old home)


def siglip2_so400m_vision_config() -> SiglipVisionConfig:
    """The vision tower of google/siglip2-so400m-patch14-384 (spec section 2.1)."""
    return SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
        num_channels=3,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
    )


def tiny_vision_config() -> SiglipVisionConfig:
    """A SigLIP tower small enough for tests and offline demos (64 px, 8x8 patches, 2 layers)."""
    return SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
    )


class NearIDConfig(PretrainedConfig):
    """Configuration of a NearID model; the default is the paper's SigLIP2-SO400M/14 at 384 px."""

    model_type = "nearid"
    sub_configs = {"vision_config": SiglipVisionConfig}  # noqa: RUF012 (transformers' class attribute)

    def __init__(self, vision_config=None, embed_dim: int | None = None, normalize_embeddings: bool = True, **kwargs):
        # The release's auto_map points at remote code; we never use it, so we never write it back.
        kwargs.pop("auto_map", None)
        if vision_config is None:
            vision_config = siglip2_so400m_vision_config()
        elif isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(**{k: v for k, v in vision_config.items() if k != "model_type"})
        self.vision_config = vision_config
        self.embed_dim = vision_config.hidden_size if embed_dim is None else int(embed_dim)
        self.normalize_embeddings = bool(normalize_embeddings)
        if self.embed_dim != vision_config.hidden_size:
            raise ValueError(
                f"embed_dim={self.embed_dim} differs from the tower's hidden size {vision_config.hidden_size}; "
                "NearID embeds with the MAP head's output and has no projection layer"
            )
        super().__init__(**kwargs)


@dataclass
class NearIDOutput(ModelOutput):
    """``image_embeds``: L2-normalised (if asked); ``pooler_output``: raw MAP output; ``last_hidden_state``: post-LN tokens."""

    image_embeds: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


class NearIDModel(PreTrainedModel):
    """Frozen SigLIP vision tower + trainable MAP head; embeddings are L2-normalised MAP outputs."""

    config_class = NearIDConfig
    base_model_prefix = "nearid"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["SiglipVisionEmbeddings", "SiglipEncoderLayer", "SiglipMultiheadAttentionPoolingHead"]  # noqa: RUF012

    def __init__(self, config: NearIDConfig):
        super().__init__(config)
        if not config.vision_config.vision_use_head:
            raise ValueError("NearID needs the SigLIP attention-pooling head (vision_use_head=True)")
        self.backbone = SiglipVisionModel(config.vision_config)
        self.post_init()
        self.freeze_trunk()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As transformers' loader, then re-freeze the trunk (loading hands back fresh trainable parameters)."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).freeze_trunk()
        return loaded

    @property
    def head(self) -> torch.nn.Module:
        """The MAP head: the only part NearID trains."""
        return self.backbone.head

    def freeze_trunk(self) -> None:
        """Patch/position embeddings, all blocks and post-LN are frozen; only the head learns."""
        for name, param in self.backbone.named_parameters():
            param.requires_grad_(name.startswith("head."))

    def encode_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Post-LN patch tokens ``[B, N, H]`` of the frozen trunk, computed without a graph."""
        with torch.no_grad():
            dtype = self.backbone.embeddings.patch_embedding.weight.dtype
            hidden = self.backbone.embeddings(pixel_values.to(dtype))
            hidden = self.backbone.encoder(inputs_embeds=hidden).last_hidden_state
            return self.backbone.post_layernorm(hidden)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) MAP-head output ``[B, H]`` for cached or fresh trunk tokens."""
        return self.head(tokens.to(self.head.probe.dtype))

    def forward(self, pixel_values: torch.Tensor, normalize: bool | None = None, **_) -> NearIDOutput:
        tokens = self.encode_tokens(pixel_values)
        pooled = self.pool(tokens)
        if self.config.normalize_embeddings if normalize is None else normalize:
            embeds = F.normalize(pooled.float(), dim=-1)
        else:
            embeds = pooled
        return NearIDOutput(image_embeds=embeds, pooler_output=pooled, last_hidden_state=tokens)

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``[B, embed_dim]`` embeddings, L2-normalised in float32 unless ``normalize=False``."""
        return self.forward(pixel_values, normalize=normalize).image_embeds

    @classmethod
    def from_siglip(
        cls,
        siglip: SiglipVisionModel | str,
        *,
        allow_pickle: bool = False,
        dtype: torch.dtype = torch.float32,
        copy: bool = True,
    ) -> NearIDModel:
        """Start from a pretrained SigLIP tower, copying its pretrained MAP head as NearID's initial head.

        ``siglip`` is a loaded ``SiglipVisionModel`` or a folder / hub id of a SigLIP (or SigLIP2
        fixed-resolution) checkpoint, e.g. ``google/siglip2-so400m-patch14-384``, loaded strictly by
        :func:`nearid.models.loading.load_pretrained`. A passed model is copied, so training NearID's head
        leaves it untouched; ``copy=False`` adopts it instead (no second copy of the weights in memory).

        The NearID shell is built on the meta device and takes the tower as its backbone: randomly
        initialising a full-size tower only to overwrite it costs tens of seconds on a CPU.
        """
        if isinstance(siglip, str) or hasattr(siglip, "__fspath__"):
            from nearid.models.loading import load_pretrained

            _, siglip = load_pretrained(SiglipVisionModel, siglip, allow_pickle=allow_pickle)
            copy = False
        vision_config = SiglipVisionConfig(**{k: v for k, v in siglip.config.to_dict().items() if k != "model_type"})
        with torch.device("meta"):
            model = cls(NearIDConfig(vision_config=vision_config))
        model.backbone = _copy.deepcopy(siglip) if copy else siglip
        model.freeze_trunk()
        return model.to(dtype)


def seeded_model(vision_config: SiglipVisionConfig, seed: int = 0) -> NearIDModel:
    """A deterministic, randomly initialised (UNTRAINED) NearID model of the given tower size, in eval
    mode; the global random state is left as it was (``tiny[:SEED]`` and :mod:`nearid.tiny.model`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NearIDModel(NearIDConfig(vision_config=vision_config))
    return model.eval()


AutoConfig.register("nearid", NearIDConfig, exist_ok=True)
AutoModel.register(NearIDConfig, NearIDModel, exist_ok=True)
register_checkpoint_conversion_mapping(
    "nearid", [WeightRenaming(r"^backbone\.vision_model\.", "backbone.")], overwrite=True
)
