"""Checkpoints: one ``.safetensors`` file holding weights and JSON metadata.

The metadata lives in the safetensors header (``__metadata__["medseg"]``), so
weights and metadata cannot drift apart, and loading never unpickles::

    {"format_version": 1,
     "model": {"name": "udfa" | "dcaunet", "config": {...},       # build_model(name, **config)
               "members": N},                                     # format 2 only: an ensemble of N (keys "members.i.*")
     "label_set": LabelSet.to_dict(),
     "preprocessing": Preprocessing.to_dict(),
     "provenance": {"date": ISO-8601 UTC, "parent_sha256": str | None,
                    "data": str, "napari_medseg_version": str, ...free-form extra keys}}

Format 1 holds one model; format 2 an :class:`~napari_medseg.models.ensemble.Ensemble`
(``members`` models of one config, averaged), so an older napari-medseg refuses it with
"update napari-medseg" instead of failing on its tensor names.

Every parameter and persistent buffer is stored, including U-DFA's frozen
DINOv2 backbone: a checkpoint is self-contained, and loading one needs no
DINOv2 download.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import struct
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from .atomic import atomic_write
from .labels import LabelSet, get_label_set
from .preprocess import Preprocessing

FORMAT_VERSION = 2  #: the newest format this version reads (2 = ensembles); single models are still written as 1
METADATA_KEY = "medseg"
MAX_MEMBERS = 16  #: the most ensemble members a checkpoint may hold (a damaged header must not build thousands)


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit what was asked for."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file says about itself (no weights).

    ``sha256`` is computed on first use and then kept: reading the metadata
    (to list a checkpoint or check its label set) must not hash a 500 MB file.
    """

    path: Path
    format_version: int
    model_name: str
    model_config: dict
    label_set: LabelSet
    preprocessing: Preprocessing
    provenance: dict = field(default_factory=dict)
    members: int = 1
    known_sha256: str | None = field(default=None, repr=False, compare=False)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the checkpoint file."""
        if self.known_sha256 is None:
            object.__setattr__(self, "known_sha256", file_sha256(self.path))
        return self.known_sha256

    @property
    def num_classes(self) -> int:
        return int(self.model_config["num_classes"])


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_header(path: Path) -> dict:
    """The safetensors JSON header, with clear errors for foreign or damaged files."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{str(path)!r} is empty or truncated ({size} bytes); not a napari-medseg checkpoint")
        (n,) = struct.unpack("<Q", head)
        plausible = 0 < n <= min(size - 8, 100_000_000)
        raw = fh.read(n) if plausible else b""
    if not plausible or not raw.startswith(b"{"):
        if head[:2] == b"PK" or head[:1] == b"\x80":  # zip (torch.save) or raw pickle
            raise CheckpointError(
                f"{str(path)!r} is a PyTorch pickle (.pth/.pt), not a napari-medseg .safetensors checkpoint; "
                "pickles are never loaded. DINOv2 weights go to build_model('udfa', ..., backbone_weights=path)."
            )
        raise CheckpointError(f"{str(path)!r} is not a safetensors file (or is corrupt); not a napari-medseg checkpoint")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{str(path)!r} has a corrupt safetensors header; not a usable checkpoint") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{str(path)!r} has a corrupt safetensors header (not a JSON object)")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = (int(x) for x in entry["data_offsets"])
            str(entry["dtype"]), list(entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{str(path)!r} has a damaged safetensors header: tensor {key!r} lacks a valid "
                "dtype, shape or data_offsets; re-save or re-download the checkpoint"
            ) from None
        if not 0 <= start <= stop:
            raise CheckpointError(f"{str(path)!r} has a damaged safetensors header: tensor {key!r} has offsets {start}..{stop}")
        end = max(end, stop)
    if 8 + n + end != size:
        raise CheckpointError(
            f"{str(path)!r} is corrupt or truncated: header promises {8 + n + end} bytes, file has {size}"
        )
    return header


def _parse_metadata(path: Path, header: dict) -> dict:
    meta = header.get("__metadata__") or {}
    meta = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
    if meta is None:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file but not a napari-medseg checkpoint "
            f"(no {METADATA_KEY!r} metadata in its header)"
        )
    try:
        meta = json.loads(meta)
        version = int(meta["format_version"])
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{str(path)!r} uses checkpoint format {version}, newer than this napari-medseg "
                f"understands ({FORMAT_VERSION}); update napari-medseg"
            )
        meta["model"]["name"], meta["model"]["config"]["num_classes"]
        if not 1 <= int(meta["model"].get("members", 1)) <= MAX_MEMBERS:
            raise ValueError(f"members must be 1..{MAX_MEMBERS}, got {meta['model']['members']}")
        meta["label_set"], meta["preprocessing"]
    except CheckpointError:
        raise
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} has damaged napari-medseg metadata ({type(err).__name__}: {err})") from None
    return meta


def read_checkpoint_info(path) -> CheckpointInfo:
    """Metadata of a checkpoint (header only; the file hash on demand); raises :class:`CheckpointError`."""
    path = Path(path)
    meta = _parse_metadata(path, _read_header(path))
    try:
        label_set = LabelSet.from_dict(meta["label_set"])
        prep = Preprocessing.from_dict(meta["preprocessing"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} has an invalid label set or preprocessing: {err}") from None
    return CheckpointInfo(
        path=path,
        format_version=int(meta["format_version"]),
        model_name=str(meta["model"]["name"]),
        model_config=dict(meta["model"]["config"]),
        label_set=label_set,
        preprocessing=prep,
        provenance=dict(meta.get("provenance") or {}),
        members=int(meta["model"].get("members", 1)),
    )


def flip_tta_refusal(info: CheckpointInfo) -> str | None:
    """Why flip test-time augmentation must not be used with this checkpoint, or None when it may.

    A flipped slice is new to a model trained without flips, and a left-right flip moves the
    left kidney to where the right one belongs: on the sample CT, flip TTA took a fine-tuned
    DCAU-Net from 0.89 to 0.51-0.54 mean Dice (docs/inference.md).  Read from the provenance's
    ``augment`` (the training augmentation); fine-tunes saved before it was recorded used this
    package's recipes, none of which flips.  Unknown origin (no provenance): allowed.
    """
    prov = getattr(info, "provenance", None) or {}
    if "augment" in prov:
        augment = prov["augment"] or {}
        if any(float(augment.get(key) or 0) > 0 for key in ("p_flip", "p_rot90")):
            return None
        return "was trained without flips"
    if "slices" in prov and prov.get("kind") != "train":
        return "was fine-tuned without flips (every fine-tuning recipe is flip-free)"
    return None


def _parent_sha(parent) -> str | None:
    if parent is None:
        return None
    if isinstance(parent, CheckpointInfo):
        return parent.sha256
    if isinstance(parent, str) and len(parent) == 64 and all(c in "0123456789abcdef" for c in parent):
        return parent
    return file_sha256(parent)


def save_checkpoint(
    path,
    model,
    *,
    label_set: LabelSet,
    preprocessing: Preprocessing,
    provenance: dict | None = None,
    parent=None,
    overwrite: bool = False,
) -> CheckpointInfo:
    """Write ``model`` with its metadata to ``path`` (``.safetensors``), atomically.

    Args:
        path: destination; refused if it exists unless ``overwrite=True``.
        model: a model from :func:`napari_medseg.models.build_model`, or an ``Ensemble`` of them.
        label_set: classes the model predicts (count must equal ``num_classes``).
        preprocessing: how slices were normalised and sized for this model.
        provenance: free-form JSON-safe dict, e.g. ``{"data": "3 corrected slices of case 12"}``;
            ``date`` and ``napari_medseg_version`` are added.
        parent: the checkpoint this one was fine-tuned from (path,
            :class:`CheckpointInfo` or sha256 hex); stored as ``parent_sha256``.
    """
    from safetensors.torch import save_file

    from . import __version__

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path must end in .safetensors, got {str(path)!r}")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{str(path)!r} already exists; choose a new name or pass overwrite=True")
    if isinstance(label_set, str):
        label_set = get_label_set(label_set)
    num_classes = int(model.config["num_classes"])
    if label_set.num_classes != num_classes:
        raise CheckpointError(
            f"model predicts {num_classes} classes but label set {label_set.name!r} has {label_set.num_classes}"
        )
    prov = dict(provenance or {})
    prov.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    prov["parent_sha256"] = _parent_sha(parent) if parent is not None else prov.get("parent_sha256")
    prov.setdefault("data", "")
    prov["napari_medseg_version"] = __version__
    from .models.ensemble import member_count

    members = member_count(model)
    meta = {
        "format_version": 2 if members > 1 else 1,
        "model": {"name": model.model_name, "config": model.config, **({"members": members} if members > 1 else {})},
        "label_set": label_set.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "provenance": prov,
    }
    try:
        meta_json = json.dumps(meta)
    except TypeError as err:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {err}") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    digest = []

    def write(tmp: str) -> None:
        save_file(tensors, tmp, metadata={METADATA_KEY: meta_json})
        digest.append(file_sha256(tmp))
        if not overwrite and path.exists():
            raise CheckpointError(f"{str(path)!r} appeared while saving; not overwritten")

    atomic_write(path, write, suffix=".tmp")
    return replace(read_checkpoint_info(path), known_sha256=digest[0])


def _check_fit(info: CheckpointInfo, label_set, model_name) -> None:
    if model_name is not None and model_name != info.model_name:
        raise CheckpointError(
            f"{info.path.name} holds a {info.model_name!r} model, not {model_name!r}; "
            f"choose model {info.model_name!r} or another checkpoint"
        )
    if label_set is None:
        return
    if isinstance(label_set, str):
        label_set = get_label_set(label_set)
    have = info.num_classes
    if label_set.num_classes != have:
        raise CheckpointError(
            f"checkpoint has {have} classes (label set {info.label_set.name!r}) but label set "
            f"{label_set.name!r} has {label_set.num_classes}; pick label set {info.label_set.name!r} or retrain"
        )
    if dict(label_set.names) != dict(info.label_set.names):
        raise CheckpointError(
            f"checkpoint classes {info.label_set.names} (label set {info.label_set.name!r}) differ from "
            f"label set {label_set.name!r} {label_set.names}; pick label set {info.label_set.name!r} or retrain"
        )


def check_weights(name: str, tensors: dict, expected: dict) -> None:
    """Refuse weights that would silently give wrong masks: a non-float dtype where the model has
    floats (e.g. int8), or NaN/inf values.  Raises :class:`CheckpointError` naming the first tensor."""
    import torch

    for key, ref in expected.items():
        t = tensors[key]
        if not ref.is_floating_point():
            continue
        if not t.is_floating_point():
            raise CheckpointError(
                f"{name}: tensor {key!r} is {str(t.dtype).replace('torch.', '')}, not a float type; "
                "the checkpoint is damaged or quantised (not supported)"
            )
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{name}: tensor {key!r} holds {bad} NaN/infinite values; the checkpoint is damaged "
                "(e.g. a fine-tune that diverged); use an earlier version"
            )


def load_checkpoint(path, *, device="cpu", label_set=None, model_name=None):
    """Rebuild the model stored in ``path``; returns ``(model in eval mode, CheckpointInfo)``.

    A format-2 checkpoint gives an :class:`~napari_medseg.models.ensemble.Ensemble` of ``info.members``.

    ``label_set`` (LabelSet or built-in name) and ``model_name``, when given,
    must match the checkpoint, else :class:`CheckpointError` says what it holds.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import build_model, family_spec
    from .models.dinov2_weights import RandomBackboneWarning

    info = read_checkpoint_info(path)
    _check_fit(info, label_set, model_name)
    config = dict(info.model_config)
    num_classes = int(config.pop("num_classes"))
    if info.model_name == "dcaunet":
        config.setdefault("single_window", "mean")  # written before one-window maps attended to their pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        try:
            external = family_spec(info.model_name).external_weights
            if external:
                config[external] = None  # e.g. U-DFA's backbone: its weights are in this file
            models = [build_model(info.model_name, num_classes, **config) for _ in range(info.members)]
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{info.path.name}: cannot rebuild its {info.model_name!r} model: {err}") from None
    from .models.ensemble import combine

    model = combine(models)
    try:
        tensors = load_file(str(info.path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{info.path.name} is corrupt: {err}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{info.path.name} does not fit its {info.model_name!r} config: "
            f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}, "
            f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}"
        )
    bad = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items() if tensors[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{info.path.name} has tensors of the wrong shape: {bad[:10]}")
    check_weights(info.path.name, tensors, expected)
    model.load_state_dict(tensors, strict=True)
    model.to(torch.device(device) if isinstance(device, str) else device)
    model.eval()
    return model, info
