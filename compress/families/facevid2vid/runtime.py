"""face-vid2vid driven by exported parts (onnxruntime sessions, or the parts' torch modules under QAT).

`FaceVid2VidFamily.forward` hands such a pipeline the (source, driving) batch; this adapter runs the
call as the apps do: the sender's part on both frames, the receiver's per-call part on the source,
its per-frame part on the payloads. So evaluating a bundle measures the files that ship.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from compress.families.facevid2vid.pose import transform_canonical

PartFn = Callable[..., tuple[torch.Tensor, ...]]


class ExportedFaceVid2Vid:
    def __init__(self, parts: dict[str, PartFn]):
        self.parts = parts
        shape = getattr(parts["he_estimator"], "shapes", {}).get("image")
        self.input_size = tuple(shape[-2:]) if shape else None
        animate = parts["generator.per_frame"]
        shapes = getattr(animate, "shapes", None)
        # The mobile receiver reads the source frame (dense motion, image skip); the teacher's does not.
        self.reads_source = "source" in shapes if shapes is not None else getattr(animate, "reads_source", True)

    def eval(self) -> ExportedFaceVid2Vid:
        return self

    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs as `FaceVid2VidFamily.forward` names them: prediction, driving/source angles, t, exp,
        kp_canonical, kp_source, kp_driving (exported parts take batch 1)."""
        rows: list[dict[str, torch.Tensor]] = []
        for src, drv in zip(source.split(1), driving.split(1)):
            pose = {"source": self.parts["he_estimator"](src), "driving": self.parts["he_estimator"](drv)}
            feature, kp_canonical = self.parts["generator.per_call"](src)[:2]
            inputs = (*((src,) if self.reads_source else ()), feature, kp_canonical, *pose["source"], *pose["driving"])
            row = {"prediction": self.parts["generator.per_frame"](*inputs)[0], "kp_canonical": kp_canonical}
            for frame, (yaw, pitch, roll, t, exp) in pose.items():
                row[f"{frame}_angles"] = torch.stack([yaw, pitch, roll], dim=1)
                row[f"{frame}_t"], row[f"{frame}_exp"] = t, exp
                row[f"kp_{frame}"] = transform_canonical(kp_canonical, yaw, pitch, roll, t, exp)
            rows.append(row)
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
