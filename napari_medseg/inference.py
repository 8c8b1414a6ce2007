"""Slice-wise inference: a volume in, uint8 labels and float16 uncertainty out.

The engine is one generator, :func:`segment_volume`, driven the same way by
the Segment dock widget (inside a ``thread_worker``), ``medseg segment``
(with tqdm) and the tests (directly)::

    gen = segment_volume(array, [(model, info)], device="auto")
    for progress in gen:          # Progress(done, total, slices_per_s, device)
        ...                       # close() the generator to cancel
    # the result is the generator's return value; run_segmentation() unwraps it

How a slice is processed (per checkpoint, see ``napari_medseg.preprocess``):

1. raw values -> float32 [0, 1] with the checkpoint's ``Preprocessing``
   (CT: HU window, default [-125, 275]; MR: percentiles of the *whole volume*,
   computed once);
2. brought to model size by the checkpoint's ``resize_policy``: ``"fixed"``
   resizes bilinearly to ``input_size`` (the papers' 224), ``"native"``
   zero-pads to the model's size multiple, ``"spacing"`` resamples to
   ``target_spacing`` mm pixels (needs the volume's ``spacing``) and pads;
3. logits are brought back to the native in-plane size (bilinear resize,
   crop, or crop + resample) *before* the softmax/argmax, never the label map;
4. softmax probabilities are averaged over flip TTA and over the checkpoints
   of an ensemble, then across neighbouring slices (a Gaussian of
   ``z_sigma_mm`` mm, locked slices entering one-hot: ``napari_medseg.zsmooth``);
   argmax gives the labels;
5. each organ of a built-in label set keeps only its largest 3D connected
   piece (``napari_medseg.postprocess``; ``largest_component=False`` keeps
   every island).  Locked slices, and pieces that touch them, are never changed.

Memory stays bounded: only one batch of ``(B, K, H, W)`` probabilities, and
the few neighbouring slices the smoothing across slices needs, exist at a
time.  The volume-sized outputs are ``labels`` (uint8) and ``uncertainty``
(float16, the normalised softmax entropy ``-sum p log p / log K`` in [0, 1]:
0 = certain, 1 = uniform).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from napari_medseg.labels import LabelSet
from napari_medseg.models.modes import restore_modes, training_modes
from napari_medseg.preprocess import (
    inplane_spacing,
    intensity_range,
    logits_to_native,
    normalize,
    to_model_size,
)
from napari_medseg.progress import drive
from napari_medseg.zsmooth import Z_SIGMA_MM, ZSmoother, slice_thickness, z_weights

#: flips used by test-time augmentation: tensor dims of (B, K, H, W) to flip
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` slices, speed, and the device used."""

    done: int
    total: int
    slices_per_s: float
    device: str


@dataclass
class SegmentationResult:
    """What :func:`segment_volume` returns.

    Attributes:
        labels: uint8 ``(z, y, x)``; locked slices copied from ``previous``.
        uncertainty: float16 ``(z, y, x)`` normalised entropy in [0, 1]
            (0 on locked slices), or ``None`` when not asked for.
        label_set: the checkpoints' shared label set.
        device: device string, e.g. ``"cpu"`` or ``"cuda:0"``.
        precision: ``"fp32" | "bf16" | "fp16"``.
        seconds: wall time of the run.
        segmented: indices of the slices that were (re)computed.
        islands_removed: voxels set to background per organ value by the
            largest-component post-processing (empty when it did not run).
    """

    labels: np.ndarray
    uncertainty: np.ndarray | None
    label_set: LabelSet
    device: str
    precision: str
    seconds: float
    segmented: list[int] = field(default_factory=list)
    islands_removed: dict[int, int] = field(default_factory=dict)

    @property
    def slices_per_s(self) -> float:
        return len(self.segmented) / self.seconds if self.seconds > 0 else float("inf")


def validate_volume(array) -> np.ndarray:
    """Check that ``array`` is a non-empty, finite 3D ``(z, y, x)`` volume; return it as ndarray."""
    array = np.asarray(array)
    if array.ndim == 2:
        raise ValueError(
            f"image is a single 2D slice {array.shape}; segmentation needs a (z, y, x) volume "
            "(pass array[None] to segment one slice)"
        )
    if array.ndim == 4:
        raise ValueError(
            f"image is 4D {array.shape}; pick one time frame (t) and segment that (z, y, x) volume"
        )
    if array.ndim != 3:
        raise ValueError(f"image must be a 3D (z, y, x) volume, got {array.ndim}D with shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise ValueError(f"image must hold real numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        step = max(1, (1 << 22) // max(1, array[0].size))  # ~4M voxels per check, no volume-sized temp
        for start in range(0, array.shape[0], step):
            chunk = array[start : start + step]
            if not np.isfinite(chunk).all():
                bad = start + int(np.nonzero(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1))[0][0])
                raise ValueError(
                    f"image contains NaN or infinite values (first at slice {bad}); "
                    "fill or mask them before segmenting"
                )
    return array


def check_same_label_set(infos: Sequence) -> LabelSet:
    """The label set shared by all checkpoints; ``ValueError`` naming the culprits otherwise."""
    if not infos:
        raise ValueError("no checkpoint given; choose at least one model checkpoint")
    first = infos[0].label_set
    for info in infos[1:]:
        other = info.label_set
        if dict(other.names) != dict(first.names):
            raise ValueError(
                "an ensemble needs checkpoints with the same label set, but "
                f"{_ckpt_name(infos[0])} predicts {first.name!r} {list(first.organs.values())} and "
                f"{_ckpt_name(info)} predicts {other.name!r} {list(other.organs.values())}; "
                "drop one of them or fine-tune it to the same labels"
            )
    if first.num_classes > 256:
        raise ValueError(f"label set {first.name!r} has {first.num_classes} classes; uint8 labels hold at most 256")
    return first


def _check_flip_tta(checkpoints) -> None:
    """One-line error when a checkpoint was trained without flips (``checkpoint.flip_tta_refusal``)."""
    from napari_medseg.checkpoint import flip_tta_refusal

    for _, info in checkpoints:
        why = flip_tta_refusal(info)
        if why:
            raise ValueError(f"flip TTA: {_ckpt_name(info)} {why}, so flipped slices are new to it and its left "
                             "and right organs would trade places; segment without TTA (--tta / Flip TTA off)")


def _ckpt_name(info) -> str:
    path = getattr(info, "path", None)
    return f"'{getattr(path, 'name', path)}'" if path else f"model {getattr(info, 'model_name', '?')!r}"


def load_checkpoints(paths: Iterable, device="cpu") -> list:
    """Load checkpoints for :func:`segment_volume`; label sets are checked before any weights load.

    Returns:
        ``[(model, CheckpointInfo), ...]`` with models in eval mode on ``device``.
    """
    from napari_medseg.checkpoint import load_checkpoint, read_checkpoint_info

    paths = list(paths)
    check_same_label_set([read_checkpoint_info(p) for p in paths])
    loaded = []
    for p in paths:
        model, info = load_checkpoint(p, device=str(device))
        loaded.append((model.eval(), info))
    return loaded


def _prepare_batch(raw: np.ndarray, prep, value_range, multiple: int, device, channels_last: bool, spacing=None):
    """Raw slices ``(B, H, W)`` -> model input ``(B, 1, H', W')`` on ``device`` and its ResizeInfo.

    ``spacing``: in-plane ``(sy, sx)`` mm, used by the ``"spacing"`` policy.
    """
    import torch

    x = torch.from_numpy(normalize(raw, prep, value_range))[:, None]
    x = x.to(device, non_blocking=True)
    x, info = to_model_size(x, prep, multiple, spacing)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, info


def _predict_probs(models, raw: np.ndarray, ranges, device, precision: str, tta: bool, channels_last: bool,
                   spacing=None):
    """Mean softmax ``(B, K, H, W)`` float32 over checkpoints and flips, at native size."""
    import torch

    flips = TTA_FLIPS if tta else ((),)
    total = None
    count = 0
    with torch.inference_mode():
        for (model, info), value_range in zip(models, ranges):
            prep = info.preprocessing
            multiple = int(getattr(model, "size_multiple", 1))
            x, rinfo = _prepare_batch(raw, prep, value_range, multiple, device, channels_last, spacing)
            for dims in flips:
                probs = torch.softmax(native_logits(model, x, rinfo, device, precision, dims), dim=1)
                total = probs if total is None else total.add_(probs)
                count += 1
        total.div_(count)
    return total


def native_logits(model, x, resize_info, device, precision: str, flip_dims=()):
    """float32 logits ``(B, K, H, W)`` at native size for a model-size batch ``x`` ``(B, 1, h, w)``.

    ``resize_info``: what :func:`napari_medseg.preprocess.to_model_size` returned with ``x``;
    ``flip_dims``: test-time flip applied to the input and undone on the logits.
    The one forward path shared by inference and fine-tuning's validation Dice.
    """
    import torch

    from napari_medseg.device import autocast

    xin = torch.flip(x, flip_dims) if flip_dims else x
    with autocast(device, precision):
        logits = model(xin)
    logits = logits.float()
    if flip_dims:
        logits = torch.flip(logits, flip_dims)
    return logits_to_native(logits, resize_info)


def _labels_and_entropy(probs, want_uncertainty: bool):
    """``(B, K, H, W)`` probabilities -> uint8 labels and float16 normalised entropy ``(B, H, W)``."""
    import torch

    # max(dim).indices, not argmax(dim): same first-maximum rule, ~6x faster on CPU for (B, K, H, W)
    labels = probs.max(dim=1).indices.to(torch.uint8)
    if not want_uncertainty:
        return labels.cpu().numpy(), None
    k = probs.shape[1]
    ent = torch.special.entr(probs).sum(dim=1)  # -sum p log p, with 0 log 0 = 0
    ent = (ent / float(np.log(k))).clamp_(0.0, 1.0) if k > 1 else torch.zeros_like(ent)
    return labels.cpu().numpy(), ent.to(torch.float16).cpu().numpy()


def segment_volume(
    array,
    checkpoints: Sequence,
    *,
    device="auto",
    precision: str = "auto",
    batch_size: int = 8,
    tta: bool = False,
    locked: Iterable[int] = frozenset(),
    previous: np.ndarray | None = None,
    uncertainty: bool = True,
    channels_last: bool | None = None,
    spacing=None,
    largest_component: bool = True,
    z_sigma_mm: float | None = None,
    strokes: dict | None = None,
) -> Iterator[Progress]:
    """Segment a ``(z, y, x)`` volume slice by slice along axis 0 (axial).

    Args:
        array: raw voxel values (HU for CT), canonical ``(z, y, x)``.
        checkpoints: ``[(model, CheckpointInfo), ...]``; several = ensemble
            (averaged softmax; must share one label set, preprocessing and
            resize policy may differ).
        device: ``"auto"`` (cuda -> mps -> cpu), ``"cpu"``, ``"cuda"``, ... or a torch.device.
            Models are moved there (in place).
        precision: ``"auto" | "fp32" | "bf16" | "fp16"`` (see ``napari_medseg.device``).
        batch_size: slices per forward pass.
        tta: average over the 4 flips (none, left-right, up-down, both); refused (ValueError)
            for checkpoints trained without flips (``checkpoint.flip_tta_refusal``).
        locked: slice indices never overwritten: copied from ``previous``.
        previous: uint8-compatible ``(z, y, x)`` labels; needed when ``locked`` is not empty.
        uncertainty: also compute the float16 uncertainty map.
        channels_last: use channels_last memory format; ``None`` = only on CUDA
            (on CPU it was slower in bench/inference.py, see docs/inference.md).
        spacing: in-plane pixel size ``(sy, sx)`` in mm, or the volume's
            ``(sz, sy, sx)``; required (positive, finite) when a checkpoint
            uses the ``"spacing"`` resize policy, ignored by the others.
        largest_component: keep only the largest 3D piece of each organ of a
            built-in label set (``postprocess.one_piece_organs``); pieces touching
            a locked slice are kept.  For CT, organ voxels outside the trunk go first
            (``postprocess.trunk_mask``: an arm is no place for an organ).  Not applied
            to a single slice.
        z_sigma_mm: Gaussian sigma (mm) of the smoothing of probabilities across
            slices; ``None`` = ``zsmooth.Z_SIGMA_MM``, 0 = off.  Needs the slice
            thickness (``spacing`` as ``(sz, sy, sx)``); without it, no smoothing.
        strokes: ``{z: (H, W) uint8}`` partial labels (scribbles, 255 = not labelled) of
            slices being segmented: their stroked pixels keep the stroke's label (after
            the post-processing too) and count one-hot in the smoothing across slices.

    Yields:
        :class:`Progress` after each batch (and once before the first).

    Returns:
        :class:`SegmentationResult` (the generator's return value).
    """
    import torch

    from napari_medseg.device import pick_device, resolve_precision

    array = validate_volume(array)
    checkpoints = list(checkpoints)
    label_set = check_same_label_set([info for _, info in checkpoints])
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    depth = array.shape[0]
    locked = sorted({int(i) for i in locked})
    out_of_range = [i for i in locked if not 0 <= i < depth]
    if out_of_range:
        raise ValueError(f"locked slices {out_of_range} are outside the volume (0..{depth - 1})")
    if previous is not None:
        previous = np.asarray(previous)
        if previous.shape != array.shape:
            raise ValueError(f"previous labels have shape {previous.shape}, the image {array.shape}")
    elif locked:
        raise ValueError("locked slices need the previous labels to copy them from")

    dev = device if isinstance(device, torch.device) else pick_device(str(device))
    precision = resolve_precision(dev, precision, models=[m for m, _ in checkpoints])  # CPU auto: measured once
    if channels_last is None:
        channels_last = dev.type == "cuda"
    for model, info in checkpoints:
        n_out = getattr(model, "config", {}).get("num_classes") if isinstance(getattr(model, "config", None), dict) else None
        if n_out is not None and int(n_out) != label_set.num_classes:
            raise ValueError(
                f"{_ckpt_name(info)} has {n_out} output classes but its label set "
                f"{label_set.name!r} has {label_set.num_classes}"
            )
    for _, info in checkpoints:  # a spacing-aware checkpoint needs a usable spacing: fail before any work
        inplane_spacing(spacing, info.preprocessing)
    if tta:
        _check_flip_tta(checkpoints)
    # MR percentiles come from the whole volume, once per checkpoint preprocessing
    ranges = [intensity_range(array, info.preprocessing) for _, info in checkpoints]

    labels = np.zeros(array.shape, np.uint8)
    unc = np.zeros(array.shape, np.float16) if uncertainty else None
    if locked:
        labels[locked] = previous[locked].astype(np.uint8)
    locked_set = set(locked)
    todo = [i for i in range(depth) if i not in locked_set]
    sigma = Z_SIGMA_MM if z_sigma_mm is None else float(z_sigma_mm)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"the smoothing across slices must be a finite sigma >= 0 mm (0 = off), got {z_sigma_mm}")
    strokes = {int(z): np.asarray(v) for z, v in (strokes or {}).items() if int(z) not in locked_set}
    bad = [z for z, v in strokes.items() if not 0 <= z < depth or v.shape != array.shape[1:]]
    if bad:
        raise ValueError(f"strokes for slices {bad} are outside the volume or not {array.shape[1:]} slices")
    smoother = ZSmoother(depth, todo, z_weights(slice_thickness(spacing), sigma),
                         anchors={z: previous[z] for z in locked}, strokes=strokes)

    was_training = [training_modes(m) for m, _ in checkpoints]
    for model, _ in checkpoints:
        model.to(dev)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        model.eval()
    dev_name = str(dev)
    start = time.perf_counter()
    try:
        yield Progress(0, len(todo), 0.0, dev_name)
        for b in range(0, len(todo), batch_size):
            idx = todo[b : b + batch_size]
            contiguous = idx[-1] - idx[0] == len(idx) - 1
            raw = array[idx[0] : idx[-1] + 1] if contiguous else array[idx]
            probs = _predict_probs(checkpoints, raw, ranges, dev, precision, tta, channels_last, spacing)
            for ready, smoothed in smoother.add(idx, probs):
                labels[ready], ent = _labels_and_entropy(smoothed, uncertainty)
                if unc is not None:
                    unc[ready] = ent
            del probs
            done = b + len(idx)
            elapsed = time.perf_counter() - start
            yield Progress(done, len(todo), done / elapsed if elapsed > 0 else 0.0, dev_name)
    finally:
        for (model, _), modes in zip(checkpoints, was_training):
            restore_modes(model, modes)
    removed = {}
    if largest_component and depth > 1 and todo:
        from napari_medseg.postprocess import largest_component_only, one_piece_organs, trunk_mask

        organs = one_piece_organs(label_set)
        ct = all(info.preprocessing.modality == "ct" for _, info in checkpoints)
        trunk = trunk_mask(array, spacing) if organs and ct and array.ndim == 3 else None
        labels, removed = largest_component_only(labels, organs, protected=locked, inside=trunk)
    for z, stroke in strokes.items():  # the user's strokes hold, even where they make an island
        stroked = (stroke != 255) & (stroke < label_set.num_classes)
        labels[z][stroked] = stroke[stroked]
    return SegmentationResult(
        labels=labels,
        uncertainty=unc,
        label_set=label_set,
        device=dev_name,
        precision=precision,
        seconds=time.perf_counter() - start,
        segmented=todo,
        islands_removed=removed,
    )


def run_segmentation(gen, callback=None) -> SegmentationResult:
    """Drive a :func:`segment_volume` generator to the end; ``callback(progress)`` per report."""
    return drive(gen, callback)
