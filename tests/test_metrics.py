"""Frame and keypoint metrics against known values and an independent SSIM reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from compress.metrics import PSNR_MAX_DB, frame_metrics, keypoint_distance, l1, psnr, ssim, ssim_loss


def _images(seed: int, batch: int = 2, size: int = 64) -> torch.Tensor:
    """Smooth structure plus fine noise, like natural images, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(batch, 3, 8, 8, generator=g), size=size, mode="bilinear")
    return (0.8 * coarse + 0.2 * torch.rand(batch, 3, size, size, generator=g)).clamp(0, 1)


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 for one [C, H, W] image pair: 11x11 Gaussian (sigma 1.5), valid region, channel mean."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2

    def filt(img: np.ndarray) -> np.ndarray:
        return (sliding_window_view(img, (11, 11)) * w).sum(axis=(-2, -1))

    scores = []
    for ca, cb in zip(a.astype(np.float64), b.astype(np.float64)):
        ma, mb = filt(ca), filt(cb)
        va, vb, cov = filt(ca * ca) - ma**2, filt(cb * cb) - mb**2, filt(ca * cb) - ma * mb
        scores.append(np.mean(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))))
    return float(np.mean(scores))


def test_l1_of_constant_images_is_their_difference() -> None:
    assert l1(torch.full((2, 3, 8, 8), 0.2), torch.full((2, 3, 8, 8), 0.7)) == pytest.approx(0.5)


def test_psnr_of_a_known_mse() -> None:
    a, b = torch.full((1, 3, 16, 16), 0.5), torch.full((1, 3, 16, 16), 0.6)  # MSE 0.01
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a * 255, b * 255, data_range=255.0) == pytest.approx(20.0, abs=1e-4)


def test_psnr_of_identical_images_is_capped_to_stay_finite() -> None:
    x = _images(0)
    assert psnr(x, x) == pytest.approx(PSNR_MAX_DB)


def test_ssim_of_identical_images_is_one() -> None:
    x = _images(1)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)


def test_ssim_matches_the_reference_formula() -> None:
    a, b = _images(2), _images(3)
    per_sample = ssim(a, b, reduction="none")
    for i in range(2):
        assert per_sample[i].item() == pytest.approx(_reference_ssim(a[i].numpy(), b[i].numpy()), abs=1e-6)


def test_ssim_falls_as_noise_grows() -> None:
    x = _images(4)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    scores = [ssim(x, (x + s * noise).clamp(0, 1)) for s in (0.02, 0.1, 0.3)]
    assert scores[0] > scores[1] > scores[2]


def test_ssim_works_on_images_smaller_than_the_window() -> None:
    x = _images(5, size=8)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, 1 - x) < 0.5


def test_reduction_none_gives_one_value_per_sample() -> None:
    a, b = _images(6, batch=3), _images(7, batch=3)
    for metric in (l1, psnr, ssim):
        per_sample = metric(a, b, reduction="none")
        assert per_sample.shape == (3,)
        assert per_sample[1].item() == pytest.approx(metric(a[1:2], b[1:2]), rel=1e-5)
        assert per_sample.mean().item() == pytest.approx(metric(a, b), rel=1e-5)


def test_keypoint_distance_is_the_mean_euclidean_distance() -> None:
    kp = torch.zeros(2, 4, 2)
    moved = kp.clone()
    moved[0, :, 0], moved[0, :, 1] = 0.3, 0.4  # every keypoint of sample 0 moves by 0.5
    moved[1, 0] = torch.tensor([0.6, 0.8])  # one of four keypoints of sample 1 moves by 1
    assert keypoint_distance(kp, moved, reduction="none").tolist() == pytest.approx([0.5, 0.25])
    assert keypoint_distance(kp, moved) == pytest.approx(0.375)


def test_keypoint_distance_of_3d_keypoints_is_the_euclidean_distance_in_space() -> None:
    g = torch.Generator().manual_seed(0)
    kp, moved = torch.rand(2, 5, 3, generator=g), torch.rand(2, 5, 3, generator=g)
    by_hand = ((kp - moved) ** 2).sum(-1).sqrt().mean(1)
    assert keypoint_distance(kp, moved, reduction="none").tolist() == pytest.approx(by_hand.tolist())


def test_keypoint_distance_refuses_keypoints_that_are_neither_2d_nor_3d() -> None:
    with pytest.raises(ValueError, match=r"\[B, K, 2\] or \[B, K, 3\]"):
        keypoint_distance(torch.zeros(2, 5, 4), torch.zeros(2, 5, 4))


def test_frame_metrics_reports_l1_psnr_and_ssim() -> None:
    a, b = _images(8), _images(9)
    assert frame_metrics(a, b) == {"l1": l1(a, b), "psnr": psnr(a, b), "ssim": ssim(a, b)}


def test_ssim_loss_is_zero_for_identical_images_and_one_scale_is_one_minus_ssim() -> None:
    a, b = _images(10), _images(11)
    assert ssim_loss(a, a).item() == pytest.approx(0.0, abs=1e-5)
    assert ssim_loss(a, b, scales=1).item() == pytest.approx(1 - ssim(a, b), abs=1e-5)


def test_ssim_loss_gradients_bring_the_prediction_closer() -> None:
    target, pred = _images(12), _images(13)
    before = ssim_loss(pred, target).item()
    for _ in range(5):  # plain gradient descent (torch.optim's first import costs seconds)
        pred.requires_grad_(True)
        (grad,) = torch.autograd.grad(ssim_loss(pred, target), pred)
        assert torch.isfinite(grad).all()
        pred = (pred - 0.5 * grad).detach()
    assert ssim_loss(pred, target).item() < before


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="images must both be"):
        l1(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
