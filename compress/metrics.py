"""Frame quality and keypoint metrics, batched over [B, 3, H, W] images in [0, data_range].

Each metric is computed per sample, then `reduction="mean"` gives the batch mean as a
float and `reduction="none"` the per-sample tensor [B]. SSIM follows Wang et al. 2004
(Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, statistics over the "valid" region,
channels averaged), the formula used by FOMM-era evaluations and `skimage` with
`gaussian_weights=True`. Images smaller than the window use the largest odd window that
fits, so 8x8 crops still get a score.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["mean", "none"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_MAX_DB = 100.0


def l1(a: torch.Tensor, b: torch.Tensor, reduction: Reduction = "mean") -> float | torch.Tensor:
    """Mean absolute difference per sample."""
    _check_images(a, b)
    return _reduce((a - b).abs().flatten(1).mean(1), reduction)


def psnr(
    a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, reduction: Reduction = "mean"
) -> float | torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample: 10 log10(data_range^2 / MSE).

    Capped at PSNR_MAX_DB (identical images) so batch means and JSON reports stay finite.
    """
    _check_images(a, b)
    mse = (a - b).double().pow(2).flatten(1).mean(1).clamp_min(data_range**2 * 10 ** (-PSNR_MAX_DB / 10))
    return _reduce((10 * torch.log10(data_range**2 / mse)).float(), reduction)


def ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, reduction: Reduction = "mean"
) -> float | torch.Tensor:
    """Structural similarity per sample (1 for identical images)."""
    _check_images(a, b)
    with torch.no_grad():
        per_sample = _ssim_map(a.double(), b.double(), data_range).flatten(1).mean(1).float()
    return _reduce(per_sample, reduction)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, scales: int = 3, data_range: float = 1.0) -> torch.Tensor:
    """Differentiable multi-scale SSIM loss: mean over dyadic scales of (1 - SSIM), a scalar.

    Scale s compares the images average-pooled by 2^s, so both fine detail and coarse
    structure count; it stops early rather than pool below 2 pixels. Unlike
    MS-SSIM's product of powers this stays well defined when SSIM is negative.
    """
    _check_images(pred, target)
    losses = []
    for s in range(scales):
        if s > 0:
            if min(pred.shape[-2:]) < 4:
                break
            pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
        losses.append(1 - _ssim_map(pred, target, data_range).mean())
    return torch.stack(losses).mean()


def keypoint_distance(kp_a: torch.Tensor, kp_b: torch.Tensor, reduction: Reduction = "mean") -> float | torch.Tensor:
    """Mean Euclidean distance between matching keypoints, per sample.

    Keypoints are [B, K, 2] (e.g. FOMM kp["value"]) or [B, K, 3] (face-vid2vid's 3-D keypoints).
    """
    if kp_a.shape != kp_b.shape or kp_a.dim() != 3 or kp_a.shape[-1] not in (2, 3):
        raise ValueError(
            f"keypoints must both be [B, K, 2] or [B, K, 3]; got {tuple(kp_a.shape)} and {tuple(kp_b.shape)}"
        )
    return _reduce((kp_a - kp_b).norm(dim=-1).mean(1), reduction)


def frame_metrics(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> dict[str, float]:
    """Batch means of l1, psnr and ssim, the usual reconstruction report."""
    pred, target = pred.detach(), target.detach()
    return {
        "l1": l1(pred, target),
        "psnr": psnr(pred, target, data_range),
        "ssim": ssim(pred, target, data_range),
    }


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian [size] (the 2-D window is its outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    """Per-pixel SSIM [B, C, H-k+1, W-k+1] with k the window size."""
    channels = a.shape[1]
    size = min(SSIM_WINDOW, *a.shape[-2:])
    size -= 1 - size % 2  # odd, so the window has a centre pixel
    g = gaussian_window(size).to(a)
    row = g.view(1, 1, 1, size).expand(channels, 1, 1, size)
    col = g.view(1, 1, size, 1).expand(channels, 1, size, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region only
        return F.conv2d(F.conv2d(x, row, groups=channels), col, groups=channels)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def _check_images(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"images must both be [B, C, H, W]; got {tuple(a.shape)} and {tuple(b.shape)}")


def _reduce(per_sample: torch.Tensor, reduction: Reduction) -> float | torch.Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return float(per_sample.mean())
    raise ValueError(f"reduction {reduction!r}: expected 'mean' or 'none'")
