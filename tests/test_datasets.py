"""Datasets in the TransUNet Synapse, nnU-Net, ACDC and corrected-slice forms, built from the real sample CT."""

import shutil

import numpy as np
import pytest
import torch

from napari_medseg.labels import get_label_set
from napari_medseg.preprocess import Preprocessing, normalize
from napari_medseg.retrain.slices import SliceDataset, pad_collate
from training.datasets import (
    acdc_dataset,
    acdc_split,
    nnunet_dataset,
    patient_names,
    read_nnunet_folder,
    read_synapse_h5_volume,
    synapse_npz_dataset,
    synapse_test_volumes,
)

from training_fixtures import make_nnunet, make_synapse, sample_arrays

NATIVE = Preprocessing(modality="ct", resize_policy="native")
FIXED = Preprocessing(modality="ct", resize_policy="fixed", input_size=64)


def test_synapse_npz_native_pads_and_keeps_pixels(tmp_path, sample_ct, sample_labels):
    root = make_synapse(tmp_path / "Synapse", sample_ct, sample_labels, slices=[10, 15])
    ds = synapse_npz_dataset(root, NATIVE, size_multiple=32)
    image, labels, _ = sample_arrays(sample_ct, sample_labels)
    assert len(ds) == 2 and ds.names == ["case0005_slice010", "case0005_slice015"]
    item = ds[1]
    assert item["image"].shape == (1, 128, 128) and item["label"].shape == (128, 128)
    expected = normalize(image[15], NATIVE)
    np.testing.assert_allclose(item["image"][0, :101, :122].numpy(), expected, atol=1e-6)
    assert item["image"][0, 101:].abs().sum() == 0  # zero padding below
    np.testing.assert_array_equal(item["label"][:101, :122].numpy(), labels[15])


def test_synapse_npz_fixed_resizes_like_inference(tmp_path, sample_ct, sample_labels):
    root = make_synapse(tmp_path / "Synapse", sample_ct, sample_labels, slices=[12])
    ds = synapse_npz_dataset(root, FIXED, size_multiple=32)
    item = ds[0]
    assert item["image"].shape == (1, 64, 64)
    assert set(item["label"].unique().tolist()) <= set(range(9))


def test_synapse_npz_rejects_raw_hu_when_prenormalized(tmp_path, sample_ct, sample_labels):
    root = tmp_path / "S"
    (root / "train_npz").mkdir(parents=True)
    image, labels, _ = sample_arrays(sample_ct, sample_labels)
    np.savez(root / "train_npz" / "case1_slice000.npz", image=image[10].astype(np.float32), label=labels[10])
    with pytest.raises(ValueError, match="prenormalized"):
        synapse_npz_dataset(root, NATIVE, 32, list_name=None)
    ds = synapse_npz_dataset(root, NATIVE, 32, list_name=None, prenormalized=False)
    np.testing.assert_allclose(ds.images[0], normalize(image[10], NATIVE))


def test_synapse_inplane_transpose(tmp_path, sample_ct, sample_labels):
    root = make_synapse(tmp_path / "Synapse", sample_ct, sample_labels, slices=[12], test_case=False)
    ds = synapse_npz_dataset(root, NATIVE, 32, inplane="transpose")
    _, labels, _ = sample_arrays(sample_ct, sample_labels)
    np.testing.assert_array_equal(ds.labels[0], labels[12].T)
    with pytest.raises(ValueError, match="in-plane"):
        synapse_npz_dataset(root, NATIVE, 32, inplane="mirror")


def test_synapse_h5_test_volume(tmp_path, sample_ct, sample_labels):
    pytest.importorskip("h5py")
    root = make_synapse(tmp_path / "Synapse", sample_ct, sample_labels, slices=[12])
    (name, image, labels), = list(synapse_test_volumes(root))
    _, ref, _ = sample_arrays(sample_ct, sample_labels)
    assert name == "case0001" and image.shape == ref.shape
    np.testing.assert_array_equal(labels, ref)
    assert 0 <= image.min() and image.max() <= 1


def test_h5_without_h5py_says_how_to_install(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("no h5py")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install h5py"):
        read_synapse_h5_volume(tmp_path / "x.npy.h5")


def test_nnunet_folder_canonical_slices_and_label_names(tmp_path, sample_ct, sample_labels):
    root = make_nnunet(tmp_path / "Dataset001", sample_ct, sample_labels)
    folder = read_nnunet_folder(root)
    assert [c[0] for c in folder.cases] == ["ct_001", "ct_002"]
    assert folder.label_set.names == get_label_set("synapse").names
    ds = nnunet_dataset(root, NATIVE, 32, cases=["ct_002"])
    image, labels, _ = sample_arrays(sample_ct, sample_labels)
    assert len(ds) == image.shape[0]
    np.testing.assert_array_equal(ds.labels[17], labels[17])  # canonical (z, y, x) order via read_volume
    np.testing.assert_allclose(ds.images[17], normalize(image[17], NATIVE))


def test_nnunet_missing_image_is_clear(tmp_path, sample_ct, sample_labels):
    root = make_nnunet(tmp_path / "D", sample_ct, sample_labels, cases=("a",))
    (root / "imagesTr" / "a_0000.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="a_0000"):
        read_nnunet_folder(root)


def test_acdc_layout_reads_ed_and_es_frames(tmp_path, sample_ct, sample_labels):
    patient = tmp_path / "ACDC" / "training" / "patient007"
    patient.mkdir(parents=True)
    (patient / "Info.cfg").write_text("ED: 1\nES: 3\nGroup: NOR\nHeight: 180\nNbFrame: 30\nWeight: 80\n")
    for frame in (1, 3):
        shutil.copy(sample_ct, patient / f"patient007_frame{frame:02d}.nii.gz")
        shutil.copy(sample_labels, patient / f"patient007_frame{frame:02d}_gt.nii.gz")
    shutil.copy(sample_ct, patient / "patient007_4d.nii.gz")  # the cine is present but unused
    mr = Preprocessing(modality="mr", resize_policy="native")
    ds = acdc_dataset(tmp_path / "ACDC", mr, 32, patients=patient_names("7"))
    assert len(ds) == 2 * 30
    assert ds.names[0].startswith("patient007_frame01") and ds.names[-1].startswith("patient007_frame03")
    assert 0.0 <= ds.images[0].min() and ds.images[0].max() <= 1.0
    with pytest.raises(FileNotFoundError, match="patientXXX"):
        acdc_dataset(tmp_path / "nothing", mr, 32)
    with pytest.raises(FileNotFoundError, match="ACDC patients patient002, patient003 not found"):
        acdc_dataset(tmp_path / "ACDC", mr, 32, patients=["patient007", "patient002", "patient003"])


def test_acdc_split_is_the_agileformer_list():
    test = acdc_split("test")
    assert test == [f"patient{i:03d}" for i in (2, 3, 8, 9, 12, 14, 17, 24, 42, 48, 49, 53, 55, 64, 67, 79, 81, 88, 92, 95)]
    assert acdc_split("val") == [f"patient{i:03d}" for i in (19, 21, 29, 33, 41, 50, 61, 71, 76, 80)]
    train = acdc_split("train")
    assert len(train) == 70 and not set(train) & set(test) and not set(train) & set(acdc_split("val"))
    assert sorted(train + test + acdc_split("val")) == [f"patient{i:03d}" for i in range(1, 101)]
    assert patient_names("test") == test
    with pytest.raises(ValueError, match="shipped splits: train, val, test"):
        acdc_split("testing")


def test_acdc_lists_are_package_data():
    """setup.cfg ships training/lists/*.txt, so a non-editable install finds the split."""
    import configparser
    from fnmatch import fnmatch
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["training"].split(",")]
    for path in (root / "training" / "lists").glob("*.txt"):
        assert any(fnmatch(f"lists/{path.name}", p) for p in patterns), path.name


def test_patient_names_ranges():
    assert patient_names("1-3,10") == ["patient001", "patient002", "patient003", "patient010"]
    assert patient_names([5, "patient009"]) == ["patient005", "patient009"]


def test_corrected_slices_and_pad_collate(sample_ct, sample_labels):
    image, labels, _ = sample_arrays(sample_ct, sample_labels)
    ds = SliceDataset.from_raw([image[5], image[20][:90, :100]], [labels[5], labels[20][:90, :100]], NATIVE, 32)
    assert ds[1]["image"].shape == (1, 96, 128)
    batch = pad_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 1, 128, 128) and batch["label"].dtype == torch.int64
    assert batch["label"][1, 90:].sum() == 0
    with pytest.raises(ValueError, match="equal 2D"):
        SliceDataset.from_raw([image[5]], [labels[5][:10]], NATIVE, 32)
