"""One optimisation step, shared by the training engine and fine-tuning."""

from __future__ import annotations

import torch

from napari_medseg.device import autocast


def train_step(model, images, labels, loss_fn, optimizer, *, scaler=None, precision="fp32", grad_clip=None, params=None):
    """One optimisation step; returns the loss as a float.

    Args:
        images: ``(B, 1, H, W)``; labels: ``(B, H, W)`` on the model's device.
        loss_fn: ``loss_fn(logits, labels, images)``, e.g. ``retrain.losses.DiceCELoss``.
    """
    device = images.device
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits = model(images)
    loss = loss_fn(logits.float(), labels, images)  # DiceCELoss: images feed its scribble smoothness term
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()}; lower the learning rate or check the labels")
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params if params is not None else model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params if params is not None else model.parameters(), grad_clip)
        optimizer.step()
    return float(loss.detach())
