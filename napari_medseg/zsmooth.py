"""Through-plane smoothing of a slice-wise model's probabilities, streamed slice by slice.

A 2D model segments each axial slice on its own, so an organ's outline can jump
between neighbouring slices.  Before the argmax, each slice's softmax is replaced
by a Gaussian-weighted mean of its neighbours' along z (sigma in millimetres, so
the same physical extent on 1 mm and 5 mm slices).  Slices the user corrected and
locked enter the mean as their labels, one-hot: a correction also steers the
slices beside it.

:data:`Z_SIGMA_MM` was chosen by measurement (``bench/zsmooth.py``, ``docs/inference.md``
"Smoothing across slices"): on the sample CT (3 mm), the same CT interpolated to 1.5 mm
slices and its 0.8 mm in-plane version, 3 mm helped every case and seed (+0.004 to
+0.019 mean Dice); 6 mm hurt some.

Memory: only the probabilities of a batch plus ``2 r`` neighbouring slices are
held, ``r = floor(2 sigma / slice thickness)``.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

#: Gaussian sigma across slices, in mm (0 turns smoothing off)
Z_SIGMA_MM = 3.0
#: the Gaussian is cut at this many sigmas
TRUNCATE = 2.0


def z_weights(slice_mm: float | None, sigma_mm: float) -> np.ndarray:
    """Weights for slice offsets ``-r..r``; ``[1.]`` (no smoothing) when off or the thickness is unknown."""
    if not sigma_mm or sigma_mm < 0 or slice_mm is None or not math.isfinite(slice_mm) or slice_mm <= 0:
        return np.ones(1)
    r = int(TRUNCATE * sigma_mm / slice_mm)
    offsets_mm = np.arange(-r, r + 1) * float(slice_mm)
    return np.exp(-0.5 * (offsets_mm / sigma_mm) ** 2)


def slice_thickness(spacing) -> float | None:
    """The z spacing in mm of a ``(sz, sy, sx)`` spacing; None for ``(sy, sx)``, None or unusable values."""
    if spacing is None or len(spacing) != 3:
        return None
    try:
        value = float(spacing[0])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


class ZSmoother:
    """Collects per-slice probabilities in ascending z and hands out smoothed ones as soon as they are final.

    Args:
        depth: number of slices of the volume.
        todo: the slices being segmented, ascending.
        weights: from :func:`z_weights` (odd length).
        anchors: ``{z: (H, W) integer labels}`` of locked slices, used one-hot; values
            outside ``0..K-1`` make a slice no evidence at all.
        strokes: ``{z: (H, W) uint8}`` partial labels of segmented slices (255 = not
            labelled): their labelled pixels are one-hot in that slice's probabilities,
            before smoothing, so the user's strokes hold there and steer the neighbours.
    """

    def __init__(self, depth: int, todo, weights: np.ndarray, anchors: dict | None = None,
                 strokes: dict | None = None):
        self.depth, self.todo, self.weights = depth, list(todo), np.asarray(weights, dtype=np.float64)
        self.radius = len(self.weights) // 2
        self.anchors = anchors or {}
        self.strokes = strokes or {}
        self._todo_set = set(self.todo)
        self._unusable: set[int] = set()  # anchors that are not a labelling in 0..K-1 (no evidence)
        self._probs: dict = {}  # z -> (K, H, W) float32 tensor: computed slices, and anchors made one-hot
        self._next = 0  # index in todo of the first slice not yet handed out
        self._computed_to = -1  # highest z whose probabilities were added

    def add(self, slices, probs) -> Iterator[tuple[list[int], "object"]]:
        """Add ``probs`` ``(B, K, H, W)`` of ``slices``; yields ``(slices, (b, K, H, W) smoothed)`` now final."""
        for z, p in zip(slices, probs):
            self._probs[int(z)] = clamp_to_strokes(p, self.strokes[int(z)]) if int(z) in self.strokes else p
        self._computed_to = int(slices[-1])
        done = self._next
        while done < len(self.todo) and (self.todo[done] + self.radius <= self._computed_to
                                         or self._computed_to == self.todo[-1]):
            done += 1
        if done > self._next:
            ready = self.todo[self._next:done]
            self._next = done
            yield ready, self._smooth(ready)
            self._forget_before(self.todo[done] - self.radius if done < len(self.todo) else self.depth)

    def _smooth(self, ready: list[int]):
        import torch

        if self.radius == 0:
            return torch.stack([self._probs[z] for z in ready])
        out = []
        for z in ready:
            total, weight = None, 0.0
            for offset, w in zip(range(-self.radius, self.radius + 1), self.weights):
                p = self._evidence(z + offset, self._probs[z])
                if p is not None:
                    total = p * float(w) if total is None else total.add(p, alpha=float(w))
                    weight += float(w)
            out.append(total.div_(weight))
        return torch.stack(out)

    def _evidence(self, z: int, like):
        """Probabilities of slice ``z`` (computed, or a locked slice one-hot); None when there are none."""
        if z in self._probs:
            return self._probs[z]
        if z in self._todo_set or z in self._unusable or z not in self.anchors or not 0 <= z < self.depth:
            return None
        import torch

        labels = torch.as_tensor(np.asarray(self.anchors[z]), dtype=torch.long, device=like.device)
        k = like.shape[0]
        if labels.shape != like.shape[1:] or labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= k:
            self._unusable.add(z)
            return None
        self._probs[z] = torch.nn.functional.one_hot(labels, k).permute(2, 0, 1).to(like.dtype)
        return self._probs[z]

    def _forget_before(self, z: int) -> None:
        for key in [k for k in self._probs if k < z]:
            del self._probs[key]


def clamp_to_strokes(probs, strokes: np.ndarray):
    """``probs`` ``(K, H, W)`` with the stroked pixels of ``strokes`` ``(H, W)`` (255 = none) set one-hot."""
    import torch

    strokes = torch.as_tensor(np.asarray(strokes).astype(np.int64), device=probs.device)
    k = probs.shape[0]
    stroked = (strokes != 255) & (strokes >= 0) & (strokes < k)
    if not bool(stroked.any()):
        return probs
    out = probs.clone()
    out[:, stroked] = torch.nn.functional.one_hot(strokes[stroked], k).T.to(probs.dtype)
    return out
