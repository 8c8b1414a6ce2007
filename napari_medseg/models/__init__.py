"""Segmentation models: U-DFA and DCAU-Net behind one registry.

``build_model(name, num_classes, **config)``, ``list_models()``,
``freeze_except(model, group)`` and ``TINY_CONFIGS`` (see docs/architecture.md).
Importing this package does not import torch; building a model does.
"""

from .registry import TINY_CONFIGS, build_model, list_models, model_class


def freeze_except(model, group: str):
    """Freeze all parameters outside ``model.parameter_groups()[group]``; return the trainable ones."""
    from .blocks import freeze_except as _freeze_except

    return _freeze_except(model, group)


__all__ = ["build_model", "list_models", "freeze_except", "TINY_CONFIGS", "model_class"]
