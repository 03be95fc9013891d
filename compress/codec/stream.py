"""The call stream: header, reference section, then length-prefixed packets (docs/bitstream.md).

    header     "MCKP", version, format fingerprint, width, height, fps, frames, picture bytes, CRC-32
    reference  the reference frame as one intra picture, its sender outputs as varints, CRC-32
    packets    LEB128 length | packet (packets.py), one per frame

A damaged header or reference section is refused with StreamError (without them no frame can
be shown). Damage after them never raises: a packet that fails its checks is concealed, and
when a corrupted length breaks the framing the reader finds the next intact packet.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from compress.codec import entropy
from compress.codec.format import FORMAT_VERSION, BitstreamFormat
from compress.codec.packets import Decoded, PacketDecoder, varint
from compress.errors import CompressError

MAGIC = b"MCKP"
_HEADER = struct.Struct(
    "<4sB4sHHHHII"
)  # magic, version, fingerprint, width, height, fps num/den, frames, picture bytes
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size + _CRC.size
# An intact packet found while resynchronising must number a frame this close ahead.
RESYNC_WINDOW = 32


class StreamError(CompressError):
    """A stream whose header or reference section is malformed: nothing can be decoded."""


@dataclass(frozen=True)
class StreamInfo:
    width: int
    height: int
    fps: Fraction
    frames: int  # 0: not known (a live call)


@dataclass
class Stream:
    info: StreamInfo
    picture: bytes  # the reference frame, coded as fmt.reference says
    reference: list[np.ndarray]  # integers of each payload tensor on the reference frame
    frames: list[Decoded]


@dataclass
class StreamBytes:
    """A written stream and the size of each of its sections, for rate reports."""

    data: bytes
    header: int
    picture: int
    reference_values: int
    packets: int  # the packets: entropy-coded values, their check words inside
    length_prefixes: int  # the stream file's framing
    framed_packets: list[int]  # bytes of each packet with its length prefix

    def to_json(self) -> dict[str, int]:
        return {
            "total": len(self.data),
            "header": self.header,
            "reference_picture": self.picture,
            "reference_values": self.reference_values,
            "packets": self.packets,
            "length_prefixes": self.length_prefixes,
        }


# -- writing ---------------------------------------------------------------------------------
def write_stream(
    fmt: BitstreamFormat, info: StreamInfo, picture: bytes, reference: list[np.ndarray], packets: list[bytes]
) -> StreamBytes:
    fps = header_rate(info.fps)
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        fmt.fingerprint(),
        info.width,
        info.height,
        fps.numerator,
        fps.denominator,
        info.frames,
        len(picture),
    )
    header += _CRC.pack(zlib.crc32(header))
    values = b"".join(varint(int(s)) for q in reference for s in entropy.zigzag(q))
    section = picture + values
    framed = [varint(len(p)) + p for p in packets]
    data = header + section + _CRC.pack(zlib.crc32(section)) + b"".join(framed)
    sizes = [len(f) for f in framed]
    payload = sum(map(len, packets))
    return StreamBytes(data, len(header), len(picture), len(values) + _CRC.size, payload, sum(sizes) - payload, sizes)


def header_rate(fps: Fraction) -> Fraction:
    """The frame rate as a fraction whose terms fit 16 bits (30000/1001 stays exact)."""
    for denominator in (1001, 100, 1):
        rate = fps.limit_denominator(denominator)
        if rate.numerator <= 0xFFFF:
            return rate
    raise StreamError(f"frame rate {float(fps):g} fps is beyond what the stream header holds (65535 fps)")


# -- reading ---------------------------------------------------------------------------------
def read_stream(data: bytes, fmt: BitstreamFormat) -> Stream:
    """Decode a whole stream: StreamError for a bad header or reference section, never for packets."""
    info, picture_bytes = _read_header(data, fmt)
    picture, reference, pos = _read_reference(data, HEADER_BYTES, picture_bytes, fmt)
    decoder = PacketDecoder(fmt, reference)
    frames = _read_packets(data, pos, decoder)
    if info.frames:
        frames = frames[: info.frames]
        frames += [decoder.lose() for _ in range(info.frames - len(frames))]
    return Stream(info, picture, reference, frames)


def read_varint(data: bytes, pos: int, max_bytes: int = 4) -> tuple[int, int] | None:
    """(value, position after it), or None if the bytes end first or it runs past `max_bytes`."""
    value = 0
    for i in range(max_bytes):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return None


def _read_header(data: bytes, fmt: BitstreamFormat) -> tuple[StreamInfo, int]:
    if len(data) < HEADER_BYTES:
        raise StreamError(f"truncated stream: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, fingerprint, width, height, num, den, frames, picture = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StreamError(f"not a keypoint stream: it starts with {magic!r}, not {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise StreamError(f"stream format version {version} is not supported (this decoder reads {FORMAT_VERSION})")
    (crc,) = _CRC.unpack_from(data, _HEADER.size)
    if crc != zlib.crc32(data[: _HEADER.size]):
        raise StreamError("stream header damaged: its CRC-32 does not match")
    if fingerprint != fmt.fingerprint():
        raise StreamError(
            f"stream written for another bitstream format (fingerprint {fingerprint.hex()}, this bundle's is "
            f"{fmt.fingerprint().hex()}): decode it with the bundle that wrote it"
        )
    if not (width and height and num and den):
        raise StreamError(f"stream header has a zero size or frame rate ({width}x{height} at {num}/{den} fps)")
    return StreamInfo(width, height, Fraction(num, den), frames), picture


def _read_reference(
    data: bytes, pos: int, picture_bytes: int, fmt: BitstreamFormat
) -> tuple[bytes, list[np.ndarray], int]:
    start = pos
    picture, pos = data[pos : pos + picture_bytes], pos + picture_bytes
    reference = []
    for tensor in fmt.tensors:
        symbols = []
        for _ in range(tensor.size):
            read = read_varint(data, pos, max_bytes=9)
            if read is None:
                raise StreamError("reference section truncated or damaged: the call cannot start without it")
            symbol, pos = read
            symbols.append(symbol)
        reference.append(entropy.unzigzag(np.array(symbols, dtype=np.int64)))
    if pos + _CRC.size > len(data) or _CRC.unpack_from(data, pos)[0] != zlib.crc32(data[start:pos]):
        raise StreamError("reference section damaged: its CRC-32 does not match (the call cannot start without it)")
    return picture, reference, pos + _CRC.size


def _read_packets(data: bytes, pos: int, decoder: PacketDecoder) -> list[Decoded]:
    frames: list[Decoded] = []
    while pos < len(data):
        framed = _framed_packet(data, pos)
        if framed is not None and decoder.frames_ahead(framed[0]) is not None:
            frames += decoder.receive(framed[0])
            pos = framed[1]
        elif framed is not None and (framed[1] == len(data) or _intact_at(data, framed[1], decoder)):
            frames.append(decoder.lose())  # a damaged packet; the length before it held
            pos = framed[1]
        else:
            frames.append(decoder.lose())  # the framing itself is damaged: find the next intact packet
            pos = _resync(data, pos + 1, decoder)
    return frames


def _framed_packet(data: bytes, pos: int) -> tuple[bytes, int] | None:
    read = read_varint(data, pos)
    if read is None or read[0] < 1 or read[1] + read[0] > len(data):
        return None
    length, start = read
    return data[start : start + length], start + length


def _intact_at(data: bytes, pos: int, decoder: PacketDecoder) -> bool:
    framed = _framed_packet(data, pos)
    return framed is not None and decoder.frames_ahead(framed[0]) is not None


def _resync(data: bytes, pos: int, decoder: PacketDecoder) -> int:
    """The next offset where an intact packet numbering a frame just ahead starts (or the end)."""
    while pos < len(data):
        framed = _framed_packet(data, pos)
        ahead = decoder.frames_ahead(framed[0]) if framed is not None else None
        if ahead is not None and ahead < RESYNC_WINDOW:
            return pos
        pos += 1
    return pos
