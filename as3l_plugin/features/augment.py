"""SimSiam's two-view augmentations, applied to whole batches of tensors.

Per-image PIL transforms cost more than the small CNN itself on a CPU, so every
augmentation here works on a batch ``(B, C, H, W)`` of float images in ``[0, 1]`` at once,
on whatever device the batch lives on, with randomness from one ``torch.Generator``:

- all geometry (random resized crop, flip, rotation, translation) is folded into one
  per-sample 2x3 affine matrix and applied with a single ``grid_sample`` call;
- photometric changes (brightness, contrast, saturation, hue, grayscale, noise) are
  per-sample broadcasts.

Families (:func:`augmentation_for`)
-----------------------------------
``rgb`` (CIFAR-10/100, STL-10: the SimSiam CIFAR recipe)
    random resized crop (area 0.2-1, aspect 3/4-4/3), horizontal flip 0.5, colour jitter
    (brightness/contrast/saturation 0.4, hue 0.1) with p=0.8, grayscale with p=0.2.
``gray`` (small grayscale images: Fashion-MNIST and unknown 1-channel datasets)
    random resized crop (area 0.35-1; small images cannot lose more), translation by up to
    1/8 of the side with zero padding (crop/pad), rotation up to 10 degrees, brightness and
    contrast jitter 0.4 with p=0.8, Gaussian noise (std 0.05) with p=0.5, horizontal flip
    0.5 (Fashion-MNIST; off for unknown datasets, where it may change the class).
``digits`` (8x8)
    the ``gray`` family made mild: crop area 0.7-1, translation 1/16, rotation 5 degrees,
    jitter 0.2, no noise, no flip (stronger settings lower K-means purity, see the README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["GrayAugment", "RGBAugment", "augmentation_for", "to_float_images"]


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W)`` or ``(B, H, W, C)`` → float32 ``(B, C, H, W)`` in ``[0, 1]``."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4:
        x = x.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"expected images of shape (B, H, W) or (B, H, W, C), got {tuple(x.shape)}")
    return x.float().div_(255.0)


def _uniform(lo: float, hi: float, n: int, g, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _bernoulli(p: float, n: int, g, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < p


def _crop_boxes(n: int, scale, ratio, g, device):
    """Random resized crop boxes as half-sizes and centres in normalised [-1, 1] units."""
    area = _uniform(scale[0], scale[1], n, g, device)
    log_r = _uniform(math.log(ratio[0]), math.log(ratio[1]), n, g, device)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # fraction of the image width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=g, device=device) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=g, device=device) * 2 - 1) * (1 - h)
    return w, h, cx, cy


def _warp(x: torch.Tensor, w, h, cx, cy, angle, flip, out_size: int) -> torch.Tensor:
    """Sample every image through its own affine map (one ``grid_sample`` for the batch).

    Output coordinate ``u`` reads input coordinate ``diag(w, h) R(angle) diag(+-1, 1) u + c``.
    """
    n = x.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx = torch.where(flip, -torch.ones_like(w), torch.ones_like(w))
    theta = torch.stack([
        torch.stack([w * cos * sx, -w * sin, cx], dim=1),
        torch.stack([h * sin * sx, h * cos, cy], dim=1)], dim=1)
    grid = F.affine_grid(theta, [n, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` of RGB images (ITU-R 601, as torchvision)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


@dataclass(frozen=True)
class GrayAugment:
    """Augmentation for small grayscale images (see the module docstring).

    Parameters
    ----------
    scale : (float, float)
        Area range of the random resized crop.
    ratio : (float, float)
        Aspect-ratio range of the crop.
    translate : float
        Largest shift as a fraction of the side (zero padding: crop/pad).
    degrees : float
        Largest rotation.
    flip : float
        Probability of a horizontal flip (0 for digits).
    jitter : float
        Brightness and contrast factors are drawn from ``[1 - jitter, 1 + jitter]``.
    p_jitter : float
        Probability of applying the jitter.
    noise_std : float
        Standard deviation of additive Gaussian noise.
    p_noise : float
        Probability of adding noise.

    ``__call__(x, generator, out_size=None)``: ``x`` float ``(B, 1, H, W)`` in ``[0, 1]`` →
    ``(B, 1, out_size, out_size)`` in ``[0, 1]`` (``out_size`` defaults to ``H``).
    """

    scale: Tuple[float, float] = (0.35, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    translate: float = 0.125
    degrees: float = 10.0
    flip: float = 0.5
    jitter: float = 0.4
    p_jitter: float = 0.8
    noise_std: float = 0.05
    p_noise: float = 0.5

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None,
                 out_size: Optional[int] = None) -> torch.Tensor:
        n, dev, g = x.shape[0], x.device, generator
        w, h, cx, cy = _crop_boxes(n, self.scale, self.ratio, g, dev)
        cx = cx + _uniform(-2 * self.translate, 2 * self.translate, n, g, dev)
        cy = cy + _uniform(-2 * self.translate, 2 * self.translate, n, g, dev)
        angle = _uniform(-self.degrees, self.degrees, n, g, dev) * (math.pi / 180)
        flip = _bernoulli(self.flip, n, g, dev)
        x = _warp(x, w, h, cx, cy, angle, flip, out_size or x.shape[-1])
        on = _bernoulli(self.p_jitter, n, g, dev)
        one = torch.ones(n, device=dev)
        b = torch.where(on, _uniform(1 - self.jitter, 1 + self.jitter, n, g, dev), one)
        c = torch.where(on, _uniform(1 - self.jitter, 1 + self.jitter, n, g, dev), one)
        x = (x * _per_sample(b)).clamp_(0, 1)
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - m) * _per_sample(c) + m).clamp_(0, 1)
        if self.noise_std > 0 and self.p_noise > 0:
            s = torch.where(_bernoulli(self.p_noise, n, g, dev), self.noise_std, 0.0)
            noise = torch.randn(x.shape, generator=g, device=dev)
            x = (x + noise * _per_sample(s)).clamp_(0, 1)
        return x


@dataclass(frozen=True)
class RGBAugment:
    """SimSiam's CIFAR augmentation on batches (see the module docstring).

    Parameters
    ----------
    scale, ratio : (float, float)
        Random resized crop area and aspect-ratio ranges.
    flip : float
        Horizontal-flip probability.
    jitter : (float, float, float, float)
        Brightness, contrast, saturation, hue strengths (torchvision's ColorJitter meaning;
        hue is a rotation of the chroma plane in YIQ space by up to ``hue * 360`` degrees).
        Applied in this fixed order.
    p_jitter, p_gray : float
        Probabilities of the colour jitter and of converting to grayscale.

    ``__call__(x, generator, out_size=None)``: ``x`` float ``(B, 3, H, W)`` in ``[0, 1]``.
    """

    scale: Tuple[float, float] = (0.2, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    jitter: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    p_jitter: float = 0.8
    p_gray: float = 0.2

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None,
                 out_size: Optional[int] = None) -> torch.Tensor:
        n, dev, g = x.shape[0], x.device, generator
        w, h, cx, cy = _crop_boxes(n, self.scale, self.ratio, g, dev)
        flip = _bernoulli(self.flip, n, g, dev)
        x = _warp(x, w, h, cx, cy, torch.zeros(n, device=dev), flip, out_size or x.shape[-1])
        bri, con, sat, hue = self.jitter
        on = _bernoulli(self.p_jitter, n, g, dev)
        one = torch.ones(n, device=dev)

        def factor(s):
            return _per_sample(torch.where(on, _uniform(1 - s, 1 + s, n, g, dev), one))

        x = (x * factor(bri)).clamp_(0, 1)
        m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - m) * factor(con) + m).clamp_(0, 1)
        gr = _gray(x)
        x = ((x - gr) * factor(sat) + gr).clamp_(0, 1)
        if hue > 0:
            x = _rotate_hue(x, torch.where(on, _uniform(-hue, hue, n, g, dev), 0 * one))
        to_gray = _per_sample(_bernoulli(self.p_gray, n, g, dev).float())
        return x * (1 - to_gray) + _gray(x).expand_as(x) * to_gray


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                         [0.211, -0.523, 0.312]])


def _rotate_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma (I, Q) of every image by ``shift * 2 pi`` radians."""
    m = _RGB2YIQ.to(x.device, x.dtype)
    yiq = torch.einsum("ij,bjhw->bihw", m, x)
    a = shift * (2 * math.pi)
    cos, sin = _per_sample(torch.cos(a)), _per_sample(torch.sin(a))
    i, q = yiq[:, 1:2], yiq[:, 2:3]
    yiq = torch.cat([yiq[:, 0:1], i * cos - q * sin, i * sin + q * cos], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), yiq).clamp_(0, 1)


#: per-dataset augmentation (datasets not listed fall back on their channel count)
DATASET_AUGMENTATIONS = {
    # 8x8 digits: mild geometry (crops below 70% of the area cut strokes away); the
    # Fashion-MNIST setting gave a lower K-means purity (README, feature stage)
    "digits": GrayAugment(scale=(0.7, 1.0), translate=0.0625, degrees=5.0, flip=0.0,
                          jitter=0.2, noise_std=0.0),
    "fashion_mnist": GrayAugment(),
    "cifar10": RGBAugment(),
    "cifar100": RGBAugment(),
    "stl10": RGBAugment(),
}


def augmentation_for(dataset: str, in_channels: int):
    """The augmentation used to pretrain on ``dataset`` (images with ``in_channels``)."""
    if dataset in DATASET_AUGMENTATIONS:
        return DATASET_AUGMENTATIONS[dataset]
    return GrayAugment(flip=0.0) if in_channels == 1 else RGBAugment()
