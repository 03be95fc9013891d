"""Standard codecs through PyAV: the reference frame's intra picture, and the clips that the
generative path is compared with (H.264, H.265, AV1 at a CRF).

Sizes are what a decoder needs: the elementary stream's packets, without a container and
without the encoder-information SEI that x264 and x265 write into their first packet (628 and
about 2,300 bytes, i.e. 5 and 18 kbit: more than a whole low-rate clip's picture data).
Every stream is decoded back from the stripped packets, which proves they were not needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from compress.errors import CompressError


@dataclass(frozen=True)
class Codec:
    """One encoder configuration of the comparison, swept over `crf`."""

    name: str  # how reports name it
    encoder: str  # PyAV encoder
    decoder: str
    crf: tuple[int, int]  # lowest (best) and highest (lowest-rate) CRF
    options: dict[str, str] = field(default_factory=dict)
    is_sei: Callable[[int], bool] | None = None  # first byte of a NAL unit -> drop it

    @property
    def floor_crf(self) -> int:
        return self.crf[1]


def _h264_sei(nal_header: int) -> bool:
    return nal_header & 0x1F == 6


def _hevc_sei(nal_header: int) -> bool:
    return (nal_header >> 1) & 0x3F in (39, 40)


CODECS = {
    c.name: c
    for c in (
        Codec(
            "x264-veryslow", "libx264", "h264", (18, 51), {"preset": "veryslow", "x264-params": "scenecut=0"}, _h264_sei
        ),
        Codec(
            "x264-zerolatency",
            "libx264",
            "h264",
            (18, 51),
            {"preset": "medium", "tune": "zerolatency", "x264-params": "scenecut=0"},
            _h264_sei,
        ),
        Codec(
            "x265-slow",
            "libx265",
            "hevc",
            (18, 51),
            {"preset": "slow", "x265-params": "scenecut=0:info=0:log-level=error"},
            _hevc_sei,
        ),
        Codec("svt-av1", "libsvtav1", "libdav1d", (20, 63), {"preset": "6", "svtav1-params": "scd=0"}),
    )
}


@dataclass
class Encoded:
    """A clip through a codec: the bytes a decoder needs and the decoded frames."""

    packets: list[bytes]
    frames: np.ndarray  # [T, H, W, 3] uint8

    @property
    def bytes(self) -> int:
        return sum(map(len, self.packets))


def encode_clip(frames: np.ndarray, fps: Fraction, codec: Codec, crf: int) -> Encoded:
    """[T, H, W, 3] uint8 RGB -> one intra frame then inter frames (gop = the clip), decoded back."""
    options = {**codec.options, "crf": str(crf)}
    packets = _encode(frames, fps, codec, options, gop=len(frames))
    return Encoded(packets, _decode(packets, codec.decoder, len(frames)))


def encode_picture(frame: np.ndarray, qp: int) -> bytes:
    """The reference frame: one H.264 IDR picture at a constant QP, SEI removed (Annex-B)."""
    codec = CODECS["x264-veryslow"]
    return b"".join(_encode(frame[None], Fraction(25), codec, {"preset": "veryslow", "qp": str(qp)}, gop=1))


def decode_picture(data: bytes) -> np.ndarray:
    """An H.264 intra picture -> [H, W, 3] uint8 RGB; CompressError if it does not decode."""
    frames = _decode([data], "h264", 1)
    if len(frames) != 1:
        raise CompressError("the reference picture does not decode as H.264")
    return frames[0]


def _encode(frames: np.ndarray, fps: Fraction, codec: Codec, options: dict[str, str], gop: int) -> list[bytes]:
    t, h, w, _ = frames.shape
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration at every start; errors only
    ctx = av.CodecContext.create(codec.encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.time_base, ctx.framerate = 1 / fps, fps
    ctx.gop_size, ctx.thread_count = gop, 1  # one thread: the same bytes on every run
    ctx.options = options
    packets = []
    for i, frame in enumerate(frames):
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format="yuv420p")
        picture.pts = i
        packets += [bytes(p) for p in ctx.encode(picture)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return [_strip_sei(p, codec.is_sei) for p in packets] if codec.is_sei else packets


def _decode(packets: list[bytes], decoder: str, count: int) -> np.ndarray:
    ctx = av.CodecContext.create(decoder, "r")
    ctx.thread_count = 1
    frames = []
    try:
        for data in packets:
            frames += ctx.decode(av.Packet(data))
        frames += ctx.decode(None)
    except av.FFmpegError as exc:
        raise CompressError(f"{decoder} could not decode the stream ({exc})") from None
    return (
        np.stack([f.to_ndarray(format="rgb24") for f in frames[:count]]) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    )


def _strip_sei(packet: bytes, is_sei: Callable[[int], bool]) -> bytes:
    """An Annex-B packet without its SEI NAL units."""
    starts = _start_codes(packet)
    units = [packet[s:e] for s, e in zip(starts, starts[1:] + [len(packet)])]
    return b"".join(u for u in units if not is_sei(u[u.index(b"\x00\x00\x01") + 3]))


def _start_codes(data: bytes) -> list[int]:
    """Offsets of the Annex-B start codes (00 00 01, with a leading 00 when there is one)."""
    starts, pos = [], data.find(b"\x00\x00\x01")
    while pos != -1:
        starts.append(pos - 1 if pos > 0 and data[pos - 1] == 0 else pos)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return starts
