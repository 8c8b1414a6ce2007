"""Tiny training datasets in the Synapse (TransUNet) and nnU-Net layouts, made from the packaged
sample CT, and a tiny training recipe for them."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np

from napari_medseg.io import read_volume
from napari_medseg.preprocess import Preprocessing, normalize

SYNAPSE_NAMES = ["aorta", "gallbladder", "kidney left", "kidney right", "liver", "pancreas", "spleen", "stomach"]


def sample_arrays(sample_ct, sample_labels):
    """Canonical (z, y, x) HU image, labels and spacing of the sample CT."""
    image = read_volume(sample_ct)
    labels = read_volume(sample_labels)
    return image.array, labels.array.astype(np.uint8), tuple(image.geometry.spacing)


def make_synapse(root: Path, sample_ct, sample_labels, slices=range(8, 24), test_case=True) -> Path:
    """TransUNet layout: train_npz/caseXXXX_sliceYYY.npz in [0, 1], lists/lists_Synapse/*.txt, test_vol_h5."""
    image, labels, _ = sample_arrays(sample_ct, sample_labels)
    norm = normalize(image, Preprocessing(modality="ct"))
    (root / "train_npz").mkdir(parents=True)
    (root / "lists" / "lists_Synapse").mkdir(parents=True)
    names = []
    for z in slices:
        name = f"case0005_slice{z:03d}"
        np.savez(root / "train_npz" / f"{name}.npz", image=norm[z], label=labels[z])
        names.append(name)
    (root / "lists" / "lists_Synapse" / "train.txt").write_text("\n".join(names) + "\n")
    if test_case:
        try:
            import h5py
        except ImportError:
            return root
        (root / "test_vol_h5").mkdir()
        with h5py.File(root / "test_vol_h5" / "case0001.npy.h5", "w") as f:
            f["image"] = norm
            f["label"] = labels
        (root / "lists" / "lists_Synapse" / "test_vol.txt").write_text("case0001\n")
    return root


def make_nnunet(root: Path, sample_ct, sample_labels, cases=("ct_001", "ct_002")) -> Path:
    """nnU-Net layout: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json (v2 labels)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case in cases:
        shutil.copy(sample_ct, root / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(sample_labels, root / "labelsTr" / f"{case}.nii.gz")
    labels = {"background": 0, **{n: i + 1 for i, n in enumerate(SYNAPSE_NAMES)}}
    (root / "dataset.json").write_text(json.dumps({
        "name": "tiny_abdomen", "channel_names": {"0": "CT"}, "labels": labels,
        "numTraining": len(cases), "file_ending": ".nii.gz",
    }))
    return root


def tiny_recipe(root, kind="synapse", epochs=6, model="dcaunet") -> dict:
    """A recipe dict for a tiny model on a dataset made by ``make_synapse`` or ``make_nnunet`` at ``root``."""
    from napari_medseg.models import TINY_CONFIGS

    return {
        "name": f"tiny_{model}_{kind}",
        "model": {"name": model, "config": copy.deepcopy(TINY_CONFIGS[model])},
        "label_set": "synapse",
        # 64x64 keeps CPU steps short; the native policy is covered by test_datasets and test_finetune
        "preprocessing": {"modality": "ct", "resize_policy": "fixed", "input_size": 64},
        "data": {"kind": kind, "root": str(root), **({"cases": ["ct_001"]} if kind == "nnunet" else {})},
        "augment": {"p_rotate": 0.3, "rotate_deg": 10},
        "loss": {"ce_weight": 0.4, "dice_weight": 0.6},
        "optim": {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-4},
        "schedule": {"kind": "poly", "power": 0.9},
        "train": {"epochs": epochs, "batch_size": 4, "grad_clip": 1.0, "seed": 7, "log_every": 1, "num_workers": 0},
    }
