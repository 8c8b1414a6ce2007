"""The Qt-free correct-and-retrain loop and `medseg finetune` / `medseg demo`."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.checkpoint import file_sha256, read_checkpoint_info, save_checkpoint
from napari_medseg.cli import main
from napari_medseg.retrain.datastore import CorrectionStore
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.preprocess import Preprocessing
from napari_medseg.progress import drive
from napari_medseg.retrain.loop import (
    StartFrom, evenly_spaced_slices, next_version_path, rank_uncertain_slices, retrain_volume,
)
from napari_medseg.retrain.dice import dice


@pytest.fixture(scope="module")
def sample(sample_ct, sample_labels):
    image, labels = read_volume(sample_ct), read_volume(sample_labels)
    return image, labels.array.astype(np.uint8)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    import torch

    torch.manual_seed(0)
    model = build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"])
    prep = Preprocessing(modality="ct", resize_policy="native")
    return save_checkpoint(tmp_path / "tiny.safetensors", model, label_set=SYNAPSE, preprocessing=prep)


def mean_untouched_dice(pred, ref, corrected):
    rest = [z for z in range(ref.shape[0]) if z not in corrected]
    return float(np.mean([dice(pred[rest] == c, ref[rest] == c) for c in range(1, 9)]))


def test_evenly_spaced_slices():
    assert evenly_spaced_slices(30, 5) == [5, 10, 14, 19, 24]
    assert evenly_spaced_slices(30, 0) == []
    with pytest.raises(ValueError):
        evenly_spaced_slices(3, 5)


def test_next_version_path_never_reuses(tmp_path):
    base = tmp_path / "liver.safetensors"
    assert next_version_path(base) == tmp_path / "liver.v2.safetensors"
    (tmp_path / "liver.v2.safetensors").write_bytes(b"x")
    assert next_version_path(base) == tmp_path / "liver.v3.safetensors"
    assert next_version_path(tmp_path / "liver.v3.safetensors") == tmp_path / "liver.v4.safetensors"
    assert next_version_path(None, tmp_path, stem="m") == tmp_path / "m.v1.safetensors"


def test_rank_uncertain_slices():
    unc = np.zeros((4, 2, 2), np.float16)
    unc[2] = 0.9
    unc[1] = 0.5
    assert rank_uncertain_slices(unc, [0, 1, 2, 3]) == [2, 1, 0, 3]
    assert rank_uncertain_slices(unc, [0, 1]) == [1, 0]
    from napari_medseg.retrain.loop import slice_uncertainty

    means = slice_uncertainty(unc)  # per-slice means rank the same as the map they come from
    assert means.shape == (4,) and rank_uncertain_slices(means, [0, 1, 2, 3]) == [2, 1, 0, 3]
    assert slice_uncertainty(None) is None


def test_suggested_slices_keep_apart_from_each_other_and_from_corrections():
    from napari_medseg.retrain.loop import suggest_slices

    unc = np.zeros((30, 2, 2), np.float32)
    unc[0], unc[1], unc[2], unc[6], unc[28] = 0.9, 0.95, 0.8, 0.85, 0.5
    candidates = [z for z in range(30) if z not in (5, 10)]
    # 3 mm slices, 10 mm gap -> 4 slices: 1 is taken, 0 and 2 are its neighbours, 6 is next to the corrected 5
    assert suggest_slices(unc, candidates, 2, corrected=[5, 10], slice_mm=3.0) == [1, 28]
    assert rank_uncertain_slices(unc, candidates)[:2] == [1, 0]  # what plain ranking suggested
    # 1 mm slices: 10 slices apart; too few far candidates -> the rest in plain order, never fewer than n
    assert suggest_slices(unc, [0, 1, 2], 3, slice_mm=1.0) == [1, 0, 2]
    assert suggest_slices(unc, candidates, 1, corrected=[5, 10]) == [1]  # unknown spacing: a 3-slice gap


def test_suggested_slices_stay_apart_when_no_candidate_is_a_full_gap_away():
    """A later round: corrections every 4-5 slices, so no candidate is 10 mm from all of them."""
    from napari_medseg.retrain.loop import suggest_slices

    corrected = [1, 5, 10, 14, 19, 24, 28]
    candidates = [z for z in range(30) if z not in corrected]
    unc = np.zeros((30, 2, 2), np.float32)
    unc[16], unc[17], unc[12], unc[7] = 0.9, 0.85, 0.8, 0.3
    # 16 is the most uncertain; its neighbour 17 (2nd) would show the same anatomy, 12 is 4 slices away
    assert suggest_slices(unc, candidates, 2, corrected=corrected, slice_mm=3.0) == [16, 12]
    # the widest gap any candidate keeps here is 2 slices (from the corrected ones): 16 and 12 hold it
    assert suggest_slices(unc, candidates, len(candidates), corrected=corrected, slice_mm=3.0)[:2] == [16, 12]
    assert sorted(suggest_slices(unc, candidates, len(candidates), corrected=corrected)) == candidates


def test_a_suggestion_states_its_true_distance_from_the_corrections():
    from napari_medseg.retrain.loop import describe_suggestion

    assert "12 mm from the nearest corrected one." in describe_suggestion(20, [5, 24], 3.0)
    assert "6 mm from the nearest corrected one (no unlocked slice is 10 mm" in describe_suggestion(16, [14, 19], 3.0)
    assert "2 slices from the nearest" in describe_suggestion(16, [14, 19])
    assert describe_suggestion(3, []) == "the most uncertain unlocked slice."


def test_retrain_volume_keeps_corrections_and_records_provenance(sample, tiny_checkpoint, tmp_path):
    image, ref = sample
    corrected = [8, 20]
    labels = np.zeros_like(ref)
    labels[corrected] = ref[corrected]
    store = CorrectionStore(tmp_path / "store")
    gen = retrain_volume(image.array, labels, corrected, start=StartFrom(checkpoint=tiny_checkpoint.path),
                         spacing=image.geometry.spacing, source="sample", options=dict(steps=6, device="cpu"),
                         store=store)
    phases = []
    result = drive(gen, lambda p: phases.append(p.phase))
    assert {"fine-tune", "segment"} <= set(phases)
    assert result.checkpoint.path == tiny_checkpoint.path.with_name("tiny.v2.safetensors")
    prov = result.checkpoint.provenance
    assert prov["parent_sha256"] == file_sha256(tiny_checkpoint.path)
    assert prov["slices"] == corrected and prov["steps"] == 6 and prov["image"] == "sample"
    assert prov["weights_from_step"] == 6  # finished without held-out slices: the final weights
    assert prov["augment"]["p_flip"] == 0 and prov["augment"]["p_rot90"] == 0  # the recipes never flip
    from napari_medseg.checkpoint import flip_tta_refusal

    assert flip_tta_refusal(result.checkpoint) == "was trained without flips"
    np.testing.assert_array_equal(result.labels[corrected], ref[corrected])
    assert result.uncertainty.dtype == np.float16
    np.testing.assert_allclose(result.slice_uncertainty, result.uncertainty.astype(np.float64).mean(axis=(1, 2)))
    liver = next(o for o in result.organs if o.value == 5)  # which organ to check next, ranked in the worker
    assert liver.voxels == int((result.labels == 5).sum())
    if liver.voxels:
        assert liver.mean_uncertainty == pytest.approx(result.uncertainty[result.labels == 5].astype(np.float64).mean(),
                                                       abs=1e-3)
    assert read_checkpoint_info(tiny_checkpoint.path).sha256 == tiny_checkpoint.sha256  # parent untouched
    [entry] = store.entries()
    assert entry.slice_indices == corrected and entry.checkpoint == result.checkpoint.sha256


def test_corrections_replay_on_the_next_volume(sample, tiny_checkpoint, tmp_path):
    image, ref = sample
    store = CorrectionStore(tmp_path / "store")
    store.add(image.array[[3, 4]], ref[[3, 4]], [3, 4], spacing=(3, 3, 3), source="patient-a", label_set=SYNAPSE.to_dict(),
              modality="ct")
    result = drive(retrain_volume(image.array, ref, [12], start=StartFrom(checkpoint=tiny_checkpoint.path),
                                  source="patient-b", options=dict(steps=2, device="cpu"), store=store,
                                  resegment=False))
    assert result.replayed_slices == 2
    assert "2 replayed" in result.checkpoint.provenance["data"]
    assert len(store.entries()) == 2


def test_replay_leaves_stored_scribbles_out(sample, tiny_checkpoint, tmp_path):
    """Stored scribbles of another patient are left out of the replay (and said so), by full and scribble runs
    alike; an entry named by id is replayed as it is."""
    from napari_medseg.scribbles import UNLABELLED

    image, ref = sample
    other = np.ascontiguousarray(image.array[::-1])  # another "patient": other voxels, another hash
    scribbled = ref[[3, 4, 5]].copy()
    scribbled[:2, :, :20] = UNLABELLED  # two slices scribbled, one full
    store = CorrectionStore(tmp_path / "store")
    store.add(other[[3, 4, 5]], scribbled, [3, 4, 5], spacing=(3, 3, 3), source="patient-a",
              label_set=SYNAPSE.to_dict(), modality="ct")
    entry = store.entries()[0].id

    def run(labels, partial, replay=True):
        return drive(retrain_volume(image.array, labels, [12], start=StartFrom(checkpoint=tiny_checkpoint.path),
                                    source="patient-b", options=dict(steps=2, device="cpu"), store=store,
                                    replay=replay, resegment=False, partial=partial))

    full = run(ref, partial=False)
    assert full.replayed_slices == 1 and full.replay_plan.slices == 1 and full.replay_plan.patients == 1
    assert full.replay_plan.describe().endswith("replays 1 slice of 1 patient; "
                                                "left out 2 scribbled slices (replay uses fully labelled ones)")
    assert run(ref, partial=False, replay=[entry]).replayed_slices == 3  # an entry named by id: as it is
    strokes = ref.copy()
    strokes[12, :, :20] = UNLABELLED
    assert run(strokes, partial=True).replayed_slices == 1  # a run on scribbles leaves them out too


def test_scribbled_slices_are_filled_around_their_kept_strokes(sample, tiny_checkpoint, tmp_path):
    from napari_medseg.scribbles import UNLABELLED, simulate_reviewer

    image, ref = sample
    partial, _ = simulate_reviewer(image.array, ref, [8, 20])
    labels = partial.copy()
    labels[14] = ref[14]  # a full correction beside the scribbles
    result = drive(retrain_volume(image.array, labels, [8, 14, 20], start=StartFrom(checkpoint=tiny_checkpoint.path),
                                  spacing=(3.0, 3.0, 3.0), options=dict(steps=2, device="cpu"),
                                  store=CorrectionStore(tmp_path / "s"), partial=True))
    np.testing.assert_array_equal(result.labels[14], ref[14])  # locked
    for z in (8, 20):
        stroked = partial[z] != UNLABELLED
        np.testing.assert_array_equal(result.labels[z][stroked], partial[z][stroked])  # a 2-step model obeys them
        assert (result.labels[z] != UNLABELLED).all()  # and the rest is filled in


def test_should_stop_keeps_best_weights_and_saves(sample, tiny_checkpoint, tmp_path):
    image, ref = sample
    calls = []
    result = drive(retrain_volume(image.array, ref, [10, 15], start=StartFrom(checkpoint=tiny_checkpoint.path),
                                  options=dict(steps=500, device="cpu"), store=CorrectionStore(tmp_path / "s"),
                                  resegment=False, should_stop=lambda: calls.append(1) or len(calls) >= 3))
    assert result.finetune.stopped_by == "cancelled"
    assert result.finetune.steps == 3
    assert result.checkpoint.path.exists()


def test_bad_inputs(sample, tiny_checkpoint, tmp_path):
    image, ref = sample
    start = StartFrom(checkpoint=tiny_checkpoint.path)
    with pytest.raises(ValueError, match="no corrected"):
        drive(retrain_volume(image.array, ref, [], start=start, store=CorrectionStore(tmp_path)))
    with pytest.raises(ValueError, match="outside"):
        drive(retrain_volume(image.array, ref, [99], start=start, store=CorrectionStore(tmp_path)))
    with pytest.raises(ValueError, match="differs"):
        drive(retrain_volume(image.array, ref[:-1], [3], start=start, store=CorrectionStore(tmp_path)))
    with pytest.raises(ValueError, match="scratch"):
        StartFrom(model_name="dcaunet")


@pytest.mark.slow
def test_cli_finetune_then_segment_beats_untrained(sample_ct, sample_labels, sample, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    _, ref = sample
    corrected = [5, 10, 14, 19, 24]
    new = tmp_path / "tuned.safetensors"
    rc = main(["finetune", "--image", str(sample_ct), "--labels", str(sample_labels), "--slices", ",".join(map(str, corrected)),
               "--checkpoint", str(tiny_checkpoint.path), "--scope", "all", "--steps", "60", "--device", "cpu", "-o", str(new)])
    assert rc == 0 and new.exists()
    assert read_checkpoint_info(new).provenance["parent_sha256"] == tiny_checkpoint.sha256
    scores = {}
    for name, ckpt in (("before", tiny_checkpoint.path), ("after", new)):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["segment", str(sample_ct), "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
        scores[name] = mean_untouched_dice(read_volume(out).array, ref, corrected)
    assert scores["after"] > scores["before"] + 0.05, scores


def test_cli_finetune_refuses_overwrite_and_bad_slices(sample_ct, sample_labels, tiny_checkpoint, tmp_path, capsys):
    args = ["finetune", "--image", str(sample_ct), "--labels", str(sample_labels), "--checkpoint", str(tiny_checkpoint.path),
            "--steps", "1", "--device", "cpu"]
    assert main(args + ["--slices", "3,x", "-o", str(tmp_path / "a.safetensors")]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert main(args + ["--slices", "3", "-o", str(tiny_checkpoint.path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["finetune", "--image", str(sample_ct), "--labels", str(sample_labels), "--model", "dcaunet",
                 "--slices", "3", "-o", str(tmp_path / "b.safetensors")]) == 2
    assert "--label-set" in capsys.readouterr().err
    base = args[:-4] + ["--device", "cpu", "--slices", "3", "-o", str(tmp_path / "c.safetensors")]
    for bad in ("nan", "inf", "0"):
        assert main(base + ["--time-budget", bad]) == 2
        err = capsys.readouterr().err
        assert "--time-budget must be a finite number > 0" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c.safetensors").exists()


def test_cli_finetune_flipped_labels_file_is_aligned(sample_ct, sample_labels, sample, tiny_checkpoint, tmp_path, monkeypatch):
    """Labels stored flipped (LPS-like voxel order + compensating affine) are read in the image's space."""
    import nibabel as nib

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    img = nib.load(sample_labels)
    data = np.asarray(img.dataobj)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    flipped = nib.Nifti1Image(data[::-1].copy(), img.affine @ flip)
    path = tmp_path / "flipped_labels.nii.gz"
    nib.save(flipped, path)
    out = tmp_path / "t.safetensors"
    assert main(["finetune", "--image", str(sample_ct), "--labels", str(path), "--slices", "12",
                 "--checkpoint", str(tiny_checkpoint.path), "--steps", "1", "--device", "cpu", "-o", str(out)]) == 0
    [entry] = CorrectionStore(tmp_path / "data" / "corrections").entries()
    _, stored = CorrectionStore(tmp_path / "data" / "corrections").load(entry)
    np.testing.assert_array_equal(stored[0], sample[1][12])


def test_cli_finetune_from_scratch_on_mri_then_segment(tmp_path, monkeypatch):
    """No checkpoint, an MR-like image (no HU): MR normalisation is chosen; segment keeps the geometry."""
    import nibabel as nib

    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    rng = np.random.default_rng(0)
    z, y, x = 8, 40, 36
    image = rng.normal(300, 40, size=(x, y, z)).astype(np.float32)  # stored (i, j, k) = (x, y, z)
    labels = np.zeros((x, y, z), np.uint8)
    labels[10:20, 8:18, :] = 1
    labels[20:28, 20:30, :] = 3
    image[labels == 1] += 500
    image[labels == 3] += 900
    affine = np.diag([-1.5, 1.5, 8.0, 1.0])  # an LPS-like voxel order with a compensating affine
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "cine_frame.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "cine_gt.nii.gz")
    ckpt = tmp_path / "acdc.safetensors"
    assert main(["finetune", "--image", str(tmp_path / "cine_frame.nii.gz"), "--labels", str(tmp_path / "cine_gt.nii.gz"),
                 "--slices", "2,5", "--model", "dcaunet", "--label-set", "acdc", "--steps", "3", "--device", "cpu",
                 "-o", str(ckpt)]) == 0
    info = read_checkpoint_info(ckpt)
    assert info.preprocessing.modality == "mr" and info.label_set.name == "acdc"
    assert info.provenance["from_scratch"] is True and info.provenance["slices"] == [2, 5]
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(tmp_path / "cine_frame.nii.gz"), "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
    seg = nib.load(out)
    assert seg.shape == image.shape
    np.testing.assert_allclose(seg.affine, affine)


def test_a_checkpoint_of_another_modality_warns(sample, tiny_checkpoint):
    """A CT model fine-tuned on an MR image would see it through a CT window: warned (the CLI prints it)."""
    import warnings

    from napari_medseg.retrain.loop import StartFrom, prepare_model

    image, _ = sample
    mr_like = image.array.astype(np.float32) + 1100  # no air at -1000: guessed MR
    with pytest.warns(UserWarning, match="trained on CT images and this image looks like MR"):
        prepare_model(StartFrom(checkpoint=tiny_checkpoint.path), mr_like)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CT image itself: no warning
        prepare_model(StartFrom(checkpoint=tiny_checkpoint.path), image.array)


def test_initial_weights_from_scratch_follow_the_seed(sample):
    """torch's own seed is random per process: the fine-tune's seed sets a new model's weights, each member its own."""
    import torch

    from napari_medseg.retrain.loop import StartFrom, prepare_model

    image = sample[0].array
    start = StartFrom(model_name="dcaunet", label_set="synapse", modality="ct", members=2)

    before = iter(range(100, 200))

    def weights(seed):
        torch.manual_seed(next(before))  # whatever ran before differs each time: it must not matter
        model = prepare_model(start, image, options=dict(seed=seed, steps=1, device="cpu"))[0]
        return [torch.cat([p.detach().flatten() for p in member.parameters()]) for member in model.members]

    first, again, other = weights(0), weights(0), weights(1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], first[1])  # the two members start apart
    assert not torch.equal(first[0], other[0])


def test_initial_weights_draw_from_another_stream_than_the_crops(sample):
    """The crops and augmentation draw from a generator seeded with the fine-tune's seed itself; the weights must not
    repeat that sequence (they did until 2026-12-07: each seed was one fixed pairing of weights and crops)."""
    import torch

    from napari_medseg.models import build_model
    from napari_medseg.retrain.loop import StartFrom, init_seed, prepare_model

    start = StartFrom(model_name="dcaunet", label_set="synapse", modality="ct", members=1)
    model = prepare_model(start, sample[0].array, options=dict(seed=0, steps=1, device="cpu"))[0]
    torch.manual_seed(0)  # the crops' sequence
    same_stream = build_model(model.model_name, **model.config)  # a model's config rebuilds it
    first, shadow = next(model.parameters()), next(same_stream.parameters())
    assert first.shape == shadow.shape and not torch.equal(first, shadow)
    assert len({init_seed(s) for s in range(100)} | set(range(100))) == 200  # no seed maps onto a crop seed
