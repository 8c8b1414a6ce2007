"""A local store of the slices users corrected, so fine-tuning accumulates across patients.

Every fine-tune adds one *entry*: the corrected axial slices of one volume
(raw intensities and labels), their indices, the voxel spacing, where they
came from and which checkpoint version they trained.  The next fine-tune, on
another patient, replays earlier entries alongside the new slices.

Layout (no pickles anywhere)::

    <root>/<entry id>/slices.npz   images (n, H, W) float32 raw values, labels (n, H, W) uint8
    <root>/<entry id>/meta.json    indices, spacing, source, checkpoint, label set, preprocessing, date

The default root is ``corrections`` in :func:`napari_medseg.userdirs.data_dir`
(``$MEDSEG_DATA_DIR``, else ``~/.local/share/napari-medseg`` on Linux).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_medseg.userdirs import data_dir


@dataclass(frozen=True)
class Entry:
    """One stored set of corrected slices (metadata only; see :meth:`CorrectionStore.load`)."""

    id: str
    path: Path
    source: str
    slice_indices: list[int]
    spacing: tuple[float, float, float]
    label_set: dict
    checkpoint: str | None
    created: str
    modality: str | None

    @property
    def num_slices(self) -> int:
        return len(self.slice_indices)


class CorrectionStore:
    """Corrected slices on disk.

    Args:
        root: folder holding one sub-folder per entry (created on first write).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else data_dir() / "corrections"

    def add(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        slice_indices,
        *,
        spacing,
        source: str,
        label_set: dict,
        checkpoint: str | None = None,
        modality: str | None = None,
    ) -> Entry:
        """Store corrected slices of one volume.

        Args:
            images: ``(n, H, W)`` raw intensities (HU for CT).
            labels: ``(n, H, W)`` integer labels, the user's corrected truth.
            slice_indices: the ``n`` axial indices (inferior to superior).
            spacing: ``(sz, sy, sx)`` mm.
            source: identity of the image (path and/or content hash).
            label_set: ``LabelSet.to_dict()``.
            checkpoint: sha256 / path of the checkpoint version trained on them.
        """
        images = np.asarray(images, dtype=np.float32)
        labels = np.asarray(labels)
        indices = [int(i) for i in slice_indices]
        if images.ndim != 3 or images.shape != labels.shape or len(indices) != images.shape[0]:
            raise ValueError(
                f"need images and labels of shape (n, H, W) and n indices; got {images.shape}, "
                f"{labels.shape} and {len(indices)} indices"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("labels must lie in 0..255")
        if not np.isfinite(images).all():
            raise ValueError("image slices contain NaN or infinite values")
        entry_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f-") + uuid.uuid4().hex[:4]  # sorts by creation time
        meta = {
            "id": entry_id,
            "source": str(source),
            "slice_indices": indices,
            "spacing": [float(s) for s in spacing],
            "label_set": label_set,
            "checkpoint": checkpoint,
            "modality": modality,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        np.savez_compressed(staging / "slices.npz", images=images, labels=labels.astype(np.uint8))
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        final = self.root / entry_id
        os.replace(staging, final)  # an entry appears whole or not at all
        return self._entry(final)

    def entries(self, label_set_name: str | None = None) -> list[Entry]:
        """All entries, oldest first (optionally only those of one label set)."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / "meta.json").is_file():
                continue
            entry = self._entry(folder)
            if label_set_name is None or entry.label_set.get("name") == label_set_name:
                found.append(entry)
        return found

    def load(self, entry: Entry | str) -> tuple[np.ndarray, np.ndarray]:
        """``(images (n, H, W) float32, labels (n, H, W) uint8)`` of one entry."""
        folder = entry.path if isinstance(entry, Entry) else self.root / entry
        with np.load(folder / "slices.npz", allow_pickle=False) as data:
            return data["images"], data["labels"]

    def replay(self, label_set_name: str, exclude_source: str | None = None):
        """Earlier corrections for fine-tuning: a list of ``(images, labels, Entry)``."""
        return [
            (*self.load(e), e)
            for e in self.entries(label_set_name)
            if exclude_source is None or e.source != exclude_source
        ]

    def prune(self, *, ids=None, source: str | None = None, keep_last: int | None = None) -> list[str]:
        """Delete entries by id, by source, or all but the newest ``keep_last``; returns deleted ids."""
        entries = self.entries()
        doomed = []
        if ids is not None:
            doomed += [e for e in entries if e.id in set(ids)]
        if source is not None:
            doomed += [e for e in entries if e.source == source]
        if keep_last is not None:
            doomed += entries[: max(0, len(entries) - keep_last)]
        removed = []
        for e in {e.id: e for e in doomed}.values():
            shutil.rmtree(e.path)
            removed.append(e.id)
        return sorted(removed)

    def export_nnunet(self, out_dir: str | os.PathLike, label_set_name: str) -> Path:
        """Write entries as an nnU-Net-style 2D dataset (one case per slice).

        Each slice becomes ``imagesTr/<case>_0000.nii.gz`` and
        ``labelsTr/<case>.nii.gz`` of shape ``(x, y, 1)`` with its in-plane
        spacing, plus ``dataset.json`` with label names.  Refuses a non-empty
        ``out_dir``.
        """
        import nibabel as nib

        out = Path(out_dir)
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty; choose a new folder for the export")
        entries = self.entries(label_set_name)
        if not entries:
            raise ValueError(f"no stored corrections with label set {label_set_name!r}")
        (out / "imagesTr").mkdir(parents=True, exist_ok=True)
        (out / "labelsTr").mkdir(parents=True, exist_ok=True)
        cases = 0
        for entry in entries:
            images, labels = self.load(entry)
            _, sy, sx = entry.spacing
            # canonical (y, x) rows/cols are LPS-aligned; write an LPS->RAS affine (flip x and y)
            affine = np.diag([-sx, -sy, entry.spacing[0], 1.0])
            for image, label, z in zip(images, labels, entry.slice_indices):
                case = f"{entry.id}_z{z:03d}"
                nib.save(nib.Nifti1Image(image.T[:, :, None], affine), out / "imagesTr" / f"{case}_0000.nii.gz")
                nib.save(nib.Nifti1Image(label.T[:, :, None].astype(np.uint8), affine), out / "labelsTr" / f"{case}.nii.gz")
                cases += 1
        names = entries[0].label_set["names"]
        dataset = {
            "channel_names": {"0": "CT" if entries[0].modality == "ct" else "MRI"},
            "labels": {name: int(value) for value, name in names.items()},
            "numTraining": cases,
            "file_ending": ".nii.gz",
            "description": "corrections exported from napari-medseg (one 2D case per corrected slice)",
        }
        (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
        return out

    @staticmethod
    def _entry(folder: Path) -> Entry:
        meta = json.loads((folder / "meta.json").read_text())
        return Entry(
            id=meta["id"],
            path=folder,
            source=meta["source"],
            slice_indices=list(meta["slice_indices"]),
            spacing=tuple(meta["spacing"]),
            label_set=meta["label_set"],
            checkpoint=meta.get("checkpoint"),
            created=meta["created"],
            modality=meta.get("modality"),
        )
