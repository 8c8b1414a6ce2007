"""The papers' recipes hold the papers' settings and every section parses."""

from pathlib import Path

import pytest
import torch

from napari_medseg.preprocess import Preprocessing
from napari_medseg.retrain.augment import AugmentConfig
from napari_medseg.retrain.losses import DiceCELoss
from training.engine import build_optimizer, load_recipe, recipe_label_set

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"

PAPERS = {
    # name: (model, label set, optimiser, lr, batch, epochs, ce, dice, trainable)
    "dcaunet_synapse": ("dcaunet", "synapse", "adamw", 1e-3, 24, 400, 0.4, 0.6, "all"),
    "dcaunet_acdc": ("dcaunet", "acdc", "adamw", 3e-4, 24, 400, 0.4, 0.6, "all"),
    "udfa_synapse": ("udfa", "synapse", "adam", None, 12, None, 0.5, 0.5, "adapters"),
    "udfa_acdc": ("udfa", "acdc", "adam", None, 12, None, 0.5, 0.5, "adapters"),
}


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_recipe_matches_paper_and_parses(name):
    model, label_set, opt, lr, batch, epochs, ce, dice, trainable = PAPERS[name]
    recipe = load_recipe(CONFIGS / f"{name}.yaml")
    assert recipe["model"]["name"] == model and recipe_label_set(recipe).name == label_set
    assert recipe["optim"]["name"] == opt and recipe["optim"]["weight_decay"] == 1e-4
    if lr is not None:
        assert recipe["optim"]["lr"] == lr
    if epochs is not None:
        assert recipe["train"]["epochs"] == epochs
    assert recipe["train"]["batch_size"] == batch and recipe["train"]["trainable"] == trainable
    assert (recipe["loss"]["ce_weight"], recipe["loss"]["dice_weight"]) == (ce, dice)
    prep = Preprocessing.from_dict(recipe["preprocessing"])
    assert prep.input_size == 224 and prep.resize_policy == "fixed"
    aug = AugmentConfig.from_dict(recipe["augment"])
    assert (aug.p_rot90, aug.p_rotate, aug.rotate_deg, aug.p_flip) == (0.5, 0.5, 20, 0)  # TransUNet's RandomGenerator
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], recipe["optim"])
    assert type(optimizer).__name__.lower() == opt
    DiceCELoss(recipe_label_set(recipe).num_classes, ce, dice)


def test_builtin_recipe_found_by_name():
    assert load_recipe("dcaunet_acdc.yaml")["data"]["val_patients"] == "val"


def test_recipe_sections_reject_unknown_keys_and_bad_budgets(tmp_path):
    import math

    import yaml

    from training.recipe import OptimSection, TrainSection, recipe_sections

    recipe = load_recipe("dcaunet_acdc.yaml")
    sections = recipe_sections(recipe)
    assert sections["train"].epochs == 400 and sections["optim"].betas == (0.9, 0.999)
    assert sections["loss"].ce_weight == 0.4 and sections["schedule"].kind == "poly"
    recipe["optim"]["learning_rate"] = 1e-3  # a typo must not be ignored
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match=r"unknown recipe 'optim' keys \['learning_rate'\]; valid keys: .*'lr'"):
        load_recipe(path)
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="train.time_budget_s must be a finite number > 0"):
            TrainSection.from_dict({"time_budget_s": bad})
    with pytest.raises(ValueError, match="optim.name must be"):
        OptimSection.from_dict({"name": "lion"})


def test_medseg_train_rejects_a_nan_budget(capsys):
    from napari_medseg.cli import main

    assert main(["train", "--config", "dcaunet_acdc.yaml", "--time-budget", "nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--time-budget must be a finite number > 0" in err and len(err.splitlines()) == 1
