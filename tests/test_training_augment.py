"""Joint augmentation keeps image and labels aligned."""

import pytest
import torch

from napari_medseg.retrain.augment import AugmentConfig, augment_batch


def _blob_batch():
    img = torch.zeros(2, 1, 40, 56)
    lab = torch.zeros(2, 40, 56, dtype=torch.long)
    img[:, :, 10:25, 8:30] = 1.0
    lab[:, 10:25, 8:30] = 3
    return img, lab


def test_identity_when_everything_off():
    img, lab = _blob_batch()
    cfg = AugmentConfig(p_rotate=0)
    out_img, out_lab = augment_batch(img, lab, cfg)
    assert torch.equal(out_img, img) and torch.equal(out_lab, lab)


@pytest.mark.parametrize("cfg", [
    AugmentConfig(p_rotate=1.0, rotate_deg=30),
    AugmentConfig(p_rotate=0, p_rot90=1.0, p_flip=1.0),
    AugmentConfig(p_rotate=1.0, p_scale=1.0, p_elastic=1.0),
])
def test_image_and_labels_move_together(cfg):
    img, lab = _blob_batch()
    g = torch.Generator().manual_seed(1)
    out_img, out_lab = augment_batch(img, lab, cfg, g)
    assert out_img.shape == img.shape and out_lab.dtype == lab.dtype
    assert set(out_lab.unique().tolist()) <= {0, 3}  # nearest: no new label values
    inside = out_img[:, 0][out_lab == 3]
    outside = out_img[:, 0][out_lab == 0]
    assert inside.mean() > 0.9 and outside.mean() < 0.1
    assert not torch.equal(out_lab, lab)


def test_rotation_by_90_in_pixel_space_on_non_square():
    img = torch.zeros(1, 1, 20, 40)
    lab = torch.zeros(1, 20, 40, dtype=torch.long)
    lab[0, 9:11, 5:35] = 1  # a horizontal bar, 30 px long
    cfg = AugmentConfig(p_rotate=0, p_rot90=1.0)
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        _, out = augment_batch(img, lab, cfg, g)
        ys, xs = torch.nonzero(out[0], as_tuple=True)
        if len(ys) and (ys.max() - ys.min()) > (xs.max() - xs.min()):
            assert (ys.max() - ys.min() + 1) >= 18  # still ~30 px long (clipped to 20 rows), not squashed
            return
    pytest.fail("no vertical rotation drawn in 8 seeds")


def test_intensity_jitter_touches_only_image():
    img, lab = _blob_batch()
    cfg = AugmentConfig(p_rotate=0, p_intensity=1.0)
    out_img, out_lab = augment_batch(img * 0.5 + 0.25, lab, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out_lab, lab)
    assert not torch.allclose(out_img, img * 0.5 + 0.25)
    assert out_img.min() >= 0 and out_img.max() <= 1


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        AugmentConfig.from_dict({"p_rotat": 1})


def _classify(out_img: torch.Tensor, img: torch.Tensor) -> list[str]:
    """Per sample: 'same', 'turn_flip' (a 90-degree multiple of a mirror image) or 'other' (e.g. a 1-20 degree rotation)."""
    mirrored = img.flip(-1)
    reflections = [torch.rot90(mirrored, k, dims=(-2, -1)) for k in range(4)]
    kinds = []
    for i in range(out_img.shape[0]):
        if torch.allclose(out_img[i], img[i], atol=1e-4):
            kinds.append("same")
        elif any(torch.allclose(out_img[i], r[i], atol=1e-4) for r in reflections):
            kinds.append("turn_flip")
        else:
            kinds.append("other")
    return kinds


def test_transunet_scheme_is_either_turn_and_flip_or_rotation():
    """TransUNet's RandomGenerator: p 0.5 rot90 (k=0..3) + flip of one axis, elif p 0.5 rotation in [-20, 20] deg."""
    torch.manual_seed(0)
    img = torch.rand(1, 1, 12, 12).expand(4000, 1, 12, 12).contiguous()
    lab = torch.zeros(4000, 12, 12, dtype=torch.long)
    cfg = AugmentConfig(p_rot90=0.5, p_rotate=0.5, rotate_deg=20, p_flip=0.0)
    out, _ = augment_batch(img, lab, cfg, torch.Generator().manual_seed(3))
    kinds = _classify(out, img)
    share = {k: kinds.count(k) / len(kinds) for k in ("same", "turn_flip", "other")}
    assert share["turn_flip"] == pytest.approx(0.5, abs=0.03)
    assert share["other"] == pytest.approx(0.25, abs=0.03)  # rotation only where no turn was drawn
    assert share["same"] == pytest.approx(0.25, abs=0.03)
    both = AugmentConfig(p_rot90=1.0, p_rotate=1.0, rotate_deg=20, p_flip=0.0)
    out, _ = augment_batch(img[:200], lab[:200], both, torch.Generator().manual_seed(4))
    assert set(_classify(out, img[:200])) == {"turn_flip"}  # never a turn AND a small rotation


def _steps(img: torch.Tensor) -> float:
    """Mean absolute horizontal + vertical neighbour difference."""
    return float((img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean())


@pytest.mark.parametrize("name, cfg", [
    ("blur", AugmentConfig(p_rotate=0, p_blur=1.0, blur_sigma=(1.0, 1.5))),
    ("low resolution", AugmentConfig(p_rotate=0, p_lowres=1.0, lowres_zoom=(0.4, 0.5))),
])
def test_image_quality_augmentations_soften_edges_and_leave_labels(name, cfg):
    gen = torch.Generator().manual_seed(0)
    img = (torch.rand(3, 1, 48, 48, generator=gen) > 0.5).float()  # a sharp binary texture
    lab = torch.randint(0, 4, (3, 48, 48), generator=gen)
    out_img, out_lab = augment_batch(img, lab, cfg, generator=gen)
    assert out_img.shape == img.shape and torch.equal(out_lab, lab), name
    assert float(out_img.min()) >= 0 and float(out_img.max()) <= 1
    assert _steps(out_img) < 0.7 * _steps(img), name  # every sample was softened
    assert abs(float(out_img.mean() - img.mean())) < 0.05  # brightness kept


def test_noise_is_bounded_and_only_where_drawn():
    img = torch.full((64, 1, 32, 32), 0.5)
    lab = torch.zeros(64, 32, 32, dtype=torch.long)
    cfg = AugmentConfig(p_rotate=0, p_noise=0.5, noise_std=0.04)
    out, _ = augment_batch(img, lab, cfg, generator=torch.Generator().manual_seed(1))
    stds = (out - img).flatten(1).std(1)
    untouched = int((stds == 0).sum())
    assert 16 < untouched < 48  # about half the samples drawn
    assert float(stds.max()) < 0.05


def test_image_quality_preset_round_trips_and_changes_no_geometry():
    cfg = AugmentConfig.image_quality()
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    img, lab = _blob_batch()
    _, out_lab = augment_batch(img, lab, cfg, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out_lab, lab)


def test_dcaunet_recipes_jitter_intensity_and_move_organs_without_flipping_them():
    """The recipe's jitter moves values by tens of HU, as contrast phases do; its rotations and zooms move
    organs but never blend labels and never flip an organ to the other side (kidney left stays left)."""
    from napari_medseg.models import family_spec
    from napari_medseg.preprocess import CT_WINDOW

    spec = family_spec("dcaunet")
    for from_scratch in (True, False):
        cfg = AugmentConfig.from_dict(spec.recipe(from_scratch)["augment"])
        img, lab = _blob_batch()
        liver = torch.full((64, 1, 8, 8), (46 - CT_WINDOW[0]) / (CT_WINDOW[1] - CT_WINDOW[0]))  # 46 HU
        out, out_lab = augment_batch(liver, torch.zeros(64, 8, 8, dtype=torch.long), cfg,
                                     torch.Generator().manual_seed(0))
        hu = out.mean(dim=(1, 2, 3)) * (CT_WINDOW[1] - CT_WINDOW[0]) + CT_WINDOW[0]
        assert hu.max() > 46 + 30 and hu.min() < 46 - 30  # a native liver is seen near a contrast one's 93 HU
        assert torch.equal(out_lab, torch.zeros(64, 8, 8, dtype=torch.long))
        img, lab = img[:1].expand(64, -1, -1, -1), lab[:1].expand(64, -1, -1)  # the blob sits left of centre
        _, blob_lab = augment_batch(img, lab, cfg, torch.Generator().manual_seed(1))
        assert set(blob_lab.unique().tolist()) <= {0, 3}  # labels are never blended
        assert (blob_lab != lab).flatten(1).any(1).sum() > 10  # rotations and zooms move many samples
        xs = torch.arange(lab.shape[-1], dtype=torch.float32)
        centre_x = ((blob_lab == 3).float().sum(1) * xs).sum(1) / (blob_lab == 3).float().sum((1, 2))
        assert (centre_x < lab.shape[-1] / 2).all()  # no flip: the organ stays on its side


def test_appearance_mask_keeps_the_values_of_the_samples_it_leaves_out():
    """Samples left out of ``appearance`` move with the batch but keep their values (scribbled slices)."""
    img, lab = _blob_batch()
    img = img * 0.5 + 0.25
    moved_only = AugmentConfig(p_rotate=1.0, rotate_deg=30)
    everything = AugmentConfig(p_rotate=1.0, rotate_deg=30, p_intensity=1.0, p_noise=1.0, p_blur=1.0)
    ref_img, ref_lab = augment_batch(img, lab, moved_only, torch.Generator().manual_seed(3))
    out_img, out_lab = augment_batch(img, lab, everything, torch.Generator().manual_seed(3),
                                     appearance=torch.tensor([True, False]))
    assert torch.equal(out_lab, ref_lab) and not torch.equal(ref_lab, lab)  # both rotated, same draw
    assert torch.allclose(out_img[1], ref_img[1])  # left out: rotated, values untouched
    assert not torch.allclose(out_img[0], ref_img[0], atol=1e-2)  # in: jittered, noisy, blurred
