"""The fine-tuning core on corrected slices of the real sample CT (tiny models, CPU)."""

import math

import numpy as np
import pytest
import torch

from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.preprocess import Preprocessing
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.retrain.finetune import FinetuneData, FinetuneProgress, FinetuneResult, finetune, run_finetune

from training_fixtures import sample_arrays

torch.set_num_threads(2)
NATIVE = Preprocessing(modality="ct", resize_policy="native")
SMALL = Preprocessing(modality="ct", resize_policy="fixed", input_size=64)  # keeps CPU tests short


@pytest.fixture(scope="module")
def ct(sample_ct, sample_labels):
    image, labels, _ = sample_arrays(sample_ct, sample_labels)
    return image, labels


def tune(model, images, labels, preprocessing, replay=(), result=None, **config):
    """``finetune`` with its data and config spelled as keywords."""
    return finetune(model, FinetuneData(images, labels, preprocessing, replay=replay), FinetuneConfig(**config),
                    result=result)


def _dcaunet(seed=0):
    torch.manual_seed(seed)
    return build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"])


@pytest.mark.slow
def test_finetune_from_scratch_raises_dice(ct):
    image, labels = ct
    idx = [6, 11, 16, 21, 26]
    model = _dcaunet()
    gen = tune(model, images=[image[i] for i in idx], labels=[labels[i] for i in idx], preprocessing=SMALL,
                   scope="all", steps=30, batch_size=4, lr=1e-2, device="cpu")
    reports = []
    result = run_finetune(gen, reports.append)
    assert [r.step for r in reports] == list(range(1, 31)) and isinstance(reports[0], FinetuneProgress)
    assert reports[-1].fraction == 1.0 and reports[0].total_steps == 30
    assert result.steps == 30 and result.stopped_by == "steps" and result.dice_on == "training"
    assert result.held_out_indices == []  # 5 slices: too few to hold some out
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert result.dice_after > result.dice_before + 0.05, (result.dice_before, result.dice_after)
    assert set(result.per_class_after) == set(range(1, 9))
    assert result.seconds > 0 and all(p.requires_grad for p in model.parameters())


def test_decoder_scope_freezes_encoder_and_restores_flags(ct):
    image, labels = ct
    model = _dcaunet()
    encoder = [p.detach().clone() for p in model.parameter_groups()["encoder"]]
    decoder = [p.detach().clone() for p in model.parameter_groups()["decoder"]]
    result = run_finetune(tune(model, images=[image[15]], labels=[labels[15]], preprocessing=SMALL,
                                   scope="decoder", steps=4, batch_size=2, device="cpu"))
    assert result.scope == "decoder"
    assert all(torch.equal(a, b) for a, b in zip(encoder, model.parameter_groups()["encoder"]))
    assert any(not torch.equal(a, b) for a, b in zip(decoder, model.parameter_groups()["decoder"]))
    decoder_ids = {id(p) for p in model.parameter_groups()["decoder"]}
    trained = {n for n, p in model.named_parameters() if id(p) in decoder_ids}
    assert trained and trained <= set(result.best_state)
    assert not ({n for n, p in model.named_parameters()} - trained) & set(result.best_state)
    assert all(p.requires_grad for p in model.parameters())


def test_trains_channels_last_on_cpu_and_hands_back_the_default_layout(ct, monkeypatch):
    """The steps run a channels-last model (oneDNN's fast layout); afterwards every 4D weight is
    back in the default layout, as a caller (and ``torch.save``) expects."""
    from napari_medseg.retrain import finetune as finetune_module

    image, labels = ct
    model = _dcaunet()
    seen = []
    real_step = finetune_module.train_step

    def spy(model_, images, *args, **kwargs):
        weight = model_.embeds[1].proj.weight  # (C_out, C_in > 1, k, k): the two layouts differ
        seen.append((weight.is_contiguous(memory_format=torch.channels_last), weight.is_contiguous()))
        return real_step(model_, images, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "train_step", spy)
    result = run_finetune(tune(model, images=[image[15]], labels=[labels[15]], preprocessing=SMALL, scope="all",
                               steps=3, batch_size=2, device="cpu"))
    assert result.steps == 3 and seen == [(True, False)] * 3
    weights = [p for p in model.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous() for p in weights)


def test_cancel_keeps_best_weights(ct):
    image, labels = ct
    model = _dcaunet()
    result = FinetuneResult()
    gen = tune(model, images=[image[10], image[20]], labels=[labels[10], labels[20]], preprocessing=SMALL,
                   scope="all", steps=1000, eval_every=2, batch_size=2, lr=1e-2, device="cpu", result=result)
    for progress in gen:
        if progress.step == 7:
            break
    gen.close()
    assert result.stopped_by == "cancelled" and result.steps == 7 and result.done
    assert result.best_step in (0, 2, 4, 6)
    # the model holds exactly the best snapshot
    params = dict(model.named_parameters())
    for name, value in result.best_state.items():
        if name in params:
            assert torch.equal(params[name].detach(), value)
    assert math.isfinite(result.dice_after)


@pytest.mark.parametrize("final_loss, kept", [(0.6, 3), (0.9, 3), (1.2, 2), (float("nan"), 2)])
def test_without_held_out_slices_the_final_weights_are_kept_unless_the_run_diverged(final_loss, kept):
    from types import SimpleNamespace

    from napari_medseg.retrain.finetune import DIVERGED_LOSS_RATIO, _keep_if_better

    assert DIVERGED_LOSS_RATIO == 2.0  # the cases below straddle 2 x the lowest loss (0.5)
    model = torch.nn.Linear(2, 2)
    run = SimpleNamespace(val_idx=[], trainable_names={"weight", "bias"})
    result = FinetuneResult(best_score=math.inf)
    for step, loss in enumerate([1.0, 0.5], start=1):
        run.ema = loss
        _keep_if_better(model, run, result, step)
    assert result.best_step == 2
    run.ema = final_loss  # slightly above the lowest reading: noise, not divergence; 2.4 x: diverged
    _keep_if_better(model, run, result, 3, final=True)
    assert result.best_step == kept


def test_held_out_split_and_replay(ct):
    image, labels = ct
    idx = list(range(5, 25, 2))  # 10 slices -> 2 held out
    replay = [(image[26:28].astype(np.float32), labels[26:28], "entry")]
    result = run_finetune(tune(_dcaunet(), images=[image[i] for i in idx], labels=[labels[i] for i in idx],
                                   preprocessing=SMALL, scope="all", steps=3, batch_size=2, device="cpu",
                                   replay=replay, eval_every=1))
    assert len(result.held_out_indices) == 2 and len(result.train_indices) == 8
    assert not set(result.held_out_indices) & set(result.train_indices)
    assert result.dice_on == "held-out" and math.isfinite(result.dice_before)


def test_time_budget_and_udfa_adapters(ct):
    image, labels = ct
    model = build_model("udfa", 9, **TINY_CONFIGS["udfa"])
    backbone = [p.detach().clone() for p in model.parameter_groups()["backbone"]]
    result = run_finetune(tune(model, images=[image[15]], labels=[labels[15]], preprocessing=NATIVE,
                                   time_budget_s=1.0, batch_size=2, device="cpu"))
    assert result.scope == "adapters" and result.stopped_by == "time" and result.steps >= 1
    assert all(torch.equal(a, b) for a, b in zip(backbone, model.parameter_groups()["backbone"]))
    backbone_ids = {id(p) for p in model.parameter_groups()["backbone"]}
    backbone_names = {n for n, p in model.named_parameters() if id(p) in backbone_ids}
    assert not (set(result.best_state) & backbone_names)  # frozen weights are never copied


def test_bad_input_is_clear(ct):
    image, labels = ct
    with pytest.raises(ValueError, match="no corrected slices"):
        next(tune(_dcaunet(), images=[], labels=[], preprocessing=NATIVE))
    with pytest.raises(ValueError, match="no labelled pixels"):
        next(tune(_dcaunet(), images=[image[0]], labels=[np.zeros_like(labels[0])], preprocessing=NATIVE))
    with pytest.raises(ValueError, match="classes"):
        next(tune(build_model("dcaunet", 3, **TINY_CONFIGS["dcaunet"]), images=[image[15]], labels=[labels[15]],
                      preprocessing=NATIVE, steps=1, device="cpu"))


def test_random_crops_stay_aligned_and_find_small_organs():
    from napari_medseg.retrain.finetune import _random_crops

    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(6, 128, 128, dtype=torch.int64)
    labels[:, 100:104, 5:9] = 3  # one tiny organ near a corner
    labels[:, 20:80, 20:80] = 1  # one large organ
    images = labels[:, None].float() / 3  # image = labels, so alignment is checkable
    xb, yb = _random_crops(images, labels, 64, 1.0, gen)
    assert xb.shape == (6, 1, 64, 64) and yb.shape == (6, 64, 64)
    assert torch.equal(xb[:, 0] * 3, yb.float())
    # every crop is centred on an organ; organs are drawn uniformly, so the tiny one shows up
    assert all(crop.any() for crop in yb)
    hits = sum(int((_random_crops(images, labels, 64, 1.0, gen)[1] == 3).any(dim=(1, 2)).sum()) for _ in range(10))
    assert hits >= 15, hits  # ~half of 60 crops; a uniformly placed crop would hold it ~13% of the time


def test_finetune_on_crops(ct):
    image, labels = ct
    idx = [6, 16, 26]
    result = run_finetune(tune(_dcaunet(), images=[image[i] for i in idx], labels=[labels[i] for i in idx],
                                   preprocessing=NATIVE, scope="all", steps=3, batch_size=2, crop_size=64,
                                   augment=False, device="cpu"))
    assert result.steps == 3 and math.isfinite(result.dice_after)
    with pytest.raises(ValueError, match="multiple of 32"):
        next(tune(_dcaunet(), images=[image[15]], labels=[labels[15]], preprocessing=NATIVE, crop_size=48,
                      steps=1, device="cpu"))


def test_final_share_of_the_run_trains_on_whole_slices(ct, monkeypatch):
    """``final_whole_slices``: crops first, then whole slices with about the crops' pixels per batch."""
    from napari_medseg.retrain import finetune as finetune_module

    shapes, unlabelled = [], []

    def recording_step(model, images, labels, *args, **kwargs):
        shapes.append(tuple(images.shape))
        unlabelled.append(bool((labels == 255).any()))
        return original(model, images, labels, *args, **kwargs)

    original = finetune_module.train_step
    monkeypatch.setattr(finetune_module, "train_step", recording_step)
    image, labels = ct
    idx = [6, 16, 26]
    run_finetune(tune(_dcaunet(), images=[image[i] for i in idx], labels=[labels[i] for i in idx],
                      preprocessing=NATIVE, scope="all", steps=4, batch_size=8, crop_size=64, final_whole_slices=0.5,
                      augment=False, device="cpu"))
    # 122 x 101 slices padded to 128 x 128: 8 crops of 64^2 hold as many pixels as 2 whole slices
    assert shapes == [(8, 1, 64, 64)] * 2 + [(2, 1, 128, 128)] * 2
    # with unlabelled pixels (scribbles, partial labels) in the pool: crops to the end
    shapes.clear()
    partial = labels[16].copy()
    partial[:, :40] = 255
    run_finetune(tune(_dcaunet(), images=[image[i] for i in idx], labels=[labels[6], partial, labels[26]],
                      preprocessing=NATIVE, scope="all", steps=4, batch_size=8, crop_size=64, final_whole_slices=0.5,
                      augment=False, device="cpu"))
    assert shapes == [(8, 1, 64, 64)] * 4
    # the current patient fully labelled, a stored scribble replayed beside a full entry: whole slices at the end,
    # and they replay the full entry only (the scribble stays in the crops, where its smoothness term runs)
    shapes.clear(), unlabelled.clear()
    replay = [(np.stack([image[11], image[21]]), np.stack([partial, labels[21]]))]
    run_finetune(tune(_dcaunet(), images=[image[i] for i in idx], labels=[labels[i] for i in idx], replay=replay,
                      preprocessing=NATIVE, scope="all", steps=40, batch_size=8, crop_size=64, final_whole_slices=0.5,
                      augment=False, device="cpu"))
    assert shapes == [(8, 1, 64, 64)] * 20 + [(2, 1, 128, 128)] * 20
    assert any(unlabelled[:20]) and not any(unlabelled[20:])
    with pytest.raises(ValueError, match="final_whole_slices"):
        FinetuneConfig(final_whole_slices=1.5)


def test_config_rejects_unknown_keys_and_bad_budgets():
    with pytest.raises(ValueError, match=r"unknown fine-tuning keys \['lrate'\]; valid keys: .*'lr'"):
        FinetuneConfig.from_dict({"lrate": 1e-3})
    for bad in (math.nan, math.inf, 0, -5.0):
        with pytest.raises(ValueError, match="time_budget_s must be a finite number > 0"):
            FinetuneConfig(time_budget_s=bad)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        FinetuneConfig(steps=0)
    with pytest.raises(ValueError, match="precision must be one of"):
        FinetuneConfig(precision="fp8")
    config = FinetuneConfig.from_dict({"augment": {"p_flip": 0.5}, "loss_weights": [0.4, 0.6]})
    assert type(config.augment).__name__ == "AugmentConfig" and config.loss_weights == (0.4, 0.6)
    assert FinetuneConfig().step_budget == 200 and FinetuneConfig(time_budget_s=5).step_budget is None
    with pytest.raises(ValueError, match="lr must be"):
        config.replace(lr=math.nan)


def test_family_recipes_are_valid_configs():
    from napari_medseg.models import family_spec, model_names
    from napari_medseg.retrain.loop import finetune_config

    for name in model_names():
        spec = family_spec(name)
        for scratch in (False, True):
            config = finetune_config(name, from_scratch=scratch)
            assert config.scope == (spec.scratch_scope if scratch else None) and config.time_budget_s == 60.0
            assert config.lr == spec.recipe(scratch)["lr"]
        assert finetune_config(name, from_scratch=True, options={"steps": 5, "lr": None}).time_budget_s is None
    assert finetune_config("dcaunet", from_scratch=True).crop_size == 64
