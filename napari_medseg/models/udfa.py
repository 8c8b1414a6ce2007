"""U-DFA: frozen DINOv2 + Spatial Pattern Adapter + Local-Global Fusion Adapters + U-Net decoder.

After arXiv 2510.00585.  Data flow for a ``(B, 1, H, W)`` slice (H, W multiples of 14):

* the slice is repeated to 3 channels and ImageNet-normalised for the frozen
  timm DINOv2 (``vit_base_patch14_dinov2``, patch 14 -> ``(H/14) x (W/14)`` tokens);
* the SPA, a CNN on the [0, 1] slice in parallel to the patch embedding,
  gives maps at 1/4, 1/8 and 1/16 (stride-2 convs, sizes rounded up);
* after chosen backbone blocks (default 4, 8, 12) an LGFA runs two cross
  attentions: patch tokens query one SPA map (local detail into the frozen
  stream), then that SPA map queries the updated tokens (global context into
  the CNN branch); LGFA ``j`` of ``n`` uses SPA scale ``floor(3 j / n)``
  (1/4, 1/8, 1/16 for the default three);
* the final (normed) patch tokens are reshaped to a ``(B, D, H/14, W/14)``
  map and a U-Net decoder upsamples it with the updated SPA maps as skips
  (1/16, 1/8, 1/4), then without skips to 1/2 and H x W.

Choices where the paper is silent (see docs/models.md): SPA stem (two
stride-2 ConvBNReLU), two ConvBNReLU per scale, pre-norm cross attention with
a layer scale (init 0.1 on the token side so the pretrained stream starts
almost unchanged), class token untouched, widths chosen so that SPA + LGFA +
decoder are ~33% of the parameters with DINOv2-base.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import ConvBNReLU, CrossAttention, DecoderBlock, SegModelMixin, check_input
from .dinov2_weights import create_backbone
from .udfa_spec import SPEC  # the family's facts, torch-free (option lists must not import torch)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SpatialPatternAdapter(nn.Module):
    """CNN branch: ``(B, 1, H, W)`` -> maps at 1/4, 1/8, 1/16 with ``channels`` (c1, c2, c3).

    Sizes are ``ceil(H / s)``; H need not be divisible by 16.
    """

    def __init__(self, channels: tuple[int, int, int] = (128, 256, 768), stem_channels: int = 64):
        super().__init__()
        c1, c2, c3 = channels
        self.stem = nn.Sequential(
            ConvBNReLU(1, stem_channels, stride=2), ConvBNReLU(stem_channels, stem_channels)
        )
        self.stages = nn.ModuleList(
            nn.Sequential(ConvBNReLU(cin, cout, stride=2), ConvBNReLU(cout, cout))
            for cin, cout in ((stem_channels, c1), (c1, c2), (c2, c3))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class LocalGlobalFusionAdapter(nn.Module):
    """Two cross attentions between ViT patch tokens and one SPA map.

    Args:
        token_dim: ViT width D.
        spa_dim: channels C of the SPA map.
        token_heads: heads of the token-queries-SPA attention (divides D).
        spa_heads: heads of the SPA-queries-token attention (divides C).
        token_scale: initial layer scale on the update of the frozen stream.

    ``forward(tokens (B, N, D), spa (B, C, h, w), grid (gh, gw))`` ->
    ``(tokens (B, N, D), spa (B, C, h, w))``.
    """

    def __init__(self, token_dim: int, spa_dim: int, token_heads: int, spa_heads: int, token_scale: float = 0.1):
        super().__init__()
        self.inject = CrossAttention(token_dim, spa_dim, token_heads, init_scale=token_scale)
        self.extract = CrossAttention(spa_dim, token_dim, spa_heads, init_scale=1.0)

    def forward(self, tokens: torch.Tensor, spa: torch.Tensor):
        b, c, h, w = spa.shape
        spa_seq = spa.flatten(2).transpose(1, 2)  # (B, h*w, C)
        tokens = self.inject(tokens, spa_seq)
        spa_seq = self.extract(spa_seq, tokens)
        return tokens, spa_seq.transpose(1, 2).reshape(b, c, h, w)


class UDFA(SegModelMixin, nn.Module):
    """U-DFA segmentation network.

    Args:
        num_classes: K, classes including background.
        img_size: size the backbone's position embeddings are built for (224);
            other multiples of 14 work (timm interpolates at run time).
        backbone: timm model name (DINOv2-base by default).
        backbone_overrides: extra ``timm.create_model`` kwargs (tiny test backbones).
        backbone_weights: file path, ``"hub"``, ``"auto"`` or ``None``; see
            :mod:`napari_medseg.models.dinov2_weights`.  Not part of ``config``:
            checkpoints store the backbone weights themselves.
        spa_channels: SPA widths at 1/4, 1/8, 1/16.
        spa_stem_channels: SPA stem width (1/2).
        lgfa_blocks: 1-based backbone block indices followed by an LGFA.
        lgfa_heads: heads of each cross attention on the SPA side (the token
            side uses the backbone's head count).
        decoder_channels: widths of the bottleneck projection and the decoder
            steps at 1/16, 1/8, 1/4, 1/2 and 1/1 (6 values).

    Input ``(B, 1, H, W)`` float in [0, 1]; output raw logits ``(B, K, H, W)``.
    """

    model_name = "udfa"
    size_multiple = SPEC.size_multiple

    def __init__(
        self,
        num_classes: int,
        img_size: int = 224,
        backbone: str = "vit_base_patch14_dinov2",
        backbone_overrides: dict | None = None,
        backbone_weights="auto",
        spa_channels: tuple[int, int, int] = (128, 256, 768),
        spa_stem_channels: int = 64,
        lgfa_blocks: tuple[int, ...] = (4, 8, 12),
        lgfa_heads: int = 8,
        decoder_channels: tuple[int, ...] = (768, 768, 256, 128, 64, 32),
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + organs), got {num_classes}")
        if img_size % self.size_multiple:
            raise ValueError(f"img_size must be a multiple of 14, got {img_size}")
        spa_channels, decoder_channels = tuple(spa_channels), tuple(decoder_channels)
        lgfa_blocks = tuple(int(b) for b in lgfa_blocks)
        if len(spa_channels) != 3 or len(decoder_channels) != 6:
            raise ValueError("spa_channels needs 3 values (1/4, 1/8, 1/16), decoder_channels 6")
        self.config = dict(
            num_classes=int(num_classes),
            img_size=int(img_size),
            backbone=backbone,
            backbone_overrides=dict(backbone_overrides or {}),
            spa_channels=list(spa_channels),
            spa_stem_channels=int(spa_stem_channels),
            lgfa_blocks=list(lgfa_blocks),
            lgfa_heads=int(lgfa_heads),
            decoder_channels=list(decoder_channels),
        )
        self.backbone = create_backbone(backbone, img_size, backbone_weights, backbone_overrides)
        depth, dim = len(self.backbone.blocks), self.backbone.embed_dim
        if not lgfa_blocks or sorted(set(lgfa_blocks)) != list(lgfa_blocks) or not 1 <= lgfa_blocks[0] <= lgfa_blocks[-1] <= depth:
            raise ValueError(f"lgfa_blocks must be increasing block numbers in 1..{depth}, got {list(lgfa_blocks)}")
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        self.spa = SpatialPatternAdapter(spa_channels, spa_stem_channels)
        n = len(lgfa_blocks)
        self.lgfa_scale = [min(2, (3 * j) // n) for j in range(n)]
        token_heads = self.backbone.blocks[0].attn.num_heads
        self.lgfa = nn.ModuleList(
            LocalGlobalFusionAdapter(dim, spa_channels[s], token_heads, lgfa_heads) for s in self.lgfa_scale
        )
        self._lgfa_after = {b - 1: j for j, b in enumerate(lgfa_blocks)}

        d0, d16, d8, d4, d2, d1 = decoder_channels
        c4, c8, c16 = spa_channels
        self.bottleneck = ConvBNReLU(dim, d0)
        self.decoder = nn.ModuleList(
            [
                DecoderBlock(d0, c16, d16),
                DecoderBlock(d16, c8, d8),
                DecoderBlock(d8, c4, d4),
                DecoderBlock(d4, 0, d2),
                DecoderBlock(d2, 0, d1),
            ]
        )
        self.head = nn.Conv2d(d1, num_classes, 1)

    # --- groups and freezing -------------------------------------------------
    def _group_modules(self):
        return {
            "adapters": [self.spa, self.lgfa, self.bottleneck, self.decoder, self.head],
            "backbone": [self.backbone],
        }

    def _frozen_units(self):
        return [self.backbone]

    # --- forward ---------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.size_multiple, "U-DFA")
        h, w = x.shape[-2:]
        gh, gw = h // 14, w // 14
        spa = self.spa(x)
        rgb = (x.expand(-1, 3, -1, -1) - self.pixel_mean) / self.pixel_std

        vit = self.backbone
        t = vit.patch_embed(rgb)  # (B, gh, gw, D) with dynamic_img_size
        t = vit._pos_embed(t)
        t = vit.norm_pre(vit.patch_drop(t))
        prefix = vit.num_prefix_tokens
        for i, block in enumerate(vit.blocks):
            t = block(t)
            j = self._lgfa_after.get(i)
            if j is not None:
                s = self.lgfa_scale[j]
                patches, spa[s] = self.lgfa[j](t[:, prefix:], spa[s])
                t = torch.cat([t[:, :prefix], patches], dim=1)
        t = vit.norm(t)[:, prefix:]
        y = t.transpose(1, 2).reshape(t.shape[0], -1, gh, gw)

        y = self.bottleneck(y)
        y = self.decoder[0](y, spa[2])
        y = self.decoder[1](y, spa[1])
        y = self.decoder[2](y, spa[0])
        y = self.decoder[3](y, size=(math.ceil(h / 2), math.ceil(w / 2)))
        y = self.decoder[4](y, size=(h, w))
        return self.head(y)

