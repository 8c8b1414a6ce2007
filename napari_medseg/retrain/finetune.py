"""Fine-tune a model on the slices a user corrected (the correct-and-retrain core, Qt-free).

``finetune`` is a generator, driven like inference: the GUI wraps it in a
``thread_worker``, the CLI in tqdm, tests call it directly::

    result = FinetuneResult()
    data = FinetuneData(images=[...], labels=[...], preprocessing=prep)
    gen = finetune(model, data, FinetuneConfig(time_budget_s=60), result=result)
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
held-out mean Dice, checked every ``eval_every`` steps.  Otherwise a finished run
keeps its final weights (the schedule ends at lr 0) unless it diverged; a cancelled
one keeps the snapshot with the lowest smoothed (EMA) training loss so far.
``dice_before`` / ``dice_after`` are measured on the held-out slices when there
are some, else on the training slices, at native resolution as inference
computes them (logits brought back before the argmax).

Partial labels: ``255`` (:data:`~napari_medseg.scribbles.UNLABELLED`) in a
label slice means "nobody labelled this pixel".  Such pixels count in neither
loss term, crops centred on organs never pick them, augmentation keeps them
(nearest-neighbour labels) and the before/after Dice ignores them.

Efficiency (CPU fine-tuning in a minute or two): all slices are prepared once
and kept as tensors on the device; augmentation runs batched in torch; on a CPU
the model trains channels-last with a fused AdamW (:data:`CHANNELS_LAST_DEVICES`); the
resize policy comes from ``preprocessing`` (``"native"`` = pad to the model's
size multiple, usually far fewer pixels than 224^2 and better for few slices);
the lr follows a warm-up + cosine schedule over the step or time budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Iterator, Sequence

import numpy as np
import torch

from napari_medseg.device import pick_device, resolve_precision
from napari_medseg.inference import native_logits
from napari_medseg.models.modes import evaluating, restore_modes, training_modes
from napari_medseg.preprocess import (
    Preprocessing,
    inplane_spacing,
    intensity_range,
    normalize,
    to_model_size,
)
from napari_medseg.progress import drive
from napari_medseg.retrain.augment import AugmentConfig, augment_batch
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.retrain.dice import batch_dice, dice_from_counts, mean_foreground
from napari_medseg.retrain.losses import DiceCELoss, typical_intensity_step
from napari_medseg.retrain.sampling import BalancedSampler
from napari_medseg.retrain.schedule import warmup_cosine
from napari_medseg.retrain.slices import SliceDataset
from napari_medseg.retrain.step import train_step
from napari_medseg.scribbles import UNLABELLED


#: Where fine-tuning trains the model channels-last (its convolutions, oneDNN's fast layout on a CPU)
#: and steps AdamW fused: with ``SpatialAttention``'s layout, 1.09x the steps per second of a DCAU-Net
#: fine-tune at one thread (bench/train_speed.py; docs/retrain.md, "Faster steps").  CUDA is not measured.
#: The input batch needs no conversion: one channel is the same memory in either layout.
CHANNELS_LAST_DEVICES = ("cpu",)
FUSED_ADAMW_DEVICES = ("cpu", "cuda")
#: Seed offset between ensemble members' sampling and augmentation (``FinetuneConfig.member``).
MEMBER_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class FinetuneData:
    """What :func:`finetune` learns from.

    Args:
        images: raw ``(H, W)`` slices (HU for CT) of one volume.
        labels: ``(H, W)`` integer label slices (the user's corrected truth); ``255`` = not
            labelled (partial labels, scribbles): ignored by the loss and the Dice.
        preprocessing: the checkpoint's preprocessing (intensity and resize policy).
        replay: earlier corrections, ``[(images (n,H,W) raw, labels (n,H,W), ...), ...]``
            (e.g. ``CorrectionStore.replay``); mixed into every batch.
        value_range: the whole volume's ``intensity_range`` (MR; ignored for CT);
            default: computed from the given slices.
        spacing: in-plane pixel size of ``images`` in mm, ``(sy, sx)`` or the volume's
            ``(sz, sy, sx)``; required when ``preprocessing`` uses the ``"spacing"`` resize
            policy (replayed entries bring their own, ``Entry.spacing``).
    """

    images: Sequence[np.ndarray]
    labels: Sequence[np.ndarray]
    preprocessing: Preprocessing
    replay: Sequence = ()
    value_range: tuple[float, float] | None = None
    spacing: Sequence[float] | None = None


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
        smoothness_sigma: the edge-aware smoothness term's sigma in use (image units).
        members: an ensemble's per-member results (``retrain.members``); empty for one model.
        evaluated: positions of the slices ``dice_before`` / ``dice_after`` were measured on.
        augment: the training augmentation (``AugmentConfig.to_dict()``), None without; saved in
            the checkpoint's provenance (flip TTA reads it: ``checkpoint.flip_tta_refusal``).
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
    smoothness_sigma: float = math.nan
    augment: dict | None = None
    done: bool = False
    members: list = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)

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


def family_defaults(model):
    """The model's :class:`~napari_medseg.models.spec.FamilySpec`, or ``None`` for an unregistered model."""
    from napari_medseg.models import family_spec

    try:
        return family_spec(getattr(model, "model_name", ""))
    except ValueError:
        return None


def default_scope(model) -> str:
    spec = family_defaults(model)
    return spec.finetune_scope if spec is not None else "all"


def finetune(model, data: FinetuneData, config: FinetuneConfig | None = None, *,
             result: FinetuneResult | None = None) -> Iterator[FinetuneProgress]:
    """Fine-tune ``model`` in place on ``data``; yields :class:`FinetuneProgress`, returns ``result``.

    Args:
        model: a ``build_model`` / ``load_checkpoint`` model (``size_multiple``, ``model_name``).
        data: :class:`FinetuneData` (corrected slices, preprocessing, replay).
        config: :class:`~napari_medseg.retrain.config.FinetuneConfig` (default: its defaults).
            The time budget bounds the optimisation loop; the before/after Dice (one forward
            pass over the evaluation slices each) comes on top.  The model returns to its
            original device, trainable flags and train/eval mode.
        result: a :class:`FinetuneResult` to fill (pass one to keep it across cancel).
    """
    config = config if config is not None else FinetuneConfig()
    result = result if result is not None else FinetuneResult()
    run = _prepare(model, data, config, result)
    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training, home = training_modes(model), next(model.parameters()).device
    model.to(run.device, memory_format=torch.channels_last if run.channels_last else torch.preserve_format)
    _setup_training(model, config, run)
    result.smoothness_sigma = run.smoothness_sigma
    result.augment = run.augment.to_dict() if run.augment is not None else None
    start = time.monotonic()
    try:
        result.dice_before, result.per_class_before = _evaluate(model, run)
        result.best_state, result.best_step = _snapshot(model, run), 0
        result.best_score = result.dice_before if run.val_idx else math.inf
        yield from _train(model, config, run, result)
        _keep_if_better(model, run, result, result.steps, final=True)
    except GeneratorExit:
        result.stopped_by = "cancelled"
        raise
    finally:
        result.apply(model)
        try:
            result.dice_after, result.per_class_after = _evaluate(model, run)
        finally:
            for name, p in model.named_parameters():
                p.requires_grad_(saved_flags[name])
            restore_modes(model, was_training)
            model.to(home, memory_format=torch.contiguous_format if run.channels_last else torch.preserve_format)
            result.seconds = time.monotonic() - start
            result.done = True
    return result


def _prepare(model, data: FinetuneData, config: FinetuneConfig, result: FinetuneResult) -> SimpleNamespace:
    """Check the slices, split them, and stack the training pool as tensors on the device (once)."""
    images = [np.asarray(im) for im in data.images]
    labels = [np.asarray(lab) for lab in data.labels]
    check_slices(images, labels, model)
    prep = data.preprocessing
    result.scope = config.scope or default_scope(model)
    dev = pick_device(config.device) if not isinstance(config.device, torch.device) else config.device
    run = SimpleNamespace(device=dev, precision=resolve_precision(dev, config.precision), prep=prep,
                          multiple=int(model.size_multiple), scope=result.scope, steps=config.step_budget,
                          gen=torch.Generator().manual_seed(config.seed), channels_last=dev.type in CHANNELS_LAST_DEVICES)
    torch.manual_seed(config.seed)
    run.val_idx, train_idx = split_indices(len(images), config, run.gen)
    if config.member:  # an ensemble member: its own batches and augmentation, the shared split
        run.gen.manual_seed(config.seed + MEMBER_SEED_STRIDE * config.member)
    result.train_indices, result.held_out_indices = train_idx, run.val_idx
    result.dice_on = "held-out" if run.val_idx else "training"
    result.evaluated = run.val_idx or train_idx
    norm = _normalised(images, data)
    run.spacing = inplane_spacing(data.spacing, prep)  # one-line error when "spacing" has none
    pool = SliceDataset([norm[i] for i in train_idx], [labels[i] for i in train_idx], prep, run.multiple,
                        spacings=run.spacing)
    n_new = len(pool)
    for item in data.replay or []:
        r_images = np.asarray(item[0])
        r_range = intensity_range(r_images, prep) if prep.modality == "mr" else None
        replayed = SliceDataset.from_raw(r_images, np.asarray(item[1]), prep, run.multiple, value_ranges=r_range,
                                         spacings=_replay_spacing(item, prep))
        pool.images += replayed.images
        pool.labels += replayed.labels
        pool.spacings += replayed.spacings
    run.sampler = BalancedSampler(n_new, len(pool) - n_new, config.replay_fraction)  # >= half current per batch
    run.x_train, run.y_train = (t.to(dev) for t in pool.tensors())
    run.crop_size = _crop_size(config.crop_size, run.multiple, run.x_train.shape[-2:])
    full = (~(run.y_train == UNLABELLED).flatten(1).any(1)).tolist()  # per pool slice: every pixel labelled
    run.whole_from, run.whole_batch = _whole_slice_plan(config, run.crop_size, run.x_train.shape[-2:],
                                                        not all(full[:n_new]))
    # whole slices replay only fully labelled entries: stored scribbles keep the crops' smoothness term
    run.whole_sampler = BalancedSampler(n_new, 0, config.replay_fraction,
                                        replay_positions=[p for p in range(n_new, len(pool)) if full[p]])
    run.eval_set = [(norm[i], labels[i]) for i in (run.val_idx or train_idx)]
    num_classes = int(model.config["num_classes"]) if "num_classes" in model.config else None
    max_label = max(_max_labelled(run.y_train), max(_max_labelled(lab) for lab in labels))
    run.num_classes = num_classes if num_classes is not None else max_label + 1
    if max_label >= run.num_classes:
        raise ValueError(f"labels go up to {max_label} but the model predicts {run.num_classes} classes")
    return run


def split_indices(n: int, config: FinetuneConfig, gen: torch.Generator | None = None) -> tuple[list[int], list[int]]:
    """``(held-out, training)`` positions of ``n`` slices: ``validation_fraction`` held out when there are
    at least ``min_slices_for_validation``; drawn by ``gen`` (default: a fresh one seeded by ``config.seed``)."""
    gen = gen if gen is not None else torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=gen).tolist()
    n_val = int(round(config.validation_fraction * n)) if n >= config.min_slices_for_validation else 0
    return sorted(order[:n_val]), sorted(order[n_val:])


def _normalised(images, data: FinetuneData) -> list[np.ndarray]:
    """``images`` normalised by ``data``'s preprocessing (MR: the volume's range, else the slices' own)."""
    prep, value_range = data.preprocessing, data.value_range
    if value_range is None and prep.modality == "mr":
        value_range = intensity_range(np.concatenate([np.asarray(im).ravel() for im in data.images]), prep)
    return [normalize(np.asarray(im), prep, value_range) for im in images]


def evaluate_slices(model, data: FinetuneData, indices: Sequence[int], config: FinetuneConfig) -> tuple[float, dict]:
    """``(mean foreground Dice, {label: dice})`` of ``model`` on ``data``'s slices ``indices``, predicted at
    native size as inference does, on ``config``'s device and precision (the model is moved there and back)."""
    dev = pick_device(config.device) if not isinstance(config.device, torch.device) else config.device
    home = next(model.parameters()).device
    num_classes = int(model.config["num_classes"])
    slices = [(image, np.asarray(data.labels[i])) for i, image in
              zip(indices, _normalised([data.images[i] for i in indices], data))]
    model.to(dev)
    try:
        per_class = _native_dice(model, slices, data.preprocessing, int(model.size_multiple), num_classes, dev,
                                 resolve_precision(dev, config.precision), inplane_spacing(data.spacing, data.preprocessing))
    finally:
        model.to(home)
    return mean_foreground(per_class), {k: float(v) for k, v in enumerate(per_class) if k > 0}


def _max_labelled(labels) -> int:
    """The largest label value other than :data:`UNLABELLED` (0 when none)."""
    values = labels[labels != UNLABELLED].reshape(-1)
    return int(values.max()) if len(values) else 0


def _replay_spacing(item, prep):
    """The in-plane spacing of a replayed ``(images, labels, Entry)``; a clear error when it is unusable."""
    entry = item[2] if len(item) > 2 else None
    spacing = getattr(entry, "spacing", None)
    try:
        return inplane_spacing(spacing, prep)
    except ValueError as err:
        name = getattr(entry, "id", "a replayed entry")
        raise ValueError(f"replayed store entry {name}: {err}") from None


def _whole_slice_plan(config: FinetuneConfig, crop_size: int | None, hw, current_partial: bool) -> tuple[float, int]:
    """``(fraction of the run from which batches are whole slices, slices in such a batch)``.

    Without crops: from 0, ``batch_size`` slices.  With crops: from ``1 - final_whole_slices`` (never, ``inf``,
    for a share of 0 or when the current patient's slices hold unlabelled pixels: there the phase cost scribbles
    0.004-0.011 Dice and 20 % more time a step, docs/retrain.md), as many ``hw`` slices as hold the crops'
    pixels, at least 2.  (Replayed partial entries do not turn it off: the phase leaves them out.)
    """
    if crop_size is None:
        return 0.0, config.batch_size
    share = 0.0 if current_partial else config.final_whole_slices
    h, w = hw
    slices = max(min(2, config.batch_size), round(config.batch_size * crop_size ** 2 / (h * w)))
    return (1.0 - share if share > 0 else math.inf), slices


def _crop_size(crop_size: int | None, multiple: int, shape) -> int | None:
    if crop_size is not None and (crop_size < multiple or crop_size % multiple):
        raise ValueError(f"crop_size must be a positive multiple of {multiple}, got {crop_size}")
    if crop_size is not None and crop_size >= min(shape):
        return None  # slices no larger than the crop: train on whole slices
    return crop_size


def _setup_training(model, config: FinetuneConfig, run: SimpleNamespace) -> None:
    """Freeze outside the scope; AdamW over the trainable parameters, loss, scaler and augmentation."""
    from napari_medseg.models import freeze_except

    run.trainable = freeze_except(model, run.scope)
    run.trainable_names = {name for name, p in model.named_parameters() if p.requires_grad}
    run.optimizer = torch.optim.AdamW(run.trainable, lr=config.lr, weight_decay=config.weight_decay,
                                      fused=True if run.device.type in FUSED_ADAMW_DEVICES else None)
    run.scaler = torch.amp.GradScaler("cuda") if run.precision == "fp16" else None  # fp16 needs loss scaling
    spec = family_defaults(model)
    ce_w, dice_w = config.loss_weights or (spec.loss_weights if spec is not None else (0.5, 0.5))
    run.smoothness_sigma = config.smoothness_sigma or config.smoothness_sigma_per_step * typical_intensity_step(
        run.x_train)
    run.loss_fn = DiceCELoss(run.num_classes, ce_w, dice_w, smoothness_weight=config.smoothness_weight,
                             smoothness_sigma=run.smoothness_sigma, smoothness_radius=config.smoothness_radius,
                             entropy_weight=config.entropy_weight)
    run.augment = AugmentConfig.finetune() if config.augment is True else (config.augment or None)
    run.check_every = config.eval_every or max(5, (run.steps or 200) // 20)


def _train(model, config: FinetuneConfig, run: SimpleNamespace, result: FinetuneResult) -> Iterator[FinetuneProgress]:
    """The optimisation loop: sample, crop, augment, step; keep the best weights every ``check_every``."""
    _train_mode(model, config)
    step, ema, budget = 0, None, config.time_budget_s
    train_start = time.monotonic()  # the budget bounds the optimisation loop (at least one step)
    while True:
        fraction = _fraction(step, time.monotonic() - train_start, run.steps, budget)
        if fraction >= 1.0 and step > 0:
            result.stopped_by = "steps" if run.steps is not None and step >= run.steps else "time"
            break
        whole = fraction >= run.whole_from
        idx = (run.whole_sampler if whole else run.sampler).draw(run.whole_batch if whole else config.batch_size,
                                                                 run.gen)
        xb, yb = run.x_train[idx.to(run.device)], run.y_train[idx.to(run.device)]
        if not whole:
            xb, yb = _random_crops(xb, yb, run.crop_size, config.crop_foreground, run.gen)
        if run.augment is not None:
            # Scribbled slices keep their values: their labels spread through intensity (the smoothness
            # term), and intensity jitter cost them 0.01-0.05 Dice (docs/retrain.md, "A second patient").
            full = ~(yb == UNLABELLED).flatten(1).any(1)
            xb, yb = augment_batch(xb, yb, run.augment, run.gen, appearance=full)
        current_lr = config.lr * warmup_cosine(fraction, config.warmup_fraction)
        for group in run.optimizer.param_groups:
            group["lr"] = current_lr
        value = train_step(model, xb, yb, run.loss_fn, run.optimizer, scaler=run.scaler, precision=run.precision,
                           grad_clip=config.grad_clip, params=run.trainable)
        step += 1
        result.losses.append(value)
        result.steps, result.final_loss = step, value
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        run.ema = ema
        if step % run.check_every == 0:
            _keep_if_better(model, run, result, step)
            _train_mode(model, config)
        elapsed = time.monotonic() - train_start
        yield FinetuneProgress(step, run.steps, elapsed, budget, value, current_lr,
                               min(1.0, _fraction(step, elapsed, run.steps, budget)))


def _train_mode(model, config: FinetuneConfig) -> None:
    """``model.train()``; with ``batchnorm="frozen"`` BatchNorm layers stay in eval mode (running stats kept)."""
    model.train()
    if config.batchnorm == "frozen":
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


#: Without held-out slices a finished run keeps its final weights (the schedule ends at lr 0) unless
#: its smoothed training loss ended more than this many times above its lowest: a run that diverged
#: goes back to the snapshot at that lowest loss.  Picking the lowest of ~20 noisy loss readings
#: instead chose an earlier snapshot in 4 of 6 paired runs, at the same Dice (docs/retrain.md).
DIVERGED_LOSS_RATIO = 2.0


def _keep_if_better(model, run: SimpleNamespace, result: FinetuneResult, step: int, final: bool = False) -> None:
    """Snapshot the weights when the held-out Dice rose; without held-out slices, when the loss EMA
    fell, and at the end the final weights unless the run diverged (:data:`DIVERGED_LOSS_RATIO`)."""
    if run.val_idx:
        score, _ = _evaluate(model, run)
        if score > result.best_score:
            result.best_score, result.best_state, result.best_step = score, _snapshot(model, run), step
        return
    ema = getattr(run, "ema", None)
    if ema is None or not math.isfinite(ema):
        return
    if ema < result.best_score or (final and ema <= DIVERGED_LOSS_RATIO * result.best_score):
        result.best_state, result.best_step = _snapshot(model, run), step
        result.best_score = min(ema, result.best_score)


def _snapshot(model, run: SimpleNamespace) -> dict:
    """CPU copies of the trainable parameters and of every buffer."""
    state = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if name in run.trainable_names}
    state.update({name: b.detach().to("cpu", copy=True) for name, b in model.named_buffers()})
    return state


def _evaluate(model, run: SimpleNamespace) -> tuple[float, dict]:
    """``(mean foreground Dice, {label: dice})`` on the evaluation slices, at native size."""
    per_class = _native_dice(model, run.eval_set, run.prep, run.multiple, run.num_classes, run.device, run.precision,
                             run.spacing)
    return mean_foreground(per_class), {k: float(v) for k, v in enumerate(per_class) if k > 0}


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


def check_slices(images, labels, model) -> None:
    """One-line errors for slices fine-tuning cannot use (none, unequal shapes, no organ pixel, a foreign model)."""
    if not images:
        raise ValueError("no corrected slices given: paint or review at least one slice before fine-tuning")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} image slices but {len(labels)} label slices")
    for i, (im, lab) in enumerate(zip(images, labels)):
        if im.ndim != 2 or im.shape != lab.shape:
            raise ValueError(f"slice {i}: image {im.shape} and labels {lab.shape} must be equal 2D shapes")
        if lab.min() < 0:
            raise ValueError(f"slice {i}: negative labels")
    if not any(((lab > 0) & (lab != UNLABELLED)).any() for lab in labels):
        raise ValueError("the corrected slices hold no labelled pixels of any organ; paint at least one organ")
    for attr in ("size_multiple", "config"):
        if not hasattr(model, attr):
            raise TypeError(f"model has no {attr!r}; pass a model from napari_medseg.models.build_model or load_checkpoint")


def _random_crops(images, labels, size: int, p_foreground: float, gen: torch.Generator):
    """Random ``size x size`` crops of ``(B, C, H, W)`` images and ``(B, H, W)`` labels.

    With probability ``p_foreground`` a crop is centred (as far as the borders allow)
    on a random pixel of an organ drawn uniformly from those present in the slice
    (never on an unlabelled pixel, 255).
    """
    b, _, h, w = images.shape
    xs, ys = [], []
    for i in range(b):
        cy, cx = None, None
        if float(torch.rand((), generator=gen)) < p_foreground:
            present = torch.unique(labels[i])
            present = present[(present > 0) & (present != UNLABELLED)]
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
def _native_dice(model, slices, prep, multiple, num_classes, device, precision, spacing=None) -> np.ndarray:
    """Per-class Dice ``(K,)`` pooled over normalised slices, predicted as inference does (255 not counted).

    ``spacing``: the slices' in-plane ``(sy, sx)`` mm (the ``"spacing"`` policy resamples by it).
    """
    counts = torch.zeros(3, num_classes, dtype=torch.float64)
    with evaluating(model):
        for image, label in slices:
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
            x, info = to_model_size(x, prep, multiple, spacing)
            pred = native_logits(model, x, info, device, precision).argmax(1)[0].cpu()
            counts += batch_dice(pred, torch.from_numpy(np.asarray(label).astype(np.int64)), num_classes,
                                 ignore_index=UNLABELLED)
    return dice_from_counts(counts)
