import json

import nibabel as nib
import numpy as np
import pytest

from napari_medseg.retrain.datastore import CorrectionStore
from napari_medseg.labels import SYNAPSE, ACDC


def _slices(n=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 100, size=(n, 10, 12)).astype(np.float32)
    labels = rng.integers(0, 9, size=(n, 10, 12)).astype(np.uint8)
    return images, labels


def test_add_list_load_roundtrip(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    images, labels = _slices()
    entry = store.add(images, labels, [3, 7], spacing=(3, 1, 1), source="patient-a", label_set=SYNAPSE.to_dict(), modality="ct")
    assert [e.id for e in store.entries()] == [entry.id]
    assert entry.slice_indices == [3, 7] and entry.num_slices == 2
    got_images, got_labels = store.load(entry)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert not any(p.name.startswith(".incoming") for p in (tmp_path / "store").iterdir())


def test_replay_filters_label_set_and_source(tmp_path):
    store = CorrectionStore(tmp_path)
    store.add(*_slices(), [0, 1], spacing=(1, 1, 1), source="a", label_set=SYNAPSE.to_dict())
    store.add(*_slices(seed=1), [2, 3], spacing=(1, 1, 1), source="b", label_set=SYNAPSE.to_dict())
    images, labels = _slices(seed=2)
    store.add(images, labels % 4, [4, 5], spacing=(1, 1, 1), source="c", label_set=ACDC.to_dict())
    replay = store.replay("synapse", exclude_source="b")
    assert [e.source for *_, e in replay] == ["a"]
    assert len(store.entries("acdc")) == 1


def test_prune(tmp_path):
    store = CorrectionStore(tmp_path)
    ids = [store.add(*_slices(seed=i), [i, i + 1], spacing=(1, 1, 1), source=f"s{i}", label_set=SYNAPSE.to_dict()).id for i in range(3)]
    assert store.prune(source="s1") == [ids[1]]
    assert store.prune(keep_last=1) == [ids[0]]
    assert [e.id for e in store.entries()] == [ids[2]]


def test_bad_input_rejected(tmp_path):
    store = CorrectionStore(tmp_path)
    images, labels = _slices()
    with pytest.raises(ValueError, match="shape"):
        store.add(images, labels[:1], [0, 1], spacing=(1, 1, 1), source="x", label_set=SYNAPSE.to_dict())
    images[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.add(images, labels, [0, 1], spacing=(1, 1, 1), source="x", label_set=SYNAPSE.to_dict())
    assert store.entries() == []


def test_export_nnunet(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    images, labels = _slices()
    store.add(images, labels, [3, 7], spacing=(3.0, 0.8, 0.7), source="a", label_set=SYNAPSE.to_dict(), modality="ct")
    out = store.export_nnunet(tmp_path / "export", "synapse")
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["labels"]["liver"] == 5
    label_files = sorted((out / "labelsTr").glob("*.nii.gz"))
    image_files = sorted((out / "imagesTr").glob("*_0000.nii.gz"))
    assert len(label_files) == len(image_files) == 2
    img = nib.load(label_files[0])
    assert img.shape == (12, 10, 1)
    np.testing.assert_allclose(img.header.get_zooms()[:2], (0.7, 0.8))
    np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, 0].T, labels[0])
    with pytest.raises(FileExistsError):
        store.export_nnunet(out, "synapse")
