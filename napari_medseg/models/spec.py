"""``FamilySpec``: every fact about a model family in one frozen object (timm's ``default_cfgs`` idea).

Each family's instance, ``SPEC``, sits at the end of its model file
(``dcaunet.py``, ``udfa.py``); :func:`napari_medseg.models.registry.family_spec`
finds it.  Registry, retrain loop, fine-tuning, protocol, checkpoint, the
Retrain dock and the ``medseg`` commands read it, and the GUI's and CLI's option
lists are generated from it.  This module imports no torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

#: Mixed-precision modes every family runs in (``napari_medseg.device.resolve_precision``).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def frozen(mapping: Mapping) -> Mapping:
    """A read-only view of a (deep-copied) dict, for spec fields."""
    return MappingProxyType(thaw(mapping))


def thaw(mapping: Mapping) -> dict:
    """A fresh, mutable deep copy of a spec mapping (nested mappings too)."""
    return {k: thaw(v) if isinstance(v, Mapping) else copy.deepcopy(v) for k, v in mapping.items()}


#: Intensity jitter alone (``AugmentConfig`` fields; no spatial change), the base of :data:`PATIENT_VARIATION`.
#: Contrast phases move organs by 40-110 HU between patients (the sample CT is native phase: liver 46 HU,
#: aorta 43 HU; the DICOM patient is portal venous: liver 93 HU, aorta 151 HU), and a model learned from one
#: patient's slices keys on that patient's values.  Half the samples get a shift of up to +-0.1 of the 400 HU
#: CT window (+-40 HU), contrast +-15 % and gamma +-20 %: that carried as far to the DICOM patient as twice
#: those ranges at p 0.8 and cost the sample less.  docs/retrain.md, "A real second patient": the DICOM
#: patient segmented unseen 0.11 -> 0.25-0.28 mean Dice.
INTENSITY_JITTER = frozen(dict(p_rotate=0.0, p_intensity=0.5, brightness=0.1, contrast=0.15, gamma=0.2))

#: What differs between patients besides the contrast phase: body size and how they lie.  The intensity
#: jitter plus, on 30 % of the samples, a rotation of up to +-10 degrees and, on half of them, a zoom of
#: 0.85-1.2 (no flips: they swap the left and right organs).  Against the jitter alone, at 900 steps over
#: four seeds (docs/retrain.md, "A real second patient"): the sample's own untouched slices 0.883 -> 0.893,
#: the DICOM patient segmented unseen 0.268 -> 0.334, and far steadier between runs (0.33-0.34).
PATIENT_VARIATION = frozen(dict(INTENSITY_JITTER, p_rotate=0.3, rotate_deg=10.0, p_scale=0.5, scale_range=(0.85, 1.2)))


@dataclass(frozen=True)
class FamilySpec:
    """What the rest of the package needs to know about one model family.

    Attributes:
        name: registry name (``"dcaunet"``); display: human name (``"DCAU-Net"``).
        description: one line for ``list_models()`` and help texts.
        size_multiple: input ``H``, ``W`` must be multiples of this (px).
        tiny: config of a small random-init model (tests, quick demos).
        scratch: config of a model fine-tuned from no checkpoint on a CPU.
        scopes: trainable groups ``freeze_except`` accepts for this family (``"all"`` included).
        finetune_scope / scratch_scope: default trainable group from a checkpoint / from scratch.
        scratch_resize_policy: ``Preprocessing.resize_policy`` of a model started from scratch.
        loss_weights: ``(ce, dice)`` weights of ``DiceCELoss`` in fine-tuning.
        checkpoint_recipe / scratch_recipe: ``FinetuneConfig`` fields over its defaults,
            fine-tuning from a checkpoint / from scratch (chosen by measurement, docs/retrain.md).
        precisions: mixed-precision modes.
        scratch_members: models trained at once and averaged (``models.ensemble``) when a fine-tune starts
            from scratch on a CPU with two or more threads (``retrain.loop.default_members``); 1 = one model.
        external_weights: the config key naming weights loaded from outside the checkpoint
            (U-DFA: ``"backbone_weights"``, DINOv2); a checkpoint stores them, so it rebuilds
            with that key set to ``None``.
    """

    name: str
    display: str
    description: str
    size_multiple: int
    tiny: Mapping
    scratch: Mapping
    scopes: tuple[str, ...]
    finetune_scope: str
    scratch_scope: str
    scratch_resize_policy: str
    loss_weights: tuple[float, float]
    checkpoint_recipe: Mapping
    scratch_recipe: Mapping
    precisions: tuple[str, ...] = PRECISIONS
    external_weights: str | None = None
    scratch_members: int = 1

    def __post_init__(self):
        for scope in (self.finetune_scope, self.scratch_scope):
            if scope not in self.scopes:
                raise ValueError(f"{self.name}: default scope {scope!r} is not one of {self.scopes}")

    def tiny_config(self) -> dict:
        return thaw(self.tiny)

    def scratch_config(self) -> dict:
        return thaw(self.scratch)

    def recipe(self, from_scratch: bool) -> dict:
        """``FinetuneConfig`` fields for this family, from scratch or from a checkpoint."""
        return {**thaw(self.checkpoint_recipe), **(thaw(self.scratch_recipe) if from_scratch else {})}
