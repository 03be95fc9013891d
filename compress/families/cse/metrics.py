"""Dense-correspondence metrics for CSE, batched over [B, H, W] vertex-id maps.

A prediction is scored where the reference (ground truth, or the teacher) sees the figure,
i.e. where its vertex id is >= 0. The error at a pixel is the geodesic distance between
the predicted and the reference vertex, in units of the mesh's geodesic diameter, so the
numbers mean the same on any mesh. Exact vertex equality is not scored: neighbouring
vertices are closer than a pixel. A pixel predicted as background (id -1) counts as the
largest possible error, the diameter (DensePose counts it as infinitely far; for the GPS
score the two differ by less than e^-37).

GPS is DensePose's geodesic point similarity, the mean of exp(-g^2 / (2 kappa^2)). DensePose
uses kappa = 0.255 m on SMPL (`densepose_coco_evaluation.py`: "0.3 m of error gives 0.5").
Scaled to the mesh: human bodies have a geodesic diameter of about 2.2 m (published diameters
of FAUST's human scans range 1.98-2.40 m), so kappa = 0.255 / 2.2 = 0.116 diameters, and
agreement within 5 % of the diameter is about 11 cm on a person.

Each metric is computed per sample; `reduction="mean"` averages the samples that have
reference pixels (a sample without any has no score: NaN with `reduction="none"`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from compress.families.task import Metric
from compress.metrics import Reduction

GPS_KAPPA = 0.255 / 2.2  # in geodesic diameters
AGREEMENT_RADIUS = 0.05  # in geodesic diameters

METRICS = (
    Metric("gps", "", True, "GPS-style score exp(-g^2/2k^2), k = 0.116 geodesic diameters", default_max_drop=0.02),
    Metric("agreement", "", True, "fraction of pixels whose vertex is within 5 % of the geodesic diameter"),
    Metric("geodesic_error", "", False, "mean geodesic error of the pixel's vertex, in geodesic diameters"),
    Metric("geodesic_error_median", "", False, "median geodesic error, in geodesic diameters"),
    Metric("mask_iou", "", True, "IoU of the figure's mask"),
    Metric("embedding_cosine", "", True, "cosine of the pixel embeddings on the teacher's mask", against=("teacher",)),
)


def geodesic_errors(pred_ids: Tensor, target_ids: Tensor, geodesics: Tensor, diameter: float) -> Tensor:
    """Per-pixel error [B, H, W] in geodesic diameters; NaN where the target has no vertex."""
    _check_ids(pred_ids, target_ids)
    pred, target = pred_ids.long(), target_ids.long()
    count = geodesics.shape[0]
    distance = geodesics.flatten()[target.clamp_min(0) * count + pred.clamp_min(0)].float() / diameter
    distance = torch.where(pred >= 0, distance, 1.0)
    return torch.where(target >= 0, distance, torch.nan)


def correspondence_metrics(
    pred_ids: Tensor, target_ids: Tensor, geodesics: Tensor, diameter: float, reduction: Reduction = "mean"
) -> dict[str, float | Tensor]:
    """gps, agreement, geodesic_error (mean), geodesic_error_median and mask_iou (of the id maps' >= 0)."""
    errors = geodesic_errors(pred_ids, target_ids, geodesics, diameter).flatten(1)
    valid = ~errors.isnan()
    pixels = valid.sum(1)

    def mean(values: Tensor) -> Tensor:
        return torch.where(valid, values, 0).sum(1) / pixels  # NaN for a sample without pixels

    per_sample = {
        "gps": mean(torch.exp(-(errors**2) / (2 * GPS_KAPPA**2))),
        "agreement": mean((errors <= AGREEMENT_RADIUS).float()),
        "geodesic_error": mean(errors),
        "geodesic_error_median": errors.nanmedian(1).values,
        "mask_iou": mask_iou(pred_ids >= 0, target_ids >= 0, reduction="none"),
    }
    return {name: _reduce(value, reduction) for name, value in per_sample.items()}


def mask_iou(pred_mask: Tensor, target_mask: Tensor, reduction: Reduction = "mean") -> float | Tensor:
    """Intersection over union of [B, H, W] masks (bool, or float > 0.5); 1 when both are empty."""
    _check_ids(pred_mask, target_mask)
    pred, target = _as_bool(pred_mask).flatten(1), _as_bool(target_mask).flatten(1)
    union = (pred | target).sum(1)
    iou = torch.where(union > 0, (pred & target).sum(1) / union.clamp_min(1), 1.0)
    return _reduce(iou, reduction)


def embedding_cosine(
    embedding: Tensor, reference: Tensor, mask: Tensor | None = None, reduction: Reduction = "mean"
) -> float | Tensor:
    """Mean cosine of [B, D, H, W] pixel embeddings, over the pixels of `mask` [B, H, W] (all if None)."""
    if embedding.shape != reference.shape or embedding.dim() != 4:
        raise ValueError(
            f"embeddings must both be [B, D, H, W]; got {tuple(embedding.shape)} and {tuple(reference.shape)}"
        )
    cosine = F.cosine_similarity(embedding.float(), reference.float(), dim=1).flatten(1)
    if mask is None:
        return _reduce(cosine.mean(1), reduction)
    keep = _as_bool(mask).flatten(1)
    return _reduce(torch.where(keep, cosine, 0).sum(1) / keep.sum(1), reduction)


def _as_bool(mask: Tensor) -> Tensor:
    return mask if mask.dtype == torch.bool else mask > 0.5


def _check_ids(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"maps must both be [B, H, W]; got {tuple(a.shape)} and {tuple(b.shape)}")


def _reduce(per_sample: Tensor, reduction: Reduction) -> float | Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return float(per_sample.float().nanmean())
    raise ValueError(f"reduction {reduction!r}: expected 'mean' or 'none'")
