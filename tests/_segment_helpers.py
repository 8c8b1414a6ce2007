"""Tiny checkpoints for the segmentation tests (engine, widget, CLI).

Models come from ``build_model`` with ``TINY_CONFIGS`` and go through
``save_checkpoint`` / ``load_checkpoint``, as in real use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medseg.labels import SYNAPSE, LabelSet
from napari_medseg.preprocess import Preprocessing


def tiny_model(name: str, label_set: LabelSet = SYNAPSE, seed: int = 0):
    import torch

    from napari_medseg.models import TINY_CONFIGS, build_model

    torch.manual_seed(seed)
    config = dict(TINY_CONFIGS[name])
    config.pop("num_classes", None)
    return build_model(name, label_set.num_classes, **config).eval()


def tiny_prep(name: str, policy: str = "native", modality: str = "ct") -> Preprocessing:
    size = 28 if name == "udfa" else 32
    return Preprocessing(modality=modality, resize_policy=policy, input_size=size)


def save_tiny(path: Path, name: str, *, label_set: LabelSet = SYNAPSE, policy: str = "native",
              modality: str = "ct", seed: int = 0, model=None) -> Path:
    """Save a tiny (random unless ``model`` is given) checkpoint and return its path."""
    from napari_medseg.checkpoint import save_checkpoint

    model = model if model is not None else tiny_model(name, label_set, seed)
    save_checkpoint(path, model, label_set=label_set, preprocessing=tiny_prep(name, policy, modality),
                    provenance={"note": "tiny test model"})
    return Path(path)


def train_tiny(image: np.ndarray, labels: np.ndarray, name: str = "dcaunet", steps: int = 60, seed: int = 0):
    """A tiny model fitted for ``steps`` Adam steps on (z, y, x) CT slices: non-degenerate predictions."""
    import torch

    from napari_medseg.preprocess import normalize, to_model_size

    torch.manual_seed(seed)
    model = tiny_model(name, SYNAPSE, seed).train()
    prep = tiny_prep(name, "native")
    x = torch.from_numpy(normalize(image, prep))[:, None]
    y = torch.from_numpy(labels.astype(np.int64))
    x, info = to_model_size(x, prep, model.size_multiple)
    y = torch.nn.functional.pad(y, (0, info.model_hw[1] - info.native_hw[1], 0, info.model_hw[0] - info.native_hw[0]))
    counts = torch.bincount(y.flatten(), minlength=SYNAPSE.num_classes).float()
    weight = (counts.sum() / counts.clamp_min(1)).sqrt()
    weight = weight / weight.mean()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (8,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx], weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


_TRAINED: dict = {}


def trained_checkpoint(directory: Path, sample_ct: Path, sample_labels: Path, name: str = "dcaunet",
                       steps: int = 60) -> Path:
    """A tiny checkpoint fitted on the sample CT (memoised for the test session).

    Its predictions hold several organs, so tests comparing outputs (bf16 vs
    fp32, voxel order on disk, the widget's screenshot) cannot pass trivially.
    """
    key = (name, steps, str(directory))
    if key not in _TRAINED or not _TRAINED[key].exists():
        from napari_medseg.io import read_volume

        model = train_tiny(read_volume(sample_ct).array, read_volume(sample_labels).array, name, steps)
        path = Path(directory) / f"trained_{name}_{steps}.safetensors"
        if path.exists():
            path.unlink()
        _TRAINED[key] = save_tiny(path, name, model=model)
    return _TRAINED[key]
