"""The training engine on tiny models and tiny datasets made from the real sample CT (CPU)."""

import copy
import csv

import numpy as np
import pytest
import torch

from napari_medseg.checkpoint import load_checkpoint, read_checkpoint_info
from training.engine import Trainer, dataset_dice, lr_factor, state_path_for
from napari_medseg.retrain.slices import pad_collate
from training.state import load_train_state

from training_fixtures import make_nnunet, make_synapse, tiny_recipe

torch.set_num_threads(2)


def _mean_fg_dice(model, ds):
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=pad_collate)
    d = dataset_dice(model, loader, 9, torch.device("cpu"))[1:]
    return float(np.nanmean(d))


@pytest.fixture
def synapse_root(tmp_path, sample_ct, sample_labels):
    return make_synapse(tmp_path / "Synapse", sample_ct, sample_labels, slices=range(8, 24), test_case=False)


@pytest.mark.slow
def test_training_lowers_loss_and_raises_dice(tmp_path, synapse_root):
    recipe = tiny_recipe(synapse_root, epochs=10)  # 16 slices / batch 4 = 4 steps per epoch -> 40 steps
    trainer = Trainer(recipe, tmp_path / "run", device="cpu")
    untrained = copy.deepcopy(trainer.model)
    before = _mean_fg_dice(untrained, trainer.train_set)
    summary = trainer.fit()
    after = _mean_fg_dice(trainer.model, trainer.train_set)
    assert summary.steps == 40 and summary.stopped_by == "epochs"
    assert np.mean(summary.losses[-5:]) < 0.8 * np.mean(summary.losses[:5])
    assert after > before + 0.05, (before, after)
    # the weights are an inference checkpoint; the optimizer state sits beside it
    info = read_checkpoint_info(tmp_path / "run" / "last.safetensors")
    assert info.model_name == "dcaunet" and info.provenance["step"] == 40
    assert info.preprocessing.resize_policy == "fixed" and info.preprocessing.input_size == 64
    model, _ = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert _mean_fg_dice(model, trainer.train_set) == pytest.approx(after, abs=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    assert (tmp_path / "run" / "recipe.yaml").exists()


def test_resume_continues_from_the_same_step(tmp_path, synapse_root):
    recipe = tiny_recipe(synapse_root, epochs=2)  # 8 steps
    full = Trainer(recipe, tmp_path / "full", device="cpu").fit()
    first = Trainer(recipe, tmp_path / "split", device="cpu", max_steps=5).fit()  # stops inside epoch 1
    assert first.steps == 5 and first.stopped_by == "max_steps"
    ckpt = tmp_path / "split" / "last.safetensors"
    extra = load_train_state(state_path_for(ckpt), restore_rng=False)
    assert extra["step"] == 5 and extra["epoch"] == 1
    resumed_trainer = Trainer(recipe, tmp_path / "split", device="cpu", resume=ckpt)
    assert resumed_trainer.step == 5
    # optimizer moments were restored, not re-initialised
    assert all("exp_avg" in s for s in resumed_trainer.optimizer.state.values())
    steps_seen = []
    resumed_trainer.hooks.append(lambda event, t, **info: steps_seen.append(info["step"]) if event == "step" else None)
    resumed = resumed_trainer.fit()
    assert steps_seen[0] == 6 and resumed.steps == 8
    # same data order, augmentation draws, schedule and optimizer state: the same losses as one run
    np.testing.assert_allclose(first.losses + resumed.losses, full.losses, rtol=1e-4, atol=1e-5)


def test_nnunet_folder_and_frozen_scope(tmp_path, sample_ct, sample_labels):
    root = make_nnunet(tmp_path / "Dataset001", sample_ct, sample_labels)
    recipe = tiny_recipe(root, kind="nnunet", epochs=1)
    recipe["data"]["val_cases"] = ["ct_002"]
    recipe["train"].update(trainable="decoder", batch_size=8, val_every_epochs=1)  # 30 slices -> 3 steps
    trainer = Trainer(recipe, tmp_path / "run", device="cpu")
    assert len(trainer.train_set) == 30 and len(trainer.val_set) == 30  # one case each
    decoder = {id(p) for p in trainer.model.parameter_groups()["decoder"]}
    opt_params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert opt_params and all(id(p) in decoder for p in opt_params)
    enc_before = [p.detach().clone() for p in trainer.model.parameter_groups()["encoder"]]
    summary = trainer.fit()
    assert all(torch.equal(a, b) for a, b in zip(enc_before, trainer.model.parameter_groups()["encoder"]))
    # the validation split was scored after the epoch and the best weights saved
    assert summary.steps == 3 and summary.best_dice is not None and 0 <= summary.best_dice <= 1
    assert read_checkpoint_info(tmp_path / "run" / "best.safetensors").provenance["step"] == 3
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert float(rows[-1]["val_dice"]) == pytest.approx(summary.best_dice, abs=1e-4)


def test_time_budget_stops(tmp_path, synapse_root):
    trainer = Trainer(tiny_recipe(synapse_root, epochs=100), tmp_path / "run", device="cpu", time_budget_s=0.5)
    summary = trainer.fit()
    assert summary.stopped_by == "time" and 1 <= summary.steps < 400


def test_lr_schedules():
    assert lr_factor(0, 100, {"kind": "poly", "power": 0.9}) == 1.0
    assert lr_factor(50, 100, {"kind": "poly", "power": 1.0}) == pytest.approx(0.5)
    assert lr_factor(50, 100, {"kind": "cosine"}) == pytest.approx(0.5)
    assert lr_factor(4, 100, {"kind": "cosine", "warmup_steps": 10}) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule.kind"):
        lr_factor(1, 10, {"kind": "step"})


def test_label_set_mismatch_is_clear(tmp_path, synapse_root):
    recipe = tiny_recipe(synapse_root)
    recipe["label_set"] = "acdc"
    with pytest.raises(ValueError, match="label set 'acdc'"):
        Trainer(recipe, tmp_path / "run", device="cpu")


def test_cli_train_and_resume(tmp_path, synapse_root):
    import yaml

    from napari_medseg.cli import main

    cfg = tmp_path / "tiny.yaml"
    recipe = tiny_recipe("unused", epochs=2)
    cfg.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "cli_run"
    assert main(["train", "--config", str(cfg), "--data-root", str(synapse_root), "--output-dir", str(out),
                 "--max-steps", "3", "--device", "cpu"]) == 0
    assert read_checkpoint_info(out / "last.safetensors").provenance["step"] == 3
    assert main(["train", "--config", str(out / "recipe.yaml"), "--output-dir", str(out),
                 "--resume", str(out / "last.safetensors"), "--device", "cpu"]) == 0
    assert read_checkpoint_info(out / "last.safetensors").provenance["step"] == 8
    assert main(["train", "--config", str(cfg), "--output-dir", str(out), "--device", "cpu"]) == 2  # no data root


@pytest.mark.gpu
def test_amp_on_cuda_trains_and_resumes(tmp_path, synapse_root):
    recipe = tiny_recipe(synapse_root, epochs=2)
    recipe["train"]["amp"] = "fp16"  # exercises the GradScaler path and its saved state
    first = Trainer(recipe, tmp_path / "run", device="cuda", max_steps=4)
    assert first.precision == "fp16" and first.scaler is not None
    summary = first.fit()
    assert summary.steps == 4 and np.isfinite(summary.losses).all()
    resumed = Trainer(recipe, tmp_path / "run", device="cuda", resume=tmp_path / "run" / "last.safetensors")
    assert resumed.scaler.get_scale() == first.scaler.get_scale()
    assert resumed.fit().steps == 8


def test_dataset_smaller_than_one_batch_trains_with_a_smaller_batch(tmp_path):
    """3 slices, batch 8: a warning and batches of 3, not an endless loop of empty epochs."""
    from napari_medseg.preprocess import Preprocessing
    from napari_medseg.retrain.slices import SliceDataset

    rng = np.random.default_rng(0)
    labels = [np.zeros((64, 64), np.uint8) for _ in range(3)]
    for lab in labels:
        lab[20:40, 20:40] = 1
    images = [rng.random((64, 64)).astype(np.float32) for _ in range(3)]
    prep = Preprocessing(modality="ct", resize_policy="fixed", input_size=64)
    recipe = tiny_recipe(tmp_path, epochs=2)
    recipe["train"]["batch_size"] = 8
    recipe.pop("augment")
    with pytest.warns(UserWarning, match="fewer than one batch of 8; training with batches of 3"):
        trainer = Trainer(recipe, tmp_path / "run", device="cpu", datasets=(SliceDataset(images, labels, prep, 32), None))
    summary = trainer.fit()
    assert trainer.batch_size == 3 and summary.steps == 2 and summary.stopped_by == "epochs"
