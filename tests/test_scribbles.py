"""Scribble conventions, the simulated reviewer's rules, effort, body masks and fill-from-seeds."""

import numpy as np
import pytest
from scipy import ndimage

from napari_medseg.labels import SYNAPSE
from napari_medseg.scribbles import (
    BACKGROUND,
    UNLABELLED,
    ScribbleWarning,
    background_paint_value,
    body_mask,
    effort,
    fill_from_scribbles,
    labelled_slices,
    partial_to_scribbles,
    scribble_label_set,
    scribbles_to_partial,
    simulate_correction,
    simulate_reviewer,
    simulate_scribbles,
    validate_partial,
)

H, W = 120, 140


def phantom(seed: int = 0, organ2_hu: float = 220.0):
    """A CT-like slice ``(H, W)`` in HU: a body ellipse (0 HU) with two organs, a gas pocket and a table.

    Returns (image, labels, body): organ 1 a disc at 120 HU, organ 2 a bar at ``organ2_hu``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    body = ((yy - 55) / 48.0) ** 2 + ((xx - 70) / 62.0) ** 2 < 1
    labels = np.zeros((H, W), np.uint8)
    labels[((yy - 50) ** 2 + (xx - 45) ** 2 < 15**2)] = 1
    labels[40:52, 75:140] = 2
    labels[~body] = 0  # organ 2 reaches the skin: the outline stroke must stop 4 px short of it
    image = np.full((H, W), -1000.0)
    image[body] = 0.0
    image[labels == 1] = 120.0
    image[labels == 2] = organ2_hu
    image[75:80, 60:66] = -900.0  # bowel gas inside the body: a hole the mask must fill
    image[110:113, 10:130] = 100.0  # the table, separated from the body by air
    image += rng.normal(0, 8, image.shape)
    return image, labels, body


# --- conventions ---------------------------------------------------------------------------------


def test_scribble_layer_to_partial_labels_and_back():
    bg = background_paint_value(8)
    assert bg == 9
    layer = np.array([[0, 1, 8], [bg, 0, 3]])
    partial = scribbles_to_partial(layer, 8)
    assert partial.dtype == np.uint8
    assert partial.tolist() == [[UNLABELLED, 1, 8], [BACKGROUND, UNLABELLED, 3]]
    assert partial_to_scribbles(partial, 8).tolist() == layer.tolist()


def test_scribble_label_set_names_the_background_value():
    scribble_set = scribble_label_set(SYNAPSE)
    assert scribble_set.names[9] == "background (scribble)"
    assert scribble_set.names[5] == SYNAPSE.names[5]
    assert scribble_set.colors[9][3] == 1.0 and scribble_set.colors[0][3] == 0.0


def test_scribble_layer_errors():
    with pytest.raises(ValueError, match=r"values \[10\] outside 0..9"):
        scribbles_to_partial(np.array([[0, 10]]), 8)
    with pytest.raises(ValueError, match="not aligned|aligned with the image"):
        scribbles_to_partial(np.zeros((4, 5)), 8, image_shape=(4, 6))
    with pytest.raises(ValueError, match="1..253 organs"):
        background_paint_value(254)


def test_validate_partial_errors_and_warning():
    with pytest.raises(ValueError, match=r"values \[9, 200\] outside \{0..8, 255\}"):
        validate_partial(np.array([[0, 9, 200, 255]]), 8)
    with pytest.raises(ValueError, match="nothing is labelled"):
        validate_partial(np.full((3, 3), 255), 8)
    with pytest.raises(ValueError, match="must hold integers"):
        validate_partial(np.zeros((3, 3), np.float32), 8)
    with pytest.warns(ScribbleWarning, match="no background stroke"):
        validate_partial(np.array([[255, 3]]), 8)
    assert validate_partial(np.array([[0, 3, 255]]), 8).dtype == np.uint8


def test_labelled_slices():
    partial = np.full((5, 4, 4), UNLABELLED, np.uint8)
    partial[1, 0, 0] = 0
    partial[3, 2, 2] = 4
    assert labelled_slices(partial) == [1, 3]


# --- body mask -------------------------------------------------------------------------------------


def test_ct_body_mask_fills_gas_and_drops_the_table():
    image, _, body = phantom()
    mask = body_mask(image, "ct")
    assert mask[77, 63]  # the gas pocket is inside the body
    assert not mask[111].any()  # the table is not
    assert (mask != body).sum() < 0.01 * body.sum()


def test_mr_body_mask_from_otsu():
    rng = np.random.default_rng(1)
    _, _, body = phantom()
    image = np.where(body, 400.0, 15.0) + rng.normal(0, 10, body.shape)
    volume = np.stack([image, image])
    mask = body_mask(volume, "mr")
    assert mask.shape == volume.shape
    assert (mask[1] != body).sum() < 0.01 * body.sum()


def test_mr_body_mask_keeps_dark_organs_inside_a_bright_fat_ring():
    """A thin bright ring (subcutaneous fat) around darker organs: the body is air against all tissue."""
    rng = np.random.default_rng(2)
    _, _, body = phantom()
    inner = ndimage.binary_erosion(body, iterations=4)
    image = np.where(inner, 150.0, np.where(body, 900.0, 8.0)) + rng.normal(0, 6, body.shape)
    image[inner & (np.arange(body.shape[1])[None] % 20 < 6)] = 60.0  # darker muscle bands
    mask = body_mask(np.stack([image, image]), "mr")
    assert (mask[1] != body).sum() < 0.02 * body.sum()
    with pytest.raises(ValueError, match="no finite value"):
        body_mask(np.full((2, 8, 8), np.nan), "mr")


# --- the simulated reviewer ------------------------------------------------------------------------


def test_reviewer_strokes_obey_the_distance_rules():
    _, labels, body = phantom()
    labels[90, 40:42] = 1  # a tiny second component of organ 1 still gets a stroke
    partial = simulate_scribbles(labels, body).partial
    assert not (partial[~body] != UNLABELLED).any()
    for value in (1, 2):
        stroke = partial == value
        assert stroke.any() and (labels[stroke] == value).all()  # organ strokes stay inside their organ
    assert (partial[90, 40:42] == 1).any()

    organs = labels > 0
    d_organ = ndimage.distance_transform_edt(~organs)
    skin = body & ~ndimage.binary_erosion(body, border_value=1)
    d_skin = ndimage.distance_transform_edt(~skin)
    background = partial == BACKGROUND
    assert background.any()
    assert d_organ[background].min() >= 4
    # A 3x3 stroke reaches sqrt(2) px either side of its centre line.  The outline's centre line is the
    # inner edge of {d_skin >= 5} (so 5 <= d < 6); the skeleton's lies >= 8 px from organs and skin.
    near_skin = (d_skin >= 5 - np.sqrt(2)) & (d_skin < 6 + np.sqrt(2))
    far = (d_skin >= 8 - np.sqrt(2)) & (d_organ >= 8 - np.sqrt(2))
    assert (near_skin | far)[background].all()
    ring = body & (np.abs(d_skin - 5) < 0.5) & (d_organ >= 5.5)  # every stretch of the outline far from organs
    assert background[ring].mean() > 0.95
    assert (background & far & ~near_skin).any()  # the skeleton strokes exist


def test_strokes_are_three_pixels_wide():
    body = np.zeros((80, 200), bool)
    body[10:70, 10:190] = True
    labels = np.zeros_like(body, dtype=np.uint8)
    labels[30:45, 40:160] = 3  # a long bar, 15 px tall
    partial = simulate_scribbles(labels, body).partial
    for x in (70, 100, 130):
        organ_rows = np.flatnonzero(partial[:, x] == 3)
        assert organ_rows.tolist() == [36, 37, 38]  # along the bar's skeleton (its middle row, 37)
        top = np.flatnonzero(partial[:30, x] == BACKGROUND)
        # the skin is row 10, so the outline stroke is centred on row 15; rows 18..22 are >= 8 px from
        # skin and organ, so the skeleton stroke is centred on row 20
        assert top.tolist() == [14, 15, 16, 19, 20, 21]


def test_effort_definition():
    image, labels, body = phantom()
    done = simulate_scribbles(labels, body)
    stroked = int((done.partial != UNLABELLED).sum())
    assert done.effort == pytest.approx(stroked / body.sum())
    assert 0 < done.effort < 1

    volume = np.stack([image, image, image])
    ref = np.stack([labels, labels, labels])
    partial, pooled = simulate_reviewer(volume, ref, [0, 2], "ct")
    mask = body_mask(volume, "ct")
    assert pooled == pytest.approx((partial != UNLABELLED).sum() / (mask[0].sum() + mask[2].sum()))
    assert (partial[1] == UNLABELLED).all()

    corrected, cost = simulate_correction(labels, labels, body)
    assert cost == 0 and (corrected == labels).all()
    wrong = labels.copy()
    wrong[labels == 1] = 0
    assert simulate_correction(wrong, labels, body)[1] == pytest.approx((labels == 1).sum() / body.sum())
    everything = np.where(body, 0, 0)
    assert simulate_correction(everything, np.where(body, 5, 0), body)[1] == 1.0  # a full-slice correction
    with pytest.raises(ValueError, match="no body pixels"):
        effort(10, 0)


# --- fill from scribbles ---------------------------------------------------------------------------


def _organ_dice(filled, labels, value):
    a, b = filled == value, labels == value
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_fill_from_reviewer_strokes_recovers_two_organs():
    image, labels, body = phantom()
    partial = simulate_scribbles(labels, body).partial
    filled = fill_from_scribbles(image, partial, modality="ct")
    assert filled.shape == labels.shape and filled.dtype == np.uint8
    stroked = partial != UNLABELLED
    assert (filled[stroked] == partial[stroked]).all()
    for value in (1, 2):
        assert _organ_dice(filled, labels, value) > 0.9


def test_fill_guided_by_probabilities_finds_an_invisible_boundary():
    image, labels, body = phantom(organ2_hu=0.0)  # organ 2 has the intensity of its surroundings
    partial = simulate_scribbles(labels, body).partial
    unguided = fill_from_scribbles(image, partial, modality="ct")
    onehot = np.stack([ndimage.gaussian_filter((labels == c).astype(np.float32), 1.0) for c in range(3)])
    probabilities = onehot / onehot.sum(0, keepdims=True)
    guided = fill_from_scribbles(image, partial, modality="ct", probabilities=probabilities)
    assert _organ_dice(guided, labels, 2) > 0.9
    assert _organ_dice(guided, labels, 2) > _organ_dice(unguided, labels, 2) + 0.1


def test_fill_errors():
    image, labels, body = phantom()
    partial = simulate_scribbles(labels, body).partial
    with pytest.raises(ValueError, match="no strokes"):
        fill_from_scribbles(image, np.full_like(partial, UNLABELLED))
    with pytest.raises(ValueError, match="same shape"):
        fill_from_scribbles(image, partial[:-1])
    with pytest.raises(ValueError, match=r"probabilities must be \(K\+1"):
        fill_from_scribbles(image, partial, probabilities=np.ones((3, 5, 5)))
    with pytest.warns(ScribbleWarning, match="no background stroke"):
        fill_from_scribbles(image, np.where(partial == BACKGROUND, UNLABELLED, partial).astype(np.uint8))
