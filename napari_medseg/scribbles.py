"""Scribbles and partial labels: conventions, the simulated reviewer, and fill-from-seeds.

Conventions (issue 10):

* **Partial labels** (files, the datastore, fine-tuning): ``255`` = not
  labelled, ``0`` = background the user asserted, ``1..K`` = organs.
* **Scribble layer** (napari): ``0`` means "nothing painted", so background
  strokes get their own paint value ``K + 1`` ("background (scribble)"),
  which can never clash with an organ.  :func:`scribbles_to_partial` turns
  a scribble layer into partial labels.

The simulated reviewer (:func:`simulate_scribbles`) is the one the issue
defines, so effort figures compare across the project.  Distances are
Euclidean between pixel centres, in pixels:

* one 3-px-wide stroke along the skeleton of every organ region (connected
  component), kept inside that organ;
* a background stroke centred 5 px inside the skin (the skin is the outermost
  row of body pixels; the image border is not skin);
* background strokes along the skeleton of the body region that is >= 8 px
  from any organ and from the skin;
* every background pixel >= 4 px from any organ.

Effort = pixels stroked or changed / body pixels of the slices touched (a
full-slice correction costs 1).

:func:`fill_from_scribbles` turns the strokes on one slice into a full
labelling with a seeded watershed on the image gradient (optionally sharpened
by the model's probabilities).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_medseg.labels import LabelSet

UNLABELLED = 255
BACKGROUND = 0
STROKE_WIDTH = 3  # px
SKIN_OFFSET = 5  # px, centre of the outline stroke inside the skin
FAR_FROM_ORGANS_AND_SKIN = 8  # px, region whose skeleton gets background strokes
BACKGROUND_MARGIN = 4  # px, background strokes never come closer to an organ
CT_BODY_THRESHOLD_HU = -500.0  # between air (-1000) and fat (-100)
_SQUARE3 = np.ones((3, 3), bool)


class ScribbleWarning(UserWarning):
    """Scribbles that can be used but teach the model less than they could."""


# --- conventions ---------------------------------------------------------------------------------


def background_paint_value(num_organs: int) -> int:
    """The scribble-layer value for background strokes: ``K + 1`` for ``K`` organs."""
    if not 1 <= num_organs <= UNLABELLED - 2:
        raise ValueError(f"scribbles support 1..{UNLABELLED - 2} organs, got {num_organs}")
    return num_organs + 1


def scribble_label_set(label_set: LabelSet) -> LabelSet:
    """Names and colours for a scribble layer: ``0`` nothing, ``1..K`` organs, ``K+1`` background."""
    k = len(label_set.organs)
    bg = background_paint_value(k)
    names = {0: "nothing (not labelled)", **label_set.organs, bg: "background (scribble)"}
    colors = {0: (0.0, 0.0, 0.0, 0.0), **{v: label_set.colors[v] for v in label_set.organs},
              bg: (1.0, 1.0, 1.0, 1.0)}
    return LabelSet(f"{label_set.name}-scribbles", names, colors)


def scribbles_to_partial(scribbles: np.ndarray, num_organs: int, image_shape: tuple | None = None) -> np.ndarray:
    """A scribble layer (0 nothing, 1..K organs, K+1 background) as partial labels (uint8, same shape)."""
    scribbles = np.asarray(scribbles)
    if image_shape is not None and tuple(scribbles.shape) != tuple(image_shape):
        raise ValueError(f"scribble layer has shape {scribbles.shape} but the image has {tuple(image_shape)}; "
                         "draw scribbles on a layer aligned with the image")
    bg = background_paint_value(num_organs)
    bad = _values_outside(scribbles, bg)
    if bad:
        raise ValueError(f"scribble layer holds values {bad} outside 0..{bg} "
                         f"(0 nothing, 1..{num_organs} organs, {bg} background); erase them or pick another label")
    partial = np.full(scribbles.shape, UNLABELLED, np.uint8)
    organ = (scribbles >= 1) & (scribbles <= num_organs)
    partial[organ] = scribbles[organ]
    partial[scribbles == bg] = BACKGROUND
    return partial


def partial_to_scribbles(partial: np.ndarray, num_organs: int) -> np.ndarray:
    """Inverse of :func:`scribbles_to_partial`, for showing stored partial labels as a scribble layer."""
    partial = validate_partial(partial, num_organs, warn=False)
    out = np.where(partial == UNLABELLED, 0, partial).astype(np.uint8)
    out[partial == BACKGROUND] = background_paint_value(num_organs)
    return out


def validate_partial(partial: np.ndarray, num_organs: int, *, name: str = "partial labels",
                     warn: bool = True) -> np.ndarray:
    """Check partial labels (255 / 0 / 1..K); return them as uint8.

    Raises ``ValueError`` (one line) for values outside {0..K, 255} or when
    nothing is labelled; warns (:class:`ScribbleWarning`) when no pixel is
    asserted background, since the model cannot learn what is not an organ.
    """
    partial = np.asarray(partial)
    if partial.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got dtype {partial.dtype}")
    bad = [v for v in _values_outside(partial, num_organs) if v != UNLABELLED]
    if bad:
        raise ValueError(f"{name} hold values {bad} outside {{0..{num_organs}, {UNLABELLED}}} "
                         f"({UNLABELLED} = not labelled, 0 = background, 1..{num_organs} = organs)")
    partial = partial.astype(np.uint8, copy=False)
    if not (partial != UNLABELLED).any():
        raise ValueError(f"nothing is labelled in {name}: every value is {UNLABELLED}; paint some strokes first")
    if warn and not (partial == BACKGROUND).any():
        warnings.warn(f"{name} have no background stroke: the model cannot learn what is not an organ",
                      ScribbleWarning, stacklevel=2)
    return partial


def labelled_slices(partial: np.ndarray) -> list[int]:
    """Indices along axis 0 of the slices holding any labelled pixel (partial ``(z, y, x)``)."""
    partial = np.asarray(partial)
    return [int(z) for z in np.flatnonzero((partial != UNLABELLED).reshape(partial.shape[0], -1).any(axis=1))]


def _values_outside(array: np.ndarray, high: int) -> list[int]:
    values = np.unique(array)
    return [int(v) for v in values if v < 0 or v > high][:8]


# --- body mask -------------------------------------------------------------------------------------


def body_mask(image: np.ndarray, modality: str | None = None, opening_px: int = 2) -> np.ndarray:
    """Boolean body mask of a slice ``(y, x)`` or a volume ``(z, y, x)``, slice by slice.

    CT: above -500 HU; MR (or anything not in HU): above :func:`mr_body_threshold` of
    the whole array.  Then, per slice, a binary opening (disk of ``opening_px``,
    which cuts the table and cables off), the largest connected component and
    hole filling (bowel gas, lungs).  Holes open to the image border stay open.
    """
    from napari_medseg.preprocess import guess_modality

    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"body_mask expects a (y, x) slice or a (z, y, x) volume, got shape {image.shape}")
    modality = modality or guess_modality(image)
    if modality == "ct":
        threshold = CT_BODY_THRESHOLD_HU
    else:
        threshold = mr_body_threshold(image)
    above = image > threshold
    slices = above[None] if above.ndim == 2 else above
    disk = _disk(opening_px)
    out = np.zeros_like(slices)
    for z, mask in enumerate(slices):
        if opening_px > 0:
            mask = ndimage.binary_opening(mask, structure=disk)
        comps, n = ndimage.label(mask)
        if n == 0:
            continue
        largest = 1 + int(np.argmax(ndimage.sum_labels(mask, comps, index=np.arange(1, n + 1))))
        out[z] = ndimage.binary_fill_holes(comps == largest)
    return out[0] if above.ndim == 2 else out


def mr_body_threshold(image: np.ndarray) -> float:
    """Air against tissue on an MR (image units): Otsu's threshold of ``log(1 + I - I_0.5%)``.

    Otsu on the raw values splits the body's bright tissue (fat) from its darker organs rather
    than the body from the air (on TotalSegmentator's example MR: a "body" of 14 % of the image,
    one blob of stomach and spleen).  Intensities are roughly multiplicative (coil sensitivity),
    and on a log scale the noise floor of the air is one mode and all tissue the other (the same
    MR: 59-78 % of each slice, the abdomen; bench/effort.py --cases mr).
    """
    from skimage.filters import threshold_otsu

    values = np.asarray(image, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("the image holds no finite value: no body to find")
    floor = float(np.percentile(values, 0.5))
    logs = np.log1p(np.clip(values - floor, 0, None))
    if logs.max() <= logs.min():
        return floor
    return floor + float(np.expm1(threshold_otsu(logs)))


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return yy**2 + xx**2 <= radius**2


# --- the simulated reviewer ------------------------------------------------------------------------


@dataclass
class ReviewerSlice:
    """One slice the simulated reviewer scribbled on.

    Attributes:
        partial: ``(y, x)`` uint8 partial labels (255 not labelled, 0 background, 1..K organs).
        body: ``(y, x)`` bool body mask.
    """

    partial: np.ndarray
    body: np.ndarray

    @property
    def effort(self) -> float:
        """Stroked pixels / body pixels."""
        return effort(int((self.partial != UNLABELLED).sum()), int(self.body.sum()))


def effort(changed_pixels: int, body_pixels: int) -> float:
    """Pixels stroked or changed / body pixels of the slices touched (a full-slice correction costs 1)."""
    if body_pixels <= 0:
        raise ValueError("no body pixels on the slices touched: cannot measure effort (is the image empty?)")
    return changed_pixels / body_pixels


def simulate_scribbles(reference: np.ndarray, body: np.ndarray) -> ReviewerSlice:
    """The issue's reviewer on one slice: ``reference`` ``(y, x)`` labels 0..K, ``body`` ``(y, x)`` bool."""
    from skimage.morphology import skeletonize

    reference = np.asarray(reference)
    body = np.asarray(body, bool)
    if reference.shape != body.shape or reference.ndim != 2:
        raise ValueError(f"reference {reference.shape} and body {body.shape} must be the same 2D shape")
    partial = np.full(reference.shape, UNLABELLED, np.uint8)
    for value in np.unique(reference[reference > 0]):
        organ = reference == value
        partial[_thick(_skeleton_with_every_component(organ)) & organ] = value

    organs = reference > 0
    d_organ = ndimage.distance_transform_edt(~organs) if organs.any() else np.full(organs.shape, np.inf)
    skin = body & ~ndimage.binary_erosion(body, border_value=1)  # the image border is not skin
    d_skin = ndimage.distance_transform_edt(~skin) if skin.any() else np.full(body.shape, np.inf)
    inside = body & (d_skin >= SKIN_OFFSET)
    outline = inside & ~ndimage.binary_erosion(inside, border_value=1)
    far = body & (d_organ >= FAR_FROM_ORGANS_AND_SKIN) & (d_skin >= FAR_FROM_ORGANS_AND_SKIN)
    strokes = _thick(outline | skeletonize(far))
    partial[strokes & body & (d_organ >= BACKGROUND_MARGIN)] = BACKGROUND
    return ReviewerSlice(partial, body)


def simulate_reviewer(image: np.ndarray, reference: np.ndarray, slices, modality: str | None = None):
    """Scribble ``slices`` of a volume: partial labels ``(z, y, x)`` (255 elsewhere) and their effort.

    Effort = stroked pixels / body pixels, summed over the slices scribbled.
    """
    image, reference = np.asarray(image), np.asarray(reference)
    if image.shape != reference.shape:
        raise ValueError(f"image {image.shape} and reference {reference.shape} must have the same shape")
    body = body_mask(image, modality)
    partial = np.full(reference.shape, UNLABELLED, np.uint8)
    stroked = body_pixels = 0
    for z in slices:
        done = simulate_scribbles(reference[z], body[z])
        partial[z] = done.partial
        stroked += int((done.partial != UNLABELLED).sum())
        body_pixels += int(done.body.sum())
    return partial, effort(stroked, body_pixels)


def simulate_correction(predicted: np.ndarray, reference: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, float]:
    """The reviewer corrects a predicted slice to the reference: ``(corrected, changed / body pixels)``."""
    predicted, reference = np.asarray(predicted), np.asarray(reference)
    if predicted.shape != reference.shape:
        raise ValueError(f"prediction {predicted.shape} and reference {reference.shape} must have the same shape")
    return reference.copy(), effort(int((predicted != reference).sum()), int(np.asarray(body, bool).sum()))


def _skeleton_with_every_component(mask: np.ndarray) -> np.ndarray:
    """Skeleton of ``mask``, plus the innermost pixel of any component the skeleton missed."""
    from skimage.morphology import skeletonize

    skeleton = skeletonize(mask)
    comps, n = ndimage.label(mask, structure=_SQUARE3)
    hit = np.zeros(n + 1, bool)
    hit[np.unique(comps[skeleton])] = True
    for c in np.flatnonzero(~hit[1:]) + 1:
        depth = ndimage.distance_transform_edt(comps == c)
        skeleton[np.unravel_index(int(np.argmax(depth)), mask.shape)] = True
    return skeleton


def _thick(line: np.ndarray) -> np.ndarray:
    """A 1-px line widened to a stroke ``STROKE_WIDTH`` px wide (3x3 dilation)."""
    return ndimage.binary_dilation(line, structure=np.ones((STROKE_WIDTH, STROKE_WIDTH), bool))


# --- fill a slice from its scribbles ---------------------------------------------------------------


def fill_from_scribbles(image: np.ndarray, partial: np.ndarray, *, modality: str | None = None,
                        probabilities: np.ndarray | None = None, value_range: tuple[float, float] | None = None, guidance_weight: float = 1.0,
                        smoothing_px: float = 0.5) -> np.ndarray:
    """A full labelling ``(y, x)`` uint8 (0..K) of one slice grown from its strokes.

    Args:
        image: ``(y, x)`` raw slice (HU for CT).
        partial: ``(y, x)`` partial labels (255 not labelled, 0 background, 1..K organs).
        modality: ``"ct"`` / ``"mr"``; guessed from the values when None.
        probabilities: optional ``(K+1, y, x)`` model softmax; its class boundaries
            become ridges the watershed prefers (``guidance_weight`` scales them).
        value_range: raw ``(low, high)`` mapped to [0, 1] (pass the volume's for MR;
            by default the slice's own percentiles).
        smoothing_px: Gaussian sigma applied before the Sobel gradient.

    A seeded watershed on the image gradient: strokes keep their labels; every
    other pixel gets the label of the seed it is flooded from.  (scikit-image's
    random walker took ~7 s for a 122x101 slice with 9 labels, far from the 1 s
    target, so it is not offered.)
    """
    from napari_medseg.preprocess import Preprocessing, guess_modality, normalize

    image = np.asarray(image)
    if image.ndim != 2 or np.shape(partial) != image.shape:
        raise ValueError(f"fill needs a 2D slice and strokes of the same shape, got {image.shape} and {np.shape(partial)}")
    partial = np.asarray(partial)
    labelled = partial != UNLABELLED
    if not labelled.any():
        raise ValueError("no strokes on this slice: paint at least one organ and one background stroke")
    if not (partial == BACKGROUND).any():
        warnings.warn("no background stroke on this slice: the fill will have no background",
                      ScribbleWarning, stacklevel=2)
    prep = Preprocessing(modality=modality or guess_modality(image))
    unit = normalize(image, prep, value_range)
    markers = np.where(labelled, partial.astype(np.int32) + 1, 0)  # watershed's 0 means "unseeded"
    filled = _watershed(unit, markers, probabilities, guidance_weight, smoothing_px)
    out = (filled - 1).astype(np.uint8)
    out[labelled] = partial[labelled]
    return out


def _watershed(unit: np.ndarray, markers: np.ndarray, probabilities, weight: float, sigma: float) -> np.ndarray:
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    elevation = sobel(ndimage.gaussian_filter(unit, sigma) if sigma > 0 else unit)
    if probabilities is not None:
        probabilities = np.asarray(probabilities, np.float32)
        if probabilities.ndim != 3 or probabilities.shape[1:] != unit.shape:
            raise ValueError(f"probabilities must be (K+1, {unit.shape[0]}, {unit.shape[1]}), "
                             f"got {probabilities.shape}")
        gy, gx = np.gradient(probabilities, axis=(1, 2))
        edges = np.sqrt((gy * gy + gx * gx).sum(axis=0))  # large where the model's classes change
        elevation = elevation / max(float(elevation.max()), 1e-6) + weight * edges / max(float(edges.max()), 1e-6)
    return watershed(elevation, markers)
