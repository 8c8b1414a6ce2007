"""Fine-tune a model on the slices a user corrected (the correct-and-retrain core, Qt-free).

``finetune`` is a generator, driven like inference: the GUI wraps it in a
``thread_worker``, the CLI in tqdm, tests call it directly::

    result = FinetuneResult()
    gen = finetune(model, images=[...], labels=[...], preprocessing=prep,
                   time_budget_s=60, result=result)
    for progress in gen:            # FinetuneProgress(step, total_steps, elapsed_s, budget_s, loss, lr)
        ...                         # gen.close() cancels
    # the model now holds the best weights; ``result`` says what happened.
    # (The generator also *returns* ``result``: StopIteration.value, or run_finetune(gen).)

Cancel keeps the best weights: the generator fills ``result`` as it goes
(``best_state`` holds a copy of the trainable tensors of the best step) and,
when closed, loads them into the model and measures ``dice_after``.

What is trained: ``scope`` ``"adapters"`` (U-DFA: SPA + LGFA + decoder, DINOv2
frozen), ``"decoder"`` (DCAU-Net) or ``"all"``; the default follows the model
family.  Only trainable parameters reach the optimiser (AdamW), and only
they are copied for ``best_state``.

Which weights are "best": with a held-out part (``validation_fraction`` of the
slices when there are at least ``min_slices_for_validation``), the highest
held-out mean Dice, checked every ``eval_every`` steps; otherwise the lowest
smoothed (EMA) training loss.  ``dice_before`` / ``dice_after`` are measured
on the held-out slices when there are some, else on the training slices, at
native resolution as inference computes them (logits brought back before the
argmax).

Efficiency (CPU fine-tuning in a minute or two): all slices are prepared once
and kept as tensors on the device; augmentation runs batched in torch; the
resize policy comes from ``preprocessing`` (``"native"`` = pad to the model's
size multiple, usually far fewer pixels than 224^2 and better for few slices);
the lr follows a warm-up + cosine schedule over the step or time budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from napari_medseg.device import autocast, pick_device, resolve_precision
from napari_medseg.progress import drive
from napari_medseg.preprocess import Preprocessing, intensity_range, logits_to_native, normalize, to_model_size

from napari_medseg.retrain.augment import AugmentConfig, augment_batch
from napari_medseg.retrain.dice import batch_dice, dice_from_counts, mean_foreground
from napari_medseg.retrain.losses import DiceCELoss
from napari_medseg.retrain.slices import SliceDataset
from napari_medseg.retrain.step import train_step

DEFAULT_SCOPE = {"udfa": "adapters", "dcaunet": "decoder"}
LOSS_WEIGHTS = {"dcaunet": (0.4, 0.6), "udfa": (0.5, 0.5)}
DEFAULT_STEPS = 200


@dataclass(frozen=True)
class FinetuneProgress:
    """One report per optimiser step.

    ``total_steps`` is ``None`` under a pure time budget; ``budget_s`` is ``None``
    under a pure step budget; ``fraction`` is the progress in [0, 1] either way.
    """

    step: int
    total_steps: int | None
    elapsed_s: float
    budget_s: float | None
    loss: float
    lr: float
    fraction: float


@dataclass
class FinetuneResult:
    """Filled while fine-tuning runs, so a cancelled run still has its best weights.

    Attributes:
        best_state: ``{name: tensor}`` (CPU copies) of the trainable parameters and
            the model's buffers at the best step; see :meth:`apply`.
        best_step: step of ``best_state`` (0 = the weights before fine-tuning).
        losses: training loss per step.
        dice_before / dice_after: mean foreground Dice on ``dice_on`` slices.
        per_class_before / per_class_after: ``{label: dice}`` (``nan`` = absent in both).
        dice_on: ``"held-out"`` or ``"training"``.
        train_indices / held_out_indices: positions in the ``images`` argument.
        steps, seconds, final_loss, scope, stopped_by (``"steps" | "time" | "cancelled"``).
    """

    best_state: dict | None = None
    best_step: int = 0
    best_score: float | None = None
    losses: list[float] = field(default_factory=list)
    dice_before: float = math.nan
    dice_after: float = math.nan
    per_class_before: dict = field(default_factory=dict)
    per_class_after: dict = field(default_factory=dict)
    dice_on: str = "training"
    train_indices: list[int] = field(default_factory=list)
    held_out_indices: list[int] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    final_loss: float = math.nan
    scope: str = ""
    stopped_by: str = ""
    done: bool = False

    def apply(self, model) -> None:
        """Copy ``best_state`` into ``model`` (in place); every stored name must exist."""
        if self.best_state is None:
            return
        named = dict(model.named_parameters())
        named.update(dict(model.named_buffers()))
        missing = [k for k in self.best_state if k not in named]
        if missing:
            raise KeyError(f"best_state names not in the model: {missing[:5]}")
        with torch.no_grad():
            for name, value in self.best_state.items():
                named[name].copy_(value.to(named[name].device))


def default_scope(model) -> str:
    return DEFAULT_SCOPE.get(getattr(model, "model_name", ""), "all")


def finetune(
    model,
    *,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    preprocessing: Preprocessing,
    scope: str | None = None,
    steps: int | None = None,
    time_budget_s: float | None = None,
    replay: Sequence | None = None,
    replay_fraction: float = 0.5,
    augment: bool | AugmentConfig = True,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup_fraction: float = 0.05,
    loss_weights: tuple[float, float] | None = None,
    grad_clip: float | None = 1.0,
    device="auto",
    precision: str = "auto",
    seed: int = 0,
    validation_fraction: float = 0.2,
    min_slices_for_validation: int = 8,
    eval_every: int | None = None,
    value_range: tuple[float, float] | None = None,
    crop_size: int | None = None,
    crop_foreground: float = 0.5,
    result: FinetuneResult | None = None,
) -> Iterator[FinetuneProgress]:
    """Fine-tune ``model`` in place on corrected slices; yields progress, returns ``result``.

    Args:
        model: a ``build_model`` / ``load_checkpoint`` model (``size_multiple``, ``model_name``).
        images: raw ``(H, W)`` slices (HU for CT) of one volume.
        labels: ``(H, W)`` integer label slices (the user's corrected truth).
        preprocessing: the checkpoint's preprocessing (intensity and resize policy).
        scope: ``"adapters" | "decoder" | "all"``; default by model family.
        steps / time_budget_s: stop after whichever comes first (default: 200 steps).  The
            time budget bounds the optimisation loop; the before/after Dice (one forward
            pass over the evaluation slices each) comes on top.  At least one step runs.
        replay: earlier corrections, ``[(images (n,H,W) raw, labels (n,H,W), ...), ...]``
            (e.g. ``CorrectionStore.replay``); mixed into every batch.
        replay_fraction: share of each batch drawn from ``replay`` (when given).
        augment: ``True`` (:meth:`AugmentConfig.finetune`), ``False``, or a config.
        batch_size, lr, weight_decay: AdamW settings; lr warms up over
            ``warmup_fraction`` of the budget, then decays (cosine) to 0.
        loss_weights: ``(ce, dice)``; default by family (DCAU-Net 0.4/0.6, U-DFA 0.5/0.5).
        device, precision: see ``napari_medseg.device``; the model returns to its original device.
        seed: seeds the split, sampling and augmentation.
        validation_fraction, min_slices_for_validation: held-out split (see module docstring).
        eval_every: steps between held-out evaluations / best-loss checks (default ~ budget / 20).
        value_range: the whole volume's ``intensity_range`` (MR; ignored for CT);
            default: computed from the given slices.
        crop_size: train on random ``crop_size``^2 crops (a multiple of the model's
            ``size_multiple``) of the model-size slices instead of whole slices: more
            steps per second; ``None`` = whole slices.  Evaluation and inference stay whole.
        crop_foreground: share of crops centred on a pixel of a random organ present in
            the slice (class-balanced: small organs are picked as often as large ones).
        result: a :class:`FinetuneResult` to fill (pass one to keep it across cancel).
    """
    from napari_medseg.models import freeze_except

    result = result if result is not None else FinetuneResult()
    images = [np.asarray(im) for im in images]
    labels = [np.asarray(lab) for lab in labels]
    _check_slices(images, labels, model)
    if steps is None and time_budget_s is None:
        steps = DEFAULT_STEPS
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError(f"time_budget_s must be > 0, got {time_budget_s}")
    scope = scope or default_scope(model)
    result.scope = scope
    dev = pick_device(device) if not isinstance(device, torch.device) else device
    precision = resolve_precision(dev, precision)
    home = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    multiple = int(model.size_multiple)
    num_classes = int(model.config["num_classes"]) if "num_classes" in model.config else None

    # split
    n = len(images)
    order = torch.randperm(n, generator=gen).tolist()
    n_val = int(round(validation_fraction * n)) if n >= min_slices_for_validation else 0
    val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
    result.train_indices, result.held_out_indices = train_idx, val_idx
    result.dice_on = "held-out" if val_idx else "training"

    # tensors, prepared once
    if value_range is None and preprocessing.modality == "mr":
        value_range = intensity_range(np.concatenate([im.ravel() for im in images]), preprocessing)
    norm = [normalize(im, preprocessing, value_range) for im in images]
    pool_images, pool_labels, weights = [], [], []
    for i in train_idx:
        pool_images.append(norm[i])
        pool_labels.append(labels[i])
    n_new = len(pool_images)
    for item in replay or []:
        r_images, r_labels = np.asarray(item[0]), np.asarray(item[1])
        r_range = intensity_range(r_images, preprocessing) if preprocessing.modality == "mr" else None
        for im, lab in zip(r_images, r_labels):
            pool_images.append(normalize(im, preprocessing, r_range))
            pool_labels.append(lab)
    n_replay = len(pool_images) - n_new
    if n_replay and n_new:
        weights = [(1 - replay_fraction) / n_new] * n_new + [replay_fraction / n_replay] * n_replay
    else:
        weights = [1.0] * len(pool_images)
    x_train, y_train = (t.to(dev) for t in SliceDataset(pool_images, pool_labels, preprocessing, multiple).tensors())
    if crop_size is not None and (crop_size < multiple or crop_size % multiple):
        raise ValueError(f"crop_size must be a positive multiple of {multiple}, got {crop_size}")
    if crop_size is not None and crop_size >= min(x_train.shape[-2:]):
        crop_size = None  # slices no larger than the crop: train on whole slices
    sample_weights = torch.tensor(weights, dtype=torch.float64)
    eval_set = [(norm[i], labels[i]) for i in (val_idx or train_idx)]
    if num_classes is None:
        num_classes = int(max(int(lab.max()) for lab in labels)) + 1
    max_label = max(int(y_train.max()), max(int(lab.max()) for lab in labels))
    if max_label >= num_classes:
        raise ValueError(f"labels go up to {max_label} but the model predicts {num_classes} classes")

    # model, optimiser, loss
    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.to(dev)
    trainable = freeze_except(model, scope)
    trainable_names = {name for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None  # fp16 needs loss scaling
    ce_w, dice_w = loss_weights or LOSS_WEIGHTS.get(getattr(model, "model_name", ""), (0.5, 0.5))
    loss_fn = DiceCELoss(num_classes, ce_w, dice_w)
    aug = AugmentConfig.finetune() if augment is True else (augment or None)
    total = steps
    budget_every = eval_every or max(5, (steps or 200) // 20)

    def snapshot():
        state = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if name in trainable_names}
        state.update({name: b.detach().to("cpu", copy=True) for name, b in model.named_buffers()})
        return state

    def evaluate():
        per_class = _native_dice(model, eval_set, preprocessing, multiple, num_classes, dev, precision)
        return mean_foreground(per_class), {k: float(v) for k, v in enumerate(per_class) if k > 0}

    start = time.monotonic()
    ema = None
    try:
        result.dice_before, result.per_class_before = evaluate()
        result.best_state, result.best_step = snapshot(), 0
        result.best_score = result.dice_before if val_idx else math.inf
        model.train()
        step = 0
        train_start = time.monotonic()  # the budget bounds the optimisation loop (at least one step)
        while True:
            elapsed = time.monotonic() - train_start
            fraction = _fraction(step, elapsed, steps, time_budget_s)
            if fraction >= 1.0 and step > 0:
                result.stopped_by = "steps" if steps is not None and step >= steps else "time"
                break
            idx = torch.multinomial(sample_weights, batch_size, replacement=True, generator=gen)
            xb, yb = x_train[idx.to(dev)], y_train[idx.to(dev)]
            if crop_size is not None:
                xb, yb = _random_crops(xb, yb, crop_size, crop_foreground, gen)
            if aug is not None:
                xb, yb = augment_batch(xb, yb, aug, gen)
            current_lr = lr * _schedule(fraction, warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            value = train_step(model, xb, yb, loss_fn, optimizer, scaler=scaler, precision=precision,
                               grad_clip=grad_clip, params=trainable)
            step += 1
            result.losses.append(value)
            result.steps = step
            result.final_loss = value
            ema = value if ema is None else 0.9 * ema + 0.1 * value
            if step % budget_every == 0:
                if val_idx:
                    score, _ = evaluate()
                    model.train()
                    if score > result.best_score:
                        result.best_score, result.best_state, result.best_step = score, snapshot(), step
                elif ema < result.best_score:
                    result.best_score, result.best_state, result.best_step = ema, snapshot(), step
            elapsed = time.monotonic() - train_start
            yield FinetuneProgress(step, total, elapsed, time_budget_s, value, current_lr,
                                   min(1.0, _fraction(step, elapsed, steps, time_budget_s)))
        # the end of the budget: compare the last weights with the best so far
        if val_idx:
            score, _ = evaluate()
            if score > result.best_score:
                result.best_score, result.best_state, result.best_step = score, snapshot(), result.steps
        elif ema is not None and ema <= result.best_score:
            result.best_score, result.best_state, result.best_step = ema, snapshot(), result.steps
    except GeneratorExit:
        result.stopped_by = "cancelled"
        raise
    finally:
        result.apply(model)
        try:
            result.dice_after, result.per_class_after = evaluate()
        finally:
            for name, p in model.named_parameters():
                p.requires_grad_(saved_flags[name])
            model.train(was_training)
            model.to(home)
            result.seconds = time.monotonic() - start
            result.done = True
    return result


def run_finetune(gen, callback=None) -> FinetuneResult:
    """Drive a :func:`finetune` generator to the end; ``callback(progress)`` per step."""
    return drive(gen, callback)


# ------------------------------------------------------------------ helpers


def _fraction(step: int, elapsed: float, steps: int | None, budget: float | None) -> float:
    parts = []
    if steps is not None:
        parts.append(step / steps)
    if budget is not None:
        parts.append(elapsed / budget)
    return max(parts)


def _schedule(fraction: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 0, as a function of budget fraction."""
    if warmup > 0 and fraction < warmup:
        return max(fraction / warmup, 0.05)
    progress = (fraction - warmup) / max(1e-9, 1 - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _check_slices(images, labels, model) -> None:
    if not images:
        raise ValueError("no corrected slices given: paint or review at least one slice before fine-tuning")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} image slices but {len(labels)} label slices")
    for i, (im, lab) in enumerate(zip(images, labels)):
        if im.ndim != 2 or im.shape != lab.shape:
            raise ValueError(f"slice {i}: image {im.shape} and labels {lab.shape} must be equal 2D shapes")
        if lab.min() < 0:
            raise ValueError(f"slice {i}: negative labels")
    if not any(lab.any() for lab in labels):
        raise ValueError("the corrected slices hold no labelled pixels; paint at least one organ")
    for attr in ("size_multiple", "config"):
        if not hasattr(model, attr):
            raise TypeError(f"model has no {attr!r}; pass a model from napari_medseg.models.build_model or load_checkpoint")


def _random_crops(images, labels, size: int, p_foreground: float, gen: torch.Generator):
    """Random ``size x size`` crops of ``(B, C, H, W)`` images and ``(B, H, W)`` labels.

    With probability ``p_foreground`` a crop is centred (as far as the borders allow)
    on a random pixel of an organ drawn uniformly from those present in the slice.
    """
    b, _, h, w = images.shape
    xs, ys = [], []
    for i in range(b):
        cy, cx = None, None
        if float(torch.rand((), generator=gen)) < p_foreground:
            present = torch.unique(labels[i])
            present = present[present > 0]
            if len(present):
                organ = present[int(torch.randint(len(present), (), generator=gen))]
                where = torch.nonzero(labels[i] == organ)
                cy, cx = where[int(torch.randint(len(where), (), generator=gen))].tolist()
        if cy is None:
            cy, cx = int(torch.randint(h, (), generator=gen)), int(torch.randint(w, (), generator=gen))
        top = min(max(cy - size // 2, 0), h - size)
        left = min(max(cx - size // 2, 0), w - size)
        xs.append(images[i, :, top:top + size, left:left + size])
        ys.append(labels[i, top:top + size, left:left + size])
    return torch.stack(xs), torch.stack(ys)


@torch.no_grad()
def _native_dice(model, slices, prep, multiple, num_classes, device, precision) -> np.ndarray:
    """Per-class Dice ``(K,)`` pooled over normalised slices, predicted as inference does."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, num_classes, dtype=torch.float64)
    for image, label in slices:
        x, info = to_model_size(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device), prep, multiple)
        with autocast(device, precision):
            logits = model(x)
        pred = logits_to_native(logits.float(), info).argmax(1)[0].cpu()
        counts += batch_dice(pred, torch.from_numpy(np.asarray(label).astype(np.int64)), num_classes)
    model.train(was_training)
    return dice_from_counts(counts)
