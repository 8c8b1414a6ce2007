"""The training loop: recipe in, checkpoints and logs out.

A short loop of named steps (nnU-Net's ``run_training`` style)::

    trainer = Trainer(recipe, output_dir, device="auto", max_steps=None, time_budget_s=None)
    summary = trainer.fit()          # or resume=".../last.safetensors"

* Only trainable parameters (``recipe.train.trainable``: ``all`` / ``adapters`` /
  ``decoder``, via ``freeze_except``) reach the optimizer.
* AMP on CUDA (bf16 where supported, else fp16 with a GradScaler); gradient
  clipping; poly / cosine / constant learning rate with optional warm-up.
* ``<out>/last.safetensors`` holds the weights in the inference checkpoint
  format (:mod:`napari_medseg.checkpoint`), ``<out>/last.state.safetensors``
  the optimizer, scaler, RNG, step and recipe (no pickle); ``best.safetensors``
  when a validation split exists.  ``log.csv`` gets one row per logged step,
  and TensorBoard event files are written when ``tensorboard`` is installed.
* Multi-GPU: the same entry point under ``torchrun --nproc_per_node N`` uses
  torch DDP with a ``DistributedSampler`` (detected from ``WORLD_SIZE``);
  the recipe's batch size is the global batch, split among processes; only
  rank 0 logs and saves.  Single-process CPU runs need nothing special.

Hooks: callables ``hook(event, trainer, **info)`` with events ``"step"``
(``step, loss, lr``), ``"validate"`` (``step, dice``) and ``"save"`` (``path``).
"""

from __future__ import annotations

import copy
import csv
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from napari_medseg.device import autocast, pick_device, resolve_precision
from napari_medseg.labels import LabelSet, get_label_set
from napari_medseg.preprocess import Preprocessing
from napari_medseg.retrain.config import check_positive
from napari_medseg.retrain.augment import AugmentConfig, augment_batch
from napari_medseg.retrain.dice import batch_dice, dice_from_counts, mean_foreground
from napari_medseg.retrain.losses import DiceCELoss
from napari_medseg.retrain.schedule import decay_factor
from napari_medseg.retrain.slices import pad_collate
from napari_medseg.retrain.step import train_step

from training import ddp
from training.datasets import build_dataset
from training.recipe import OptimSection, ScheduleSection, recipe_sections
from training.state import load_train_state, save_train_state

Hook = Callable[..., None]


# ------------------------------------------------------------------ shared pieces


def build_optimizer(params, optim_cfg: dict) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over ``params`` from ``{"name", "lr", "weight_decay", ...}``."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: the chosen scope froze the whole model")
    optim_cfg = OptimSection.coerce(optim_cfg)
    name, lr, wd = str(optim_cfg.name).lower(), float(optim_cfg.lr), float(optim_cfg.weight_decay)
    if name in ("adam", "adamw"):
        betas = optim_cfg.betas
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(optim_cfg.momentum))
    raise ValueError(f"optim.name must be adam, adamw or sgd, got {name!r}")


def lr_factor(step: int, total_steps: int, schedule: dict | None) -> float:
    """Multiplier of the base lr at ``step`` (0-based) of ``total_steps``.

    ``schedule``: ``{"kind": "poly" | "cosine" | "constant", "power": 0.9,
    "warmup_steps": 0, "min_factor": 0.0}``.
    """
    schedule = ScheduleSection.coerce(schedule)
    kind, warmup, floor = schedule.kind, int(schedule.warmup_steps), float(schedule.min_factor)
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant" or total_steps <= warmup:
        return 1.0
    value = decay_factor((step - warmup) / max(1, total_steps - warmup), kind, schedule.power)
    return floor + (1.0 - floor) * value


def set_lr(optimizer, base_lr: float, factor: float) -> float:
    lr = base_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


@torch.no_grad()
def predict_logits(model, images, precision="fp32", batch_size: int = 16):
    """Logits ``(N, K, H, W)`` of a batch of model-size images, in eval mode, chunked."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        with autocast(images.device, precision):
            out.append(model(images[start : start + batch_size]).float())
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def dataset_dice(model, loader, num_classes: int, device, precision="fp32") -> np.ndarray:
    """Per-class Dice ``(K,)`` pooled over all pixels of a loader's batches."""
    counts = torch.zeros(3, num_classes, dtype=torch.float64)
    for batch in loader:
        images = batch["image"].to(device)
        logits = predict_logits(model, images, precision)
        counts += batch_dice(logits.argmax(1).cpu(), batch["label"], num_classes)
    return dice_from_counts(counts)


def state_path_for(checkpoint_path) -> Path:
    """``last.safetensors`` -> ``last.state.safetensors``."""
    p = Path(checkpoint_path)
    if p.name.endswith(".state.safetensors"):
        return p
    return p.with_name(p.name[: -len(".safetensors")] + ".state.safetensors" if p.name.endswith(".safetensors") else p.name + ".state.safetensors")


# ------------------------------------------------------------------ recipe


def load_recipe(path) -> dict:
    """Read a YAML recipe and check its sections."""
    import yaml

    path = Path(path)
    if not path.exists():
        builtin = Path(__file__).parent / "configs" / path.name
        if builtin.exists():
            path = builtin
        else:
            raise FileNotFoundError(f"recipe {path} not found; built-in recipes are in {Path(__file__).parent / 'configs'}")
    recipe = yaml.safe_load(path.read_text())
    if not isinstance(recipe, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    missing = [k for k in ("model", "label_set", "data", "optim", "train") if k not in recipe]
    if missing:
        raise ValueError(f"recipe {path} lacks sections {missing}")
    recipe.setdefault("name", path.stem)
    try:
        recipe_sections(recipe)  # unknown keys and bad values fail here, before any data is read
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return recipe


def recipe_label_set(recipe: dict) -> LabelSet:
    ls = recipe["label_set"]
    if isinstance(ls, dict):
        return LabelSet.from_dict(ls)
    return get_label_set(ls)


# ------------------------------------------------------------------ trainer


@dataclass
class TrainSummary:
    """What :meth:`Trainer.fit` did."""

    steps: int
    epochs_done: float
    final_loss: float
    seconds: float
    checkpoint: Path | None
    best_dice: float | None = None
    losses: list[float] = field(default_factory=list)
    stopped_by: str = "epochs"


class Trainer:
    """Train a model from a recipe (see module docstring).

    Args:
        recipe: parsed YAML recipe (:func:`load_recipe`).
        output_dir: where checkpoints and logs go (rank 0 only).
        device: ``auto`` / ``cpu`` / ``cuda`` ...; under torchrun each process uses ``cuda:LOCAL_RANK``.
        resume: a ``last.safetensors`` written by an earlier run.
        max_steps: stop after this many optimiser steps in total (the lr schedule still spans the epochs).
        time_budget_s: stop after this many seconds of this run.
        hooks: callables ``hook(event, trainer, **info)``.
        model: optional pre-built model (tests); otherwise built from the recipe.
        datasets: optional ``(train, val)`` datasets (tests); otherwise from ``recipe.data``.
    """

    def __init__(self, recipe: dict, output_dir, *, device="auto", resume=None, max_steps=None,
                 time_budget_s=None, hooks=(), model=None, datasets=None):
        self.recipe = copy.deepcopy(recipe)
        self.output_dir = Path(output_dir)
        self.dist = ddp.setup(device)
        self.device = self.dist.device if self.dist.enabled else pick_device(device)
        self.is_main = self.dist.rank == 0
        self.sections = recipe_sections(self.recipe)
        tcfg = self.sections["train"]
        self.label_set = recipe_label_set(self.recipe)
        self.preprocessing = Preprocessing.from_dict(self.recipe.get("preprocessing", {}))
        self.max_steps = max_steps if max_steps is not None else tcfg.max_steps
        self.time_budget_s = time_budget_s if time_budget_s is not None else tcfg.time_budget_s
        check_positive("max_steps", self.max_steps, integer=True)  # nan or 0 would never stop, or never start
        check_positive("time_budget_s", self.time_budget_s)
        self.hooks = list(hooks)
        self.resume = resume
        seed = int(tcfg.seed)
        torch.manual_seed(seed + self.dist.rank)
        if datasets is None and not self.recipe["data"].get("root"):
            raise ValueError("data.root is not set; pass --data-root DIR or set data.root in the recipe")

        # model
        if resume is not None:
            from napari_medseg.checkpoint import load_checkpoint

            self.model, info = load_checkpoint(resume, device="cpu", label_set=self.label_set)
            if info.members > 1:
                raise ValueError(f"{info.path.name} is an ensemble of {info.members} models (saved by a fine-tune); "
                                 "medseg train continues one model: start from a single-model checkpoint")
            self.parent_sha = info.sha256
        elif model is not None:
            self.model, self.parent_sha = model, None
        else:
            from napari_medseg.models import build_model

            mcfg = self.recipe["model"]
            self.model = build_model(mcfg["name"], self.label_set.num_classes, **(mcfg.get("config") or {}))
            self.parent_sha = None
        self.model.to(self.device)
        self.trainable = self._freeze(tcfg.trainable)

        # data
        if datasets is None:
            multiple = self.model.size_multiple
            datasets = (
                build_dataset(self.recipe["data"], self.preprocessing, multiple, "train"),
                build_dataset(self.recipe["data"], self.preprocessing, multiple, "val"),
            )
        self.train_set, self.val_set = datasets
        if self.train_set.max_label() >= self.label_set.num_classes:
            raise ValueError(
                f"training labels go up to {self.train_set.max_label()} but label set "
                f"{self.label_set.name!r} has {self.label_set.num_classes} classes"
            )
        self.global_batch = int(tcfg.batch_size)
        self.batch_size = self._fit_batch(max(1, self.global_batch // self.dist.world_size))
        self.steps_per_epoch = max(1, len(self.train_set) // (self.batch_size * self.dist.world_size))
        # the lr schedule always spans the recipe's epochs; step/time budgets only stop early,
        # so a run cut short and resumed follows the same schedule as an uninterrupted one
        self.planned_steps = int(tcfg.epochs) * self.steps_per_epoch

        # optimisation
        self.optimizer = build_optimizer(self.trainable, self.sections["optim"])
        self.base_lr = float(self.sections["optim"].lr)
        self.precision = self._precision(tcfg.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        lcfg = self.sections["loss"]
        self.loss_fn = DiceCELoss(self.label_set.num_classes, lcfg.ce_weight, lcfg.dice_weight, lcfg.include_background)
        self.augment = AugmentConfig.from_dict(self.recipe.get("augment")) if self.recipe.get("augment") else None
        self.net = self.dist.wrap(self.model)
        self.step, self.epoch, self.best_dice = 0, 0, None
        if resume is not None:
            extra = load_train_state(state_path_for(resume), optimizer=self.optimizer, scaler=self.scaler)
            self.step, self.epoch = int(extra["step"]), int(extra["epoch"])
            self.best_dice = extra.get("best_dice")
        self.seed = seed

    # -- setup helpers
    def _fit_batch(self, batch_size: int) -> int:
        """The per-process batch, shrunk (with a warning) when the training set holds fewer slices than one batch."""
        per_process = len(self.train_set) // self.dist.world_size
        if per_process < 1:
            raise ValueError(f"the training set holds {len(self.train_set)} slices, fewer than the "
                             f"{self.dist.world_size} processes; add data or run fewer processes")
        if per_process < batch_size:
            warnings.warn(f"the training set holds {len(self.train_set)} slices, fewer than one batch of "
                          f"{batch_size * self.dist.world_size}; training with batches of {per_process * self.dist.world_size}",
                          stacklevel=3)
            return per_process
        return batch_size

    def _freeze(self, scope: str):
        from napari_medseg.models import freeze_except

        if scope == "all":
            for p in self.model.parameters():
                p.requires_grad_(True)
            return [p for p in self.model.parameters()]
        return freeze_except(self.model, scope)

    def _precision(self, amp) -> str:
        if amp in (False, "off", "fp32", None):
            return "fp32"
        if amp in (True, "auto"):
            return resolve_precision(self.device, "auto")
        return resolve_precision(self.device, str(amp))

    # -- the loop
    def fit(self) -> TrainSummary:
        tcfg = self.sections["train"]
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._write_recipe()
        logger = _Logger(self.output_dir, enabled=self.is_main)
        start = time.monotonic()
        losses: list[float] = []
        stopped_by = "epochs"
        log_every = int(tcfg.log_every)
        save_every = int(tcfg.save_every_steps or 0)
        val_every = int(tcfg.val_every_epochs or 0)
        self.net.train()
        validated_at = None
        while self.step < self.planned_steps and stopped_by == "epochs":
            loader = self._loader(self.epoch, skip_batches=self.step - self.epoch * self.steps_per_epoch)
            for batch in loader:
                images, labels = batch["image"].to(self.device, non_blocking=True), batch["label"].to(self.device, non_blocking=True)
                if self.augment is not None:  # one generator per (seed, rank, step): resumes reproduce it
                    gen = torch.Generator().manual_seed(hash((self.seed, self.dist.rank, self.step)) & 0x7FFFFFFF)
                    images, labels = augment_batch(images, labels, self.augment, gen)
                lr = set_lr(self.optimizer, self.base_lr, lr_factor(self.step, self.planned_steps, self.sections["schedule"]))
                loss = train_step(self.net, images, labels, self.loss_fn, self.optimizer, scaler=self.scaler,
                                  precision=self.precision, grad_clip=tcfg.grad_clip, params=self.trainable)
                self.step += 1
                losses.append(loss)
                self._emit("step", step=self.step, loss=loss, lr=lr)
                if self.step % log_every == 0 or self.step == 1:
                    logger.log(step=self.step, epoch=self.epoch, loss=loss, lr=lr, seconds=round(time.monotonic() - start, 2))
                if self.step % self.steps_per_epoch == 0:  # an epoch ends
                    self.epoch += 1
                    if self.val_set is not None and val_every and self.epoch % val_every == 0:
                        self._validate(logger, losses)
                        validated_at = self.step
                if save_every and self.step % save_every == 0:
                    self.save("last", loss)
                reason = self._should_stop(start)
                if reason:
                    stopped_by = reason
                    break
        if self.val_set is not None and val_every and losses and validated_at != self.step:
            self._validate(logger, losses)  # score the weights we stop with
        final = losses[-1] if losses else math.nan
        path = self.save("last", final) if losses or self.resume is None else None
        logger.close()
        ddp.barrier(self.dist)
        return TrainSummary(self.step, self.epoch + (self.step - self.epoch * self.steps_per_epoch) / self.steps_per_epoch,
                            final, time.monotonic() - start, path, self.best_dice, losses, stopped_by)

    def _loader(self, epoch: int, skip_batches: int = 0):
        indices = self.dist.epoch_indices(len(self.train_set), epoch, int(self.sections["train"].seed))
        indices = indices[: self.steps_per_epoch * self.batch_size][skip_batches * self.batch_size :]
        workers = int(self.sections["train"].num_workers) if self.device.type == "cuda" else 0
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=indices, drop_last=True,
                          collate_fn=pad_collate, num_workers=workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def _should_stop(self, start: float) -> str | None:
        local = None
        if self.max_steps is not None and self.step >= int(self.max_steps):
            local = "max_steps"
        elif self.time_budget_s is not None and time.monotonic() - start >= float(self.time_budget_s):
            local = "time"
        elif self.step >= self.planned_steps:
            local = "epochs"
        return ddp.agree_stop(self.dist, local)

    def _validate(self, logger, losses):
        if self.is_main:
            loader = DataLoader(self.val_set, batch_size=self.batch_size, collate_fn=pad_collate)
            dice = dataset_dice(self.model, loader, self.label_set.num_classes, self.device, self.precision)
            mean = mean_foreground(dice)
            logger.log(step=self.step, epoch=self.epoch, loss=losses[-1] if losses else math.nan, val_dice=round(mean, 4))
            self._emit("validate", step=self.step, dice=mean)
            if self.best_dice is None or mean > self.best_dice:
                self.best_dice = mean
                self.save("best", losses[-1] if losses else math.nan)
        ddp.barrier(self.dist)

    def save(self, name: str, loss: float) -> Path | None:
        """Write ``<out>/<name>.safetensors`` (weights, inference format) and its ``.state`` file (rank 0)."""
        if not self.is_main:
            return None
        from napari_medseg.checkpoint import save_checkpoint

        path = self.output_dir / f"{name}.safetensors"
        provenance = {
            "kind": "train",
            "recipe": self.recipe.get("name"),
            "step": self.step,
            "epoch": self.epoch,
            "final_loss": None if not math.isfinite(loss) else round(float(loss), 6),
            "data": {"kind": self.recipe["data"].get("kind"), "root": str(self.recipe["data"].get("root"))},
            "world_size": self.dist.world_size,
            "augment": self.augment.to_dict() if self.augment is not None else None,
        }
        save_checkpoint(path, self.model, label_set=self.label_set, preprocessing=self.preprocessing,
                        provenance=provenance, parent=self.parent_sha, overwrite=True)
        save_train_state(state_path_for(path), optimizer=self.optimizer, scaler=self.scaler,
                         extra={"step": self.step, "epoch": self.epoch, "best_dice": self.best_dice, "recipe": self.recipe})
        self._emit("save", path=path)
        return path

    def _write_recipe(self):
        import yaml

        (self.output_dir / "recipe.yaml").write_text(yaml.safe_dump(self.recipe, sort_keys=False))

    def _emit(self, event: str, **info):
        for hook in self.hooks:
            hook(event, self, **info)


class _Logger:
    """CSV log (``log.csv``) plus TensorBoard scalars when ``tensorboard`` is installed."""

    FIELDS = ["step", "epoch", "loss", "lr", "val_dice", "seconds"]

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        path = out / "log.csv"
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard not installed: CSV only
            self.tb = None

    def log(self, **row):
        if not self.enabled:
            return
        self.writer.writerow({k: row.get(k, "") for k in self.FIELDS})
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "lr", "val_dice"):
                if key in row and row[key] != "":
                    self.tb.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self):
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
