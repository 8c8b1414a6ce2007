"""Device and precision choice shared by inference and training.

``pick_device("auto")`` tries ``cuda`` -> ``mps`` -> ``cpu``.  ``autocast``
returns the mixed-precision context that suits the device: fp16/bf16 on CUDA,
bf16 on CPU (for ``"auto"`` only where it measured faster for the model, see
:mod:`napari_medseg.precision_probe`), nothing on MPS unless asked.
"""

from __future__ import annotations

import contextlib


def pick_device(preference: str = "auto"):
    """A ``torch.device`` for ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"``.

    Raises ``ValueError`` with the available choices when the asked-for device
    is missing.
    """
    import torch

    pref = (preference or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} asked for, but no CUDA GPU is available; use 'cpu' or 'auto'")
    if pref == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but Apple MPS is not available; use 'cpu' or 'auto'")
    try:
        return torch.device(pref)
    except RuntimeError as err:
        raise ValueError(f"unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps") from err


def available_devices() -> list[str]:
    """Device names usable here, best first (for GUI combo boxes)."""
    import torch

    names = []
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_precision(device, precision: str = "auto", models=()) -> str:
    """``"fp32" | "bf16" | "fp16"`` to use on ``device``.

    ``auto`` means bf16 on CUDA where the GPU supports it, else fp16; fp32 on
    MPS; on CPU, bf16 when every model in ``models`` ran faster in bf16 on this
    CPU (measured once per CPU, torch version and architecture, cached, and
    logged), else fp32 (also with no ``models``, e.g. for training).
    """
    import torch

    from napari_medseg.models.spec import PRECISIONS

    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("fp16 autocast is not supported on CPU; use bf16 or fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and models:
        from napari_medseg.precision_probe import cpu_auto_precision

        picks = {cpu_auto_precision(model).precision for model in models}
        return "bf16" if picks == {"bf16"} else "fp32"
    return "fp32"


def autocast(device, precision: str):
    """Context manager for mixed precision (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
