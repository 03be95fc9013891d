"""The stream file: a malformed header is refused; damaged, lost or truncated packets never raise,
are concealed and recover at the next key packet (fuzzed)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from keypoint_streams import make_format, random_walk

from compress.codec.packets import PacketEncoder
from compress.codec.stream import HEADER_BYTES, StreamBytes, StreamError, StreamInfo, read_stream, write_stream

FRAMES = 60
PICTURE = b"\x00\x00\x00\x01not decoded by the stream layer"


def _written(fmt, frames: int = FRAMES) -> StreamBytes:
    walks = [random_walk(frames, tuple(t.shape), i) for i, t in enumerate(fmt.tensors)]
    values = [[t.quantize(w[f]) for t, w in zip(fmt.tensors, walks)] for f in range(frames)]
    encoder = PacketEncoder(fmt, values[0])
    packets = [encoder.encode(v) for v in values]
    return write_stream(fmt, StreamInfo(64, 48, Fraction(25), frames), PICTURE, values[0], packets)


@pytest.fixture(scope="module")
def written(fmt) -> StreamBytes:
    return _written(fmt)


@pytest.fixture(scope="module")
def clean(written, fmt) -> list[list[np.ndarray]]:
    return [f.values for f in read_stream(written.data, fmt).frames]


def _packet_starts(written: StreamBytes) -> list[int]:
    first = len(written.data) - sum(written.framed_packets)
    return list(first + np.cumsum([0] + written.framed_packets[:-1]))


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _recovers(frames, clean, first: int, key_interval: int, last: int | None = None) -> bool:
    """Frames before the first damaged packet decode as in the clean stream, and so do all from
    the key after the last damaged one on."""
    next_key = ((first if last is None else last) // key_interval + 1) * key_interval
    before = all(_same(f.values, c) for f, c in zip(frames[:first], clean))
    after = all(_same(f.values, c) for f, c in zip(frames[next_key:], clean[next_key:]))
    return len(frames) == len(clean) and before and after


def test_an_intact_stream_decodes_every_frame_with_its_header_and_reference(written, fmt) -> None:
    stream = read_stream(written.data, fmt)
    assert (stream.info.width, stream.info.height, stream.info.fps, stream.info.frames) == (
        64,
        48,
        Fraction(25),
        FRAMES,
    )
    assert stream.picture == PICTURE
    assert [f.status for f in stream.frames].count("key") == FRAMES // fmt.key_interval
    assert "concealed" not in [f.status for f in stream.frames]


def test_an_ntsc_frame_rate_survives_the_header_exactly(fmt) -> None:
    encoder = PacketEncoder(fmt, [np.zeros(t.size, np.int64) for t in fmt.tensors])
    packet = encoder.encode([np.zeros(t.size, np.int64) for t in fmt.tensors])
    written = write_stream(fmt, StreamInfo(64, 48, Fraction(30000, 1001), 1), PICTURE, encoder.reference, [packet])
    assert read_stream(written.data, fmt).info.fps == Fraction(30000, 1001)


def test_the_section_sizes_add_up_to_the_stream(written) -> None:
    parts = written.to_json()
    assert parts["total"] == len(written.data) == sum(v for k, v in parts.items() if k != "total")
    assert sum(written.framed_packets) == parts["packets"] + parts["length_prefixes"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: b"RIFF" + d[4:], "not a keypoint stream"),
        (lambda d: d[:4] + b"\x07" + d[5:], "version 7 is not supported"),
        (lambda d: d[:10] + bytes([d[10] ^ 1]) + d[11:], "header damaged"),
        (lambda d: d[: HEADER_BYTES - 3], "truncated stream"),
        (
            lambda d: d[: HEADER_BYTES + 5] + bytes([d[HEADER_BYTES + 5] ^ 0x40]) + d[HEADER_BYTES + 6 :],
            "reference section damaged",
        ),
        (lambda d: d[: HEADER_BYTES + len(PICTURE) + 3], "reference section"),
    ],
)
def test_a_malformed_header_or_reference_section_is_refused_with_the_reason(written, fmt, damage, message) -> None:
    with pytest.raises(StreamError, match=message):
        read_stream(damage(written.data), fmt)


def test_a_stream_of_another_format_is_refused(written) -> None:
    with pytest.raises(StreamError, match="another bitstream format"):
        read_stream(written.data, make_format(key_interval=25))


def test_truncation_at_any_byte_never_raises_and_recovers_nothing_it_lost(written, fmt, clean) -> None:
    starts = _packet_starts(written)
    for cut in range(starts[0], len(written.data)):
        frames = read_stream(written.data[:cut], fmt).frames
        whole = sum(1 for s, n in zip(starts, written.framed_packets) if s + n <= cut)
        assert len(frames) == FRAMES
        assert all(_same(f.values, c) for f, c in zip(frames[:whole], clean))
        assert all(f.status == "concealed" for f in frames[whole:])


def test_random_corruption_never_raises_and_recovers_at_the_next_key(written, fmt, clean) -> None:
    rng = np.random.default_rng(0)
    starts = _packet_starts(written)
    for _ in range(300):
        data = bytearray(written.data)
        hits = sorted(int(rng.integers(starts[0], len(data))) for _ in range(int(rng.integers(1, 4))))
        for pos in hits:
            data[pos] ^= int(rng.integers(1, 256))
        first = int(np.searchsorted(starts, hits[0], side="right") - 1)
        last = int(np.searchsorted(starts, hits[-1], side="right") - 1)
        frames = read_stream(bytes(data), fmt).frames
        assert _recovers(frames, clean, first, fmt.key_interval, last)


def test_removed_packets_are_concealed_and_recovered_at_the_next_key(written, fmt, clean) -> None:
    starts = _packet_starts(written)
    for lost in (0, 7, 10, 33):
        end = starts[lost] + written.framed_packets[lost]
        frames = read_stream(written.data[: starts[lost]] + written.data[end:], fmt).frames
        assert frames[lost].status == "concealed"
        assert _recovers(frames, clean, lost, fmt.key_interval)


def test_a_corrupted_length_prefix_is_resynchronised(written, fmt, clean) -> None:
    starts = _packet_starts(written)
    for k in (3, 15, 41):
        data = bytearray(written.data)
        data[starts[k]] = 0x7F  # a length far beyond the packet
        frames = read_stream(bytes(data), fmt).frames
        assert _recovers(frames, clean, k, fmt.key_interval)


def test_garbage_after_the_last_packet_changes_no_frame(written, fmt, clean) -> None:
    garbage = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    frames = read_stream(written.data + garbage, fmt).frames
    assert len(frames) == FRAMES and all(_same(f.values, c) for f, c in zip(frames, clean))
