"""A bundle's video call, read from its manifest: what the sender sends, what the receiver runs.

The payload is every output of a sender per-frame part that some receiver input is fed with
(`feed.part` / `feed.output`); the receiver gets those values for the camera frame from each
packet and for the reference frame from the stream's reference section. Parts run through
onnxruntime in manifest order, each input taken from where its `feed` says: nothing here
knows a family's tensor names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.bundle.manifest import Manifest, PartEntry, load_manifest
from compress.codec.classical import decode_picture, encode_picture
from compress.errors import CompressError
from compress.evaluate import OnnxPart

Key = tuple[str, str]  # (part, output)
Values = dict[Key, np.ndarray]
CAMERA, REFERENCE = "camera_frame", "reference_frame"


@dataclass
class Observed:
    """A clip as the sender sees it: its frames, the decoded reference frame, unquantized payloads."""

    frames: np.ndarray  # [T, H, W, 3] uint8
    picture: bytes  # the reference frame (frame 0) as coded once per call
    reference: np.ndarray  # [H, W, 3] uint8, that picture decoded: what both ends use
    reference_values: Values
    values: list[Values]  # per frame


@dataclass
class CallFlow:
    path: Path
    manifest: Manifest
    sender: list[PartEntry]  # per-frame sender parts, in manifest order
    receiver_per_call: list[PartEntry]
    receiver_per_frame: list[PartEntry]
    payload: list[Key]
    sessions: dict[str, OnnxPart]
    frame_size: tuple[int, int]  # (H, W) of the camera frames the sender takes

    def observe(self, frames: np.ndarray, reference_qp: int) -> Observed:
        """The sender on a clip ([T, H, W, 3] uint8): frame 0 coded as the reference picture, the
        payload on its decoded version and on every frame."""
        picture = encode_picture(frames[0], reference_qp)
        reference = decode_picture(picture)
        return Observed(frames, picture, reference, self.send(reference), [self.send(f, reference) for f in frames])

    def send(self, image: np.ndarray, reference: np.ndarray | None = None) -> Values:
        """The payload of one frame ([H, W, 3] uint8); without `reference`, of the reference frame itself."""
        images = {CAMERA: to_input(image), REFERENCE: to_input(image if reference is None else reference)}
        values: Values = {}
        for part in self.sender:
            feeds = [
                images[i.feed.source] if i.feed.source in images else values[(i.feed.part, i.feed.output)]
                for i in part.inputs
            ]
            values.update(self._run(part, feeds))
        return {k: values[k] for k in self.payload}

    def receive(self, reference: np.ndarray, reference_values: Values, frames: list[Values]) -> np.ndarray:
        """Receiver output for each frame's values -> [T, H, W, 3] float in [0, 1]."""
        ref = to_input(reference)
        on_reference = {(k[0], k[1], REFERENCE): v for k, v in reference_values.items()}
        for part in self.receiver_per_call:
            on_reference.update(
                {(*k, REFERENCE): v for k, v in self._run(part, self._feeds(part, ref, on_reference)).items()}
            )
        out = []
        for values in frames:
            known = on_reference | {(k[0], k[1], CAMERA): v for k, v in values.items()}
            for part in self.receiver_per_frame:
                known.update({(*k, CAMERA): v for k, v in self._run(part, self._feeds(part, ref, known)).items()})
            image = known[(*self.picture, CAMERA)]
            out.append(np.clip(image[0].transpose(1, 2, 0), 0, 1))
        return np.stack(out)

    @property
    def picture(self) -> Key:
        """The receiver's output frame: the last per-frame receiver part's first output."""
        part = self.receiver_per_frame[-1]
        return part.name, part.outputs[0].name

    def _feeds(
        self, part: PartEntry, reference: np.ndarray, known: dict[tuple[str, str, str], np.ndarray]
    ) -> list[np.ndarray]:
        feeds = []
        for tensor in part.inputs:
            feed = tensor.feed
            if feed.source == REFERENCE:
                feeds.append(reference)
            elif feed.source == CAMERA:
                raise CompressError(
                    f"{self.path}: receiver part {part.name!r} input {tensor.name!r} takes the camera frame, "
                    "which only the sender has"
                )
            else:
                feeds.append(known[(feed.part, feed.output, feed.frame)])
        return feeds

    def _run(self, part: PartEntry, feeds: list[np.ndarray]) -> Values:
        outputs = self.sessions[part.name](
            *(torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)) for f in feeds)
        )
        return {(part.name, o.name): t.numpy() for o, t in zip(part.outputs, outputs)}


def load_flow(bundle: str | Path) -> CallFlow:
    """The call flow of a video-call bundle; CompressError naming the bundle if it is not one."""
    path = Path(bundle)
    manifest = load_manifest(path)
    sender = [p for p in manifest.parts if p.role == "sender" and p.cadence == "per_frame"]
    receiver = [p for p in manifest.parts if p.role == "receiver"]
    if not sender or not any(p.cadence == "per_frame" for p in receiver):
        raise CompressError(
            f"{path}: not a video-call bundle (it needs a per-frame sender part and a per-frame receiver part; "
            f"it has {[(p.name, p.role, p.cadence) for p in manifest.parts]})"
        )
    other_senders = [p.name for p in manifest.parts if p.role == "sender" and p.cadence != "per_frame"]
    if other_senders:
        raise CompressError(
            f"{path}: sender parts {other_senders} run once per call; "
            "bitstream version 1 carries per-frame sender outputs only"
        )
    read = {(i.feed.part, i.feed.output) for p in receiver for i in p.inputs if i.feed.source == "part_output"}
    payload = [(p.name, o.name) for p in sender for o in p.outputs if (p.name, o.name) in read]
    if not payload:
        raise CompressError(f"{path}: no receiver input reads a sender output: there is nothing to send")
    cameras = [i for p in sender for i in p.inputs if i.feed.source == CAMERA]
    if not cameras or cameras[0].layout != "NCHW" or len(cameras[0].shape) != 4 or cameras[0].shape[1] != 3:
        raise CompressError(
            f"{path}: the sender takes no RGB camera frame as an NCHW [1, 3, H, W] input; a call needs one"
        )
    sessions = {}
    for part in manifest.parts:
        onnx = part.files.get("onnx")
        if onnx is None:
            raise CompressError(f"{path}: part {part.name} has no ONNX file; a call runs the parts with onnxruntime")
        sessions[part.name] = OnnxPart(path / onnx.path)
    return CallFlow(
        path,
        manifest,
        sender,
        [p for p in receiver if p.cadence == "per_call"],
        [p for p in receiver if p.cadence == "per_frame"],
        payload,
        sessions,
        (cameras[0].shape[2], cameras[0].shape[3]),
    )


def to_input(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [1, 3, H, W] float32 in [0, 1], the parts' image layout."""
    return (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]
