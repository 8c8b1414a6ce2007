"""DCAU-Net: Differential Cross Attention encoder + Channel-Spatial Feature Fusion decoder.

Encoder (4 stages, 1/4, 1/8, 1/16, 1/32): a patch embedding (non-overlapping
conv, 4x4 then 2x2, + LayerNorm) starts every stage, followed by DCA blocks:

    x = LN(x + DWConv3x3(x));  x = LN(x + DCA(x));  x = LN(x + MLP_4x(x))   (post-norm)

DCA (differential cross attention): every pixel is a query; keys and values
come from window summary tokens (non-overlapping 7x7 average pooling).  Per
head, ``(softmax(Q1 K1^T / sqrt(d)) - lambda softmax(Q2 K2^T / sqrt(d))) V``,
``lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init``,
``lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1))`` with ``l`` the 1-based index of
the block over the whole encoder; each head is RMS-normed and scaled by
``(1 - lambda_init)``, then an output projection.  Windows: a map whose side
is not a multiple of 7 gets a partial last window that averages only its
valid pixels.  A map no larger than 7x7 would pool to a single token (the
output would be the same at every pixel and q/k would get no gradient); as
the paper says, the block then reverts to standard differential attention:
the pixel tokens themselves are the keys and values (stage 4 at 224 input).

Decoder: four upsampling steps (bilinear x2, x2, x2, then x4 to full
resolution), each fusing with CSFF: skip and upsampled features each pass a
ConvBNReLU, are concatenated, then CBAM-style channel attention (shared MLP,
reduction r, over avg- and max-pooled descriptors) and spatial attention
(7x7 conv over channel-wise avg and max maps).  The skips are the stage 3, 2
and 1 outputs, and for the last (full-resolution) step the input slice itself.

Size (default config, 9 classes, 224x224): see ``docs/models.md`` and
``tests/test_models.py``.  MACs are counted with
``torch.utils.flop_counter.FlopCounterMode`` as FLOPs / 2: matrix
multiplications, convolutions and the two ``scaled_dot_product_attention``
calls per DCA; element-wise ops, norms, softmax, pooling and interpolation are
not counted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ChannelAttention, ConvBNReLU, SegModelMixin, SpatialAttention, check_input
from .dcaunet_spec import SPEC  # the family's facts, torch-free (option lists must not import torch)

WINDOW = 7


def lambda_init_for(layer: int) -> float:
    """Differential-attention ``lambda_init`` for the 1-based block index ``layer``."""
    return 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))


def window_tokens(x: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Non-overlapping ``window x window`` means: ``(B, C, H, W)`` -> ``(B, ceil(H/w) * ceil(W/w), C)``.

    Partial windows at the bottom/right edge average their valid pixels only.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % window, (-w) % window
    if ph or pw:
        ones = x.new_ones(1, 1, h, w)
        sums = F.avg_pool2d(F.pad(x, (0, pw, 0, ph)), window)
        pooled = sums / F.avg_pool2d(F.pad(ones, (0, pw, 0, ph)), window)
    else:
        pooled = F.avg_pool2d(x, window)
    return pooled.flatten(2).transpose(1, 2)


SINGLE_WINDOW_RULES = ("pixels", "mean")


def key_tokens(x: torch.Tensor, window: int = WINDOW, single_window: str = "pixels") -> torch.Tensor:
    """DCA keys/values source: ``(B, C, H, W)`` -> ``(B, M, C)``.

    Window means (:func:`window_tokens`) when the map spans more than one
    window.  When it fits in one window: the ``H * W`` pixel tokens themselves
    (``single_window="pixels"``, the paper's rule: standard differential
    attention), or the single global mean token (``"mean"``, the behaviour of
    checkpoints written before that rule was implemented).
    """
    h, w = x.shape[-2:]
    if h <= window and w <= window and single_window == "pixels":
        return x.flatten(2).transpose(1, 2)
    return window_tokens(x, window)


class DifferentialCrossAttention(nn.Module):
    """Pixel queries vs 7x7 window tokens (or vs the pixels of a map <= 7x7), multi-head differential attention.

    Args:
        dim: channels C.
        num_heads: heads h; each head has two query/key halves of ``d = C / (2h)``
            channels and a value of ``2d`` channels.
        layer: 1-based block index over the encoder (sets ``lambda_init``).
        single_window: keys of a map that fits in one window (see :func:`key_tokens`).

    ``(B, H, W, C) -> (B, H, W, C)`` (channels last).
    """

    def __init__(self, dim: int, num_heads: int, layer: int, single_window: str = "pixels"):
        super().__init__()
        if dim % (2 * num_heads):
            raise ValueError(f"dim {dim} must be divisible by 2 * num_heads ({2 * num_heads})")
        if single_window not in SINGLE_WINDOW_RULES:
            raise ValueError(f"single_window must be one of {SINGLE_WINDOW_RULES}, got {single_window!r}")
        self.single_window = single_window
        self.num_heads, self.head_dim = num_heads, dim // (2 * num_heads)
        self.lambda_init = lambda_init_for(layer)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.lambda_q1 = nn.Parameter(torch.randn(self.head_dim) * 0.1)
        self.lambda_k1 = nn.Parameter(torch.randn(self.head_dim) * 0.1)
        self.lambda_q2 = nn.Parameter(torch.randn(self.head_dim) * 0.1)
        self.lambda_k2 = nn.Parameter(torch.randn(self.head_dim) * 0.1)
        self.head_norm = nn.RMSNorm(2 * self.head_dim, eps=1e-5)

    def lambda_full(self) -> torch.Tensor:
        """The re-parameterised scalar ``lambda``."""
        return (
            torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
            - torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
            + self.lambda_init
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, hgt, wid, c = x.shape
        h, d = self.num_heads, self.head_dim
        tokens = key_tokens(x.permute(0, 3, 1, 2), single_window=self.single_window)  # (B, M, C)
        # both softmax maps of all heads in one attention call: (B, h * 2, ., d)
        q = self.q(x.reshape(b, -1, c)).view(b, -1, 2 * h, d).transpose(1, 2)  # (B, 2h, N, d)
        k = self.k(tokens).view(b, -1, 2 * h, d).transpose(1, 2)  # (B, 2h, M, d)
        v = self.v(tokens).view(b, -1, h, 2 * d).transpose(1, 2).repeat_interleave(2, dim=1)  # (B, 2h, M, 2d)
        both = F.scaled_dot_product_attention(q, k, v).view(b, h, 2, -1, 2 * d)
        out = both[:, :, 0] - self.lambda_full().to(both.dtype) * both[:, :, 1]  # (B, h, N, 2d)
        out = self.head_norm(out.float()).to(both.dtype) * (1.0 - self.lambda_init)  # norm in fp32 under autocast
        return self.proj(out.transpose(1, 2).reshape(b, hgt, wid, c))


class DCABlock(nn.Module):
    """DWConv3x3 -> DCA -> MLP(x4), each residual then LayerNorm.  ``(B, C, H, W) -> same``."""

    def __init__(self, dim: int, num_heads: int, layer: int, mlp_ratio: int = 4, single_window: str = "pixels"):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = DifferentialCrossAttention(dim, num_heads, layer, single_window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        t = self.norm1(x.permute(0, 2, 3, 1) + self.dwconv(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        t = self.norm2(t + self.attn(t))
        t = self.norm3(t + self.mlp(t))
        return t.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last memory


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` conv + LayerNorm: ``(B, C_in, H, W) -> (B, C_out, H/p, W/p)``."""

    def __init__(self, in_channels: int, out_channels: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, patch, stride=patch)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CSFF(nn.Module):
    """Channel-Spatial Feature Fusion of a skip and an upsampled map.

    ``skip (B, C_s, H, W)``, ``up (B, C_u, H, W)`` -> ``(B, 2 * out, H, W)``.
    """

    def __init__(self, skip_channels: int, up_channels: int, out_channels: int, reduction: int = 16):
        super().__init__()
        self.skip_conv = ConvBNReLU(skip_channels, out_channels)
        self.up_conv = ConvBNReLU(up_channels, out_channels)
        self.channel = ChannelAttention(2 * out_channels, reduction)
        self.spatial = SpatialAttention(7)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.skip_conv(skip), self.up_conv(up)], dim=1)
        return self.spatial(self.channel(x))


ENCODER_PREFIXES = ("embeds.", "stages.")  # state-dict names of the encoder (patch embeddings + DCA stages)


class EncoderWeightsError(ValueError):
    """An ``encoder_weights`` file that does not fit the DCAU-Net encoder."""


def _listed(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def load_encoder_weights(model: "DCAUNet", path) -> None:
    """Copy a local safetensors file of encoder weights into ``model``'s encoder.

    The file holds exactly the encoder's state-dict entries under DCAU-Net's
    own names (``embeds.*``, ``stages.*``: :data:`ENCODER_PREFIXES`) with the
    same shapes, as a model of the same config has them.  Any missing, unexpected or
    mis-shaped key raises :class:`EncoderWeightsError` naming them.
    """
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder_weights file {str(path)!r} not found; give a local .safetensors file of DCAU-Net encoder weights")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise EncoderWeightsError(f"encoder_weights {path.name} is not a readable safetensors file ({err})") from None
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(
        f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(tensors)
        if tensors[k].shape != expected[k].shape
    )
    problems = [
        f"{label}: {_listed(items)}"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes))
        if items
    ]
    if problems:
        raise EncoderWeightsError(
            f"encoder_weights {path.name} does not fit this DCAU-Net encoder (dims {model.config['dims']}, "
            f"depths {model.config['depths']}): " + "; ".join(problems)
        )
    with torch.no_grad():
        for key, value in tensors.items():
            expected[key].copy_(value)


class DCAUNet(SegModelMixin, nn.Module):
    """DCAU-Net segmentation network.

    Args:
        num_classes: K, classes including background.
        dims: encoder widths of the 4 stages (1/4, 1/8, 1/16, 1/32).
        depths: DCA blocks per stage.
        heads: attention heads per stage (``2 * heads`` divides ``dims``).
        decoder_channels: CSFF widths of the 4 steps (1/16, 1/8, 1/4, 1/1);
            each step outputs twice this many channels (concat).
        reduction: channel-attention reduction r.
        mlp_ratio: MLP expansion in DCA blocks.
        single_window: keys/values of a map that fits in one 7x7 window:
            ``"pixels"`` (the paper's standard differential attention) or
            ``"mean"`` (one global token; only to load checkpoints written
            before ``"pixels"``, which lack this key).
        encoder_weights: optional local ``.safetensors`` file of encoder
            weights (see :func:`load_encoder_weights`); not stored in
            ``config``, since checkpoints carry the weights themselves.
            No ImageNet-pretrained DCAU-Net encoder is available offline; the
            paper's ablation puts training from scratch at -2.04 DSC.

    Input ``(B, 1, H, W)`` float in [0, 1], H and W multiples of 32; output
    raw logits ``(B, K, H, W)``.
    """

    model_name = "dcaunet"
    size_multiple = SPEC.size_multiple

    def __init__(
        self,
        num_classes: int,
        dims: tuple[int, int, int, int] = (64, 128, 320, 512),
        depths: tuple[int, int, int, int] = (2, 2, 6, 3),
        heads: tuple[int, int, int, int] = (2, 4, 10, 16),
        decoder_channels: tuple[int, int, int, int] = (256, 128, 48, 24),
        reduction: int = 16,
        mlp_ratio: int = 4,
        single_window: str = "pixels",
        encoder_weights: str | None = None,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + organs), got {num_classes}")
        dims, depths, heads, decoder_channels = (tuple(int(v) for v in t) for t in (dims, depths, heads, decoder_channels))
        if not len(dims) == len(depths) == len(heads) == len(decoder_channels) == 4:
            raise ValueError("dims, depths, heads and decoder_channels need 4 values each")
        self.config = dict(
            num_classes=int(num_classes),
            dims=list(dims),
            depths=list(depths),
            heads=list(heads),
            decoder_channels=list(decoder_channels),
            reduction=int(reduction),
            mlp_ratio=int(mlp_ratio),
            single_window=str(single_window),
        )
        self.embeds = nn.ModuleList(
            PatchEmbed(cin, cout, p) for cin, cout, p in zip((1,) + dims[:3], dims, (4, 2, 2, 2))
        )
        layer, stages = 1, []
        for dim, depth, nh in zip(dims, depths, heads):
            blocks = []
            for _ in range(depth):
                blocks.append(DCABlock(dim, nh, layer, mlp_ratio, single_window))
                layer += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

        d16, d8, d4, d1 = decoder_channels
        self.fuse = nn.ModuleList(
            [
                CSFF(dims[2], dims[3], d16, reduction),
                CSFF(dims[1], 2 * d16, d8, reduction),
                CSFF(dims[0], 2 * d8, d4, reduction),
                CSFF(1, 2 * d4, d1, reduction),
            ]
        )
        self.head = nn.Conv2d(2 * d1, num_classes, 1)
        if encoder_weights is not None:
            load_encoder_weights(self, encoder_weights)

    def _group_modules(self):
        return {"encoder": [self.embeds, self.stages], "decoder": [self.fuse, self.head]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.size_multiple, "DCAU-Net")
        feats, y = [], x
        for embed, stage in zip(self.embeds, self.stages):
            y = stage(embed(y))
            feats.append(y)
        skips = [feats[2], feats[1], feats[0], x]
        for fuse, skip in zip(self.fuse, skips):
            up = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = fuse(skip, up)
        return self.head(y)

