"""Which axial slices of a segmentation the user corrected or reviewed.

The ledger compares the labels with the last *model output* (a uint8
snapshot): a slice whose labels differ from what the model produced is
``edited``.  Comparing instead of counting paint events makes the ledger right
whatever changed the labels (brush, fill, eraser, undo, scripts): undoing an
edit back to the model's output makes the slice ``predicted`` again.
``reviewed`` is an explicit mark ("this slice is correct as it is").

Edited and reviewed slices are **locked**: re-segmentation never overwrites
them, and fine-tuning trains on them.  Slices are axial indices along axis 0
of the canonical (z, y, x) array, inferior to superior.
"""

from __future__ import annotations

from enum import Enum

import numpy as np


class SliceState(str, Enum):
    UNLABELLED = "unlabelled"  # no model output yet, no edits
    PREDICTED = "predicted"
    EDITED = "edited"
    REVIEWED = "reviewed"


class SliceLedger:
    """Per-slice state of one labels volume.

    Args:
        shape: labels shape ``(z, y, x)``.
    """

    def __init__(self, shape: tuple[int, int, int]):
        if len(shape) != 3:
            raise ValueError(f"the ledger tracks 3D (z, y, x) labels, got shape {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self._model_output = np.zeros(self.shape, dtype=np.uint8)
        self._has_prediction = np.zeros(self.shape[0], dtype=bool)
        self._edited = np.zeros(self.shape[0], dtype=bool)
        self._reviewed = np.zeros(self.shape[0], dtype=bool)

    # -- what the model produced --------------------------------------------
    def record_model_output(self, labels: np.ndarray, slices=None) -> None:
        """Remember ``labels`` as the model's output for ``slices`` (default: all unlocked)."""
        self._check(labels)
        if slices is None:
            slices = self.unlocked
        slices = np.asarray(sorted(int(s) for s in slices), dtype=int)
        self._model_output[slices] = labels[slices]
        self._has_prediction[slices] = True
        self._edited[slices] = False

    # -- what the user did ----------------------------------------------------
    def update_from(self, labels: np.ndarray) -> list[int]:
        """Re-derive ``edited`` by comparing ``labels`` with the model output.

        Returns the slices whose edited flag changed.
        """
        self._check(labels)
        differs = np.zeros(self.shape[0], dtype=bool)
        for z in range(self.shape[0]):  # slice by slice: no full-volume temporary
            differs[z] = not np.array_equal(labels[z], self._model_output[z])
        changed = np.flatnonzero(differs != self._edited).tolist()
        self._edited = differs
        return changed

    def mark_reviewed(self, z: int, reviewed: bool = True) -> None:
        """Accept slice ``z`` as correct without edits (or take that back)."""
        self._reviewed[self._index(z)] = reviewed

    # -- queries ---------------------------------------------------------------
    def state(self, z: int) -> SliceState:
        z = self._index(z)
        if self._edited[z]:
            return SliceState.EDITED
        if self._reviewed[z]:
            return SliceState.REVIEWED
        return SliceState.PREDICTED if self._has_prediction[z] else SliceState.UNLABELLED

    @property
    def edited(self) -> list[int]:
        return np.flatnonzero(self._edited).tolist()

    @property
    def reviewed(self) -> list[int]:
        return np.flatnonzero(self._reviewed & ~self._edited).tolist()

    @property
    def locked(self) -> list[int]:
        """Slices that re-segmentation must not overwrite (edited or reviewed)."""
        return np.flatnonzero(self._edited | self._reviewed).tolist()

    @property
    def unlocked(self) -> list[int]:
        return np.flatnonzero(~(self._edited | self._reviewed)).tolist()

    def counts(self) -> dict[str, int]:
        states = [self.state(z) for z in range(self.shape[0])]
        return {s.value: states.count(s) for s in SliceState}

    # -- persistence (layer metadata) -------------------------------------------
    def to_metadata(self) -> dict:
        """Small JSON-safe summary for ``layer.metadata['medseg']``."""
        return {"edited": self.edited, "reviewed": self.reviewed, "locked_slices": self.locked}

    def to_state(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the ledger, as arrays (``np.savez``-ready).

        ``model_output`` uint8 (z, y, x); ``has_prediction`` and ``reviewed``
        bool (z,).  ``edited`` is not stored: :meth:`from_state` re-derives it
        from the labels.
        """
        return {"model_output": self._model_output.copy(), "has_prediction": self._has_prediction.copy(),
                "reviewed": self._reviewed.copy()}

    @classmethod
    def from_state(cls, state, labels: np.ndarray) -> "SliceLedger":
        """The ledger saved by :meth:`to_state`, with ``edited`` re-derived from ``labels`` (z, y, x)."""
        model_output = np.asarray(state["model_output"])
        ledger = cls(model_output.shape)
        ledger._check(labels)
        for key, want in (("has_prediction", ledger._has_prediction), ("reviewed", ledger._reviewed)):
            value = np.asarray(state[key])
            if value.shape != want.shape:
                raise ValueError(f"ledger state '{key}' has shape {value.shape}, expected {want.shape}")
            want[:] = value.astype(bool)
        ledger._model_output[...] = model_output.astype(np.uint8, copy=False)
        ledger.update_from(labels)
        return ledger

    def _index(self, z: int) -> int:
        z = int(z)
        if not 0 <= z < self.shape[0]:
            raise IndexError(f"slice {z} is outside 0..{self.shape[0] - 1}")
        return z

    def _check(self, labels: np.ndarray) -> None:
        if tuple(labels.shape) != self.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match the ledger's {self.shape}")
