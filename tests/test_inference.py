"""The Qt-free inference engine (napari_medseg.inference) with tiny build_model checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _segment_helpers import save_tiny, trained_checkpoint
from napari_medseg.inference import (
    TTA_FLIPS,
    Progress,
    check_same_label_set,
    load_checkpoints,
    run_segmentation,
    segment_volume,
    validate_volume,
)
from napari_medseg.labels import ACDC
from napari_medseg.preprocess import Preprocessing, intensity_range, normalize


def ct_volume(shape=(10, 40, 52), seed=0):
    """A synthetic CT (HU): noise plus a bright blob, odd in-plane size."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0, 200, shape).astype(np.float32)
    vol[:, 10:30, 15:40] += 300
    return vol.astype(np.int16)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {
        "dcaunet": save_tiny(d / "dcau.safetensors", "dcaunet", seed=1),
        "dcaunet_fixed": save_tiny(d / "dcau_fixed.safetensors", "dcaunet", policy="fixed", seed=2),
        "udfa": save_tiny(d / "udfa.safetensors", "udfa", policy="fixed", seed=3),
        "acdc": save_tiny(d / "acdc.safetensors", "dcaunet", label_set=ACDC, seed=4),
    }


def reference_probs(model, info, array, spacing=None):
    """Softmax at native size computed independently of the engine: (z, K, y, x) float32.

    ``spacing`` ``(sy, sx)`` mm for the ``"spacing"`` policy.
    """
    prep = info.preprocessing
    x = torch.from_numpy(normalize(array, prep, intensity_range(array, prep)))[:, None]
    h, w = array.shape[1:]
    m = model.size_multiple
    with torch.no_grad():
        if prep.resize_policy == "fixed":
            xin = F.interpolate(x, size=(prep.input_size,) * 2, mode="bilinear", align_corners=False)
            logits = F.interpolate(model(xin), size=(h, w), mode="bilinear", align_corners=False)
        elif prep.resize_policy == "spacing":
            mh, mw = round(h * spacing[0] / prep.target_spacing), round(w * spacing[1] / prep.target_spacing)
            xin = F.interpolate(x, size=(mh, mw), mode="bilinear", align_corners=False, antialias=mh < h or mw < w)
            H, W = -(-mh // m) * m, -(-mw // m) * m
            logits = model(F.pad(xin, (0, W - mw, 0, H - mh)))[..., :mh, :mw]
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        else:
            H, W = -(-h // m) * m, -(-w // m) * m
            logits = model(F.pad(x, (0, W - w, 0, H - h)))[..., :h, :w]
    return torch.softmax(logits, 1).numpy()


def test_shape_dtype_and_reference(ckpts):
    vol = ct_volume()
    loaded = load_checkpoints([ckpts["dcaunet_fixed"]])
    res = run_segmentation(segment_volume(vol, loaded, device="cpu", batch_size=3, largest_component=False))
    assert res.labels.shape == vol.shape and res.labels.dtype == np.uint8
    assert res.uncertainty.shape == vol.shape and res.uncertainty.dtype == np.float16
    assert 0.0 <= float(res.uncertainty.min()) and float(res.uncertainty.max()) <= 1.0
    probs = reference_probs(*loaded[0], vol)
    # logits were upsampled before the argmax: labels match the native-size reference
    assert (res.labels == probs.argmax(1)).mean() > 0.999
    ent = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1) / np.log(probs.shape[1])
    np.testing.assert_allclose(res.uncertainty.astype(np.float32), ent, atol=2e-3)
    assert res.segmented == list(range(vol.shape[0]))


def test_progress_reports(ckpts):
    vol = ct_volume((7, 33, 33))
    reports = []
    res = run_segmentation(segment_volume(vol, load_checkpoints([ckpts["dcaunet"]]), device="cpu", batch_size=3),
                           reports.append)
    assert [p.done for p in reports] == [0, 3, 6, 7]
    assert all(isinstance(p, Progress) and p.total == 7 and p.device == "cpu" for p in reports)
    assert reports[-1].slices_per_s > 0 and res.slices_per_s > 0


def test_locked_slices_untouched(ckpts):
    vol = ct_volume()
    previous = np.full(vol.shape, 7, np.uint8)
    previous[4, :5, :5] = 2
    seen = []
    loaded = load_checkpoints([ckpts["dcaunet"]])
    model = loaded[0][0]
    hook = model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    res = run_segmentation(segment_volume(vol, loaded, device="cpu", batch_size=4, locked={1, 4}, previous=previous))
    hook.remove()
    np.testing.assert_array_equal(res.labels[[1, 4]], previous[[1, 4]])
    assert (res.labels[[0, 2, 3, 5]] != 7).any()  # the others were recomputed
    assert sum(seen) == vol.shape[0] - 2  # locked slices never went through the model
    assert float(np.abs(res.uncertainty[[1, 4]]).max()) == 0.0
    with pytest.raises(ValueError, match="previous labels"):
        next(segment_volume(vol, loaded, locked={1}))
    with pytest.raises(ValueError, match="outside the volume"):
        next(segment_volume(vol, loaded, locked={99}, previous=previous))


def test_cancel_stops_within_one_batch(ckpts):
    vol = ct_volume((20, 32, 32))
    loaded = load_checkpoints([ckpts["dcaunet"]])
    calls = []
    hook = loaded[0][0].register_forward_hook(lambda m, i, o: calls.append(1))
    gen = segment_volume(vol, loaded, device="cpu", batch_size=4)
    assert next(gen).done == 0
    assert next(gen).done == 4
    gen.close()  # what the GUI worker / a caller does to cancel
    hook.remove()
    assert len(calls) == 1
    assert loaded[0][0].training is False


def test_ensemble_averages_softmax(ckpts):
    vol = ct_volume((6, 45, 38))
    loaded = load_checkpoints([ckpts["dcaunet"], ckpts["udfa"]])  # different models and resize policies
    res = run_segmentation(segment_volume(vol, loaded, device="cpu", batch_size=4, largest_component=False))
    p1, p2 = (reference_probs(m, i, vol) for m, i in loaded)
    mean = (p1 + p2) / 2
    assert (res.labels == mean.argmax(1)).mean() > 0.999
    # and the ensemble is neither model alone
    assert (p1.argmax(1) != p2.argmax(1)).any()
    ent = -(mean * np.log(np.clip(mean, 1e-12, None))).sum(1) / np.log(mean.shape[1])
    np.testing.assert_allclose(res.uncertainty.astype(np.float32), ent, atol=2e-3)


def test_ensemble_refuses_different_label_sets(ckpts):
    with pytest.raises(ValueError, match="same label set.*synapse.*acdc"):
        load_checkpoints([ckpts["dcaunet"], ckpts["acdc"]])
    from napari_medseg.checkpoint import read_checkpoint_info

    infos = [read_checkpoint_info(ckpts["dcaunet"]), read_checkpoint_info(ckpts["acdc"])]
    with pytest.raises(ValueError, match="same label set"):
        check_same_label_set(infos)


def test_tta_averages_flips(ckpts):
    vol = ct_volume((4, 32, 40))
    loaded = load_checkpoints([ckpts["dcaunet"]])
    model, info = loaded[0]
    res = run_segmentation(segment_volume(vol, loaded, device="cpu", tta=True, largest_component=False))
    plain = run_segmentation(segment_volume(vol, loaded, device="cpu", tta=False))
    acc = 0
    for dims in TTA_FLIPS:
        flipped = np.flip(vol, axis=tuple(d - 1 for d in dims)) if dims else vol
        p = reference_probs(model, info, np.ascontiguousarray(flipped))
        acc = acc + (np.flip(p, axis=dims) if dims else p)
    mean = acc / len(TTA_FLIPS)
    assert (res.labels == mean.argmax(1)).mean() > 0.999
    assert not np.array_equal(res.uncertainty, plain.uncertainty)


def test_mr_percentiles_over_whole_volume(ckpts, tmp_path):
    path = save_tiny(tmp_path / "mr.safetensors", "dcaunet", modality="mr", seed=5)
    loaded = load_checkpoints([path])
    vol = np.random.default_rng(0).gamma(2.0, 100.0, (6, 32, 32)).astype(np.float32)
    vol[3] *= 5  # one bright slice: per-slice normalisation would differ
    seen = []
    hook = loaded[0][0].register_forward_hook(lambda m, i, o: seen.append(i[0][:, 0].clone()))
    run_segmentation(segment_volume(vol, loaded, device="cpu", batch_size=6))
    hook.remove()
    lo, hi = np.percentile(vol, (0.5, 99.5))
    expected = np.clip((vol - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(seen[0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((32, 32), np.int16), "2D slice"),
        (np.zeros((0, 32, 32), np.int16), "empty"),
        (np.zeros((2, 3, 32, 32), np.int16), "4D"),
        (np.array([[[0.0, np.nan]]], np.float32), "NaN"),
    ],
)
def test_bad_input_is_explained(ckpts, array, match):
    with pytest.raises(ValueError, match=match):
        validate_volume(array)
    with pytest.raises(ValueError, match=match):
        next(segment_volume(array, load_checkpoints([ckpts["dcaunet"]])))


@pytest.mark.slow
def test_bf16_matches_fp32_on_sample_ct(sample_ct, sample_labels, tmp_path_factory):
    from napari_medseg.io import read_volume

    image = read_volume(sample_ct).array
    path = trained_checkpoint(tmp_path_factory.getbasetemp(), sample_ct, sample_labels)
    model, info = load_checkpoints([path])[0]
    fp32 = run_segmentation(segment_volume(image, [(model, info)], device="cpu", precision="fp32"))
    bf16 = run_segmentation(segment_volume(image, [(model, info)], device="cpu", precision="bf16"))
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    classes = np.unique(fp32.labels)
    assert len(classes) >= 3, f"fp32 prediction is degenerate ({classes}); the comparison would be trivial"
    agreement = (fp32.labels == bf16.labels).mean()
    assert agreement >= 0.99, agreement


def save_spacing_tiny(path, target=2.0, seed=6):
    """A tiny DCAU-Net checkpoint with the ``"spacing"`` resize policy."""
    from _segment_helpers import tiny_model
    from napari_medseg.checkpoint import save_checkpoint
    from napari_medseg.labels import SYNAPSE

    prep = Preprocessing(modality="ct", resize_policy="spacing", target_spacing=target)
    save_checkpoint(path, tiny_model("dcaunet", seed=seed), label_set=SYNAPSE, preprocessing=prep, provenance={})
    return path


def test_spacing_policy_matches_reference_with_ensemble_and_tta(ckpts, tmp_path):
    vol = ct_volume((5, 45, 38))
    spacing = (3.0, 0.7, 1.3)  # non-square pixels, odd sizes
    loaded = load_checkpoints([save_spacing_tiny(tmp_path / "sp.safetensors")])
    res = run_segmentation(segment_volume(vol, loaded, device="cpu", batch_size=2, spacing=spacing, z_sigma_mm=0,
                                          largest_component=False))  # the raw per-slice argmax, compared below
    probs = reference_probs(*loaded[0], vol, spacing[1:])
    assert (res.labels == probs.argmax(1)).mean() > 0.999
    # a different spacing gives a different result: the spacing is really used
    other = run_segmentation(segment_volume(vol, loaded, device="cpu", spacing=(3.0, 1.3, 0.7), z_sigma_mm=0))
    assert not np.array_equal(other.uncertainty, res.uncertainty)
    # ensemble with a native checkpoint: softmax averaged on the native grid
    both = loaded + load_checkpoints([ckpts["dcaunet"]])
    ens = run_segmentation(segment_volume(vol, both, device="cpu", spacing=spacing, largest_component=False,
                                          z_sigma_mm=0))
    mean = (probs + reference_probs(*both[1], vol)) / 2
    assert (ens.labels == mean.argmax(1)).mean() > 0.999
    # flip TTA flips the resampled, padded model input and flips the logits back before resampling them
    from napari_medseg.preprocess import logits_to_native, to_model_size

    tta = run_segmentation(segment_volume(vol, loaded, device="cpu", tta=True, spacing=spacing,
                                          largest_component=False, z_sigma_mm=0))
    model, info = loaded[0]
    x, rinfo = to_model_size(torch.from_numpy(normalize(vol, info.preprocessing))[:, None], info.preprocessing,
                             model.size_multiple, spacing)
    with torch.no_grad():
        acc = sum(torch.softmax(logits_to_native(torch.flip(model(torch.flip(x, d)), d), rinfo), 1) for d in TTA_FLIPS)
    assert (tta.labels == acc.argmax(1).numpy()).mean() > 0.999
    assert not np.array_equal(tta.uncertainty, res.uncertainty)


@pytest.mark.parametrize("spacing", [None, (3.0, 0.0, 0.7), (3.0, np.nan, 0.7)])
def test_spacing_checkpoint_without_usable_spacing_is_refused(ckpts, tmp_path, spacing):
    vol = ct_volume((3, 32, 32))
    loaded = load_checkpoints([ckpts["dcaunet"], save_spacing_tiny(tmp_path / "sp.safetensors")])
    calls = []
    hook = loaded[0][0].register_forward_hook(lambda m, i, o: calls.append(1))
    with pytest.raises(ValueError, match="resize policy 'spacing'.*voxel spacing is unusable") as err:
        next(segment_volume(vol, loaded, device="cpu", spacing=spacing))
    hook.remove()
    assert "\n" not in str(err.value) and not calls  # refused before any model ran
    # checkpoints without the spacing policy need no spacing
    assert run_segmentation(segment_volume(vol, loaded[:1], device="cpu")).labels.shape == vol.shape


def test_batch_memory_bounded_for_clinical_ct(tmp_path, monkeypatch):
    """512^2 slices at 0.6 mm reach the model as 160^2 (2 mm, padded to 32); probabilities exist one batch at a time."""
    import napari_medseg.inference as inference

    vol = np.full((5, 512, 512), -1000, np.int16)
    vol[:, 100:400, 80:430] = 40
    loaded = load_checkpoints([save_spacing_tiny(tmp_path / "sp.safetensors")])
    inputs, probs = [], []
    hook = loaded[0][0].register_forward_hook(lambda m, i, o: inputs.append(tuple(i[0].shape)))
    real = inference._labels_and_entropy
    monkeypatch.setattr(inference, "_labels_and_entropy", lambda p, u: (probs.append(tuple(p.shape)), real(p, u))[1])
    res = run_segmentation(segment_volume(vol, loaded, device="cpu", batch_size=2, spacing=(2.5, 0.6, 0.6),
                                          z_sigma_mm=0))
    assert res.labels.shape == vol.shape
    assert inputs == [(2, 1, 160, 160), (2, 1, 160, 160), (1, 1, 160, 160)]
    assert probs == [(2, 9, 512, 512), (2, 9, 512, 512), (1, 9, 512, 512)]
    # smoothing across slices (3 mm sigma, 2.5 mm slices: 2 neighbours each side) hands slices out
    # once their neighbours are in: still a few slices at a time, never the volume
    inputs.clear(), probs.clear()
    run_segmentation(segment_volume(vol, loaded, device="cpu", batch_size=2, spacing=(2.5, 0.6, 0.6), z_sigma_mm=3))
    hook.remove()
    assert inputs == [(2, 1, 160, 160), (2, 1, 160, 160), (1, 1, 160, 160)]
    assert probs == [(2, 9, 512, 512), (3, 9, 512, 512)]


@pytest.mark.parametrize("provenance, refused", [
    ({"augment": {"p_rot90": 0.5, "p_flip": 0.0}}, False),  # the papers' recipes (medseg train)
    ({"augment": {"p_flip": 0.5}}, False),
    ({"augment": {"p_rot90": 0.0, "p_flip": 0.0, "p_rotate": 0.3}}, True),  # the fine-tuning recipes
    ({"augment": None}, True),  # trained without any augmentation
    ({"slices": [2, 5], "steps": 10}, True),  # a fine-tune saved before the augmentation was recorded
    ({"note": "from elsewhere"}, False),  # unknown origin: allowed, as before
    ({}, False),
])
def test_flip_tta_only_for_checkpoints_trained_with_flips(ckpts, tmp_path, provenance, refused):
    from napari_medseg.checkpoint import flip_tta_refusal, load_checkpoint, read_checkpoint_info, save_checkpoint

    model, info = load_checkpoint(ckpts["dcaunet"])
    path = tmp_path / "prov.safetensors"
    save_checkpoint(path, model, label_set=info.label_set, preprocessing=info.preprocessing, provenance=provenance)
    info = read_checkpoint_info(path)
    assert (flip_tta_refusal(info) is not None) == refused
    vol = np.random.default_rng(0).normal(0, 200, (3, 40, 48)).astype(np.float32)
    gen = segment_volume(vol, [(model, info)], device="cpu", tta=True, largest_component=False)
    if refused:
        with pytest.raises(ValueError, match=r"flip TTA: .*prov\.safetensors.* without flips.*segment without TTA"):
            run_segmentation(gen)
    else:
        assert run_segmentation(gen).labels.shape == vol.shape
