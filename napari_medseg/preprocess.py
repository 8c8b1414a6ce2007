"""Intensity normalisation and the resize policy, shared by inference and training.

Everything a model sees goes through this module, so a checkpoint's
``preprocessing`` metadata fully determines what a slice looks like to the
model, in the GUI, the CLI and the training datasets alike.

Resize policy (a documented choice, stored in every checkpoint):

* ``"fixed"``: every slice is resized (bilinear) to ``input_size`` x
  ``input_size`` (the papers' 224).  Logits are resized back to the native
  in-plane size *before* the argmax.
* ``"native"``: slices keep their native resolution and are zero-padded
  (after normalisation, so padding is "air"/darkest) up to the next size the
  model accepts (a multiple of 14 for U-DFA, 32 for DCAU-Net).  Logits are
  cropped back.  Small images and fine-tuning on a few slices do better here.
* ``"spacing"``: every slice is resampled (bilinear, antialiased when
  shrinking, after normalisation) to square pixels of ``target_spacing`` mm,
  then zero-padded like ``"native"``.  Logits are cropped and resampled back
  to the native grid before the argmax.  Organs then have the same size in
  pixels whatever the scan's resolution; it needs the slice's in-plane
  spacing ``(sy, sx)`` in mm (non-square pixels are fine).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

CT_WINDOW = (-125.0, 275.0)  # TransUNet's Synapse preprocessing (HU)
MR_PERCENTILES = (0.5, 99.5)
RESIZE_POLICIES = ("fixed", "native", "spacing")
#: In-plane pixel size (mm) of the ``"spacing"`` policy for new models: at equal fine-tuning
#: steps 3 mm beat 1.5 and 2 mm and tied 4 mm (bench/spacing_target.py; docs/inference.md,
#: "Choosing the target spacing", which also says what that sweep cannot show).
DEFAULT_TARGET_SPACING = 3.0
#: Share of a shrunk label pixel's area that labelled pixels must cover for it to be labelled
#: (partial labels, :func:`shrink_labels`): a quarter keeps a 3 px stroke at 0.7 mm in every
#: 3 mm pixel it crosses, and leaves pixels that a stroke only grazes unlabelled.
MIN_LABELLED_SHARE = 0.25


@dataclass(frozen=True)
class Preprocessing:
    """How raw voxel values become model input.

    Args:
        modality: ``"ct"`` (clip to a HU window, scale to [0, 1]) or ``"mr"``
            (clip to volume percentiles, scale to [0, 1]).
        window: CT window ``(low, high)`` in HU.
        percentiles: MR percentiles ``(low, high)`` in percent.
        resize_policy: ``"fixed"``, ``"native"`` or ``"spacing"`` (see module docstring).
        input_size: side length in pixels for ``"fixed"``; ignored otherwise.
        target_spacing: in-plane pixel size in mm for ``"spacing"`` (required
            there, ``None`` for the other policies).
    """

    modality: str = "ct"
    window: tuple[float, float] = CT_WINDOW
    percentiles: tuple[float, float] = MR_PERCENTILES
    resize_policy: str = "fixed"
    input_size: int = 224
    target_spacing: float | None = None

    def __post_init__(self):
        if self.modality not in ("ct", "mr"):
            raise ValueError(f"modality must be 'ct' or 'mr', got {self.modality!r}")
        if self.resize_policy not in RESIZE_POLICIES:
            raise ValueError(f"resize_policy must be one of {RESIZE_POLICIES}, got {self.resize_policy!r}")
        if self.resize_policy == "spacing":
            t = self.target_spacing
            if t is None or isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
                raise ValueError(
                    f"resize_policy 'spacing' needs target_spacing > 0 in mm (e.g. {DEFAULT_TARGET_SPACING}), got {t!r}"
                )
            object.__setattr__(self, "target_spacing", float(t))
        elif self.target_spacing is not None:
            raise ValueError(
                f"target_spacing is only used by resize_policy 'spacing', not {self.resize_policy!r}; drop it"
            )
        lo, hi = self.window
        if not hi > lo:
            raise ValueError(f"CT window must have high > low, got {self.window}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window"] = list(self.window)
        d["percentiles"] = list(self.percentiles)
        if self.target_spacing is None:
            del d["target_spacing"]  # "fixed"/"native" metadata stays as it was
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}")
        kwargs = dict(data)
        for key in ("window", "percentiles"):
            if key in kwargs:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        return cls(**kwargs)


#: HU thresholds of :func:`guess_modality`: air, and fat next to tissue or bone brighter than water.
AIR_HU, FAT_HU, DENSE_HU = -500.0, -50.0, 100.0


def guess_modality(array: np.ndarray) -> str:
    """``"ct"`` when values look like Hounsfield units, else ``"mr"``.

    CT: the 1st percentile is air (below -500 HU), or, for a CT cropped inside the body (no air), fat
    (below -50) while the 99th percentile is denser than water (above 100: enhanced organs, bone).
    MR magnitudes are not negative, and z-scored MR stays within a few units of 0. The sample CT
    cropped to the middle half of its body box has percentiles -400 / 289 and was guessed MR
    before the second rule (2026-12-07); TotalSegmentator's MR example has -2 / 658.
    """
    sample = np.asarray(array).ravel()
    if sample.size > 1_000_000:
        sample = sample[:: sample.size // 1_000_000]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise ValueError("image holds no finite values")
    low, high = np.percentile(finite, [1, 99])
    return "ct" if low < AIR_HU or (low < FAT_HU and high > DENSE_HU) else "mr"


def modality_mismatch(checkpoint_name: str, made_for: str | None, image_modality: str | None,
                      remedy: str = "start from scratch or from {an} {modality} checkpoint") -> str | None:
    """One line when a checkpoint made for one modality meets an image of another (None when they agree or
    either is unknown): its normalisation (a CT window, or MR percentiles) does not fit the image.
    ``remedy`` ends the line (``{modality}`` and ``{an}`` name the image's modality and its article)."""
    if not made_for or not image_modality or made_for == image_modality:
        return None
    modality = image_modality.upper()
    return (f"{checkpoint_name} was trained on {made_for.upper()} images and this image looks like {modality}: "
            f"it would be normalised as {made_for.upper()}, which loses most of its contrast; "
            + remedy.format(modality=modality, an="an" if modality[0] in "AEFHILMNORSX" else "a"))


def intensity_range(array: np.ndarray, prep: Preprocessing) -> tuple[float, float]:
    """The ``(low, high)`` raw values mapped to 0 and 1 for this volume."""
    if prep.modality == "ct":
        return float(prep.window[0]), float(prep.window[1])
    finite = np.asarray(array)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise ValueError("image holds no finite values")
    lo, hi = np.percentile(finite, prep.percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def normalize(array: np.ndarray, prep: Preprocessing, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map raw values to float32 in [0, 1].

    Args:
        array: any shape, raw voxel values (HU for CT).
        prep: the checkpoint's preprocessing.
        value_range: precomputed ``intensity_range`` (pass it when normalising a
            volume slice by slice, so MR percentiles come from the whole volume).

    Returns:
        float32 array of the same shape.  NaNs raise ``ValueError``.
    """
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values; fix or mask them before segmenting")
    lo, hi = value_range if value_range is not None else intensity_range(array, prep)
    out = (array.astype(np.float32) - lo) / (hi - lo)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def valid_size(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``size``."""
    return int(-(-size // multiple) * multiple)


def inplane_spacing(spacing: Sequence[float] | None, prep: Preprocessing | None = None) -> tuple[float, float] | None:
    """Validated in-plane pixel size ``(sy, sx)`` in mm, or ``None`` when ``prep`` does not need one.

    Args:
        spacing: ``(sy, sx)`` or a volume's ``(sz, sy, sx)`` (its last two are
            used), in mm; ``None`` when unknown.
        prep: the checkpoint's preprocessing; only ``"spacing"`` needs a spacing.
            Without ``prep`` the spacing is always required.

    Raises:
        ValueError: one line saying why, when the spacing is needed but
            missing, zero, negative or not finite.
    """
    if prep is not None and prep.resize_policy != "spacing":
        return None
    why = None
    if spacing is None:
        why = "it has none"
    else:
        try:
            values = [float(v) for v in spacing]
        except (TypeError, ValueError):
            values, why = [], f"{spacing!r} is not a list of numbers"
        if why is None and len(values) not in (2, 3):
            why = f"{tuple(values)} is neither (sy, sx) nor (sz, sy, sx)"
        elif why is None:
            values = values[-2:]
            if not all(math.isfinite(v) and v > 0 for v in values):
                why = f"its in-plane spacing (sy, sx) = {tuple(values)} mm is not positive and finite"
    if why is not None:
        target = f"{prep.target_spacing:g} mm" if prep is not None else "a fixed size in mm"
        raise ValueError(
            f"this checkpoint resamples slices to {target} pixels (resize policy 'spacing'), but the volume's "
            f"voxel spacing is unusable: {why}; open it from a file that records the voxel size "
            "(NIfTI, DICOM, NRRD, MHA) or pass the spacing in mm"
        )
    return values[0], values[1]


def resampled_hw(native_hw: tuple[int, int], spacing: tuple[float, float], target_spacing: float) -> tuple[int, int]:
    """Slice size in pixels after resampling ``(sy, sx)`` mm pixels to ``target_spacing`` mm (>= 1 each)."""
    return tuple(max(1, int(round(n * s / target_spacing))) for n, s in zip(native_hw, spacing))


@dataclass(frozen=True)
class ResizeInfo:
    """How a batch was brought to model size, so it can be undone.

    ``native_hw`` is the slice size before, ``model_hw`` after; ``resampled_hw``
    (``"spacing"`` only) the size after resampling and before padding.
    """

    native_hw: tuple[int, int]
    model_hw: tuple[int, int]
    policy: str
    resampled_hw: tuple[int, int] | None = None


def model_input_hw(
    native_hw: tuple[int, int], prep: Preprocessing, multiple: int, spacing: Sequence[float] | None = None
) -> tuple[int, int]:
    """The (H, W) the model sees for a native slice size under ``prep``.

    ``spacing``: in-plane ``(sy, sx)`` mm (or ``(sz, sy, sx)``), needed by ``"spacing"`` only.
    """
    if prep.resize_policy == "fixed":
        if prep.input_size % multiple:
            raise ValueError(
                f"input_size {prep.input_size} is not a multiple of {multiple}, which this model needs"
            )
        return prep.input_size, prep.input_size
    if prep.resize_policy == "spacing":
        native_hw = resampled_hw(native_hw, inplane_spacing(spacing, prep), prep.target_spacing)
    return valid_size(native_hw[0], multiple), valid_size(native_hw[1], multiple)


def to_model_size(batch, prep: Preprocessing, multiple: int, spacing: Sequence[float] | None = None):
    """Resize or pad a normalised batch for the model.

    Args:
        batch: torch tensor ``(B, C, H, W)`` float in [0, 1].
        prep: preprocessing (resize policy and size).
        multiple: the model's size multiple (14 or 32).
        spacing: in-plane pixel size ``(sy, sx)`` in mm (or a volume's
            ``(sz, sy, sx)``); required by ``"spacing"``, ignored otherwise.

    Returns:
        ``(tensor (B, C, H', W'), ResizeInfo)``.
    """
    import torch.nn.functional as F

    native = (int(batch.shape[-2]), int(batch.shape[-1]))
    if prep.resize_policy == "spacing":
        mid = resampled_hw(native, inplane_spacing(spacing, prep), prep.target_spacing)
        info = ResizeInfo(native, (valid_size(mid[0], multiple), valid_size(mid[1], multiple)), "spacing", mid)
        if mid != native:
            shrink = mid[0] < native[0] or mid[1] < native[1]
            batch = F.interpolate(batch, size=mid, mode="bilinear", align_corners=False, antialias=shrink)
        return _pad_to(batch, info.model_hw), info
    target = model_input_hw(native, prep, multiple)
    info = ResizeInfo(native, target, prep.resize_policy)
    if target == native:
        return batch, info
    if prep.resize_policy == "fixed":
        return F.interpolate(batch, size=target, mode="bilinear", align_corners=False), info
    return _pad_to(batch, target), info


def _pad_to(x, hw: tuple[int, int]):
    """Zero-pad the last two dims of ``x`` at the bottom/right up to ``hw``."""
    import torch.nn.functional as F

    pad_h, pad_w = hw[0] - x.shape[-2], hw[1] - x.shape[-1]
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def labels_to_model_size(labels, info: ResizeInfo):
    """Bring integer labels ``(B, H, W)`` to model size (nearest / zero pad)."""
    import torch.nn.functional as F

    if info.model_hw == info.native_hw:
        return labels
    if info.policy == "fixed":
        resized = F.interpolate(labels[:, None].float(), size=info.model_hw, mode="nearest")
        return resized[:, 0].to(labels.dtype)
    if info.policy == "spacing" and info.resampled_hw != info.native_hw:
        if all(r <= n for r, n in zip(info.resampled_hw, info.native_hw)):
            labels = shrink_labels(labels, info.resampled_hw)
        else:  # nearest-exact: pixel centres line up with the bilinear (align_corners=False) image
            resized = F.interpolate(labels[:, None].float(), size=info.resampled_hw, mode="nearest-exact")
            labels = resized[:, 0].to(labels.dtype)
    return _pad_to(labels, info.model_hw)


def shrink_labels(labels, hw: tuple[int, int], *, ignore: int = 255, min_labelled: float = MIN_LABELLED_SHARE):
    """Integer labels ``(B, H, W)`` -> ``(B, h, w)`` (h <= H, w <= W): each output pixel takes the
    labelled value covering most of its area (one-hot, area average, argmax; ties -> the lower value).

    Nearest sampling keeps 1 of every ~14 pixels going from 0.8 to 3 mm, so an organ's border
    moved by the pixel it happened to hit; the area's majority is what the image pixel shows.

    ``ignore`` (255, "not labelled" in partial labels) does not vote: an output pixel is
    ``ignore`` only when labelled pixels cover less than ``min_labelled`` of its area.  A
    3 px scribble stroke at 0.7 mm is a fifth to two thirds of a 3 mm pixel; by plain
    majority it would vanish, and the user's strokes with it.
    """
    import torch
    import torch.nn.functional as F

    values = torch.unique(labels)
    onehot = (labels[:, None] == values[None, :, None, None]).float()  # (B, V, H, W)
    share = F.interpolate(onehot, size=tuple(hw), mode="area")
    is_ignore = values == ignore
    if not bool(is_ignore.any()):
        return values[share.argmax(1)].to(labels.dtype)
    unlabelled = share[:, is_ignore].sum(1)
    share[:, is_ignore] = -1.0
    out = values[share.argmax(1)]
    return torch.where(unlabelled > 1.0 - min_labelled, torch.as_tensor(ignore, dtype=out.dtype), out).to(labels.dtype)


def logits_to_native(logits, info: ResizeInfo):
    """Undo :func:`to_model_size` on logits ``(B, K, H', W')`` -> ``(B, K, H, W)``.

    Logits (not labels) are interpolated, so the argmax happens at native
    resolution.
    """
    import torch.nn.functional as F

    if info.model_hw == info.native_hw:
        return logits
    if info.policy == "fixed":
        return F.interpolate(logits, size=info.native_hw, mode="bilinear", align_corners=False)
    if info.policy == "spacing":
        mid = info.resampled_hw
        logits = logits[..., : mid[0], : mid[1]]
        if mid == info.native_hw:
            return logits
        return F.interpolate(logits, size=info.native_hw, mode="bilinear", align_corners=False)
    return logits[..., : info.native_hw[0], : info.native_hw[1]]
