"""Train/eval modes saved and restored module by module.

``model.train(was_training)`` sets every submodule to one mode.  That undoes the
mixed modes fine-tuning relies on: ``FinetuneConfig(batchnorm="frozen")`` keeps the
BatchNorm layers in eval mode while the rest trains, and a prediction between two
steps (the live preview, the held-out Dice) must hand the model back exactly so.
"""

from __future__ import annotations

from contextlib import contextmanager


def training_modes(model) -> list[bool]:
    """Each module's ``training`` flag, in ``model.modules()`` order."""
    return [module.training for module in model.modules()]


def restore_modes(model, modes: list[bool]) -> None:
    """Set each module's ``training`` flag back to ``modes`` (from :func:`training_modes` on the same model)."""
    modules = list(model.modules())
    if len(modules) != len(modes):
        raise ValueError(f"{len(modes)} saved modes for a model of {len(modules)} modules")
    for module, mode in zip(modules, modes):
        module.training = mode


@contextmanager
def evaluating(*models):
    """Every module of ``models`` in eval mode inside the block; each module's own mode restored after."""
    saved = [training_modes(model) for model in models]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for model, modes in zip(models, saved):
            restore_modes(model, modes)
