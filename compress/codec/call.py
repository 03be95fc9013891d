"""`compress call`: a video call through a bundle, from camera frames to received frames, measured.

The sender codes the reference frame (frame 0) once and one packet per frame into a stream
file; the receiver decodes that file and runs its networks. The report gives the stream's rate
(its bytes x 8 / the clip's duration, split into keypoint packets and the reference frame
amortised over the clip; IP/UDP/RTP headers estimated separately, never added), the received
frames' quality against the camera frames, the cost of quantization (the same receiver fed
unquantized values), and a classical codec on the same frames at the closest rate it reaches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.checkpoints import atomic_path
from compress.codec.classical import CODECS, Codec, Encoded, decode_picture, encode_clip
from compress.codec.flow import CallFlow, Observed, Values, load_flow
from compress.codec.format import BitstreamFormat
from compress.codec.packets import PacketEncoder
from compress.codec.preview import write_preview, write_video
from compress.codec.stream import Stream, StreamBytes, StreamInfo, read_stream, write_stream
from compress.data.pairs import SYNTHETIC, ClipStore
from compress.data.video import frame_rate, read_video_uint8
from compress.errors import CompressError
from compress.metrics import psnr, ssim

SYNTHETIC_FRAMES = 250  # 10 s at 25 fps, the GFVC test clips' length
DEFAULT_FPS = Fraction(25)
RTP_HEADER_BYTES = 20 + 8 + 12  # IPv4 + UDP + RTP, one per packet sent alone
MS_SSIM_MIN_SIDE = 161  # five scales of an 11-pixel window need a shorter side above 160
DEFAULT_CLASSICAL = "x264-veryslow"


@dataclass
class Clip:
    name: str
    frames: np.ndarray  # [T, H, W, 3] uint8, at the bundle's frame size
    fps: Fraction

    @property
    def duration_s(self) -> float:
        return len(self.frames) / float(self.fps)


@dataclass
class Sent:
    """What the sender produced: the stream, and what it was made from."""

    stream: StreamBytes
    observed: Observed


def read_clip(clip: str, size: tuple[int, int], frames: int | None = None) -> Clip:
    """A video file or frame folder (centre-cropped and resized to `size`), or `synthetic[:N]`:
    held-out synthetic clip N at 25 fps."""
    if clip == SYNTHETIC or clip.startswith(f"{SYNTHETIC}:"):
        index = clip.partition(":")[2] or "0"
        if not index.isdigit():
            raise CompressError(f"clip {clip!r}: expected 'synthetic' or 'synthetic:N' with N a clip number")
        store = ClipStore(
            SYNTHETIC,
            "test",
            size,
            synthetic_clips=int(index) + 1,
            frames_per_clip=frames or SYNTHETIC_FRAMES,
            cache_clips=0,
        )
        return Clip(clip, store[int(index)]["frames"].permute(0, 2, 3, 1).numpy(), DEFAULT_FPS)
    path = Path(clip)
    if not path.exists():
        raise CompressError(
            f"{path}: no such video; pass a video file (.mp4, .mov, ...), a folder of .png/.jpg frames, or 'synthetic'"
        )
    video = read_video_uint8(path, size)[:frames].permute(0, 2, 3, 1).numpy()
    return Clip(str(path), video, frame_rate(path) or DEFAULT_FPS)


def send(flow: CallFlow, fmt: BitstreamFormat, clip: Clip) -> Sent:
    """The sender's side of the call: the reference picture once, then one packet per frame."""
    observed = flow.observe(clip.frames, fmt.reference.qp)
    return Sent(encode_stream(fmt, observed, clip.fps), observed)


def encode_stream(fmt: BitstreamFormat, observed: Observed, fps: Fraction) -> StreamBytes:
    reference = _quantize(fmt, observed.reference_values)
    encoder = PacketEncoder(fmt, reference)
    packets = [encoder.encode(_quantize(fmt, v)) for v in observed.values]
    t, h, w = observed.frames.shape[:3]
    return write_stream(fmt, StreamInfo(w, h, fps, t), observed.picture, reference, packets)


def receive(flow: CallFlow, fmt: BitstreamFormat, data: bytes) -> tuple[np.ndarray, Stream]:
    """The receiver's side: a stream's bytes -> its frames ([T, H, W, 3] float in [0, 1])."""
    stream = read_stream(data, fmt)
    reference = decode_picture(stream.picture)
    reference_values = _dequantize(fmt, stream.reference)
    return flow.receive(reference, reference_values, [_dequantize(fmt, f.values) for f in stream.frames]), stream


def match_rate(clip: Clip, codec: Codec, target_bytes: int) -> tuple[int, Encoded]:
    """The codec at the CRF whose size is the largest not above `target_bytes` (its floor CRF
    when even that is above: the caller reports it as such)."""
    lo, hi = codec.crf
    best: tuple[int, Encoded] | None = None
    while lo <= hi:  # size falls as CRF rises
        crf = (lo + hi) // 2
        encoded = encode_clip(clip.frames, clip.fps, codec, crf)
        if encoded.bytes <= target_bytes:
            best, hi = (crf, encoded), crf - 1
        else:
            lo = crf + 1
    return best or (codec.floor_crf, encode_clip(clip.frames, clip.fps, codec, codec.floor_crf))


def quality(frames: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
    """PSNR (dB), SSIM and, for frames large enough, MS-SSIM: means over frames, RGB in [0, 1]."""
    from pytorch_msssim import ms_ssim

    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "ms_ssim": []}
    for start in range(0, len(target), 32):
        a = _tensor(frames[start : start + 32])
        b = _tensor(target[start : start + 32])
        scores["psnr"] += psnr(a, b, reduction="none").tolist()
        scores["ssim"] += ssim(a, b, reduction="none").tolist()
        if min(target.shape[1:3]) >= MS_SSIM_MIN_SIDE:
            scores["ms_ssim"] += ms_ssim(a, b, data_range=1.0, size_average=False).tolist()
    return {k: round(float(np.mean(v)), 4) if v else None for k, v in scores.items()}


def kbit_s(size_bytes: int, clip: Clip) -> float:
    return round(size_bytes * 8 / clip.duration_s / 1000, 3)


def run_call(
    clip_name: str, bundle: Path, out: Path | None = None, frames: int | None = None, classical: str = DEFAULT_CLASSICAL
) -> dict[str, Any]:
    """Run the call, write the stream, the received video and the preview into `out`; the report."""
    flow = load_flow(bundle)
    fmt = bitstream_format(flow)
    if classical not in CODECS:
        raise CompressError(f"classical codec {classical!r}: expected one of {', '.join(CODECS)}")
    clip = read_clip(clip_name, flow.frame_size, frames)
    out = out or Path("exported") / "calls" / f"{bundle.resolve().name}-{Path(clip.name).stem.replace(':', '-')}"
    sent = send(flow, fmt, clip)
    received, stream = receive(flow, fmt, sent.stream.data)
    unquantized = flow.receive(sent.observed.reference, sent.observed.reference_values, sent.observed.values)
    crf, anchor = match_rate(clip, CODECS[classical], len(sent.stream.data))
    report = _report(clip, bundle, fmt, sent, stream, received, unquantized, (classical, crf, anchor))
    paths = {
        "bitstream": out / "call.kps",
        "received_video": out / "received.mp4",
        "preview_video": out / "preview.mp4",
        "preview_png": out / "preview.png",
        "report": out / "report.json",
    }
    report["outputs"] = {k: str(p) for k, p in paths.items()}
    with atomic_path(paths["bitstream"]) as tmp:
        tmp.write_bytes(sent.stream.data)
    received_u8 = _to_uint8(received)
    write_video(paths["received_video"], received_u8, clip.fps)
    columns = [
        ("camera", clip.frames),
        (f"received {report['kbit_s']:.2f} kbit/s", received_u8),
        (f"{classical} {report['classical']['kbit_s']:.2f} kbit/s", anchor.frames),
    ]
    write_preview(paths["preview_video"], paths["preview_png"], columns, clip.fps)
    with atomic_path(paths["report"]) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(report: dict[str, Any]) -> str:
    """The report as a few lines for a terminal."""
    rates, measured, anchor = report["rate_kbit_s"], report["quality"], report["classical"]
    h, w = report["frame_size"]
    rows = [
        ("received", report["kbit_s"], measured["received"]),
        ("unquantized values", None, measured["unquantized"]),
        (
            f"{anchor['codec']} crf {anchor['crf']}{' (its floor)' if anchor['above_target'] else ''}",
            anchor["kbit_s"],
            anchor["quality"],
        ),
    ]
    lines = [
        f"{report['clip']}: {report['frames']} frames, {w}x{h} at {report['fps']:g} fps, through {report['bundle']}",
        f"stream {report['kbit_s']:.2f} kbit/s = keypoints {rates['keypoints']:.2f} "
        f"+ reference frame {rates['reference_frame']:.2f} "
        f"(over the clip) + header {rates['stream_header']:.2f}; IP/UDP/RTP headers would add "
        f"{report['transport_overhead_kbit_s']['ipv4_udp_rtp']:.1f} more",
        f"{'':34} {'kbit/s':>7} {'PSNR dB':>8} {'SSIM':>7} {'MS-SSIM':>8}",
    ]
    for label, rate, q in rows:
        cells = [
            f"{rate:7.2f}" if rate is not None else f"{'':7}",
            f"{q['psnr']:8.2f}",
            f"{q['ssim']:7.4f}",
            f"{q['ms_ssim']:8.4f}" if q["ms_ssim"] is not None else f"{'-':>8}",
        ]
        lines.append(f"{label:34} " + " ".join(cells))
    lines.append("outputs: " + ", ".join(report["outputs"].values()))
    return "\n".join(lines)


def bitstream_format(flow: CallFlow) -> BitstreamFormat:
    fmt = flow.manifest.bitstream
    if fmt is None:
        raise CompressError(
            f"{flow.path}: the manifest has no bitstream format (bundles of this version get one from the bundle "
            f"stage); add one with `compress codec fit {flow.path}`"
        )
    return fmt


def _report(
    clip: Clip,
    bundle: Path,
    fmt: BitstreamFormat,
    sent: Sent,
    stream: Stream,
    received: np.ndarray,
    unquantized: np.ndarray,
    anchor: tuple[str, int, Encoded],
) -> dict[str, Any]:
    sizes = sent.stream
    packets = len(clip.frames)
    bits = 8 * np.array(sizes.framed_packets)
    received_q, unquantized_q = quality(received, clip.frames), quality(unquantized, clip.frames)
    name, crf, encoded = anchor
    statuses = [f.status for f in stream.frames]
    return {
        "clip": clip.name,
        "bundle": str(bundle),
        "frames": packets,
        "fps": float(clip.fps),
        "duration_s": round(clip.duration_s, 3),
        "frame_size": list(clip.frames.shape[1:3]),
        "kbit_s": kbit_s(len(sizes.data), clip),
        "bitstream_bytes": len(sizes.data),
        "rate_kbit_s": {
            "keypoints": kbit_s(sizes.packets + sizes.length_prefixes, clip),
            "keypoint_packets": kbit_s(sizes.packets, clip),
            "length_prefixes": kbit_s(sizes.length_prefixes, clip),
            "reference_frame": kbit_s(sizes.picture + sizes.reference_values, clip),
            "stream_header": kbit_s(sizes.header, clip),
        },
        "bytes": sizes.to_json(),
        "packet_bits": {
            "mean": round(float(bits.mean()), 1),
            "p95": float(np.percentile(bits, 95)),
            "max": int(bits.max()),
        },
        "transport_overhead_kbit_s": {
            "ipv4_udp_rtp": kbit_s(RTP_HEADER_BYTES * packets, clip),
            "note": "not in the bitstream or kbit_s: 40 bytes of IPv4+UDP+RTP headers per packet "
            "when each frame's packet travels alone",
        },
        "format": {
            "version": fmt.version,
            "coder": fmt.coder,
            "key_interval": fmt.key_interval,
            "reference": fmt.reference.model_dump(),
            "steps": {t.key: t.step for t in fmt.tensors},
        },
        "decoded": {s: statuses.count(s) for s in ("key", "delta", "concealed")},
        "quality": {
            "received": received_q,
            "unquantized": unquantized_q,
            "quantization_cost": {k: _drop(unquantized_q[k], received_q[k]) for k in received_q},
        },
        "classical": {
            "codec": name,
            "crf": crf,
            "kbit_s": kbit_s(encoded.bytes, clip),
            "bytes": encoded.bytes,
            "above_target": encoded.bytes > len(sizes.data),
            "quality": quality(encoded.frames, clip.frames),
        },
    }


def _drop(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(before - after, 4)


def _quantize(fmt: BitstreamFormat, values: Values) -> list[np.ndarray]:
    return [t.quantize(values[(t.part, t.name)]) for t in fmt.tensors]


def _dequantize(fmt: BitstreamFormat, q: list[np.ndarray]) -> Values:
    return {(t.part, t.name): t.dequantize(x) for t, x in zip(fmt.tensors, q)}


def _tensor(frames: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
