"""Batch sampling for fine-tuning: the current patient's slices always fill at least half of a batch."""

from __future__ import annotations

import torch


class BalancedSampler:
    """Draw batch indices from a pool whose first ``n_current`` slices are the current patient's.

    Every batch of ``B`` holds ``min(round(replay_fraction * B), B // 2)`` replayed slices and the
    rest from the current patient, so at least half of *every* batch (not only on average) is the
    current patient's.  Without replayed slices all come from the current patient.

    Args:
        n_current: slices of the current patient (pool positions ``0..n_current-1``), >= 1.
        n_replay: replayed slices (pool positions after them).
        replay_fraction: wanted share of replayed slices per batch, in [0, 1] (capped at half).
    """

    def __init__(self, n_current: int, n_replay: int, replay_fraction: float):
        if n_current < 1:
            raise ValueError("no slices of the current patient to fine-tune on")
        self.n_current, self.n_replay, self.replay_fraction = int(n_current), int(n_replay), float(replay_fraction)

    def replayed_per_batch(self, batch_size: int) -> int:
        if not self.n_replay:
            return 0
        return min(int(round(self.replay_fraction * batch_size)), batch_size // 2)

    def groups(self) -> list[tuple[int, int]]:
        """The pool ranges ``(start, stop)`` of the current patient and of the replayed slices (if any)."""
        return [(0, self.n_current)] + ([(self.n_current, self.n_current + self.n_replay)] if self.n_replay else [])

    def draw(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch_size,)`` int64 pool indices (with replacement): current ones first, then replayed."""
        k = self.replayed_per_batch(batch_size)
        current = torch.randint(self.n_current, (batch_size - k,), generator=generator)
        replayed = self.n_current + torch.randint(max(self.n_replay, 1), (k,), generator=generator)
        return torch.cat([current, replayed])


class OrganCentres:
    """Where organ-centred crops are centred: organs balanced over a group of slices, not per slice.

    A crop centre is drawn in two steps, as nnU-Net samples foreground: an organ uniformly from
    those labelled anywhere in the group (the current patient's slices, or the replayed ones),
    then one of that organ's pixels uniformly over the whole group.  Drawing the organ per slice
    instead gives an organ seen on few slices (the gallbladder, a pancreas tail) less than its
    share, and centres as many crops on a 3-pixel sliver at an organ's tip as on its full section.

    Args:
        labels: ``(N, H, W)`` integer labels of the pool; 0 and ``ignore`` (unlabelled) are never centres.
        groups: ``(start, stop)`` pool ranges, e.g. ``BalancedSampler.groups()``.
    """

    def __init__(self, labels: torch.Tensor, groups, ignore: int = 255):
        self.h, self.w = (int(s) for s in labels.shape[-2:])
        self.groups = []
        for start, stop in groups:
            flat = labels[start:stop].reshape(-1)
            organs = [int(v) for v in torch.unique(flat) if 0 < int(v) != ignore]
            pixels = [start * self.h * self.w + torch.nonzero(flat == v).squeeze(1) for v in organs]
            self.groups.append((start, stop, pixels))

    def draw(self, index: int, generator: torch.Generator):
        """``(slice, y, x)`` of a centre in the group holding pool ``index``; None when it has no organ."""
        for start, stop, pixels in self.groups:
            if start <= index < stop:
                if not pixels:
                    return None
                organ = pixels[int(torch.randint(len(pixels), (), generator=generator))]
                flat = int(organ[int(torch.randint(len(organ), (), generator=generator))])
                n, rest = divmod(flat, self.h * self.w)
                return (n, *divmod(rest, self.w))
        raise IndexError(f"pool index {index} is in no group")
