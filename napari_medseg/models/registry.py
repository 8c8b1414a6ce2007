"""Model registry: ``build_model(name, num_classes, **config)``, ``list_models()``, ``family_spec(name)``.

The model classes are imported lazily so that importing this module does not
load torch/timm.
"""

from __future__ import annotations

import inspect

#: Registry name -> (module, class).  Everything else about a family is in its ``SPEC``
#: (a :class:`~napari_medseg.models.spec.FamilySpec` in the torch-free ``<module>_spec``).
_MODELS = {
    "udfa": ("napari_medseg.models.udfa", "UDFA"),
    "dcaunet": ("napari_medseg.models.dcaunet", "DCAUNet"),
}


def model_names() -> list[str]:
    """Registered family names, for option lists (no torch import)."""
    return sorted(_MODELS)


def family_spec(name: str):
    """The :class:`~napari_medseg.models.spec.FamilySpec` of family ``name`` (no torch import)."""
    import importlib

    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {sorted(_MODELS)}")
    return importlib.import_module(_MODELS[name][0] + "_spec").SPEC


def fine_tuning_scopes() -> list[str]:
    """Every trainable scope some family accepts (the GUI's and CLI's ``--scope`` list)."""
    return sorted({scope for name in _MODELS for scope in family_spec(name).scopes})


def __getattr__(name: str):
    if name == "TINY_CONFIGS":  # built on first use
        return {family: family_spec(family).tiny_config() for family in _MODELS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_class(name: str):
    """The ``nn.Module`` class registered as ``name``."""
    import importlib

    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {sorted(_MODELS)}")
    module, cls = _MODELS[name]
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
    for name in _MODELS:
        spec = family_spec(name)
        out[name] = dict(
            description=spec.description,
            size_multiple=spec.size_multiple,
            default_config=_defaults(model_class(name)),
            tiny_config=spec.tiny_config(),
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
