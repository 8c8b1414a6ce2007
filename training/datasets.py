"""Training datasets: 2D slices prepared exactly as inference prepares them.

Every dataset reduces to a :class:`SliceDataset`: a list of 2D image slices
(already normalised to [0, 1] with :func:`napari_medseg.preprocess.normalize`,
or raw slices with the value range to normalise them by) and integer label
slices.  ``__getitem__`` then applies :func:`~napari_medseg.preprocess.to_model_size`
and :func:`~napari_medseg.preprocess.labels_to_model_size`, the same calls the
inference engine makes, so a model sees the same pixels in training and in use.

Supported layouts:

* :func:`synapse_npz_dataset` -- TransUNet's preprocessed Synapse release
  (``train_npz/*.npz`` slices with ``image``/``label``, ``lists/*.txt``).
  Those images are **already clipped to [-125, 275] HU and scaled to [0, 1]**;
  ``prenormalized=True`` (default) takes them as they are.  Set it to False
  only for npz files holding raw HU.  The npz slices keep TransUNet's in-plane
  orientation, which is not necessarily this package's canonical
  (radiological) one; ``inplane`` ("transpose", "flip_y", "flip_x", combined
  with "+") reorients them.  Prefer the nnU-Net layout built from the original
  NIfTI files when the model will segment NIfTI/DICOM volumes.
* :func:`read_synapse_h5_volume` -- ``test_vol_h5/*.npy.h5`` volumes (needs
  ``h5py``, an optional dependency).
* :func:`acdc_dataset` -- ACDC as distributed (``patientXXX/patientXXX_frameYY.nii.gz``
  and ``_gt``; ED/ES from ``Info.cfg``; the 4D cine is not used).  The
  split of the TransUNet / Swin-Unet line of work ships in ``training/lists/``
  (:func:`acdc_split`: ``train`` 70, ``val`` 10, ``test`` 20 patients).
* :func:`nnunet_dataset` -- ``imagesTr/*_0000.nii.gz``, ``labelsTr/*.nii.gz``
  and ``dataset.json`` (label names).

NIfTI volumes are read with :func:`napari_medseg.io.read_volume`, so they are
in the canonical ``(z, y, x)`` orientation.  Volumes are held in memory as
normalised float32 (a Synapse training set needs about 2 GB).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from napari_medseg.labels import LabelSet, get_label_set
from napari_medseg.preprocess import Preprocessing, intensity_range, normalize
from napari_medseg.retrain.slices import SliceDataset


def volume_slices(
    volumes: Iterable[tuple],
    preprocessing: Preprocessing,
    *,
    foreground_only: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list]:
    """Split raw ``(z, y, x)`` image/label volumes into normalised axial slices.

    Args:
        volumes: ``(name, raw_image, labels)`` or ``(name, raw_image, labels, spacing (sz, sy, sx) mm)``
            on the same grid.
        preprocessing: intensity normalisation (MR percentiles are per volume).
        foreground_only: keep only slices with at least one labelled pixel.

    Returns:
        ``(images, labels, names, spacings)``; image slices are views of one normalised
        float32 volume (no per-slice copies); ``spacings[i]`` is the volume's spacing (or ``None``).
    """
    images, labels, names, spacings = [], [], [], []
    for name, image, label, *rest in volumes:
        spacing = rest[0] if rest else None
        if image.shape != label.shape or image.ndim != 3:
            raise ValueError(f"{name}: image {image.shape} and labels {label.shape} must be equal 3D (z, y, x) shapes")
        norm = normalize(image, preprocessing, intensity_range(image, preprocessing))
        lab = np.asarray(label).astype(np.uint8 if label.max() < 256 else np.int64)
        for z in range(norm.shape[0]):
            if foreground_only and not lab[z].any():
                continue
            images.append(norm[z])
            labels.append(lab[z])
            names.append(f"{name}_slice{z:03d}")
            spacings.append(spacing)
    return images, labels, names, spacings


# ---------------------------------------------------------------- Synapse (TransUNet)


def _apply_inplane(array: np.ndarray, inplane: str | None) -> np.ndarray:
    if not inplane:
        return array
    for op in inplane.split("+"):
        if op == "transpose":
            array = np.swapaxes(array, -1, -2)
        elif op == "flip_y":
            array = array[..., ::-1, :]
        elif op == "flip_x":
            array = array[..., ::-1]
        else:
            raise ValueError(f"unknown in-plane operation {op!r}; use transpose, flip_y, flip_x joined by '+'")
    return np.ascontiguousarray(array)


def read_synapse_list(root: Path, list_name: str) -> list[str]:
    """Names in TransUNet's list file ``list_name`` (``lists/lists_Synapse/``, ``lists/`` or ``root``)."""
    for candidate in (root / "lists" / "lists_Synapse" / list_name, root / "lists" / list_name, root / list_name):
        if candidate.exists():
            return [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
    raise FileNotFoundError(
        f"list file {list_name!r} not found under {root}/lists/lists_Synapse, {root}/lists or {root}; "
        "the TransUNet layout has lists/lists_Synapse/train.txt and test_vol.txt"
    )


def synapse_npz_dataset(
    root: str | Path,
    preprocessing: Preprocessing,
    size_multiple: int,
    *,
    list_name: str = "train.txt",
    prenormalized: bool = True,
    inplane: str | None = None,
    spacing=None,
) -> SliceDataset:
    """TransUNet's Synapse training slices (``root/train_npz/<name>.npz``).

    Args:
        root: folder holding ``train_npz/`` and ``lists/``.
        preprocessing: resize policy; also the CT window when ``prenormalized`` is False.
        size_multiple: the model's size multiple.
        list_name: the list of slice names (``train.txt``); ``None`` takes every npz file.
        prenormalized: images are already in [0, 1] (TransUNet's release); when
            False they are raw HU and go through :func:`normalize`.
        inplane: optional reorientation (see module docstring).
        spacing: in-plane ``(sy, sx)`` mm of every slice.  The npz files carry none, so a
            ``"spacing"`` resize policy refuses them unless it is given (recipe ``data.spacing``);
            Synapse's in-plane spacing varies per case (0.54-0.98 mm): prefer the nnU-Net
            layout of the NIfTI originals, which keeps each case's spacing.
    """
    root = Path(root)
    folder = root / "train_npz"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found; expected TransUNet's layout with train_npz/*.npz")
    names = read_synapse_list(root, list_name) if list_name else sorted(p.stem for p in folder.glob("*.npz"))
    images, labels = [], []
    for name in names:
        path = folder / f"{name}.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path} is listed in {list_name} but missing")
        with np.load(path) as data:
            if "image" not in data or "label" not in data:
                raise ValueError(f"{path} must hold arrays 'image' and 'label', has {sorted(data.files)}")
            image, label = data["image"], data["label"]
        if prenormalized:
            if image.min() < -1e-3 or image.max() > 1 + 1e-3:
                raise ValueError(
                    f"{path} holds values in [{image.min():.1f}, {image.max():.1f}], not [0, 1]; "
                    "set prenormalized: false for raw HU slices"
                )
            image = np.clip(image.astype(np.float32), 0, 1)
        else:
            image = normalize(image, preprocessing)
        images.append(_apply_inplane(image, inplane))
        labels.append(_apply_inplane(label.astype(np.uint8), inplane))
    if preprocessing.resize_policy == "spacing" and spacing is None:
        raise ValueError(
            "TransUNet's Synapse npz slices carry no voxel spacing, but resize policy 'spacing' resamples by it; "
            "set data.spacing: [sy, sx] (mm) in the recipe, or use the nnU-Net layout of the NIfTI originals"
        )
    return SliceDataset(images, labels, preprocessing, size_multiple, names, spacing)


def read_synapse_h5_volume(path: str | Path, inplane: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One TransUNet test volume (``test_vol_h5/caseXXXX.npy.h5``): ``(image [0,1], labels)``, both ``(z, y, x)``.

    Raises ``ImportError`` with install advice when h5py is missing.
    """
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading TransUNet .npy.h5 volumes needs h5py, an optional dependency: pip install h5py"
        ) from None
    with h5py.File(path, "r") as f:
        image, label = f["image"][:], f["label"][:]
    return _apply_inplane(image.astype(np.float32), inplane), _apply_inplane(label.astype(np.uint8), inplane)


def synapse_test_volumes(root: str | Path, list_name: str = "test_vol.txt", inplane: str | None = None):
    """Yield ``(name, image, labels)`` for TransUNet's Synapse test volumes."""
    root = Path(root)
    for name in read_synapse_list(root, list_name):
        path = root / "test_vol_h5" / f"{name}.npy.h5"
        if not path.exists():
            raise FileNotFoundError(f"{path} is listed in {list_name} but missing")
        image, label = read_synapse_h5_volume(path, inplane)
        yield name, image, label


# ---------------------------------------------------------------- ACDC


def _read_info_cfg(path: Path) -> dict[str, str]:
    info = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def acdc_cases(root: str | Path, patients: Sequence[str] | None = None) -> list[tuple[str, Path, Path]]:
    """ED and ES ``(name, image_path, gt_path)`` of ACDC patients under ``root`` (recursive)."""
    root = Path(root)
    dirs = sorted(p for p in root.rglob("patient*") if p.is_dir() and re.fullmatch(r"patient\d+", p.name))
    if patients is not None:
        wanted = set(patients)
        absent = sorted(wanted - {d.name for d in dirs})
        if absent:
            raise FileNotFoundError(f"ACDC patients {', '.join(absent)} not found under {root}")
        dirs = [d for d in dirs if d.name in wanted]
    if not dirs:
        raise FileNotFoundError(f"no patientXXX folders under {root}; expected the ACDC challenge layout")
    cases = []
    for d in dirs:
        cfg = d / "Info.cfg"
        if not cfg.exists():
            raise FileNotFoundError(f"{cfg} missing; it names the ED and ES frames")
        info = _read_info_cfg(cfg)
        for phase in ("ED", "ES"):
            if phase not in info:
                raise ValueError(f"{cfg} has no {phase} entry")
            frame = int(info[phase])
            stem = f"{d.name}_frame{frame:02d}"
            image, gt = d / f"{stem}.nii.gz", d / f"{stem}_gt.nii.gz"
            for p in (image, gt):
                if not p.exists():
                    raise FileNotFoundError(f"{p} missing (ACDC {phase} frame {frame} of {d.name})")
            cases.append((f"{stem}", image, gt))
    return cases


def acdc_dataset(root, preprocessing: Preprocessing, size_multiple: int, *, patients=None) -> SliceDataset:
    """All ED/ES slices of the ACDC patients under ``root`` (MR normalisation per volume)."""
    return _nifti_pairs_dataset(acdc_cases(root, patients), preprocessing, size_multiple)


ACDC_SPLITS = ("train", "val", "test")


def acdc_split(split: str) -> list[str]:
    """Patient folder names of a shipped ACDC split (``training/lists/acdc_<split>.txt``).

    ``test``: the 20 patients of AgileFormer's ``lists/lists_ACDC/test.txt``
    (TransUNet / Swin-Unet line of work); ``val``: the 10 of its ``valid.txt``;
    ``train``: the other 70.
    """
    from importlib.resources import files

    if split not in ACDC_SPLITS:
        raise ValueError(f"unknown ACDC split {split!r}; shipped splits: {', '.join(ACDC_SPLITS)}")
    text = (files("training") / "lists" / f"acdc_{split}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def patient_names(spec) -> list[str] | None:
    """ACDC patient folder names from a shipped split (``"train"``, ``"val"``, ``"test"``),
    ``"1-70"``, ``[1, 2]`` or ``["patient001", ...]`` (``None`` stays ``None``)."""
    if spec is None:
        return None
    if isinstance(spec, str) and spec in ACDC_SPLITS:
        return acdc_split(spec)
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        names = []
        for part in parts:
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                names += [f"patient{i:03d}" for i in range(int(m.group(1)), int(m.group(2)) + 1)]
            else:
                names.append(part if part.startswith("patient") else f"patient{int(part):03d}")
        return names
    return [s if isinstance(s, str) else f"patient{int(s):03d}" for s in spec]


# ---------------------------------------------------------------- nnU-Net layout


@dataclass
class NnUNetFolder:
    """An nnU-Net-style dataset folder: cases and label names."""

    root: Path
    cases: list[tuple[str, Path, Path]]
    label_set: LabelSet


def read_nnunet_folder(root: str | Path) -> NnUNetFolder:
    """Parse ``dataset.json`` and pair ``imagesTr/<case>_0000.nii.gz`` with ``labelsTr/<case>.nii.gz``."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found; an nnU-Net folder needs dataset.json with 'labels'")
    meta = json.loads(meta_path.read_text())
    label_set = label_set_from_dataset_json(meta, name=root.name)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    cases = []
    for label_path in sorted(labels_dir.glob("*.nii*")):
        case = label_path.name.split(".nii")[0]
        matches = sorted(images_dir.glob(f"{case}_0000.nii*"))
        if not matches:
            raise FileNotFoundError(f"no image {images_dir}/{case}_0000.nii.gz for labels {label_path}")
        cases.append((case, matches[0], label_path))
    if not cases:
        raise FileNotFoundError(f"no label files in {labels_dir}")
    return NnUNetFolder(root, cases, label_set)


def label_set_from_dataset_json(meta: dict, name: str = "custom") -> LabelSet:
    """Label set from nnU-Net v2 (``{"background": 0, "liver": 1}``) or v1 (``{"0": "background"}``) labels."""
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ValueError("dataset.json must have a non-empty 'labels' mapping")
    first_key = next(iter(labels))
    if str(first_key).lstrip("-").isdigit():  # v1: value -> name
        names = {int(k): str(v) for k, v in labels.items()}
    else:  # v2: name -> value
        names = {}
        for k, v in labels.items():
            if not isinstance(v, int):
                raise ValueError(f"dataset.json label {k!r} has value {v!r}; region labels are not supported")
            names[int(v)] = str(k)
    if set(names) == set(get_label_set("synapse").names) and [names[i] for i in sorted(names)] == list(get_label_set("synapse").names.values()):
        return get_label_set("synapse")
    return LabelSet(name=str(meta.get("name", name)), names=names)


def nnunet_dataset(root, preprocessing: Preprocessing, size_multiple: int, *, cases: Sequence[str] | None = None) -> SliceDataset:
    """All axial slices of an nnU-Net-style folder (optionally a subset of case names)."""
    folder = read_nnunet_folder(root)
    pairs = folder.cases
    if cases is not None:
        wanted = set(cases)
        pairs = [c for c in pairs if c[0] in wanted]
    return _nifti_pairs_dataset(pairs, preprocessing, size_multiple)


def read_pair(image_path, label_path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Canonical ``(z, y, x)`` image and labels of one case, and spacing (mm)."""
    from napari_medseg.io import read_volume

    image = read_volume(image_path)
    label = read_volume(label_path)
    if image.array.ndim != 3:
        raise ValueError(f"{image_path} is not a 3D volume (shape {image.array.shape})")
    if image.array.shape != label.array.shape:
        raise ValueError(f"{image_path} {image.array.shape} and {label_path} {label.array.shape} differ in shape")
    labels = np.rint(label.array).astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"{label_path} holds negative labels")
    return image.array, labels, tuple(float(s) for s in image.geometry.spacing)


def _nifti_pairs_dataset(pairs, preprocessing, size_multiple) -> SliceDataset:
    def gen():
        for name, image_path, label_path in pairs:
            yield (name, *read_pair(image_path, label_path))

    images, labels, names, spacings = volume_slices(gen(), preprocessing)
    return SliceDataset(images, labels, preprocessing, size_multiple, names, spacings)


# ---------------------------------------------------------------- from a config


def build_dataset(data_cfg: dict, preprocessing: Preprocessing, size_multiple: int, split: str = "train") -> SliceDataset:
    """A dataset from a recipe's ``data`` section (``kind``: synapse | acdc | nnunet).

    ``split`` selects ``train`` or ``val`` keys (``list``/``patients``/``cases``
    lists may be given per split, e.g. ``val_patients``).
    """
    kind = data_cfg.get("kind")
    root = data_cfg.get("root")
    if not root:
        raise ValueError("data.root is not set; pass --data-root DIR or set data.root in the recipe")
    prefix = "" if split == "train" else "val_"
    if kind == "synapse":
        list_name = data_cfg.get(f"{prefix}list", "train.txt" if split == "train" else None)
        if list_name is None:
            return None
        return synapse_npz_dataset(
            root, preprocessing, size_multiple, list_name=list_name,
            prenormalized=data_cfg.get("prenormalized", True), inplane=data_cfg.get("inplane"),
            spacing=data_cfg.get("spacing"),
        )
    if kind == "acdc":
        patients = patient_names(data_cfg.get(f"{prefix}patients"))
        if split != "train" and not patients:
            return None
        return acdc_dataset(root, preprocessing, size_multiple, patients=patients)
    if kind == "nnunet":
        cases = data_cfg.get(f"{prefix}cases")
        if split != "train" and not cases:
            return None
        return nnunet_dataset(root, preprocessing, size_multiple, cases=cases)
    raise ValueError(f"data.kind must be synapse, acdc or nnunet, got {kind!r}")
