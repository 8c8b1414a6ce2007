"""DINOv2 backbone creation and weight loading through timm.

``backbone_weights`` (U-DFA config, not stored in checkpoints):

* a path to a local file: Meta's ``dinov2_vitb14_pretrain.pth`` (read by timm
  with ``torch.load(weights_only=True)``) or timm/Hugging Face
  ``model.safetensors``.  timm's ``checkpoint_filter_fn`` converts Meta's
  keys and resizes ``pos_embed`` from the 518x518 (37x37) grid.
* ``"hub"``: timm's weights from the Hugging Face cache (``$HF_HUB_CACHE``,
  no network request when cached), else timm's download.
* ``"auto"``: the file named by ``$MEDSEG_DINOV2_WEIGHTS`` when set, else ``"hub"``.
* ``None``: random init, for tests only (warns with :class:`RandomBackboneWarning`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

ENV_VAR = "MEDSEG_DINOV2_WEIGHTS"
META_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth"

HOW_TO = (
    "Provide DINOv2-base weights in one of these ways:\n"
    f"  1. download Meta's file {META_URL} (or timm's model.safetensors from "
    "https://huggingface.co/timm/vit_base_patch14_dinov2.lvd142m) and pass its path as "
    f"backbone_weights='/path/to/file', or set the environment variable {ENV_VAR}=/path/to/file;\n"
    "  2. on a machine with internet, run once: python -c \"import timm; "
    "timm.create_model('vit_base_patch14_dinov2', pretrained=True)\" to fill the Hugging Face cache, "
    "then use backbone_weights='hub' (works offline afterwards);\n"
    "  3. or load a napari-medseg U-DFA checkpoint, which already contains the backbone."
)


class RandomBackboneWarning(UserWarning):
    """The DINOv2 backbone is randomly initialised (acceptable for tests only)."""


class BackboneWeightsError(ValueError):
    """DINOv2 weights were asked for but could not be found or read."""


def resolve_weights(spec: str | os.PathLike | None) -> tuple[str, Path | None]:
    """``spec`` -> ``("file", path)``, ``("hub", None)`` or ``("random", None)``."""
    if spec is None:
        return "random", None
    if isinstance(spec, str) and spec == "auto":
        env = os.environ.get(ENV_VAR)
        spec = env if env else "hub"
    if isinstance(spec, str) and spec == "hub":
        return "hub", None
    path = Path(spec).expanduser()
    if not path.is_file():
        source = f" (from ${ENV_VAR})" if os.environ.get(ENV_VAR) == str(spec) else ""
        raise BackboneWeightsError(f"DINOv2 weights file {str(path)!r}{source} does not exist.\n{HOW_TO}")
    return "file", path


def hub_cached_file(name: str = "vit_base_patch14_dinov2") -> Path | None:
    """Path of timm's weights for ``name`` in the Hugging Face cache (``$HF_HUB_CACHE``), or None."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    cache_dir = os.environ.get("HF_HUB_CACHE")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def create_backbone(
    name: str = "vit_base_patch14_dinov2",
    img_size: int = 224,
    weights: str | os.PathLike | None = "auto",
    overrides: dict | None = None,
):
    """A timm DINOv2 ViT (no head, dynamic image size) with the requested weights.

    Args:
        name: timm model name.
        img_size: size the position embeddings are resized to (other multiples
            of 14 are interpolated at run time).
        weights: see module docstring.
        overrides: extra kwargs for ``timm.create_model`` (e.g. ``embed_dim``,
            ``depth``, ``num_heads`` for tiny test backbones).

    Returns:
        ``timm.models.VisionTransformer``.
    """
    import timm

    kind, path = resolve_weights(weights)
    kwargs = dict(img_size=img_size, num_classes=0, dynamic_img_size=True, **(overrides or {}))
    if kind == "random":
        warnings.warn(
            "U-DFA backbone is randomly initialised (backbone_weights=None): for tests only; "
            "its segmentations are meaningless. " + HOW_TO.splitlines()[0],
            RandomBackboneWarning,
            stacklevel=3,
        )
        return timm.create_model(name, pretrained=False, **kwargs)
    if kind == "file":
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        except Exception as err:  # timm raises RuntimeError/KeyError/UnpicklingError for bad files
            raise BackboneWeightsError(
                f"could not load DINOv2 weights from {str(path)!r} into timm's {name!r}: "
                f"{type(err).__name__}: {str(err)[:600]}\n"
                "The file must be Meta's dinov2_vitb14_pretrain.pth or timm's model.safetensors "
                f"for this backbone.\n{HOW_TO}"
            ) from err
    cached = hub_cached_file(name)
    if cached is not None:  # offline-safe: no network request when the cache has the file
        return create_backbone(name, img_size, cached, overrides)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise BackboneWeightsError(
            f"DINOv2 weights for {name!r} are not in the Hugging Face cache and HF_HUB_OFFLINE is set.\n{HOW_TO}"
        )
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # no network and no cache
        raise BackboneWeightsError(
            f"DINOv2 weights for {name!r} are not in the Hugging Face cache and could not be downloaded "
            f"({type(err).__name__}: {str(err)[:300]}).\n{HOW_TO}"
        ) from err
