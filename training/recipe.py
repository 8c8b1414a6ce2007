"""Typed, frozen sections of a training recipe: ``train``, ``optim``, ``loss``, ``schedule``, ``data``.

Each ``from_dict`` rejects unknown keys with the valid ones listed (a typo in a
YAML recipe fails loudly instead of being ignored) and checks its values;
budgets must be finite and positive.  The defaults are those the engine
always used.  :func:`recipe_sections` parses all five of a recipe dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from napari_medseg.retrain.config import check_positive, strict_from_dict


class _Section:
    section = ""

    @classmethod
    def from_dict(cls, data: Mapping | None):
        if data is not None and not isinstance(data, Mapping):
            raise ValueError(f"recipe section {cls.section!r} must be a mapping, got {type(data).__name__}")
        try:
            return strict_from_dict(cls, data, f"recipe {cls.section!r}")
        except TypeError as err:
            raise ValueError(f"recipe {cls.section!r}: {err}") from None

    @classmethod
    def coerce(cls, value):
        """``value`` as this section (a mapping is parsed; ``None`` gives the defaults)."""
        return value if isinstance(value, cls) else cls.from_dict(value)


@dataclass(frozen=True)
class TrainSection(_Section):
    """``train:``: epochs, global batch (divided among processes), trainable group, budgets (steps, s)."""

    section = "train"
    epochs: int = 1
    batch_size: int = 8
    trainable: str = "all"
    grad_clip: float | None = None
    amp: object = "auto"
    num_workers: int = 0
    seed: int = 0
    log_every: int = 20
    save_every_steps: int | None = 0
    val_every_epochs: int | None = 0
    max_steps: int | None = None
    time_budget_s: float | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size", "log_every"):
            check_positive(f"train.{name}", getattr(self, name), integer=True, optional=False)
        check_positive("train.max_steps", self.max_steps, integer=True)
        check_positive("train.time_budget_s", self.time_budget_s)
        check_positive("train.grad_clip", self.grad_clip)


@dataclass(frozen=True)
class OptimSection(_Section):
    """``optim:``: ``adam | adamw | sgd`` with lr, weight decay, betas (Adam) or momentum (SGD)."""

    section = "optim"
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9

    def __post_init__(self):
        if str(self.name).lower() not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optim.name must be adam, adamw or sgd, got {self.name!r}")
        check_positive("optim.lr", self.lr, optional=False)
        if not (math.isfinite(float(self.weight_decay)) and float(self.weight_decay) >= 0):
            raise ValueError(f"optim.weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


@dataclass(frozen=True)
class LossSection(_Section):
    """``loss:``: weights of ``DiceCELoss`` (CE, soft Dice) and whether Dice counts the background."""

    section = "loss"
    ce_weight: float = 0.5
    dice_weight: float = 0.5
    include_background: bool = True


@dataclass(frozen=True)
class ScheduleSection(_Section):
    """``schedule:``: lr factor ``poly | cosine | constant`` after ``warmup_steps``, never below ``min_factor``."""

    section = "schedule"
    kind: str = "poly"
    power: float = 0.9
    warmup_steps: int = 0
    min_factor: float = 0.0

    def __post_init__(self):
        if self.kind not in ("poly", "cosine", "constant"):
            raise ValueError(f"schedule.kind must be poly, cosine or constant, got {self.kind!r}")


@dataclass(frozen=True)
class DataSection(_Section):
    """``data:``: ``kind`` (synapse | acdc | nnunet), ``root``, and the split keys of that kind."""

    section = "data"
    kind: str | None = None
    root: str | None = None
    list: str | None = None
    val_list: str | None = None
    prenormalized: bool = True
    inplane: str | None = None
    spacing: object = None  # synapse npz: in-plane (sy, sx) mm (the files carry none)
    patients: object = None
    val_patients: object = None
    cases: object = None
    val_cases: object = None


def recipe_sections(recipe: Mapping) -> dict:
    """``{"train": TrainSection, "optim": ..., "loss": ..., "schedule": ..., "data": ...}`` of a recipe dict."""
    kinds = {"train": TrainSection, "optim": OptimSection, "loss": LossSection, "schedule": ScheduleSection,
             "data": DataSection}
    return {name: kind.from_dict(recipe.get(name)) for name, kind in kinds.items()}
