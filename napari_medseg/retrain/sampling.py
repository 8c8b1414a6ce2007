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

    def draw(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch_size,)`` int64 pool indices (with replacement): current ones first, then replayed."""
        k = self.replayed_per_batch(batch_size)
        current = torch.randint(self.n_current, (batch_size - k,), generator=generator)
        replayed = self.n_current + torch.randint(max(self.n_replay, 1), (k,), generator=generator)
        return torch.cat([current, replayed])
