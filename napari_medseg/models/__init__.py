"""Segmentation models: U-DFA and DCAU-Net behind one registry.

``build_model(name, num_classes, **config)``, ``list_models()``,
``freeze_except(model, group)``, ``family_spec(name)`` and ``TINY_CONFIGS`` (see docs/architecture.md).
Importing this package does not import torch; building a model does.
"""

from .registry import build_model, family_spec, fine_tuning_scopes, list_models, model_class, model_names


def __getattr__(name: str):
    if name == "TINY_CONFIGS":  # from the family specs, on first use (imports torch)
        from . import registry

        return registry.TINY_CONFIGS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def freeze_except(model, group: str):
    """Freeze all parameters outside ``model.parameter_groups()[group]``; return the trainable ones."""
    from .blocks import freeze_except as _freeze_except

    return _freeze_except(model, group)


__all__ = ["build_model", "list_models", "freeze_except", "TINY_CONFIGS", "model_class", "family_spec",
           "fine_tuning_scopes", "model_names"]
