"""Model registry: ``build_model(name, num_classes, **config)`` and ``list_models()``.

The model classes are imported lazily so that importing this module does not
load torch/timm.
"""

from __future__ import annotations

import copy
import inspect

_MODELS = {
    "udfa": ("napari_medseg.models.udfa", "UDFA", "U-DFA: frozen DINOv2-base + SPA + 3 LGFA + U-Net decoder (sizes: multiples of 14)"),
    "dcaunet": ("napari_medseg.models.dcaunet", "DCAUNet", "DCAU-Net: differential cross attention encoder + CSFF decoder (sizes: multiples of 32)"),
}

# Small random-init configs for tests and quick demos (pass as **config).
TINY_CONFIGS: dict[str, dict] = {
    "udfa": dict(
        img_size=56,
        backbone_overrides=dict(embed_dim=48, depth=3, num_heads=3),
        backbone_weights=None,
        spa_channels=[16, 32, 48],
        spa_stem_channels=8,
        lgfa_blocks=[1, 2, 3],
        lgfa_heads=2,
        decoder_channels=[32, 32, 16, 16, 8, 8],
    ),
    "dcaunet": dict(
        dims=[16, 32, 48, 64],
        depths=[1, 1, 1, 1],
        heads=[1, 2, 3, 4],
        decoder_channels=[16, 16, 8, 8],
        reduction=4,
    ),
}


def model_class(name: str):
    """The ``nn.Module`` class registered as ``name``."""
    import importlib

    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {sorted(_MODELS)}")
    module, cls, _ = _MODELS[name]
    return getattr(importlib.import_module(module), cls)


def _defaults(cls) -> dict:
    params = inspect.signature(cls.__init__).parameters
    return {
        k: (list(p.default) if isinstance(p.default, tuple) else p.default)
        for k, p in params.items()
        if k not in ("self", "num_classes") and p.default is not inspect.Parameter.empty
    }


def list_models() -> dict[str, dict]:
    """``{name: {"description", "size_multiple", "default_config", "tiny_config"}}``."""
    out = {}
    for name, (_, _, description) in _MODELS.items():
        cls = model_class(name)
        out[name] = dict(
            description=description,
            size_multiple=cls.size_multiple,
            default_config=_defaults(cls),
            tiny_config=copy.deepcopy(TINY_CONFIGS[name]),
        )
    return out


def build_model(name: str, num_classes: int, **config):
    """Build model ``name`` (``"udfa"`` or ``"dcaunet"``) predicting ``num_classes`` classes.

    Input ``(B, 1, H, W)`` float in [0, 1] -> raw logits ``(B, num_classes, H, W)``.
    ``config`` are the model's keyword arguments (see ``list_models()``); a
    model's ``.config`` rebuilds it: ``build_model(m.model_name, **m.config)``.
    """
    cls = model_class(name)
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "num_classes"}
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"unknown config keys for {name!r}: {sorted(unknown)}; accepted: {sorted(allowed)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (background + organs), got {num_classes!r}")
    return cls(num_classes, **config)
