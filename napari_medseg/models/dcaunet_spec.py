"""The DCAU-Net family's spec (torch-free): read by option lists, recipes and checkpoints
without importing the model (``napari_medseg.models.dcaunet`` re-exports it as ``SPEC``)."""

from __future__ import annotations

from .spec import PATIENT_VARIATION, FamilySpec, frozen

#: The last 20 % of a run trains on whole slices (about the crops' pixels a batch): the encoder's deep
#: attention reads its keys by map size (pixels of a map within one 7x7 window, else window means), and
#: 64^2 crops never give it the map sizes that whole slices give it at inference.  Paired, fixed steps, one
#: model (docs/retrain.md, "Weak draws"): the sample (seeds 0-7) median 0.885 -> 0.889, lowest 0.824 ->
#: 0.885; the inferior half 0.835 -> 0.839, lowest 0.760 -> 0.832; A' (0.8 mm, seeds 0-3) mean 0.851 ->
#: 0.859, lowest 0.817 -> 0.854.  The weak draws (about one run in eight) are gone; strong ones lose <= 0.01.
FINAL_WHOLE_SLICES = 0.2

SPEC = FamilySpec(
    name="dcaunet",
    display="DCAU-Net",
    description="DCAU-Net: differential cross attention encoder + CSFF decoder (sizes: multiples of 32)",
    size_multiple=32,  # DCAUNet.size_multiple reads it
    tiny=frozen(dict(dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], heads=[1, 2, 3, 4], decoder_channels=[16, 16, 8, 8],
                     reduction=4)),
    # narrowed for CPU fine-tuning from no checkpoint (1.74 M parameters; docs/retrain.md)
    scratch=frozen(dict(dims=[32, 64, 128, 256], depths=[1, 1, 2, 1], heads=[1, 2, 4, 8],
                        decoder_channels=[64, 32, 24, 16], reduction=8)),
    scopes=("decoder", "encoder", "all"),
    finetune_scope="all",  # from a checkpoint too: the decoder alone fell below scratch (issue 9)
    scratch_scope="all",
    scratch_members=2,  # two at once, averaged: higher Dice at equal wall time on 2 cores (docs/retrain.md)
    scratch_resize_policy="spacing",  # DEFAULT_TARGET_SPACING mm pixels (docs/inference.md)
    loss_weights=(0.4, 0.6),  # the paper's 0.4 CE + 0.6 Dice
    # from a checkpoint: the scratch recipe (64^2 organ-centred crops, the patient-variation augmentation, all
    # parameters, lr 3e-3: above 1e-3 in the carry-over proxy); issue 9 measured the old one (lr 3e-4, whole
    # slices, augmentation, decoder only) below scratch on the next patient; docs/retrain.md, "Across patients"
    checkpoint_recipe=frozen(dict(lr=3e-3, batch_size=8, crop_size=64, crop_foreground=0.5, augment=PATIENT_VARIATION,
                                  final_whole_slices=FINAL_WHOLE_SLICES)),
    # from scratch in a CPU minute the model underfits, so steps per second rule: random 64^2
    # crops (half centred on an organ), lr 3e-3 (5e-3 was unstable); docs/retrain.md.  The augmentation
    # (intensity jitter, small rotations and zooms) costs nothing measurable per step and carries the model
    # to other patients' contrast phases and body sizes.
    scratch_recipe=frozen(dict(lr=3e-3, batch_size=8, crop_size=64, crop_foreground=0.5, augment=PATIENT_VARIATION,
                               final_whole_slices=FINAL_WHOLE_SLICES)),
)
