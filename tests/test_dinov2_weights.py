"""DINOv2 weight loading through timm, with files the tests write (no download, tiny backbone)."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.models.dinov2_weights import ENV_VAR, BackboneWeightsError, RandomBackboneWarning

OVERRIDES = TINY_CONFIGS["udfa"]["backbone_overrides"]  # embed_dim 48, depth 3, heads 3
GRID = TINY_CONFIGS["udfa"]["img_size"] // 14  # 4 x 4 tokens in the tiny U-DFA


def source_state_dict() -> dict[str, torch.Tensor]:
    """A tiny DINOv2 as pretrained at 518 x 518 (37 x 37 position grid + class token)."""
    import timm

    torch.manual_seed(123)
    vit = timm.create_model("vit_base_patch14_dinov2", img_size=518, num_classes=0, **OVERRIDES)
    sd = {k: v.clone() for k, v in vit.state_dict().items()}
    with torch.no_grad():  # make every tensor distinctive (timm inits LayerScale to a constant)
        for v in sd.values():
            v.add_(torch.randn_like(v) * 0.02)
    assert sd["pos_embed"].shape == (1, 1 + 37 * 37, OVERRIDES["embed_dim"])
    return sd


def write_meta_pth(path) -> dict[str, torch.Tensor]:
    """Meta's ``dinov2_vitb14_pretrain.pth`` layout: a plain state dict with DINOv2's own names.

    For ViT-B/14 Meta's names equal timm's (``blocks.N.ls1.gamma``,
    ``blocks.N.mlp.fc1``...) plus ``mask_token`` (1, D), which timm's
    ``_convert_dinov2`` drops; ``pos_embed`` is (1, 1 + 37*37, D).
    """
    sd = source_state_dict()
    meta = dict(sd, mask_token=torch.randn(1, OVERRIDES["embed_dim"]))
    torch.save(meta, path)
    return sd


def build(weights):
    config = dict(TINY_CONFIGS["udfa"], backbone_weights=weights)
    return build_model("udfa", 3, **config)


def assert_weights_landed(model, sd):
    got = model.backbone.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        if k == "pos_embed":
            continue
        assert torch.equal(got[k], v), k
    expected_pos = resample_abs_pos_embed(sd["pos_embed"], new_size=(GRID, GRID), num_prefix_tokens=1)
    assert got["pos_embed"].shape == (1, 1 + GRID * GRID, OVERRIDES["embed_dim"])
    torch.testing.assert_close(got["pos_embed"], expected_pos)
    assert torch.equal(got["pos_embed"][:, 0], sd["pos_embed"][:, 0])  # class token position kept


def test_meta_pth_file_loads_converts_and_resizes(tmp_path):
    path = tmp_path / "dinov2_vitb14_pretrain.pth"
    sd = write_meta_pth(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomBackboneWarning)
        model = build(str(path))
    assert_weights_landed(model, sd)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert "backbone_weights" not in model.config  # checkpoints carry the weights, not a path
    assert model(torch.rand(1, 1, 56, 70)).shape == (1, 3, 56, 70)


def test_timm_safetensors_file_loads(tmp_path):
    sd = source_state_dict()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    assert_weights_landed(build(path), sd)


def test_environment_variable_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    sd = write_meta_pth(path)
    monkeypatch.setenv(ENV_VAR, str(path))
    assert_weights_landed(build("auto"), sd)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope.pth"))
    with pytest.raises(BackboneWeightsError, match=rf"\(from \${ENV_VAR}\) does not exist"):
        build("auto")


def test_missing_file_error_says_how_to_provide_weights(tmp_path):
    with pytest.raises(BackboneWeightsError) as err:
        build(tmp_path / "missing.pth")
    text = str(err.value)
    assert "does not exist" in text and ENV_VAR in text
    assert "dinov2_vitb14_pretrain.pth" in text and "backbone_weights=" in text


def test_wrong_file_is_explained(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(BackboneWeightsError, match="(?s)could not load DINOv2 weights.*must be Meta's"):
        build(path)


def _fake_hf_cache(root, sd):
    repo = root / "models--timm--vit_base_patch14_dinov2.lvd142m"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))


def test_hub_uses_the_cache_offline(tmp_path, monkeypatch):
    sd = source_state_dict()
    _fake_hf_cache(tmp_path, sd)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_weights_landed(build("hub"), sd)


def test_hub_without_cache_offline_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneWeightsError, match="(?s)not in the Hugging Face cache.*MEDSEG_DINOV2_WEIGHTS"):
        build("hub")


def test_random_init_warns_for_tests_only():
    with pytest.warns(RandomBackboneWarning, match="for tests only"):
        build(None)
