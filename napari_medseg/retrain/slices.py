"""Stacks of 2D slices prepared exactly as inference prepares them (Qt- and napari-free).

:class:`SliceDataset` holds normalised ``(H, W)`` image slices and integer label
slices; ``__getitem__`` applies :func:`~napari_medseg.preprocess.to_model_size` and
:func:`~napari_medseg.preprocess.labels_to_model_size`, the calls inference makes,
so a model sees the same pixels in training and in use.  :meth:`SliceDataset.from_raw`
normalises raw slices (HU for CT; MR by its volume's ``intensity_range``) first:
that is how fine-tuning builds its pool of corrected and replayed slices.
Each slice may carry its in-plane spacing ``(sy, sx)`` mm; the ``"spacing"``
resize policy resamples it to the checkpoint's ``target_spacing`` (and refuses,
in one line, a slice without a usable spacing).
Recipe datasets (``training.datasets``) reduce to this class too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_medseg.preprocess import Preprocessing, inplane_spacing, labels_to_model_size, normalize, to_model_size


class SliceDataset(Dataset):
    """2D slices ready for a model.

    Args:
        images: sequence of ``(H, W)`` float arrays normalised to [0, 1].
        labels: sequence of ``(H, W)`` integer arrays (values < ``num_classes``, or 255 =
            not labelled; resizing is nearest-neighbour, so 255 stays 255).
        preprocessing: resize policy / input size (intensities are already normalised).
        size_multiple: the model's size multiple (14 for U-DFA, 32 for DCAU-Net).
        names: optional name per slice (e.g. ``"case0005_slice042"``).
        spacings: in-plane pixel size in mm: one ``(sy, sx)`` (or a volume's ``(sz, sy, sx)``)
            for all slices, or one per slice (``None`` entries = unknown).  Needed by the
            ``"spacing"`` policy (checked here, one-line error), ignored by the others.

    Item: ``{"image": float32 (1, H', W'), "label": int64 (H', W'), "index": int}``.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        preprocessing: Preprocessing,
        size_multiple: int,
        names: Sequence[str] | None = None,
        spacings=None,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} image slices but {len(labels)} label slices")
        for i, (im, lab) in enumerate(zip(images, labels)):
            if im.ndim != 2 or im.shape != lab.shape:
                raise ValueError(f"slice {i}: image {im.shape} and labels {lab.shape} must be equal 2D shapes")
        self.images = list(images)
        self.labels = list(labels)
        self.preprocessing = preprocessing
        self.size_multiple = int(size_multiple)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.images))]
        self.spacings = per_slice_spacings(spacings, len(self.images), preprocessing)

    @classmethod
    def from_raw(cls, images, labels, preprocessing: Preprocessing, size_multiple: int, value_ranges=None, names=None,
                 spacings=None):
        """A dataset from raw ``(H, W)`` slices (HU for CT), normalised as inference does.

        Args:
            value_ranges: the ``intensity_range`` of each slice's whole volume (one
                ``(lo, hi)`` for all, or one per slice).  Needed for MR, where a single
                slice's percentiles differ from the volume's; ignored for CT.
        """
        images = [np.asarray(im) for im in images]
        if value_ranges is None:
            ranges = [None] * len(images)
        elif len(value_ranges) == 2 and np.isscalar(value_ranges[0]):
            ranges = [tuple(value_ranges)] * len(images)
        else:
            ranges = list(value_ranges)
            if len(ranges) != len(images):
                raise ValueError(f"{len(ranges)} value ranges for {len(images)} slices")
        normalised = [normalize(im, preprocessing, r) for im, r in zip(images, ranges)]
        return cls(normalised, [np.asarray(lab) for lab in labels], preprocessing, size_multiple, names, spacings)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index], dtype=np.float32))[None, None]
        label = torch.from_numpy(np.ascontiguousarray(self.labels[index]).astype(np.int64))[None]
        image, info = to_model_size(image, self.preprocessing, self.size_multiple, self.spacings[index])
        label = labels_to_model_size(label, info)
        return {"image": image[0], "label": label[0], "index": index}

    def max_label(self) -> int:
        """The largest label value, not counting 255 (not labelled, partial labels)."""
        from napari_medseg.scribbles import UNLABELLED

        return int(max((int(lab[lab != UNLABELLED].max()) for lab in self.labels if (lab != UNLABELLED).any()), default=0))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All slices stacked: ``(N, 1, H', W')`` float and ``(N, H', W')`` int64 (padded to a common size)."""
        batch = pad_collate([self[i] for i in range(len(self))])
        return batch["image"], batch["label"]


def per_slice_spacings(spacings, n: int, prep: Preprocessing) -> list:
    """``n`` in-plane spacings ``(sy, sx)`` (or ``None``) from one spacing for all or one per slice.

    Raises the one-line ``ValueError`` of :func:`inplane_spacing` when ``prep`` resamples
    by spacing and a slice has none (or an unusable one).
    """
    if spacings is None or (len(spacings) in (2, 3) and all(np.isscalar(v) for v in spacings)):
        spacings = [spacings] * n
    spacings = list(spacings)
    if len(spacings) != n:
        raise ValueError(f"{len(spacings)} spacings for {n} slices")
    if prep.resize_policy != "spacing":
        return [None if s is None else tuple(float(v) for v in s)[-2:] for s in spacings]
    return [inplane_spacing(s, prep) for s in spacings]


def pad_collate(items: list[dict]) -> dict:
    """Collate items of possibly different sizes by zero-padding to the largest (bottom/right).

    With the ``native`` policy every size is already a multiple of the model's,
    so the padded size is too.
    """
    h = max(it["image"].shape[-2] for it in items)
    w = max(it["image"].shape[-1] for it in items)
    images = torch.zeros(len(items), items[0]["image"].shape[0], h, w, dtype=items[0]["image"].dtype)
    labels = torch.zeros(len(items), h, w, dtype=torch.int64)
    for i, it in enumerate(items):
        ih, iw = it["image"].shape[-2:]
        images[i, :, :ih, :iw] = it["image"]
        labels[i, :ih, :iw] = it["label"]
    return {"image": images, "label": labels, "index": torch.tensor([it["index"] for it in items])}
