"""Several models of one family used as one: the mean of their softmax.

An :class:`Ensemble` behaves like a single model everywhere a model goes
(inference, the before/after Dice, saving): its forward returns
``log(mean_i softmax(member_i(x)))`` ``(B, K, H, W)``, so a softmax of its output
is the members' mean probability, as ``segment_volume`` averages separate
checkpoints.  Fine-tuning trains the members themselves, each in its own thread
(``retrain.members``); :func:`paused` lets another thread (the live preview)
predict between their optimiser steps.

Why two members by default for DCAU-Net from scratch on a CPU, with a budget of
120 s or more (``retrain.loop.default_members``): one fine-tune does not use a
second core well, and two at once, averaged, scored higher at equal wall time
there (docs/retrain.md, "Two models at once").
"""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager

import torch
from torch import nn


class Ensemble(nn.Module):
    """``members``: two or more models of one family, config and size multiple (built by ``build_model``)."""

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        for m in members[1:]:
            if m.model_name != first.model_name or m.config != first.config:
                raise ValueError("ensemble members must share one model family and config")
        self.members = nn.ModuleList(members)
        self.model_name = first.model_name
        self.config = first.config
        self.size_multiple = first.size_multiple
        self.step_locks = [threading.Lock() for _ in members]  # held by each member's optimiser step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> log of the members' mean softmax ``(B, K, H, W)``, float32."""
        probs = None
        for member in self.members:
            p = torch.softmax(member(x).float(), dim=1)
            probs = p if probs is None else probs.add_(p)
        return probs.div_(len(self.members)).clamp_min_(torch.finfo(torch.float32).tiny).log_()


def combine(models):
    """One model for ``models``: the model itself when there is one, else their :class:`Ensemble`."""
    models = list(models)
    return models[0] if len(models) == 1 else Ensemble(models)


def member_count(model) -> int:
    """How many models ``model`` averages (1 for a plain model)."""
    return len(model.members) if isinstance(model, Ensemble) else 1


@contextmanager
def paused(model):
    """Hold every step lock of an ensemble: members fine-tuned in other threads wait at their next
    step (nothing to wait for with a plain model)."""
    with ExitStack() as stack:
        for lock in model.step_locks if isinstance(model, Ensemble) else ():
            stack.enter_context(lock)
        yield model


__all__ = ["Ensemble", "combine", "member_count", "paused"]
