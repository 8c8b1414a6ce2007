"""Joint spatial and intensity augmentation of image/label batches, in torch.

One random affine per sample (rotation, optional isotropic scale, flips)
plus an optional smooth elastic displacement is turned into a sampling grid
and applied with ``grid_sample``: bilinear for the image, nearest for the
labels, so both stay aligned and label values are never blended (255, "not
labelled" in partial labels, stays 255).  Out-of-image areas become 0 (darkest intensity
/ background).  Intensity jitter (brightness, contrast, gamma) touches the
image only, and so do nnU-Net's image-quality augmentations: Gaussian noise,
Gaussian blur and simulated low resolution (each slice shrunk by a random
factor with nearest neighbour and enlarged back with bicubic), which make a
model less sensitive to the scanner's noise, reconstruction kernel and to
resampling.  Everything runs batched on the training device.

Both papers use TransUNet's ``RandomGenerator``, an either/or scheme: with
probability 0.5 a random multiple of 90 degrees plus a flip of one random
axis (``random_rot_flip``), otherwise, with probability 0.5, a rotation in
[-20, 20] degrees (``random_rotate``); so 50 % turn-and-flip, 25 % rotation,
25 % unchanged.  ``p_rot90`` is the first branch, ``p_rotate`` the second
(drawn only when the first is not taken); the recipes set 0.5 and 0.5.
Differences: TransUNet draws whole degrees and resamples the image with
nearest neighbour; here the angle is continuous and the image bilinear.  Note
that a left-right flip swaps the anatomy of paired organs (kidney left /
right); the papers flip anyway, the fine-tuning default does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each augmentation.

    Args:
        p_rotate: probability of a rotation by an angle in ``[-rotate_deg, rotate_deg]``,
            for samples that did not get the turn-and-flip (either/or, as TransUNet).
        rotate_deg: maximum rotation angle in degrees.
        p_rot90: probability of TransUNet's turn-and-flip: a random multiple of
            90 degrees (0, 90, 180 or 270) plus a flip of one random axis.
        p_flip: probability of flipping each in-plane axis (independently of the above).
        p_scale: probability of an isotropic zoom in ``scale_range``.
        scale_range: ``(min, max)`` zoom factors (> 1 zooms in).
        p_elastic: probability of a smooth elastic deformation.
        elastic_alpha: displacement amplitude as a fraction of the image size.
        elastic_sigma: smoothness (Gaussian sigma of the displacement, fraction of size).
        p_intensity: probability of brightness/contrast/gamma jitter.
        brightness: additive shift range ``[-b, b]`` (image values are in [0, 1]).
        contrast: multiplicative range ``[1 - c, 1 + c]`` around the image mean.
        gamma: exponent range ``[1 - g, 1 + g]``.
        p_noise: probability of additive Gaussian noise.
        noise_std: its standard deviation is drawn from ``[0, noise_std]`` (image units).
        p_blur: probability of a Gaussian blur.
        blur_sigma: ``(min, max)`` of its sigma, in pixels.
        p_lowres: probability of simulated low resolution.
        lowres_zoom: ``(min, max)`` of the shrink factor (0.5: half the pixels per axis).
    """

    p_rotate: float = 0.5
    rotate_deg: float = 20.0
    p_rot90: float = 0.0
    p_flip: float = 0.0
    p_scale: float = 0.0
    scale_range: tuple[float, float] = (0.85, 1.25)
    p_elastic: float = 0.0
    elastic_alpha: float = 0.03
    elastic_sigma: float = 0.08
    p_intensity: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.2
    p_noise: float = 0.0
    noise_std: float = 0.03
    p_blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_lowres: float = 0.0
    lowres_zoom: tuple[float, float] = (0.5, 1.0)

    @classmethod
    def from_dict(cls, data: dict | None) -> "AugmentConfig":
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown augmentation keys {sorted(unknown)}; known: {sorted(known)}")
        for key in _RANGES:
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in _RANGES:
            d[key] = list(d[key])
        return d

    @classmethod
    def image_quality(cls) -> "AugmentConfig":
        """nnU-Net's image-quality augmentations alone (its probabilities), no spatial change."""
        return cls(p_rotate=0.0, p_noise=0.1, p_blur=0.2, p_lowres=0.25)

    @classmethod
    def finetune(cls) -> "AugmentConfig":
        """Fine-tuning default: small rotations, zoom, mild elastic and intensity jitter, no flips."""
        return cls(p_rotate=0.7, rotate_deg=15.0, p_scale=0.7, scale_range=(0.85, 1.2),
                   p_elastic=0.3, p_intensity=0.5)


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
    *,
    appearance: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly transform a batch.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1].
        labels: ``(B, H, W)`` integer labels.
        config: what to apply and how strongly.
        generator: CPU ``torch.Generator`` for reproducibility (``None``: global RNG).
        appearance: ``(B,)`` bool, which samples may get the changes of values (low resolution,
            blur, noise, intensity jitter); the others only move.  ``None``: all of them.

    Returns:
        ``(images', labels')`` with the same shapes and dtypes.
    """
    if images.ndim != 4 or labels.ndim != 3 or images.shape[0] != labels.shape[0] or images.shape[2:] != labels.shape[1:]:
        raise ValueError(f"expected images (B, C, H, W) and labels (B, H, W), got {tuple(images.shape)} and {tuple(labels.shape)}")
    b, _, h, w = images.shape
    device = images.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    theta = _random_affines(b, h, w, config, rand)
    spatial = not torch.allclose(theta, _identity(b))
    if spatial or config.p_elastic > 0:
        grid = F.affine_grid(theta.to(device, images.dtype), (b, 1, h, w), align_corners=False)
        if config.p_elastic > 0:
            grid = grid + _elastic_offsets(b, h, w, config, rand).to(device, grid.dtype)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        warped = F.grid_sample(labels[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        labels = warped[:, 0].round().to(labels.dtype)
    moved = images
    if config.p_lowres > 0:
        images = _low_resolution(images, config, rand)
    if config.p_blur > 0:
        images = _blur(images, config, rand)
    if config.p_noise > 0:
        on = (rand(b) < config.p_noise).view(b, 1, 1, 1).to(device, images.dtype)
        std = (rand(b) * config.noise_std).view(b, 1, 1, 1).to(device, images.dtype)
        noise = torch.randn(images.shape, generator=generator).to(device, images.dtype)
        images = (images + on * std * noise).clamp(0, 1)
    if config.p_intensity > 0:
        images = _intensity(images, config, rand)
    if appearance is not None:
        images = torch.where(appearance.view(b, 1, 1, 1).to(device), images, moved)
    return images, labels


_RANGES = ("scale_range", "blur_sigma", "lowres_zoom")


def _identity(b: int) -> torch.Tensor:
    return torch.eye(2, 3).expand(b, 2, 3)


def _random_affines(b: int, h: int, w: int, config: AugmentConfig, rand) -> torch.Tensor:
    """``(B, 2, 3)`` affine_grid matrices (output -> input normalised coordinates)."""
    # TransUNet's either/or: turn-and-flip with p_rot90, elif rotation with p_rotate.
    turn = rand(b) < config.p_rot90
    quarter = (rand(b) * 4).floor() * (math.pi / 2)
    turn_flips_x = rand(b) < 0.5  # the turn's flip: x or y axis
    rotate = ~turn & (rand(b) < config.p_rotate)
    small = (rand(b) * 2 - 1) * math.radians(config.rotate_deg)
    angle = torch.where(turn, quarter, torch.where(rotate, small, torch.zeros(b)))
    scale = torch.ones(b)
    lo, hi = config.scale_range
    scale = torch.where(rand(b) < config.p_scale, lo + rand(b) * (hi - lo), scale)
    flip_x = torch.where(rand(b) < config.p_flip, -1.0, 1.0) * torch.where(turn & turn_flips_x, -1.0, 1.0)
    flip_y = torch.where(rand(b) < config.p_flip, -1.0, 1.0) * torch.where(turn & ~turn_flips_x, -1.0, 1.0)
    # Rotate in pixel space: normalised coordinates are anisotropic when H != W.
    aspect = w / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos * flip_x
    theta[:, 0, 1] = -sin * flip_y / aspect
    theta[:, 1, 0] = sin * flip_x * aspect
    theta[:, 1, 1] = cos * flip_y
    return theta


def _elastic_offsets(b: int, h: int, w: int, config: AugmentConfig, rand) -> torch.Tensor:
    """Smooth random displacement ``(B, H, W, 2)`` in normalised coordinates, zero where not applied."""
    coarse = 8  # displacement drawn on a coarse grid, then smoothed by bicubic upsampling
    noise = (rand(b, 2, coarse, coarse) * 2 - 1) * (2 * config.elastic_alpha)
    sigma_cells = max(config.elastic_sigma * coarse, 1e-3)
    radius = max(1, int(math.ceil(2 * sigma_cells)))
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(xs**2) / (2 * sigma_cells**2))
    kernel = kernel / kernel.sum()
    noise = F.conv2d(F.pad(noise, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).expand(2, 1, 1, -1), groups=2)
    noise = F.conv2d(F.pad(noise, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).expand(2, 1, -1, 1), groups=2)
    field = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    on = (rand(b) < config.p_elastic).float().view(b, 1, 1, 1)
    return (field * on).permute(0, 2, 3, 1)


def _intensity(images: torch.Tensor, config: AugmentConfig, rand) -> torch.Tensor:
    b = images.shape[0]
    on = (rand(b) < config.p_intensity).view(b, 1, 1, 1).to(images.device)
    shift = ((rand(b) * 2 - 1) * config.brightness).view(b, 1, 1, 1).to(images.device, images.dtype)
    factor = (1 + (rand(b) * 2 - 1) * config.contrast).view(b, 1, 1, 1).to(images.device, images.dtype)
    gamma = (1 + (rand(b) * 2 - 1) * config.gamma).view(b, 1, 1, 1).to(images.device, images.dtype)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    jittered = ((images - mean) * factor + mean + shift).clamp(0, 1) ** gamma
    return torch.where(on, jittered, images)


def _blur(images: torch.Tensor, config: AugmentConfig, rand) -> torch.Tensor:
    """Separable Gaussian blur with a sigma (pixels) drawn per sample; samples not drawn are unchanged."""
    b, c, h, w = images.shape
    lo, hi = config.blur_sigma
    sigma = (lo + rand(b) * (hi - lo)).clamp_min(1e-3)
    sigma = torch.where(rand(b) < config.p_blur, sigma, torch.zeros(b))
    radius = max(1, math.ceil(3 * hi))
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-(xs[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(c, 0).to(images.device, images.dtype)
    flat = images.reshape(1, b * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernels.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernels.view(b * c, 1, -1, 1), groups=b * c)
    return flat.reshape(b, c, h, w)


def _low_resolution(images: torch.Tensor, config: AugmentConfig, rand) -> torch.Tensor:
    """Shrink chosen samples by a random factor (nearest) and enlarge them back (bicubic)."""
    b, _, h, w = images.shape
    lo, hi = config.lowres_zoom
    zoom = lo + rand(b) * (hi - lo)
    chosen = (rand(b) < config.p_lowres).tolist()
    out = images.clone()
    for i in (i for i, on in enumerate(chosen) if on):
        small = (max(1, round(h * float(zoom[i]))), max(1, round(w * float(zoom[i]))))
        coarse = F.interpolate(images[i : i + 1], size=small, mode="nearest")
        out[i : i + 1] = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return out
