"""Typed, frozen fine-tuning settings: :class:`FinetuneConfig` (torch-free).

``from_dict`` rejects unknown keys with the list of valid ones, so a typo in a
JSON/YAML override fails loudly; ``__post_init__`` checks every value (budgets
finite and positive: ``time_budget_s=nan`` would otherwise train forever).
Family defaults (lr, crops, ...) come from the model's
:class:`~napari_medseg.models.spec.FamilySpec` (``spec.recipe(from_scratch)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping

#: Optimiser steps when neither ``steps`` nor ``time_budget_s`` is given.
DEFAULT_STEPS = 200
#: Weight of the edge-aware smoothness term on scribbled (partial) batches, and its sigma as a
#: multiple of the slices' typical intensity step: chosen in bench/effort.py on the sample CT and
#: checked on A' (docs/retrain.md, "Learning from scribbles").
DEFAULT_SMOOTHNESS_WEIGHT = 100.0
DEFAULT_SIGMA_PER_STEP = 0.5
#: Weight of the entropy term on the unlabelled pixels of scribbled (partial) batches: chosen in
#: bench/effort.py on the sample CT, checked on A' and the MR (docs/retrain.md, "Deciding on the unlabelled pixels").
DEFAULT_ENTROPY_WEIGHT = 0.3


def strict_from_dict(cls, data: Mapping | None, what: str):
    """``cls(**data)`` for a dataclass, rejecting unknown keys with the valid ones listed."""
    data = dict(data or {})
    valid = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; valid keys: {sorted(valid)}")
    return cls(**data)


def check_positive(name: str, value, *, integer: bool = False, optional: bool = True) -> None:
    """Raise a one-line ``ValueError`` unless ``value`` is a finite number > 0 (or None when optional)."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a finite number > 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def check_fraction(name: str, value, *, upper_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1 and not (upper_open and value == 1)
    if not ok:
        raise ValueError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {value!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """How :func:`~napari_medseg.retrain.finetune.finetune` trains.

    Attributes:
        scope: trainable group (``"adapters" | "decoder" | "encoder" | "all"``); ``None`` = the family's default.
        steps / time_budget_s: stop after whichever comes first (neither: :data:`DEFAULT_STEPS`).
            The time budget (s) bounds the optimisation loop; at least one step runs.
        replay_fraction: share of each batch drawn from replayed corrections (when there are some), at most
            0.5: at least half of every batch is the current patient's (``retrain.sampling.BalancedSampler``).
        augment: ``True`` (``AugmentConfig.finetune()``), ``False``, an ``AugmentConfig``, or its fields as a dict.
        batch_size, lr, weight_decay: AdamW settings; lr warms up over ``warmup_fraction`` of the
            budget, then decays (cosine) to 0.
        loss_weights: ``(ce, dice)``; ``None`` = the family's (DCAU-Net 0.4/0.6, U-DFA 0.5/0.5).
        grad_clip: max gradient norm (``None`` = no clipping).
        device, precision: see ``napari_medseg.device``.
        seed: seeds the split, sampling and augmentation, and from scratch, through a stream of their own
            (``loop.init_seed``), the initial weights.
        member: index of an ensemble member (``retrain.members``): offsets the seed of the
            sampling, crops and augmentation, but not of the held-out split, which all members share.
        validation_fraction, min_slices_for_validation: held-out split (only with at least that many slices).
        eval_every: steps between held-out evaluations / best-loss checks (``None``: ~ budget / 20).
        crop_size: train on random ``crop_size``^2 crops (px, a multiple of the model's size multiple);
            ``None`` = whole slices.  crop_foreground: share of crops centred on an organ.
        batchnorm: ``"train"`` (BatchNorm layers normalise by the batch and update their running
            statistics) or ``"frozen"`` (they keep the checkpoint's running statistics, in eval
            mode; their affine weights still train).
        smoothness_weight, smoothness_sigma: the edge-aware smoothness term
            (``losses.edge_aware_smoothness``) added for batches holding unlabelled pixels
            (scribbles, partial labels); full corrections never see it.  0 turns it off.
            The sigma is in image units; ``None`` sets it from the training slices
            themselves: ``smoothness_sigma_per_step`` x their typical intensity step
            (``losses.typical_intensity_step``), so a blurred or noisy scan gets its own scale.
            ``smoothness_radius``: its reach in training pixels (1 = the 4 neighbours, the
            default; 3 was tried: docs/retrain.md).
        entropy_weight: weight of the mean normalised entropy of the prediction on unlabelled pixels
            (``losses.unlabelled_entropy``), added like the smoothness term (default
            :data:`DEFAULT_ENTROPY_WEIGHT`, docs/retrain.md); 0 turns it off.
        final_whole_slices: with crops, the last share of the run (a fraction of the budget) trains on
            whole slices, as inference sees them, with about as many pixels per batch as the crops
            (``batch_size * crop_size^2 / (H * W)`` slices, at least 2: one slice a step cost A', the sample at
            0.8 mm, 0.01 Dice).  0 (the default): crops to the end; the DCAU-Net recipes use 0.2.  Ignored
            (crops to the end) when the current patient's slices hold unlabelled pixels (scribbles, partial
            labels); replayed entries with unlabelled pixels are left out of the whole-slice batches.
    """

    scope: str | None = None
    steps: int | None = None
    time_budget_s: float | None = None
    replay_fraction: float = 0.5
    augment: object = True
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    loss_weights: tuple[float, float] | None = None
    grad_clip: float | None = 1.0
    device: object = "auto"
    precision: str = "auto"
    seed: int = 0
    member: int = 0
    validation_fraction: float = 0.2
    min_slices_for_validation: int = 8
    eval_every: int | None = None
    crop_size: int | None = None
    crop_foreground: float = 0.5
    batchnorm: str = "train"
    smoothness_weight: float = DEFAULT_SMOOTHNESS_WEIGHT
    smoothness_sigma: float | None = None
    smoothness_sigma_per_step: float = DEFAULT_SIGMA_PER_STEP
    smoothness_radius: int = 1
    entropy_weight: float = DEFAULT_ENTROPY_WEIGHT
    final_whole_slices: float = 0.0

    def __post_init__(self):
        from napari_medseg.models.spec import PRECISIONS

        check_positive("steps", self.steps, integer=True)
        check_positive("time_budget_s", self.time_budget_s)
        check_positive("batch_size", self.batch_size, integer=True, optional=False)
        check_positive("lr", self.lr, optional=False)
        check_positive("eval_every", self.eval_every, integer=True)
        check_positive("crop_size", self.crop_size, integer=True)
        check_positive("grad_clip", self.grad_clip)
        check_positive("smoothness_sigma", self.smoothness_sigma)
        check_positive("smoothness_sigma_per_step", self.smoothness_sigma_per_step, optional=False)
        check_positive("smoothness_radius", self.smoothness_radius, integer=True, optional=False)
        for name in ("smoothness_weight", "entropy_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.member, int) and not isinstance(self.member, bool) and self.member >= 0):
            raise ValueError(f"member must be an integer >= 0, got {self.member!r}")
        check_positive("min_slices_for_validation", self.min_slices_for_validation, integer=True, optional=False)
        for name in ("replay_fraction", "warmup_fraction", "crop_foreground", "final_whole_slices"):
            check_fraction(name, getattr(self, name))
        if self.replay_fraction > 0.5:
            raise ValueError(f"replay_fraction must be at most 0.5 (at least half of every batch is the current patient's), got {self.replay_fraction!r}")
        check_fraction("validation_fraction", self.validation_fraction, upper_open=True)
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.batchnorm not in ("train", "frozen"):
            raise ValueError(f"batchnorm must be 'train' or 'frozen', got {self.batchnorm!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.loss_weights is not None:
            weights = tuple(float(w) for w in self.loss_weights)
            if len(weights) != 2 or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
                raise ValueError(f"loss_weights must be two finite weights (ce, dice) >= 0, not both 0; got {self.loss_weights!r}")
            object.__setattr__(self, "loss_weights", weights)
        if isinstance(self.augment, Mapping):
            from napari_medseg.retrain.augment import AugmentConfig

            object.__setattr__(self, "augment", AugmentConfig.from_dict(dict(self.augment)))

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "FinetuneConfig":
        return strict_from_dict(cls, data, "fine-tuning")

    def replace(self, **changes) -> "FinetuneConfig":
        """A copy with ``changes`` (validated like :meth:`from_dict`)."""
        return self.from_dict({**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    @property
    def step_budget(self) -> int | None:
        """``steps``, or :data:`DEFAULT_STEPS` when no budget at all is given."""
        return DEFAULT_STEPS if self.steps is None and self.time_budget_s is None else self.steps


__all__ = ["DEFAULT_STEPS", "FinetuneConfig", "check_positive", "strict_from_dict"]
