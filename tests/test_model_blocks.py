"""Per-block tests from CASES tables: (block, kwargs, input shapes, expected output shape(s)), forward + backward."""

from __future__ import annotations

import math

import pytest
import torch

from napari_medseg.models.blocks import (
    ChannelAttention,
    ConvBNReLU,
    CrossAttention,
    DecoderBlock,
    SpatialAttention,
    check_input,
)
from napari_medseg.models.dcaunet import (
    CSFF,
    DCABlock,
    DifferentialCrossAttention,
    PatchEmbed,
    key_tokens,
    lambda_init_for,
    window_tokens,
)
from napari_medseg.models.udfa import LocalGlobalFusionAdapter, SpatialPatternAdapter

CASES = [
    # shared blocks
    (ConvBNReLU, dict(in_channels=3, out_channels=8), [(2, 3, 9, 11)], (2, 8, 9, 11)),
    (ConvBNReLU, dict(in_channels=3, out_channels=8, stride=2), [(2, 3, 9, 11)], (2, 8, 5, 6)),
    (DecoderBlock, dict(in_channels=16, skip_channels=8, out_channels=12), [(2, 16, 4, 5), (2, 8, 9, 11)], (2, 12, 9, 11)),
    (CrossAttention, dict(query_dim=16, context_dim=8, num_heads=4), [(2, 10, 16), (2, 30, 8)], (2, 10, 16)),
    (ChannelAttention, dict(channels=32, reduction=8), [(2, 32, 7, 5)], (2, 32, 7, 5)),
    (SpatialAttention, dict(kernel_size=7), [(2, 6, 7, 5)], (2, 6, 7, 5)),
    # U-DFA
    (SpatialPatternAdapter, dict(channels=(8, 16, 24), stem_channels=4), [(2, 1, 70, 98)], [(2, 8, 18, 25), (2, 16, 9, 13), (2, 24, 5, 7)]),
    (LocalGlobalFusionAdapter, dict(token_dim=24, spa_dim=16, token_heads=3, spa_heads=2), [(2, 35, 24), (2, 16, 9, 13)], [(2, 35, 24), (2, 16, 9, 13)]),
    # DCAU-Net
    (PatchEmbed, dict(in_channels=1, out_channels=16, patch=4), [(2, 1, 32, 64)], (2, 16, 8, 16)),
    (DifferentialCrossAttention, dict(dim=16, num_heads=2, layer=3), [(2, 9, 16, 16)], (2, 9, 16, 16)),  # channels last
    (DCABlock, dict(dim=16, num_heads=2, layer=1), [(2, 16, 9, 16)], (2, 16, 9, 16)),
    (DCABlock, dict(dim=16, num_heads=4, layer=5), [(1, 16, 3, 5)], (1, 16, 3, 5)),  # map < window
    (CSFF, dict(skip_channels=1, up_channels=16, out_channels=8, reduction=4), [(2, 1, 32, 32), (2, 16, 32, 32)], (2, 16, 32, 32)),
]


def _flat(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("block, kwargs, in_shapes, expected", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_block_shapes_forward_backward(block, kwargs, in_shapes, expected):
    torch.manual_seed(0)
    module = block(**kwargs).train()
    inputs = [torch.randn(s, requires_grad=True) for s in in_shapes]
    outs = _flat(module(*inputs))
    expected = expected if isinstance(expected, list) else [expected]
    assert [tuple(o.shape) for o in outs] == [tuple(e) for e in expected]
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.float().pow(2).mean() for o in outs).backward()
    for x in inputs:
        assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{block.__name__}.{name} got no gradient"


def test_lambda_init_schedule():
    assert lambda_init_for(1) == pytest.approx(0.2)
    assert lambda_init_for(2) == pytest.approx(0.8 - 0.6 * math.exp(-0.3))
    assert lambda_init_for(30) == pytest.approx(0.8, abs=1e-3)
    attn = DifferentialCrossAttention(16, 2, layer=4)
    assert attn.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.9))


def test_window_tokens_partial_and_global():
    x = torch.randn(2, 3, 9, 16)
    tokens = window_tokens(x)  # ceil(9/7) x ceil(16/7) = 2 x 3 windows
    assert tokens.shape == (2, 6, 3)
    torch.testing.assert_close(tokens[:, 0], x[:, :, :7, :7].mean(dim=(2, 3)))
    torch.testing.assert_close(tokens[:, 5], x[:, :, 7:, 14:].mean(dim=(2, 3)))  # partial corner window
    small = torch.randn(2, 3, 5, 6)  # window covers the map: one global token
    torch.testing.assert_close(window_tokens(small), small.mean(dim=(2, 3))[:, None])
    exact = torch.randn(1, 2, 14, 7)
    assert window_tokens(exact).shape == (1, 2, 2)


def _reference_dca(attn: DifferentialCrossAttention, x: torch.Tensor) -> torch.Tensor:
    """Differential attention written out with explicit softmaxes, per head."""
    b, hgt, wid, c = x.shape
    h, d = attn.num_heads, attn.head_dim
    pix = x.reshape(b, -1, c)
    tok = window_tokens(x.permute(0, 3, 1, 2)) if max(hgt, wid) > 7 else pix  # one window: pixels are keys
    q, k, v = attn.q(pix), attn.k(tok), attn.v(tok)
    lam = (
        torch.exp((attn.lambda_q1 * attn.lambda_k1).sum())
        - torch.exp((attn.lambda_q2 * attn.lambda_k2).sum())
        + attn.lambda_init
    )
    heads = []
    for i in range(h):
        qh = q[..., i * 2 * d : (i + 1) * 2 * d]
        kh = k[..., i * 2 * d : (i + 1) * 2 * d]
        vh = v[..., i * 2 * d : (i + 1) * 2 * d]
        a1 = torch.softmax(qh[..., :d] @ kh[..., :d].transpose(1, 2) / math.sqrt(d), dim=-1)
        a2 = torch.softmax(qh[..., d:] @ kh[..., d:].transpose(1, 2) / math.sqrt(d), dim=-1)
        o = (a1 - lam * a2) @ vh
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * attn.head_norm.weight
        heads.append(o * (1 - attn.lambda_init))
    return attn.proj(torch.cat(heads, dim=-1)).reshape(b, hgt, wid, c)


@pytest.mark.parametrize("hw", [(14, 21), (9, 16), (4, 6)])
def test_dca_matches_reference(hw):
    torch.manual_seed(1)
    attn = DifferentialCrossAttention(24, 3, layer=2)
    with torch.no_grad():
        attn.head_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, *hw, 24)
    torch.testing.assert_close(attn(x), _reference_dca(attn, x), rtol=1e-4, atol=1e-5)


def test_single_window_map_attends_to_its_pixels():
    """A map <= 7x7 pools to one token; DCA then uses the pixels as keys, so pixels differ and q/k learn."""
    torch.manual_seed(2)
    attn = DifferentialCrossAttention(16, 2, layer=13)
    x = torch.randn(2, 7, 7, 16)
    assert key_tokens(x.permute(0, 3, 1, 2)).shape == (2, 49, 16)
    assert key_tokens(torch.randn(2, 16, 8, 7)).shape == (2, 2, 16)  # two windows: window means
    out = attn(x)
    assert (out - out[:, :1, :1]).abs().amax() > 1e-3  # not the same vector at every pixel
    out.square().mean().backward()
    for layer in (attn.q, attn.k):
        assert layer.weight.grad.abs().sum() > 0


def test_csff_attention_gates_are_used():
    """Channel and spatial attention change the concatenation (they are not identity)."""
    torch.manual_seed(0)
    fuse = CSFF(4, 6, 8, reduction=2).eval()
    skip, up = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 8, 8)
    plain = torch.cat([fuse.skip_conv(skip), fuse.up_conv(up)], dim=1)
    out = fuse(skip, up)
    assert out.shape == plain.shape
    assert not torch.allclose(out, plain)
    assert (out.abs() <= plain.abs() + 1e-6).all()  # sigmoid gates only attenuate


@pytest.mark.parametrize(
    "shape, multiple, message",
    [((1, 1, 57, 56), 14, "multiples of 14"), ((1, 1, 224, 200), 32, "multiples of 32"), ((1, 3, 64, 64), 32, "(B, 1, H, W)")],
)
def test_check_input_rejects(shape, multiple, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_input(torch.zeros(shape), multiple, "model")


def test_spatial_attention_is_cbam_in_any_layout():
    """The channels-last conv inside gives CBAM's values: sigmoid(conv([mean, max])) * x."""
    torch.manual_seed(0)
    block = SpatialAttention(7)
    x = torch.randn(2, 5, 16, 12)
    maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    expected = x * torch.sigmoid(torch.nn.functional.conv2d(maps, block.conv.weight, padding=3))
    assert torch.allclose(block(x), expected, atol=1e-6)
    assert torch.allclose(block(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-6)
