"""Packets: closed-loop deltas, periodic keys, and a receiver that conceals and recovers."""

from __future__ import annotations

import numpy as np
from keypoint_streams import random_walk, spec_decode

from compress.codec.entropy import zigzag
from compress.codec.packets import PacketDecoder, PacketEncoder, crc8, varint


def _integers(fmt, frames: int, seed: int = 0, jump_at: int | None = None) -> list[list[np.ndarray]]:
    """Per frame, the integers of each tensor of `fmt` (a random walk; optionally a big jump)."""
    walks = [random_walk(frames, tuple(t.shape), seed + i) for i, t in enumerate(fmt.tensors)]
    if jump_at is not None:
        walks[0][jump_at:] += 5.0
    return [[t.quantize(w[f]) for t, w in zip(fmt.tensors, walks)] for f in range(frames)]


def _send(fmt, frames: list[list[np.ndarray]]) -> tuple[list[bytes], list[list[np.ndarray]]]:
    """The packets, and the values the encoder's closed loop holds after each."""
    encoder = PacketEncoder(fmt, frames[0])
    packets, held = [], []
    for values in frames:
        packets.append(encoder.encode(values))
        held.append(encoder.last)
    return packets, held


def _receive(fmt, reference: list[np.ndarray], packets: list[bytes]) -> list:
    decoder = PacketDecoder(fmt, reference)
    return [frame for p in packets for frame in decoder.receive(p)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_crc8_is_crc8_i432_1() -> None:
    assert crc8(b"123456789") == 0xA1  # the catalogue's check value


def test_a_packet_is_the_documented_payload_ending_on_its_check_word(fmt) -> None:
    frames = _integers(fmt, 12)
    packets, held = _send(fmt, frames)
    tables = [(t.size, t.frequencies) for t in fmt.tensors]
    for index, packet in enumerate(packets):
        symbols, state = spec_decode(packet, tables)
        base = frames[0] if index % fmt.key_interval == 0 else held[index - 1]
        assert symbols == [int(s) for h, b in zip(held[index], base) for s in zigzag(h - b)]
        flags = (0x80 if index % fmt.key_interval == 0 else 0) | index
        assert state == flags << 8 | crc8(bytes([flags]) + b"".join(varint(s) for s in symbols))


def test_the_receiver_holds_exactly_what_the_senders_closed_loop_holds(fmt) -> None:
    frames = _integers(fmt, 40)
    packets, held = _send(fmt, frames)
    decoded = _receive(fmt, frames[0], packets)
    assert all(_same(d.values, h) for d, h in zip(decoded, held))
    assert all(_same(h, f) for h, f in zip(held, frames))  # nothing clamped: exact


def test_every_key_interval_th_packet_is_a_key(fmt) -> None:
    packets, _ = _send(fmt, _integers(fmt, 35))
    decoded = _receive(fmt, _integers(fmt, 1)[0], packets)
    assert [d.index for d in decoded if d.status == "key"] == [0, 10, 20, 30]


def test_a_difference_beyond_the_table_is_clamped_and_caught_up(fmt) -> None:
    frames = _integers(fmt, 40, jump_at=5)  # 5.0 at step 1/64: 320 steps, the table reaches 200
    packets, held = _send(fmt, frames)
    decoded = _receive(fmt, frames[0], packets)
    assert all(_same(d.values, h) for d, h in zip(decoded, held))
    assert not _same(held[5], frames[5]) and _same(held[6], frames[6])


def test_a_lost_packet_is_concealed_until_the_next_key(fmt) -> None:
    frames = _integers(fmt, 30)
    packets, held = _send(fmt, frames)
    decoded = _receive(fmt, frames[0], packets[:13] + packets[14:])
    assert [d.index for d in decoded] == list(range(30))
    assert [d.status for d in decoded[13:20]] == ["concealed"] * 7
    assert all(_same(d.values, held[12]) for d in decoded[13:20])
    assert decoded[20].status == "key" and all(_same(d.values, h) for d, h in zip(decoded[20:], held[20:]))


def test_a_corrupted_packet_fails_its_checksum_and_is_concealed(fmt) -> None:
    frames = _integers(fmt, 30)
    packets, held = _send(fmt, frames)
    bad = bytearray(packets[4])
    bad[1] ^= 0x10
    decoded = _receive(fmt, frames[0], packets[:4] + [bytes(bad)] + packets[5:])
    assert [d.status for d in decoded[4:10]] == ["concealed"] * 6
    assert _same(decoded[4].values, held[3]) and _same(decoded[10].values, held[10])


def test_a_truncated_packet_is_concealed(fmt) -> None:
    frames = _integers(fmt, 12)
    packets, held = _send(fmt, frames)
    decoded = _receive(fmt, frames[0], packets[:3] + [packets[3][:-2]] + packets[4:])
    assert decoded[3].status == "concealed" and _same(decoded[3].values, held[2])
    assert decoded[10].status == "key" and _same(decoded[10].values, held[10])


def test_a_late_duplicate_packet_is_dropped(fmt) -> None:
    frames = _integers(fmt, 8)
    packets, held = _send(fmt, frames)
    decoded = _receive(fmt, frames[0], packets[:5] + [packets[2]] + packets[5:])
    assert [d.index for d in decoded] == list(range(8))
    assert all(d.status != "concealed" for d in decoded)
