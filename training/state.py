"""Resumable training state without pickle: tensors in safetensors, structure in JSON.

``save_train_state(path, optimizer=..., scaler=..., extra={...})`` writes one
``.safetensors`` file.  Optimizer tensors (Adam moments, step counters) are
flattened to keys ``optim.<param id>.<name>``; everything else (param groups,
non-tensor state, the GradScaler's scalars, step, epoch, the recipe) goes into
the JSON string ``__metadata__["train_state"]``.  Model weights are *not* here:
they live in the inference-format checkpoint beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_medseg.atomic import atomic_write

_KEY = "train_state"


def optimizer_to_flat(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into ``(tensors, json_structure)``."""
    tensors: dict[str, torch.Tensor] = {}
    structure = {"param_groups": _jsonable(state_dict["param_groups"]), "state": {}}
    for pid, entry in state_dict["state"].items():
        slot = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                key = f"optim.{pid}.{name}"
                tensors[key] = value.detach().contiguous().cpu()
                slot[name] = {"tensor": key}
            else:
                slot[name] = {"value": _jsonable(value)}
        structure["state"][str(pid)] = slot
    return tensors, structure


def optimizer_from_flat(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    """Inverse of :func:`optimizer_to_flat` (a state dict for ``optimizer.load_state_dict``)."""
    state = {}
    for pid, slot in structure["state"].items():
        state[int(pid)] = {
            name: tensors[item["tensor"]] if "tensor" in item else item["value"] for name, item in slot.items()
        }
    groups = []
    for group in structure["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_train_state(path, *, optimizer=None, scaler=None, extra: dict | None = None) -> Path:
    """Write optimizer/scaler/RNG state and ``extra`` (JSON-safe) to ``path`` atomically."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    meta: dict = {"extra": extra or {}}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = optimizer_to_flat(optimizer.state_dict())
        tensors.update(opt_tensors)
    if scaler is not None:
        meta["scaler"] = _jsonable(scaler.state_dict())
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_KEY: json.dumps(meta)}),
                        suffix=".safetensors")


def load_train_state(path, *, optimizer=None, scaler=None, restore_rng: bool = True) -> dict:
    """Restore what :func:`save_train_state` wrote; returns ``extra``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training state {path} not found (it is written beside the checkpoint as *.state.safetensors)")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if _KEY not in metadata:
            raise ValueError(f"{path} is not a medseg training-state file (no '{_KEY}' metadata)")
        meta = json.loads(metadata[_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(optimizer_from_flat(tensors, meta["optimizer"]))
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    if restore_rng and "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return meta["extra"]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if torch.is_tensor(value):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TypeError(f"cannot store {type(value).__name__} in the training state JSON")
