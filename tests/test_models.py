"""One shared tester for both models (tiny configs), plus full-size parameter and MAC checks."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from napari_medseg.models import TINY_CONFIGS, build_model, freeze_except, list_models
from napari_medseg.models.blocks import NORM_TYPES
from napari_medseg.models.dinov2_weights import RandomBackboneWarning

MODELS = {
    # name: (valid odd sizes, invalid sizes, fine-tuning groups that leave something frozen)
    "udfa": ([(14 * 5, 14 * 7), (56, 56)], [(57, 56), (64, 64), (14 * 5, 100)], ["adapters"]),
    "dcaunet": ([(32 * 3, 32 * 5), (64, 64)], [(56, 56), (96, 100), (16, 32)], ["decoder", "encoder"]),
}


def tiny(name: str, num_classes: int = 4):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        return build_model(name, num_classes, **TINY_CONFIGS[name])


@pytest.fixture(scope="module", params=sorted(MODELS))
def name(request):
    return request.param


class TestModel:
    """Contract of docs/architecture.md, run on every registered model."""

    def test_attributes_and_config_rebuild(self, name):
        model = tiny(name)
        assert model.model_name == name
        assert model.size_multiple == {"udfa": 14, "dcaunet": 32}[name]
        config = json.loads(json.dumps(model.config))  # JSON-safe
        assert config["num_classes"] == 4
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomBackboneWarning)
            if name == "udfa":
                config["backbone_weights"] = None
            rebuilt = build_model(name, config.pop("num_classes"), **config)
        a, b = model.state_dict(), rebuilt.state_dict()
        assert list(a) == list(b)
        assert all(a[k].shape == b[k].shape for k in a)

    @pytest.mark.parametrize("size_index", [0, 1])
    def test_forward_backward_valid_sizes(self, name, size_index):
        model = tiny(name, num_classes=3).train()
        h, w = MODELS[name][0][size_index]
        x = torch.rand(2, 1, h, w)
        y = model(x)
        assert y.shape == (2, 3, h, w)
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
        y.square().mean().backward()
        for pname, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            else:
                assert p.grad is None, pname
        trainable = [p for p in model.parameters() if p.requires_grad]
        with_signal = sum(bool(p.grad.abs().sum() > 0) for p in trainable)
        assert with_signal >= 0.9 * len(trainable)

    def test_bad_sizes_rejected_with_the_sizes_that_work(self, name):
        model = tiny(name).eval()
        multiple = model.size_multiple
        for h, w in MODELS[name][1]:
            with pytest.raises(ValueError, match=f"multiples of {multiple}"):
                model(torch.rand(1, 1, h, w))
        with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
            model(torch.rand(1, 3, 2 * multiple, 2 * multiple))

    def test_eval_is_deterministic_and_batch_independent(self, name):
        model = tiny(name).eval()
        h, w = MODELS[name][0][0]
        x = torch.rand(3, 1, h, w)
        with torch.no_grad():
            full = model(x)
            single = model(x[1:2])
        torch.testing.assert_close(full[1:2], single, rtol=1e-4, atol=1e-5)

    def test_parameter_groups(self, name):
        model = tiny(name)
        groups = model.parameter_groups()
        expected = {"udfa": {"adapters", "backbone", "all"}, "dcaunet": {"encoder", "decoder", "all"}}[name]
        assert set(groups) == expected
        ids = {g: {id(p) for p in ps} for g, ps in groups.items()}
        parts = sorted(expected - {"all"})
        assert ids[parts[0]].isdisjoint(ids[parts[1]])
        assert ids[parts[0]] | ids[parts[1]] == ids["all"] == {id(p) for p in model.parameters()}

    def test_frozen_parameters_do_not_change(self, name):
        for group in MODELS[name][2]:
            self._check_fine_tuning(name, group)

    @staticmethod
    def _check_fine_tuning(name, group):
        model = tiny(name)
        trainable = freeze_except(model, group)
        assert {id(p) for p in trainable} == {id(p) for p in model.parameter_groups()[group]}
        frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
        assert frozen, "nothing frozen"
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        before_trainable = [p.detach().clone() for p in trainable]
        optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
        model.train()
        h, w = MODELS[name][0][0]
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.rand(2, 1, h, w)).square().mean().backward()
            optimizer.step()
        for k, p in model.named_parameters():
            if k in frozen:
                assert p.grad is None, k
                assert torch.equal(p, frozen[k]), k
        assert any(not torch.equal(a, b) for a, b in zip(before_trainable, trainable))
        frozen_norms = [
            (n, m) for n, m in model.named_modules()
            if isinstance(m, NORM_TYPES) and list(m.parameters()) and not any(p.requires_grad for p in m.parameters())
        ]
        assert frozen_norms
        for n, m in frozen_norms:
            assert not m.training, f"frozen norm {n} left in train mode"
        frozen_bn = [n for n, m in frozen_norms if isinstance(m, nn.BatchNorm2d)]
        for n in frozen_bn:  # running statistics of frozen BatchNorms are untouched
            assert torch.equal(model.get_submodule(n).running_mean, buffers[n + ".running_mean"])
        # everything back to trainable
        assert len(freeze_except(model, "all")) == len(list(model.parameters()))
        model.train()
        assert all(m.training for m in model.modules())

    def test_unknown_group(self, name):
        with pytest.raises(ValueError, match="parameter groups"):
            freeze_except(tiny(name), "nonsense")


def test_udfa_backbone_is_frozen_and_stays_in_eval():
    model = tiny("udfa")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.parameter_groups()["adapters"])
    model.train()
    assert model.training and model.spa.training and model.decoder.training
    assert not any(m.training for m in model.backbone.modules())
    model.eval().train(True)
    assert not model.backbone.training


def test_udfa_lgfa_count_and_placement_are_config():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        cfg = dict(TINY_CONFIGS["udfa"], backbone_overrides=dict(embed_dim=48, depth=6, num_heads=3))
        two = build_model("udfa", 2, **dict(cfg, lgfa_blocks=[3, 6]))
        six = build_model("udfa", 2, **dict(cfg, lgfa_blocks=[1, 2, 3, 4, 5, 6]))
        with pytest.raises(ValueError, match="lgfa_blocks"):
            build_model("udfa", 2, **dict(cfg, lgfa_blocks=[4, 9]))
    assert len(two.lgfa) == 2 and two.lgfa_scale == [0, 1]
    assert len(six.lgfa) == 6 and six.lgfa_scale == [0, 0, 1, 1, 2, 2]
    assert tiny("udfa").lgfa_scale == [0, 1, 2]
    assert six(torch.rand(1, 1, 42, 56)).shape == (1, 2, 42, 56)


def test_udfa_both_lgfa_directions_reach_the_output():
    """Switching off either cross attention (its layer scale) changes the logits."""
    x = torch.rand(1, 1, 56, 56)
    for part in ("inject", "extract"):
        model = tiny("udfa").eval()
        with torch.no_grad():
            base = model(x)
            for adapter in model.lgfa:
                getattr(adapter, part).gamma.zero_()
            assert not torch.allclose(base, model(x), atol=1e-5), part


def test_registry_errors_and_listing():
    models = list_models()
    assert set(models) == {"udfa", "dcaunet"}
    assert models["udfa"]["size_multiple"] == 14 and models["dcaunet"]["size_multiple"] == 32
    assert models["udfa"]["default_config"]["lgfa_blocks"] == [4, 8, 12]
    assert models["dcaunet"]["tiny_config"] == TINY_CONFIGS["dcaunet"]
    with pytest.raises(ValueError, match="available models"):
        build_model("unet", 4)
    with pytest.raises(ValueError, match="unknown config keys.*depth"):
        build_model("dcaunet", 4, depth=3)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("dcaunet", 1, **TINY_CONFIGS["dcaunet"])


# --- full-size models on the meta device (no memory, no compute) -----------------

def _macs(model, size=224) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def _dead_parameters(model, num_classes: int) -> list[str]:
    """Trainable parameters with no or an all-zero gradient after one CE backward on a 224^2 batch."""
    torch.manual_seed(1)
    x, y = torch.rand(2, 1, 224, 224), torch.randint(0, num_classes, (2, 224, 224))
    nn.functional.cross_entropy(model.train()(x), y).backward()
    return [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]


def test_every_trainable_parameter_learns_at_224(name):
    """At 224 the tiny DCAU-Net's stage 4 is one 7x7 window (the case the paper reverts to plain attention)."""
    model = tiny(name)
    assert _dead_parameters(model, 4) == []


@pytest.mark.slow
def test_full_size_dcaunet_every_parameter_learns_at_224():
    model = build_model("dcaunet", 9)
    assert _dead_parameters(model, 9) == []


def test_dcaunet_full_size_matches_paper():
    with torch.device("meta"):
        model = build_model("dcaunet", 9)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 21.56e6) <= 0.10 * 21.56e6, params
    macs = _macs(model)
    assert abs(macs - 4.67e9) <= 0.15 * 4.67e9, macs
    assert sum(len(s) for s in model.stages) == 13
    assert model.stages[-1][-1].attn.lambda_init == pytest.approx(0.8 - 0.6 * torch.exp(torch.tensor(-0.3 * 12)).item())


def test_udfa_full_size_trainable_share():
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        model = build_model("udfa", 9, backbone_weights=None)
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 85e6 < backbone < 87e6  # DINOv2 ViT-B/14 without head
    assert trainable == total - backbone
    assert abs(trainable / total - 0.33) <= 0.04, trainable / total
    assert model.backbone.patch_embed.grid_size == (16, 16)
    assert [len(model.backbone.blocks), len(model.lgfa)] == [12, 3]
    assert _macs(model) > 22e9  # the ViT-B alone is ~23 GMAC at 224


def test_family_specs_agree_with_their_models():
    """Each family's spec (end of its model file) describes the model it sits beside."""
    import dataclasses

    from napari_medseg.models import family_spec, fine_tuning_scopes, model_names

    assert model_names() == sorted(list_models())
    for name in model_names():
        spec = family_spec(name)
        model = build_model(name, 3, **spec.tiny_config())
        assert spec.name == name and spec.size_multiple == model.size_multiple
        assert set(spec.scopes) <= set(model.parameter_groups()), (name, spec.scopes)
        assert spec.tiny_config() == TINY_CONFIGS[name] and spec.tiny_config() is not spec.tiny_config()
        with pytest.raises(TypeError):
            spec.tiny["dims"] = []  # read-only: a caller cannot change the family's facts
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.finetune_scope = "all"
        with pytest.raises(ValueError, match="default scope"):
            dataclasses.replace(spec, finetune_scope="nowhere")
    assert fine_tuning_scopes() == ["adapters", "all", "decoder", "encoder"]
    assert family_spec("udfa").external_weights == "backbone_weights" and family_spec("dcaunet").external_weights is None


def _encoder_tensors(model) -> dict:
    from napari_medseg.models.dcaunet import ENCODER_PREFIXES

    return {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith(ENCODER_PREFIXES)}


def _encoder_file(model, path):
    from safetensors.torch import save_file

    tensors = _encoder_tensors(model)
    save_file(tensors, str(path))
    return tensors


def test_dcaunet_encoder_weights_load_into_the_encoder_only(tmp_path):
    torch.manual_seed(3)
    source = build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"])
    tensors = _encoder_file(source, tmp_path / "encoder.safetensors")
    torch.manual_seed(4)
    model = build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"], encoder_weights=str(tmp_path / "encoder.safetensors"))
    state = model.state_dict()
    assert tensors and all(torch.equal(state[k], v) for k, v in tensors.items())
    assert not torch.equal(state["head.weight"], source.state_dict()["head.weight"])  # decoder keeps its own init
    assert "encoder_weights" not in model.config  # checkpoints carry the weights, not a path


def test_dcaunet_encoder_weights_mismatch_names_keys_and_shapes(tmp_path):
    wide = build_model("dcaunet", 4, **dict(TINY_CONFIGS["dcaunet"], dims=[32, 32, 48, 64]))
    _encoder_file(wide, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match=r"wrong shapes: .*embeds\.0\.proj\.weight \(32, 1, 4, 4\) != \(16, 1, 4, 4\).*\(\+\d+ more\)") as err:
        build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"], encoder_weights=tmp_path / "wide.safetensors")
    assert "\n" not in str(err.value)

    from safetensors.torch import save_file

    small = build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"])
    tensors = _encoder_tensors(small)
    tensors.pop("stages.3.0.attn.q.weight")
    tensors["head.weight"] = small.head.weight.detach().contiguous()
    save_file(tensors, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys: stages\.3\.0\.attn\.q\.weight; unexpected keys: head\.weight"):
        build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"], encoder_weights=tmp_path / "odd.safetensors")
    with pytest.raises(FileNotFoundError, match="encoder_weights file"):
        build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"], encoder_weights=tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"], encoder_weights=tmp_path / "junk.safetensors")


def test_dcaunet_checkpoints_from_before_the_single_window_rule_keep_their_behaviour(tmp_path):
    """A checkpoint whose config lacks ``single_window`` was trained with one global token: it loads that way."""
    from napari_medseg.checkpoint import load_checkpoint, save_checkpoint
    from napari_medseg.preprocess import Preprocessing

    torch.manual_seed(5)
    old = build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"], single_window="mean").eval()
    del old.config["single_window"]  # what models wrote before the key existed
    save_checkpoint(tmp_path / "old.safetensors", old, label_set="acdc", preprocessing=Preprocessing())
    loaded, info = load_checkpoint(tmp_path / "old.safetensors")
    assert loaded.config["single_window"] == "mean"
    x = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), old(x))
        new = build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"]).eval()
        new.load_state_dict(old.state_dict())
        assert not torch.allclose(new(x), old(x))  # the rule matters at 224 (stage 4 is one window)
    save_checkpoint(tmp_path / "new.safetensors", new, label_set="acdc", preprocessing=Preprocessing())
    assert load_checkpoint(tmp_path / "new.safetensors")[0].config["single_window"] == "pixels"
    with pytest.raises(ValueError, match="single_window must be one of"):
        build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"], single_window="global")
