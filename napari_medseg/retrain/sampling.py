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
        replay_positions: the pool positions replayed slices are drawn from (default: all
            ``n_current..n_current+n_replay-1``; fine-tuning's whole-slice phase passes the fully
            labelled ones).
    """

    def __init__(self, n_current: int, n_replay: int, replay_fraction: float, replay_positions=None):
        if n_current < 1:
            raise ValueError("no slices of the current patient to fine-tune on")
        if replay_positions is None:
            replay_positions = range(int(n_current), int(n_current) + int(n_replay))
        self.replay_positions = torch.as_tensor(list(replay_positions), dtype=torch.int64)
        self.n_current, self.n_replay = int(n_current), len(self.replay_positions)
        self.replay_fraction = float(replay_fraction)

    def replayed_per_batch(self, batch_size: int) -> int:
        if not self.n_replay:
            return 0
        return min(int(round(self.replay_fraction * batch_size)), batch_size // 2)

    def draw(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch_size,)`` int64 pool indices (with replacement): current ones first, then replayed."""
        k = self.replayed_per_batch(batch_size)
        current = torch.randint(self.n_current, (batch_size - k,), generator=generator)
        replayed = self.replay_positions[torch.randint(max(self.n_replay, 1), (k,), generator=generator)]
        return torch.cat([current, replayed])
