"""A local store of the slices users corrected, so fine-tuning accumulates across patients.

Every fine-tune adds one *entry*: the corrected axial slices of one volume
(raw intensities and labels), their indices, the voxel spacing, where they
came from and which checkpoint version they trained.  The next fine-tune, on
another patient, replays earlier entries alongside the new slices.

Layout (no pickles anywhere)::

    <root>/<entry id>/slices.npz   images (n, H, W) float32 raw values, labels (n, H, W) uint8
                                   (255 = "not labelled", kept as is)
    <root>/<entry id>/meta.json    indices, spacing, source, image_hash, checkpoint, label set,
                                   modality, date

**One entry per image and label set.**  ``image_hash`` is
:func:`napari_medseg.hashing.voxel_hash` of the whole volume; adding slices of
an image already in the store merges them into one new entry in which a newer
correction of a slice replaces the older one, so re-running fine-tuning on the
same volume never duplicates slices.

**Replay** (:meth:`CorrectionStore.plan_replay`) uses only entries of the same
label set (name and names) and modality, from other images.

**Damage** (a bad ``meta.json``, a corrupt or missing ``slices.npz``) is named
and skipped with a :class:`StoreWarning`; it never blocks the other entries
(list, prune, replay, export).  :meth:`CorrectionStore.check` reports it.

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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_medseg.userdirs import data_dir

#: Label value meaning "not labelled" (partial labels); stored and replayed as is.
UNLABELLED = 255


class StoreWarning(UserWarning):
    """A datastore entry is damaged and was skipped (the message names it)."""


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
    image_hash: str | None = None
    #: axial indices whose labels hold unlabelled pixels (scribbles); None: not recorded (entries before 2026-12-08)
    unlabelled_slices: list[int] | None = None

    @property
    def num_slices(self) -> int:
        return len(self.slice_indices)

    @property
    def patient(self) -> str:
        """What counts as one patient (image): its voxel hash, else its source."""
        return self.image_hash or self.source


@dataclass(frozen=True)
class Damaged:
    """An entry folder that cannot be used: ``path`` and a one-line ``reason`` naming the bad file."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass
class ReplayPlan:
    """Which entries a fine-tune replays, and why the others are not.

    Attributes:
        root: the store folder.
        entries: the entries to replay (same label set and modality, other images).
        skipped: ``{reason: number of entries}`` left out (``"other label set"``, ``"damaged"``, ...).
        partial_left_out: ``{entry id: slices}`` left out of the replay because they hold unlabelled
            pixels (:meth:`keep_fully_labelled`).
    """

    root: Path
    entries: list[Entry] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    partial_left_out: dict[str, int] = field(default_factory=dict)

    @property
    def slices(self) -> int:
        return sum(e.num_slices - self.partial_left_out.get(e.id, 0) for e in self.entries)

    @property
    def scribbled_left_out(self) -> int:
        """Slices left out of the replay because they hold unlabelled pixels."""
        return sum(self.partial_left_out.values())

    def _drop_emptied_entries(self) -> None:
        self.entries = [e for e in self.entries if e.num_slices > self.partial_left_out.get(e.id, 0)]

    def leave_out_recorded_partial(self) -> None:
        """Count the slices with unlabelled pixels that entries record in ``meta.json`` as left out, and drop
        the entries holding nothing else, before anything is loaded (:meth:`keep_fully_labelled` finds them
        in entries written before the record)."""
        for e in self.entries:
            partial = set(e.unlabelled_slices or ()) & set(e.slice_indices)
            if partial:
                self.partial_left_out[e.id] = len(partial)
        self._drop_emptied_entries()

    def keep_fully_labelled(self, loaded: list) -> list:
        """``loaded`` (:meth:`CorrectionStore.replay`'s ``(images, labels, Entry)`` list) without the slices
        that hold unlabelled pixels (255: scribbles, partial labels); entries left empty leave the plan.

        What the automatic replay plan does: replaying another patient's scribbles cost the current patient's
        Dice in 30 of 32 paired runs, whether its own slices were full or scribbled and whether it started from
        scratch or from the model of those scribbles (docs/retrain.md, "Replayed scribbles"); stored scribbles
        stay for export and for replay by id.
        """
        kept = []
        for images, labels, entry in loaded:
            full = ~(np.asarray(labels) == UNLABELLED).reshape(len(labels), -1).any(axis=1)
            if not full.all():
                self.partial_left_out[entry.id] = int((~full).sum())
            if full.any():
                kept.append((images[full], labels[full], entry))
        self._drop_emptied_entries()
        return kept

    @property
    def patients(self) -> int:
        return len({e.patient for e in self.entries})

    def counts(self) -> str:
        """``"12 slices of 3 patients"`` (singular for 1)."""
        slices, patients = self.slices, self.patients
        return f"{slices} slice{'' if slices == 1 else 's'} of {patients} patient{'' if patients == 1 else 's'}"

    def skipped_counts(self) -> str:
        """``"1 damaged, 2 other label set"``: the entries left out, by reason (empty when none)."""
        return ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))

    def describe(self) -> str:
        """One line: ``"store /path: replays 12 slices of 3 patients (skipped: 1 damaged)"``, and the scribbled
        slices left out."""
        text = f"store {self.root}: replays {self.counts()}"
        text += f" (skipped: {self.skipped_counts()})" if self.skipped else ""
        n = self.scribbled_left_out
        return text + (f"; left out {n} scribbled slice{'' if n == 1 else 's'} (replay uses fully labelled ones)"
                       if n else "")


def same_label_set(a: dict, b: dict) -> bool:
    """Same name and the same value -> name table (colours may differ)."""
    return a.get("name") == b.get("name") and {str(k): v for k, v in a.get("names", {}).items()} == {
        str(k): v for k, v in b.get("names", {}).items()}


class CorrectionStore:
    """Corrected slices on disk.

    Args:
        root: folder holding one sub-folder per entry (created on first write).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else data_dir() / "corrections"

    # ------------------------------------------------------------------ write
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
        image_hash: str | None = None,
    ) -> Entry:
        """Store corrected slices of one volume; returns the new entry.

        Args:
            images: ``(n, H, W)`` raw intensities (HU for CT).
            labels: ``(n, H, W)`` integer labels 0..255, the user's corrected truth (255 = not labelled).
            slice_indices: the ``n`` axial indices (inferior to superior), distinct.
            spacing: ``(sz, sy, sx)`` mm.
            source: where the image came from (path or name).
            label_set: ``LabelSet.to_dict()``.
            checkpoint: sha256 / path of the checkpoint version trained on them.
            image_hash: :func:`~napari_medseg.hashing.voxel_hash` of the whole volume.  With it,
                earlier entries of the same image and label set are merged into this one (these
                slices win) and then removed.
        """
        images = np.asarray(images, dtype=np.float32)
        labels = np.asarray(labels)
        indices = [int(i) for i in slice_indices]
        if images.ndim != 3 or images.shape != labels.shape or len(indices) != images.shape[0]:
            raise ValueError(
                f"need images and labels of shape (n, H, W) and n indices; got {images.shape}, "
                f"{labels.shape} and {len(indices)} indices"
            )
        if len(set(indices)) != len(indices):
            raise ValueError(f"slice indices must be distinct, got {indices}")
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("labels must lie in 0..255")
        if not np.isfinite(images).all():
            raise ValueError("image slices contain NaN or infinite values")
        labels = labels.astype(np.uint8)
        older = [e for e in self.scan()[0] if e.image_hash == image_hash  # damaged ones: named by entries()/replay
                 and same_label_set(e.label_set, label_set)] if image_hash else []
        images, labels, indices = self._merge(older, images, labels, indices)
        entry_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f-") + uuid.uuid4().hex[:4]  # sorts by creation time
        meta = {
            "id": entry_id,
            "source": str(source),
            "image_hash": image_hash,
            "slice_indices": indices,
            "spacing": [float(s) for s in spacing],
            "label_set": label_set,
            "checkpoint": checkpoint,
            "modality": modality,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "unlabelled_slices": [z for z, lab in zip(indices, labels) if (lab == UNLABELLED).any()],
        }
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        np.savez_compressed(staging / "slices.npz", images=images, labels=labels)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        final = self.root / entry_id
        os.replace(staging, final)  # an entry appears whole or not at all
        for e in older:  # a crash before this leaves a superseded copy that plan_replay ignores
            shutil.rmtree(e.path, ignore_errors=True)
        return self._entry(final)

    def _merge(self, older: list[Entry], images, labels, indices):
        """``(images, labels, indices)`` of ``older`` entries' slices plus the new ones (the new win), sorted."""
        by_slice = {}
        for e in older:
            try:
                old_images, old_labels = self.load(e)
            except ValueError as err:
                warnings.warn(f"{err}; its slices are not merged", StoreWarning, stacklevel=3)
                continue
            if old_images.shape[1:] != images.shape[1:]:
                continue
            by_slice.update({z: (im, lab) for z, im, lab in zip(e.slice_indices, old_images, old_labels)})
        by_slice.update({z: (im, lab) for z, im, lab in zip(indices, images, labels)})
        order = sorted(by_slice)
        return (np.stack([by_slice[z][0] for z in order]), np.stack([by_slice[z][1] for z in order]), order)

    # ------------------------------------------------------------------- read
    def scan(self) -> tuple[list[Entry], list[Damaged]]:
        """``(entries oldest first, damaged folders)``; reads only the ``meta.json`` files."""
        if not self.root.is_dir():
            return [], []
        entries, damaged = [], []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                entries.append(self._entry(folder))
            except ValueError as err:
                damaged.append(Damaged(folder, str(err)))
        return entries, damaged

    def entries(self, label_set_name: str | None = None) -> list[Entry]:
        """Usable entries, oldest first (optionally only one label set); warns about each damaged one."""
        entries, damaged = self.scan()
        for d in damaged:
            warnings.warn(f"skipped damaged datastore entry {d}", StoreWarning, stacklevel=2)
        return [e for e in entries if label_set_name is None or e.label_set.get("name") == label_set_name]

    def check(self) -> list[Damaged]:
        """Every damaged entry, reading each ``slices.npz`` in full (``medseg datastore check``)."""
        entries, damaged = self.scan()
        for e in entries:
            try:
                self.load(e)
            except ValueError as err:
                damaged.append(Damaged(e.path, str(err)))
        return sorted(damaged, key=lambda d: d.path.name)

    def load(self, entry: Entry | str) -> tuple[np.ndarray, np.ndarray]:
        """``(images (n, H, W) float32, labels (n, H, W) uint8)`` of one entry.

        Raises a one-line ``ValueError`` naming the file when it is missing or corrupt.
        """
        entry = entry if isinstance(entry, Entry) else self._entry(self.root / entry)
        path = entry.path / "slices.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                images, labels = data["images"], data["labels"]
        except FileNotFoundError:
            raise ValueError(f"{path}: missing slices.npz") from None
        except Exception as err:  # zipfile.BadZipFile, zlib.error, KeyError, OSError, ValueError...
            raise ValueError(f"{path}: corrupt slices.npz ({type(err).__name__}: {' '.join(str(err).split())})") from None
        n = entry.num_slices
        if images.ndim != 3 or images.shape != labels.shape or images.shape[0] != n or labels.dtype != np.uint8:
            raise ValueError(f"{path}: slices.npz holds images {images.shape} and labels {labels.shape} "
                             f"{labels.dtype}, meta.json names {n} slices of uint8 labels")
        return images, labels

    # ----------------------------------------------------------------- replay
    def plan_replay(self, label_set: dict, modality: str | None, *, exclude_hash: str | None = None,
                    exclude_source: str | None = None, ids=None) -> ReplayPlan:
        """The entries a fine-tune on another image replays.

        Args:
            label_set: ``LabelSet.to_dict()`` of the model; only entries with the same name and names.
            modality: ``"ct" | "mr"``; only entries of that modality.
            exclude_hash: the current image's voxel hash (its slices are trained on directly).
            exclude_source: the same for older entries stored without a hash (matched by source).
            ids: replay exactly these entries; one of another label set or modality, or an unknown
                id, is a one-line ``ValueError``.
        """
        entries, damaged = self.scan()
        plan = ReplayPlan(self.root)
        if damaged:
            plan.skipped["damaged"] = len(damaged)
            for d in damaged:
                warnings.warn(f"skipped damaged datastore entry {d}", StoreWarning, stacklevel=2)
        if ids is not None:
            return self._explicit_plan(plan, entries, list(ids), label_set, modality)
        eligible = []
        for e in entries:
            if not same_label_set(e.label_set, label_set):
                reason = "other label set"
            elif e.modality != modality:
                reason = "other modality"
            elif (exclude_hash and e.image_hash == exclude_hash) or (
                    exclude_source is not None and e.image_hash is None and e.source == exclude_source):
                reason = "of this image"
            else:
                eligible.append(e)
                continue
            plan.skipped[reason] = plan.skipped.get(reason, 0) + 1
        newest = {(e.patient, z): e.id for e in eligible for z in e.slice_indices}  # oldest first: newer wins
        keep = set(newest.values())
        if len(keep) < len(eligible):  # left over when a merge was interrupted
            plan.skipped["superseded"] = len(eligible) - len(keep)
        plan.entries = [e for e in entries if e.id in keep]
        plan.leave_out_recorded_partial()
        return plan

    @staticmethod
    def _explicit_plan(plan: ReplayPlan, entries: list[Entry], ids: list[str], label_set: dict, modality) -> ReplayPlan:
        by_id = {e.id: e for e in entries}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ValueError(f"no usable datastore entry {', '.join(unknown)} in {plan.root}; see: medseg datastore list")
        for i in ids:
            e = by_id[i]
            if not same_label_set(e.label_set, label_set):
                raise ValueError(f"datastore entry {i} has label set {e.label_set.get('name')!r}, the model "
                                 f"{label_set.get('name')!r}; replay only entries of the model's label set")
            if e.modality != modality:
                raise ValueError(f"datastore entry {i} is {e.modality or 'of unknown modality'}, the model is "
                                 f"{modality}; replay only entries of the model's modality")
        plan.entries = [by_id[i] for i in dict.fromkeys(ids)]
        return plan

    def replay(self, plan: ReplayPlan | str, exclude_source: str | None = None):
        """Slices to replay: a list of ``(images, labels, Entry)`` (labels keep 255 = not labelled).

        ``plan`` is a :class:`ReplayPlan`; a label set *name* is the older form (every entry of
        that label set from other sources, any modality).  A damaged ``slices.npz`` is skipped
        with a :class:`StoreWarning` naming it.
        """
        if isinstance(plan, str):
            plan = ReplayPlan(self.root, [e for e in self.entries(plan)
                                          if exclude_source is None or e.source != exclude_source])
        loaded = []
        for e in plan.entries:
            try:
                loaded.append((*self.load(e), e))
            except ValueError as err:
                warnings.warn(f"skipped damaged datastore entry {err}", StoreWarning, stacklevel=2)
        return loaded

    # ------------------------------------------------------------------ prune
    def prune(self, *, ids=None, source: str | None = None, keep_last: int | None = None) -> list[str]:
        """Delete entries by id, by source, or all but the newest ``keep_last`` (>= 1); returns deleted ids.

        ``ids`` may also name damaged entry folders (see :meth:`check`).
        """
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}; to delete entries name them by id")
        if source is not None and not str(source).strip():
            raise ValueError("source is empty; name the source image whose entries to delete")
        entries, damaged = self.scan()
        doomed = []
        if ids is not None:
            wanted = set(ids)
            doomed += [e.path for e in entries if e.id in wanted] + [d.path for d in damaged if d.path.name in wanted]
        if source is not None:
            doomed += [e.path for e in entries if e.source == source]
        if keep_last is not None:
            doomed += [e.path for e in entries[: max(0, len(entries) - keep_last)]]
        for d in damaged:
            if d.path not in doomed:
                warnings.warn(f"skipped damaged datastore entry {d} (delete it by its id)", StoreWarning, stacklevel=2)
        removed = []
        for path in dict.fromkeys(doomed):
            shutil.rmtree(path)
            removed.append(path.name)
        return sorted(removed)

    # ----------------------------------------------------------------- export
    def export_nnunet(self, out_dir: str | os.PathLike, label_set_name: str) -> Path:
        """Write entries as an nnU-Net-style 2D dataset (one case per slice).

        Each slice becomes ``imagesTr/<case>_0000.nii.gz`` and
        ``labelsTr/<case>.nii.gz`` of shape ``(x, y, 1)`` with its in-plane
        spacing, plus ``dataset.json`` with label names.  Pixels marked 255 (not
        labelled) become nnU-Net v2's ignore label: the highest value, named
        ``"ignore"``.  Refuses a file or a non-empty ``out_dir`` before writing
        anything; damaged entries are skipped with a :class:`StoreWarning`.
        """
        import nibabel as nib

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"{out} is a file; choose a new folder for the export")
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty; choose a new folder for the export")
        entries = self.entries(label_set_name)
        loaded = self.replay(ReplayPlan(self.root, entries))
        if not loaded:
            raise ValueError(f"no usable stored corrections with label set {label_set_name!r} in {self.root}")
        names = loaded[0][2].label_set["names"]
        ignore = max(int(v) for v in names) + 1
        has_ignore = any((labels == UNLABELLED).any() for _, labels, _ in loaded)
        (out / "imagesTr").mkdir(parents=True, exist_ok=True)
        (out / "labelsTr").mkdir(parents=True, exist_ok=True)
        cases = 0
        for images, labels, entry in loaded:
            _, sy, sx = entry.spacing
            # canonical (y, x) rows/cols are LPS-aligned; write an LPS->RAS affine (flip x and y)
            affine = np.diag([-sx, -sy, entry.spacing[0], 1.0])
            for image, label, z in zip(images, labels, entry.slice_indices):
                case = f"{entry.id}_z{z:03d}"
                label = np.where(label == UNLABELLED, ignore, label).astype(np.uint8)
                nib.save(nib.Nifti1Image(image.T[:, :, None], affine), out / "imagesTr" / f"{case}_0000.nii.gz")
                nib.save(nib.Nifti1Image(label.T[:, :, None], affine), out / "labelsTr" / f"{case}.nii.gz")
                cases += 1
        labels_json = {name: int(value) for value, name in names.items()}
        if has_ignore:
            labels_json["ignore"] = ignore  # nnU-Net v2: the ignore label is the highest value
        dataset = {
            "channel_names": {"0": "CT" if loaded[0][2].modality == "ct" else "MRI"},
            "labels": labels_json,
            "numTraining": cases,
            "file_ending": ".nii.gz",
            "description": "corrections exported from napari-medseg (one 2D case per corrected slice)",
        }
        (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
        return out

    @staticmethod
    def _entry(folder: Path) -> Entry:
        """The entry of ``folder``; a one-line ``ValueError`` naming ``meta.json`` when it is unusable."""
        path = folder / "meta.json"
        try:
            meta = json.loads(path.read_text())
            entry = Entry(
                id=str(meta["id"]),
                path=folder,
                source=str(meta["source"]),
                slice_indices=[int(z) for z in meta["slice_indices"]],
                spacing=tuple(float(s) for s in meta["spacing"]),
                label_set=dict(meta["label_set"]),
                checkpoint=meta.get("checkpoint"),
                created=str(meta["created"]),
                modality=meta.get("modality"),
                image_hash=meta.get("image_hash"),
                unlabelled_slices=None if meta.get("unlabelled_slices") is None else
                [int(z) for z in meta["unlabelled_slices"]],
            )
        except FileNotFoundError:
            raise ValueError(f"{path}: missing meta.json") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad meta.json ({type(err).__name__}: {' '.join(str(err).split())})") from None
        if len(entry.spacing) != 3 or not isinstance(entry.label_set.get("names"), dict):
            raise ValueError(f"{path}: bad meta.json (spacing needs 3 values and label_set a names table)")
        if not (folder / "slices.npz").is_file():
            raise ValueError(f"{folder / 'slices.npz'}: missing slices.npz")
        return entry
