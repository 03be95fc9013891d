"""FOMM driven by exported parts (onnxruntime sessions) through the same calls as the torch model.

`FommFamily.forward` calls `model.kp_detector(image)` and `model.generator(source, kp_source=...,
kp_driving=...)`; this adapter answers those calls with the three deployable parts, so
evaluation of a bundle measures the files that ship, in the per-call / per-frame flow of a call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from compress.families.fomm.family import flat_keypoints, keypoints

PartFn = Callable[..., tuple[torch.Tensor, ...]]


class ExportedFomm:
    def __init__(self, parts: dict[str, PartFn]):
        self.parts = parts
        shape = getattr(parts["kp_detector"], "shapes", {}).get("image")
        self.input_size = tuple(shape[-2:]) if shape else None

    def eval(self) -> ExportedFomm:
        return self

    def kp_detector(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = [self.parts["kp_detector"](x) for x in image.split(1)]  # exported parts take batch 1
        return keypoints(tuple(torch.cat(col) for col in zip(*rows)))

    def generator(
        self, source: torch.Tensor, kp_source: dict[str, torch.Tensor], kp_driving: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        preds = []
        for i, src in enumerate(source.split(1)):
            (feature,) = self.parts["generator.per_call"](src)[:1]
            kp_s = tuple(t[i : i + 1] for t in flat_keypoints(kp_source))
            kp_d = tuple(t[i : i + 1] for t in flat_keypoints(kp_driving))
            preds.append(self.parts["generator.per_frame"](src, feature, *kp_s, *kp_d)[0])
        return {"prediction": torch.cat(preds)}
