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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CT_WINDOW = (-125.0, 275.0)  # TransUNet's Synapse preprocessing (HU)
MR_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Preprocessing:
    """How raw voxel values become model input.

    Args:
        modality: ``"ct"`` (clip to a HU window, scale to [0, 1]) or ``"mr"``
            (clip to volume percentiles, scale to [0, 1]).
        window: CT window ``(low, high)`` in HU.
        percentiles: MR percentiles ``(low, high)`` in percent.
        resize_policy: ``"fixed"`` or ``"native"`` (see module docstring).
        input_size: side length in pixels for ``"fixed"``; ignored for ``"native"``.
    """

    modality: str = "ct"
    window: tuple[float, float] = CT_WINDOW
    percentiles: tuple[float, float] = MR_PERCENTILES
    resize_policy: str = "fixed"
    input_size: int = 224

    def __post_init__(self):
        if self.modality not in ("ct", "mr"):
            raise ValueError(f"modality must be 'ct' or 'mr', got {self.modality!r}")
        if self.resize_policy not in ("fixed", "native"):
            raise ValueError(f"resize_policy must be 'fixed' or 'native', got {self.resize_policy!r}")
        lo, hi = self.window
        if not hi > lo:
            raise ValueError(f"CT window must have high > low, got {self.window}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window"] = list(self.window)
        d["percentiles"] = list(self.percentiles)
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


def guess_modality(array: np.ndarray) -> str:
    """``"ct"`` when values look like Hounsfield units (air near -1000), else ``"mr"``."""
    sample = np.asarray(array).ravel()
    if sample.size > 1_000_000:
        sample = sample[:: sample.size // 1_000_000]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise ValueError("image holds no finite values")
    low = np.percentile(finite, 1)
    return "ct" if low < -500 else "mr"


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


@dataclass(frozen=True)
class ResizeInfo:
    """How a batch was brought to model size, so it can be undone.

    ``native_hw`` is the slice size before, ``model_hw`` after.
    """

    native_hw: tuple[int, int]
    model_hw: tuple[int, int]
    policy: str


def model_input_hw(native_hw: tuple[int, int], prep: Preprocessing, multiple: int) -> tuple[int, int]:
    """The (H, W) the model sees for a native slice size under ``prep``."""
    if prep.resize_policy == "fixed":
        if prep.input_size % multiple:
            raise ValueError(
                f"input_size {prep.input_size} is not a multiple of {multiple}, which this model needs"
            )
        return prep.input_size, prep.input_size
    return valid_size(native_hw[0], multiple), valid_size(native_hw[1], multiple)


def to_model_size(batch, prep: Preprocessing, multiple: int):
    """Resize or pad a normalised batch for the model.

    Args:
        batch: torch tensor ``(B, C, H, W)`` float in [0, 1].
        prep: preprocessing (resize policy and size).
        multiple: the model's size multiple (14 or 32).

    Returns:
        ``(tensor (B, C, H', W'), ResizeInfo)``.
    """
    import torch.nn.functional as F

    native = (int(batch.shape[-2]), int(batch.shape[-1]))
    target = model_input_hw(native, prep, multiple)
    info = ResizeInfo(native, target, prep.resize_policy)
    if target == native:
        return batch, info
    if prep.resize_policy == "fixed":
        return F.interpolate(batch, size=target, mode="bilinear", align_corners=False), info
    pad_h, pad_w = target[0] - native[0], target[1] - native[1]
    return F.pad(batch, (0, pad_w, 0, pad_h)), info


def labels_to_model_size(labels, info: ResizeInfo):
    """Bring integer labels ``(B, H, W)`` to model size (nearest / zero pad)."""
    import torch.nn.functional as F

    if info.model_hw == info.native_hw:
        return labels
    if info.policy == "fixed":
        resized = F.interpolate(labels[:, None].float(), size=info.model_hw, mode="nearest")
        return resized[:, 0].to(labels.dtype)
    pad_h = info.model_hw[0] - info.native_hw[0]
    pad_w = info.model_hw[1] - info.native_hw[1]
    return F.pad(labels, (0, pad_w, 0, pad_h))


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
    return logits[..., : info.native_hw[0], : info.native_hw[1]]
