"""`medseg finetune --partial` (issue 10, point 1): default slices, one-line errors, nothing stored on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.checkpoint import save_checkpoint
from napari_medseg.cli import main
from napari_medseg.io import read_volume, write_labels
from napari_medseg.labels import SYNAPSE
from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.preprocess import Preprocessing
from napari_medseg.retrain.datastore import CorrectionStore
from napari_medseg.scribbles import UNLABELLED, simulate_reviewer

SCRIBBLED = [5, 14, 24]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    model = build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"])
    prep = Preprocessing(modality="ct", resize_policy="native")
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, label_set=SYNAPSE,
                           preprocessing=prep)


@pytest.fixture(scope="module")
def scan(sample_ct, sample_labels):
    image = read_volume(sample_ct)
    reference = read_volume(sample_labels).array.astype(np.uint8)
    partial, _ = simulate_reviewer(image.array, reference, SCRIBBLED)
    return image, partial


def write(tmp_path, name, image, labels):
    return str(write_labels(labels, tmp_path / f"{name}.nii.gz", image.geometry))


def finetune_args(sample_ct, labels, checkpoint, out, *extra):
    return ["finetune", "--image", str(sample_ct), "--labels", labels, "--checkpoint", str(checkpoint.path),
            "--steps", "2", "--device", "cpu", "--scope", "all", "-o", str(out), *extra]


def test_partial_defaults_to_the_labelled_slices_and_stores_the_255s(sample_ct, scan, tiny_checkpoint, tmp_path,
                                                                     monkeypatch, capsys):
    image, partial = scan
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    labels = write(tmp_path, "scribbles", image, partial)
    out = tmp_path / "tuned.safetensors"
    assert main(finetune_args(sample_ct, labels, tiny_checkpoint, out, "--partial", "--smoothness", "10")) == 0
    assert out.exists()
    assert "partial labels on slices 5,14,24" in capsys.readouterr().out
    store = CorrectionStore(tmp_path / "data" / "corrections")
    [entry] = store.entries()
    assert entry.slice_indices == SCRIBBLED
    _, stored = store.load(entry)
    np.testing.assert_array_equal(stored, partial[SCRIBBLED])  # passed through: 255 stays "not labelled"
    assert (stored == UNLABELLED).any()


def bad_labels(partial):
    outside = partial.copy()
    outside[14][partial[14] == 3] = 12  # synapse has organs 1..8
    organs_only = np.where(partial == 0, UNLABELLED, partial).astype(np.uint8)
    return {
        "outside": (outside, ["--partial"], "values [12] outside {0..8, 255}"),
        "nothing": (np.full_like(partial, UNLABELLED), ["--partial"], "nothing is labelled"),
        "nothing on the slices": (partial, ["--partial", "--slices", "3,4"], "nothing is labelled"),
        "255 without --partial": (partial, ["--slices", "14,24"], "slice 14 of"),
        "negative smoothness": (partial, ["--partial", "--smoothness", "-1"], "smoothness_weight must be"),
        "zero sigma": (partial, ["--partial", "--smoothness-sigma", "0"], "smoothness_sigma must be"),
    }, organs_only


@pytest.mark.parametrize("case", ["outside", "nothing", "nothing on the slices", "255 without --partial",
                                  "negative smoothness", "zero sigma"])
def test_bad_partial_labels_give_one_line_and_store_nothing(sample_ct, scan, tiny_checkpoint, tmp_path, monkeypatch,
                                                            capsys, case):
    image, partial = scan
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    labels, extra, message = bad_labels(partial)[0][case]
    out = tmp_path / "tuned.safetensors"
    assert main(finetune_args(sample_ct, write(tmp_path, "bad", image, labels), tiny_checkpoint, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    if case == "255 without --partial":
        assert "--partial" in err
    assert not out.exists() and not (tmp_path / "data" / "corrections").exists()


def test_slices_required_without_partial(sample_ct, sample_labels, tiny_checkpoint, tmp_path, capsys):
    assert main(finetune_args(sample_ct, str(sample_labels), tiny_checkpoint, tmp_path / "x.safetensors")) == 2
    assert "--slices is required" in capsys.readouterr().err


def test_no_background_stroke_warns_in_one_line(sample_ct, scan, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    image, partial = scan
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    organs_only = bad_labels(partial)[1]
    out = tmp_path / "tuned.safetensors"
    assert main(finetune_args(sample_ct, write(tmp_path, "organs", image, organs_only), tiny_checkpoint, out,
                              "--partial")) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "no background stroke" in warning[0], warning
