"""Smoothing of probabilities across slices (napari_medseg.zsmooth) and its use in segment_volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.zsmooth import ZSmoother, slice_thickness, z_weights


def test_weights_cover_two_sigmas_in_mm_and_switch_off_cleanly():
    assert len(z_weights(3.0, 3.0)) == 5  # r = floor(2 * 3 / 3) = 2 slices each side
    assert len(z_weights(1.0, 3.0)) == 13 and len(z_weights(7.0, 3.0)) == 1
    w = z_weights(1.5, 3.0)
    np.testing.assert_allclose(w, w[::-1]) and np.testing.assert_allclose(w[len(w) // 2], 1.0)
    np.testing.assert_allclose(w[len(w) // 2 + 2], np.exp(-0.5))  # 2 slices of 1.5 mm = one sigma
    for slice_mm, sigma in ((None, 3.0), (0.0, 3.0), (float("nan"), 3.0), (3.0, 0.0)):
        np.testing.assert_array_equal(z_weights(slice_mm, sigma), [1.0])
    assert slice_thickness((2.5, 0.7, 0.7)) == 2.5
    assert slice_thickness((0.7, 0.7)) is None and slice_thickness(None) is None and slice_thickness((0, 1, 1)) is None


def reference(probs: np.ndarray, todo, weights, anchors) -> np.ndarray:
    """Smoothed (z, K, H, W) of the todo slices, computed on the whole volume at once."""
    depth, k = probs.shape[:2]
    r = len(weights) // 2
    evidence = {z: probs[z] for z in todo}
    for z, lab in anchors.items():
        if lab.min() >= 0 and lab.max() < k:
            evidence[z] = np.eye(k, dtype=np.float32)[lab].transpose(2, 0, 1)
    out = []
    for z in todo:
        num, den = 0.0, 0.0
        for d in range(-r, r + 1):
            if z + d in evidence:
                num, den = num + weights[d + r] * evidence[z + d], den + weights[d + r]
        out.append(num / den)
    return np.stack(out)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_streamed_smoothing_equals_the_whole_volume_filter_and_holds_few_slices(batch):
    rng = np.random.default_rng(batch)
    depth, k = 17, 4
    probs = rng.dirichlet(np.ones(k), size=(depth, 6, 5)).transpose(0, 3, 1, 2).astype(np.float32)
    locked = [0, 5, 6, 12]
    anchors = {z: rng.integers(0, k, (6, 5)) for z in locked}
    anchors[12] = np.full((6, 5), 255)  # not a labelling (scribbles): no evidence
    todo = [z for z in range(depth) if z not in locked]
    weights = z_weights(1.0, 1.5)  # r = 3
    smoother = ZSmoother(depth, todo, weights, anchors)
    got, held = {}, 0
    for b in range(0, len(todo), batch):
        idx = todo[b:b + batch]
        for ready, smoothed in smoother.add(idx, torch.from_numpy(probs[idx])):
            assert smoothed.shape == (len(ready), k, 6, 5)
            got.update(zip(ready, smoothed.numpy()))
        held = max(held, len(smoother._probs))
    assert sorted(got) == todo  # every slice handed out exactly once, by the end
    np.testing.assert_allclose(np.stack([got[z] for z in todo]), reference(probs, todo, weights, anchors), atol=1e-6)
    assert held <= batch + 2 * 3 + 1  # a batch and its neighbours, never the volume


def test_smoothing_removes_slice_to_slice_flicker():
    """A cylinder whose per-slice probabilities are noisy: smoothing across slices makes fewer wrong voxels."""
    rng = np.random.default_rng(0)
    depth, size = 24, 32
    yy, xx = np.mgrid[:size, :size]
    truth = np.repeat(((yy - 16) ** 2 + (xx - 16) ** 2 < 64)[None], depth, axis=0).astype(np.int64)
    clean = np.stack([1 - truth, truth], axis=1).astype(np.float32) * 0.3 + 0.35  # (z, 2, y, x), 0.65 on the truth
    noisy = np.clip(clean + rng.normal(0, 0.25, clean.shape).astype(np.float32), 1e-3, None)
    noisy /= noisy.sum(1, keepdims=True)
    todo = list(range(depth))
    smoother = ZSmoother(depth, todo, z_weights(1.0, 2.0), {})
    out = {}
    for b in range(0, depth, 4):
        for ready, smoothed in smoother.add(todo[b:b + 4], torch.from_numpy(noisy[b:b + 4])):
            out.update(zip(ready, smoothed.argmax(1).numpy()))
    wrong_before = int((noisy.argmax(1) != truth).sum())
    wrong_after = int((np.stack([out[z] for z in todo]) != truth).sum())
    assert wrong_after < 0.5 * wrong_before, (wrong_before, wrong_after)


def test_segment_volume_smooths_with_the_slice_thickness_and_refuses_a_bad_sigma(tmp_path):
    from _segment_helpers import save_tiny

    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume

    rng = np.random.default_rng(0)
    vol = rng.normal(0, 200, (10, 40, 52)).astype(np.int16)  # noise: a random model's labels flicker along z
    loaded = load_checkpoints([save_tiny(tmp_path / "tiny.safetensors", "dcaunet", seed=1)])
    kw = dict(device="cpu", batch_size=2, largest_component=False, uncertainty=False)
    plain = run_segmentation(segment_volume(vol, loaded, spacing=(3.0, 1.5, 1.5), z_sigma_mm=0, **kw)).labels
    no_thickness = run_segmentation(segment_volume(vol, loaded, spacing=(1.5, 1.5), **kw)).labels
    smoothed = run_segmentation(segment_volume(vol, loaded, spacing=(3.0, 1.5, 1.5), z_sigma_mm=6.0, **kw)).labels
    np.testing.assert_array_equal(plain, no_thickness)  # in-plane spacing only: nothing to smooth with
    assert (smoothed != plain).any()
    with pytest.raises(ValueError, match="sigma >= 0 mm"):
        next(segment_volume(vol, loaded, spacing=(3.0, 1.5, 1.5), z_sigma_mm=-1, **kw))


def test_strokes_are_one_hot_in_their_slice_before_smoothing():
    from napari_medseg.zsmooth import clamp_to_strokes

    rng = np.random.default_rng(3)
    depth, k = 9, 4
    probs = rng.dirichlet(np.ones(k), size=(depth, 6, 5)).transpose(0, 3, 1, 2).astype(np.float32)
    stroke = np.full((6, 5), 255, np.uint8)
    stroke[1, 1:4], stroke[4, 2], stroke[0, 0] = 2, 0, 9  # 9 is not a class: ignored
    clamped = clamp_to_strokes(torch.from_numpy(probs[4]), stroke).numpy()
    np.testing.assert_array_equal(clamped[:, 1, 1:4], np.eye(k, dtype=np.float32)[[2, 2, 2]].T)
    np.testing.assert_array_equal(clamped[:, 4, 2], np.eye(k, dtype=np.float32)[0])
    unstroked = stroke == 255
    unstroked[0, 0] = True
    np.testing.assert_array_equal(clamped[:, unstroked], probs[4][:, unstroked])  # the rest untouched
    todo, weights = list(range(depth)), z_weights(1.0, 1.5)
    smoother = ZSmoother(depth, todo, weights, strokes={4: stroke})
    got = {}
    for b in range(0, depth, 2):
        for ready, smoothed in smoother.add(todo[b:b + 2], torch.from_numpy(probs[b:b + 2])):
            got.update(zip(ready, smoothed.numpy()))
    expected_probs = probs.copy()
    expected_probs[4] = clamped
    np.testing.assert_allclose(np.stack([got[z] for z in todo]), reference(expected_probs, todo, weights, {}), atol=1e-6)


def test_segment_volume_keeps_the_strokes_of_a_scribbled_slice(tmp_path):
    from _segment_helpers import save_tiny

    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume

    rng = np.random.default_rng(0)
    vol = rng.normal(0, 200, (6, 40, 52)).astype(np.int16)
    loaded = load_checkpoints([save_tiny(tmp_path / "tiny.safetensors", "dcaunet", seed=1)])
    stroke = np.full((40, 52), 255, np.uint8)
    stroke[5:8, 5:30], stroke[30:33, 10:40], stroke[20, 45] = 3, 0, 6  # an isolated pixel: an island kept
    kw = dict(device="cpu", uncertainty=False, spacing=(3.0, 1.5, 1.5))
    plain = run_segmentation(segment_volume(vol, loaded, **kw)).labels
    assert (plain[2][stroke != 255] != stroke[stroke != 255]).any()  # a random model disagrees with the strokes
    kept = run_segmentation(segment_volume(vol, loaded, strokes={2: stroke}, **kw)).labels
    np.testing.assert_array_equal(kept[2][stroke != 255], stroke[stroke != 255])
    locked = run_segmentation(segment_volume(vol, loaded, strokes={2: stroke}, locked=[2], previous=plain, **kw)).labels
    np.testing.assert_array_equal(locked[2], plain[2])  # a locked slice is the user's: strokes do not apply
    with pytest.raises(ValueError, match="strokes for slices \\[9\\]"):
        next(segment_volume(vol, loaded, strokes={9: stroke}, **kw))
