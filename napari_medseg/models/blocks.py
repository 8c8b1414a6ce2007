"""Building blocks shared by U-DFA and DCAU-Net, plus the size check and freezing rules.

All blocks take and return ``(B, C, H, W)`` tensors unless stated otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def check_input(x: torch.Tensor, multiple: int, model_name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, 1, H, W)`` with H, W multiples of ``multiple``."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(
            f"{model_name} expects a (B, 1, H, W) batch of single-channel slices, got shape {tuple(x.shape)}"
        )
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % multiple or w % multiple or h == 0 or w == 0:
        up_h, up_w = -(-max(h, 1) // multiple) * multiple, -(-max(w, 1) // multiple) * multiple
        raise ValueError(
            f"{model_name} accepts slices whose height and width are multiples of {multiple} "
            f"(e.g. 224x224); got {h}x{w}. Pad or resize to {up_h}x{up_w} "
            "(napari_medseg.preprocess.to_model_size does this)."
        )


class ConvBNReLU(nn.Sequential):
    """``k x k`` conv (no bias) -> BatchNorm -> ReLU.  ``(B, C_in, H, W) -> (B, C_out, H/s, W/s)`` (ceil)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """U-Net decoder step: resize to the skip's size (bilinear), concat skip, two ConvBNReLU.

    Args:
        in_channels: channels of the coarse input ``(B, C_in, h, w)``.
        skip_channels: channels of the skip ``(B, C_skip, H, W)``; 0 for none (then ``size`` is needed).
        out_channels: output channels; output is ``(B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else size
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class CrossAttention(nn.Module):
    """Pre-norm multi-head cross attention with a residual and layer scale.

    ``query (B, N, D_q)``, ``context (B, M, D_kv)`` -> ``(B, N, D_q)`` =
    ``query + gamma * MHA(LN(query), LN(context))``.

    Args:
        query_dim: channels of the query sequence (attention width).
        context_dim: channels of the key/value sequence.
        num_heads: heads; must divide ``query_dim``.
        init_scale: initial value of the per-channel layer scale ``gamma``.
    """

    def __init__(self, query_dim: int, context_dim: int, num_heads: int, init_scale: float = 1.0):
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide query_dim {query_dim}")
        self.norm_q = nn.LayerNorm(query_dim)
        self.norm_kv = nn.LayerNorm(context_dim)
        self.attn = nn.MultiheadAttention(
            query_dim, num_heads, kdim=context_dim, vdim=context_dim, batch_first=True
        )
        self.gamma = nn.Parameter(torch.full((query_dim,), float(init_scale)))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # Same maths and parameters as ``self.attn(q, kv, kv)``, but on contiguous (B, N, C)
        # tensors: nn.MultiheadAttention transposes batch_first inputs to (N, B, C) views, and a
        # linear layer on such a view ran ~60x slower in bf16 autocast on CPU (a batched matmul
        # over expanded weights; docs/models.md, "bf16 on CPU").
        attn, heads = self.attn, self.attn.num_heads
        (b, n, _), m = query.shape, context.shape[1]
        if attn._qkv_same_embed_dim:
            w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
        kv = self.norm_kv(context).contiguous()
        q = F.linear(self.norm_q(query).contiguous(), w_q, b_q).view(b, n, heads, -1).transpose(1, 2)
        k = F.linear(kv, w_k, b_k).view(b, m, heads, -1).transpose(1, 2)
        v = F.linear(kv, w_v, b_v).view(b, m, heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, D / heads)
        out = attn.out_proj(out.transpose(1, 2).reshape(b, n, -1))
        return query + self.gamma * out


class ChannelAttention(nn.Module):
    """CBAM channel attention: sigmoid(MLP(avgpool) + MLP(maxpool)) * x, shared 2-layer MLP.

    ``(B, C, H, W) -> (B, C, H, W)``; ``reduction`` is the MLP's bottleneck ratio r.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: sigmoid(conv([mean_c(x), max_c(x)])) * x.  ``(B, C, H, W) -> same``.

    The two maps go to the 7x7 conv channels-last: oneDNN runs this 2 -> 1 channel conv 4x
    faster that way forward and backward at 64^2 (fine-tuning's crops), 2.4x forward at 512^2,
    level at 128^2 (docs/retrain.md, "Faster steps").  Same values up to float rounding.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps.contiguous(memory_format=torch.channels_last)))


class SegModelMixin:
    """Shared model behaviour: parameter groups and frozen parts that stay in eval mode.

    A subclass defines ``_group_modules()`` -> ``{group: [modules]}`` and may
    list ``_always_eval_when_frozen`` submodule names (the U-DFA backbone).
    """

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups, each a list of parameters (``"all"`` = every parameter)."""
        groups = {}
        for name, modules in self._group_modules().items():
            params, seen = [], set()
            for module in modules:
                for p in module.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
            groups[name] = params
        groups["all"] = list(self.parameters())
        return groups

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``, but fully frozen sub-networks and frozen norm layers stay in eval."""
        super().train(mode)
        if mode:
            for module in self.modules():
                params = list(module.parameters(recurse=True))
                frozen = bool(params) and not any(p.requires_grad for p in params)
                if frozen and (isinstance(module, NORM_TYPES) or module in self._frozen_units()):
                    module.eval()
        return self

    def _frozen_units(self) -> list[nn.Module]:
        return []


def freeze_except(model: nn.Module, group: str) -> list[nn.Parameter]:
    """Freeze every parameter outside ``model.parameter_groups()[group]``; return the trainable ones.

    Frozen parameters get ``requires_grad=False``; frozen norm layers (and a
    frozen U-DFA backbone) stay in eval mode through ``model.train()``.  Pass
    the returned list to the optimizer so frozen weights carry no state.
    """
    groups = model.parameter_groups()
    if group not in groups:
        raise ValueError(f"{model.model_name} has parameter groups {sorted(groups)}, not {group!r}")
    keep = {id(p) for p in groups[group]}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    model.train(model.training)
    return [p for p in model.parameters() if p.requires_grad]
