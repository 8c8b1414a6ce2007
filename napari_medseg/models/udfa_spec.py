"""The U-DFA family's spec (torch-free): read by option lists, recipes and checkpoints
without importing the model (``napari_medseg.models.udfa`` re-exports it as ``SPEC``)."""

from __future__ import annotations

from .spec import FamilySpec, frozen

SPEC = FamilySpec(
    name="udfa",
    display="U-DFA",
    description="U-DFA: frozen DINOv2-base + SPA + 3 LGFA + U-Net decoder (sizes: multiples of 14)",
    size_multiple=14,  # UDFA.size_multiple reads it
    tiny=frozen(dict(img_size=56, backbone_overrides=dict(embed_dim=48, depth=3, num_heads=3), backbone_weights=None,
                     spa_channels=[16, 32, 48], spa_stem_channels=8, lgfa_blocks=[1, 2, 3], lgfa_heads=2,
                     decoder_channels=[32, 32, 16, 16, 8, 8])),
    scratch=frozen(dict(img_size=224)),
    # DINOv2 stays frozen, also from scratch, as the paper intends
    scopes=("adapters", "all"),
    finetune_scope="adapters",
    scratch_scope="adapters",
    scratch_resize_policy="spacing",  # DEFAULT_TARGET_SPACING mm pixels (docs/inference.md)
    loss_weights=(0.5, 0.5),
    checkpoint_recipe=frozen(dict(lr=3e-4, batch_size=8)),
    scratch_recipe=frozen(dict(lr=2e-3, batch_size=8, augment=False)),
    external_weights="backbone_weights",
)
