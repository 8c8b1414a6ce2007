"""Fine-tune the members of an :class:`~napari_medseg.models.ensemble.Ensemble` at once, one thread each.

A drop-in for :func:`~napari_medseg.retrain.finetune.finetune` (same arguments, same
:class:`FinetuneProgress` reports, same cancel-keeps-the-best-weights contract)::

    gen = finetune_members(ensemble, data, config, result=result)
    for progress in gen:    # step = optimiser steps of all members together
        ...                 # gen.close() cancels every member

Each member runs the ordinary ``finetune`` generator in its own thread, with
``FinetuneConfig.member`` = its index (its own batches and augmentation, the
shared held-out split).  Torch's intra-op threads are split among the members
while they train (``torch.set_num_threads`` is process-wide) and restored
afterwards.  Why: on a CPU one fine-tune makes poor use of a second core
(11-13.5 steps/s with two threads against 10 with one), while two at once make
about 9 steps/s each (docs/retrain.md, "Two models at once").

Every step a member takes holds its ``Ensemble.step_locks`` entry, so another thread
may predict with the whole ensemble between steps (``models.ensemble.paused``: the live preview).
``result`` describes the ensemble: Dice before/after of the averaged prediction on the
shared evaluation slices, steps summed; ``result.members`` holds each member's own result.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Iterator

import numpy as np
import torch

from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.retrain.finetune import (
    FinetuneData,
    FinetuneProgress,
    FinetuneResult,
    check_slices,
    evaluate_slices,
    finetune,
    split_indices,
)

_DONE = object()


#: torch's thread count before each running :func:`finetune_members` split it (one entry per run).
_threads_before_runs: list[int] = []


def cpu_threads() -> int:
    """torch's CPU threads as a fine-tune will find them: while a run has split them among its members,
    the count from before the split (``torch.set_num_threads`` is process-wide)."""
    return _threads_before_runs[0] if _threads_before_runs else torch.get_num_threads()


def finetune_members(ensemble, data: FinetuneData, config: FinetuneConfig | None = None, *,
                     result: FinetuneResult | None = None) -> Iterator[FinetuneProgress]:
    """Fine-tune every member of ``ensemble`` in place, at once; yields progress, returns ``result``.

    Args: as :func:`~napari_medseg.retrain.finetune.finetune`; ``ensemble.members`` are trained.
    A member's error stops the others and is raised here.
    """
    config = config if config is not None else FinetuneConfig()
    result = result if result is not None else FinetuneResult()
    members = list(ensemble.members)
    result.members = [FinetuneResult() for _ in members]
    reports: queue.Queue = queue.Queue()
    stop = threading.Event()
    threads_before = torch.get_num_threads()
    _threads_before_runs.append(threads_before)
    torch.set_num_threads(max(1, threads_before // len(members)))
    workers = [threading.Thread(target=_run_member, name=f"medseg-member-{i}", daemon=True,
                                args=(i, members[i], ensemble.step_locks[i], data, config.replace(member=i),
                                      result.members[i], stop, reports))
               for i in range(len(members))]
    start = time.monotonic()  # (each member's ``finetune`` sets and restores that member's own modes)
    val_idx, train_idx = split_indices(len(data.images), config)
    result.evaluated = val_idx or train_idx
    try:
        check_slices([np.asarray(im) for im in data.images], [np.asarray(lab) for lab in data.labels], ensemble)
        result.dice_before, result.per_class_before = evaluate_slices(ensemble, data, result.evaluated, config)
        for worker in workers:
            worker.start()
        yield from _relay(reports, len(workers), result, start)
        result.stopped_by = _stopped_by(result.members)
    except GeneratorExit:
        result.stopped_by = "cancelled"
        raise
    finally:
        stop.set()
        for worker in workers:
            if worker.ident is not None:  # started
                worker.join()
        torch.set_num_threads(threads_before)
        _threads_before_runs.remove(threads_before)
        _summarise(ensemble, data, config, result, start)
    return result


def _run_member(index, member, lock, data, config, member_result, stop, reports) -> None:
    """Thread body: step member ``index`` until done or ``stop``; reports ``(index, progress | error | _DONE)``."""
    gen = finetune(member, data, config, result=member_result)
    try:
        while not stop.is_set():
            with lock:
                progress = next(gen)
            reports.put((index, progress))
    except StopIteration:
        pass
    except BaseException as err:  # noqa: BLE001 -- handed to the caller's thread, which raises it
        reports.put((index, err))
    finally:
        try:
            with lock:
                gen.close()  # a member stopped early loads its best weights and measures its Dice after
        except BaseException as err:  # noqa: BLE001
            reports.put((index, err))
        finally:
            reports.put((index, _DONE))  # always: the caller waits for every member


def _relay(reports: queue.Queue, n: int, result: FinetuneResult, start: float) -> Iterator[FinetuneProgress]:
    """Yield one :class:`FinetuneProgress` per member step until every member is done; raise a member's error."""
    latest: dict[int, FinetuneProgress] = {}
    running, steps = n, 0
    while running:
        index, item = reports.get()
        if item is _DONE:
            running -= 1
            continue
        if isinstance(item, BaseException):
            raise item
        latest[index] = item
        steps += 1  # the reports counted, not the members' counters (which run ahead of the queue)
        result.steps, result.final_loss = steps, item.loss
        result.losses.append(item.loss)
        total = item.total_steps * n if item.total_steps is not None else None
        fraction = min(p.fraction for p in latest.values()) if len(latest) == n else 0.0
        yield FinetuneProgress(steps, total, time.monotonic() - start, item.budget_s, item.loss, item.lr, fraction)


def _stopped_by(members: list[FinetuneResult]) -> str:
    reasons = {m.stopped_by for m in members}
    return "cancelled" if "cancelled" in reasons else ("time" if "time" in reasons else "steps")


def _summarise(ensemble, data, config, result: FinetuneResult, start: float) -> None:
    """Fill ``result`` for the ensemble: steps, loss, scope, split, and the averaged prediction's Dice."""
    members = result.members
    first = members[0]
    result.steps = sum(m.steps for m in members)
    losses = [m.final_loss for m in members if math.isfinite(m.final_loss)]
    result.final_loss = sum(losses) / len(losses) if losses else math.nan
    result.best_step = sum(m.best_step for m in members)
    result.scope, result.smoothness_sigma, result.augment = first.scope, first.smoothness_sigma, first.augment
    result.train_indices, result.held_out_indices, result.dice_on = (first.train_indices, first.held_out_indices,
                                                                     first.dice_on)
    if result.evaluated and all(m.done for m in members):
        result.dice_after, result.per_class_after = evaluate_slices(ensemble, data, result.evaluated, config)
    result.seconds = time.monotonic() - start
    result.done = True


def describe_steps(result: FinetuneResult) -> str:
    """``"650 steps"``, or for an ensemble ``"531 + 520 steps (2 models at once)"``."""
    if not result.members:
        return f"{result.steps} steps"
    return f"{' + '.join(str(m.steps) for m in result.members)} steps ({len(result.members)} models at once)"


__all__ = ["describe_steps", "finetune_members"]
