"""Train/eval modes are handed back module by module: a prediction between fine-tuning steps keeps the
BatchNorm layers that ``batchnorm="frozen"`` holds in eval mode (tiny model, CPU)."""

from __future__ import annotations

import pytest
import torch

from napari_medseg.labels import SYNAPSE
from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.models.modes import evaluating, restore_modes, training_modes
from napari_medseg.preprocess import Preprocessing
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.retrain.finetune import FinetuneData, finetune

from training_fixtures import sample_arrays

SMALL = Preprocessing(modality="ct", resize_policy="fixed", input_size=64)
SLICES = [6, 11, 16, 21, 26]


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_evaluating_restores_mixed_modes():
    model = build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"]).train()
    norms = _batchnorms(model)
    assert norms, "the tiny DCAU-Net has BatchNorm layers"
    for norm in norms:
        norm.eval()
    before = training_modes(model)
    with evaluating(model):
        assert not any(training_modes(model))
    assert training_modes(model) == before
    assert model.training and not any(norm.training for norm in norms)


def test_restore_modes_refuses_another_model():
    model = build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"])
    with pytest.raises(ValueError, match="saved modes"):
        restore_modes(model, [True, False])


def test_live_preview_keeps_frozen_batchnorm_frozen(sample_ct, sample_labels):
    from napari_medseg.widgets._preview import LivePreview

    image, labels, _ = sample_arrays(sample_ct, sample_labels)
    torch.manual_seed(0)
    model = build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"])
    data = FinetuneData([image[i] for i in SLICES], [labels[i] for i in SLICES], SMALL)
    config = FinetuneConfig(scope="all", steps=10_000, batch_size=2, lr=1e-3, device="cpu", batchnorm="frozen")
    preview = LivePreview(image, locked=SLICES, device="cpu", precision="fp32", every_s=0.0)
    preview.on_model(model, SYNAPSE, SMALL)
    gen = finetune(model, data, config)
    next(gen)
    norms = _batchnorms(model)
    assert model.training and not any(norm.training for norm in norms)  # what "frozen" means while training
    running_mean = [norm.running_mean.clone() for norm in norms]
    preview.predict(3)
    assert model.training and not any(norm.training for norm in norms)  # the preview handed the modes back
    for _ in range(3):
        next(gen)
    assert all(torch.equal(norm.running_mean, mean) for norm, mean in zip(norms, running_mean))
    gen.close()
