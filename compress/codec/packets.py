"""One packet per frame: quantized sender outputs, delta-coded in closed loop, entropy coded.

A delta packet codes q(t) - q(t-1) against the previous *decoded* integers, so encoder and
decoder never drift; a key packet codes q(t) - q(reference), which needs nothing but the
reference section every receiver holds, so a receiver joins or recovers at any key.

The packet is the rANS payload alone: its flags (key, frame number mod 128) and a CRC-8 of
flags and symbols form the coder's start state, so the decoder ends on them and checks them.
A damaged packet (checksum, leftover words), a gap in frame numbers, or a delta packet after
either is concealed with the last good values until the next key packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from compress.codec import entropy
from compress.codec.format import BitstreamFormat

SEQUENCE_MODULO = 128
KEY_FLAG = 0x80
# A packet whose frame number lies up to this far behind the next expected one is late (a
# duplicate or reordered): it is dropped. Any other number is ahead: the frames between were lost.
LATE_WINDOW = 8
Status = Literal["key", "delta", "concealed"]


class DamagedPacket(ValueError):
    """A packet whose checksum or length does not hold."""


@dataclass
class Decoded:
    """The integers of every payload tensor for one frame, and how they were obtained."""

    index: int
    values: list[np.ndarray]
    status: Status


def crc8(data: bytes) -> int:
    """CRC-8/I-432-1 (ITU): polynomial 0x07, initial value 0, no reflection, final XOR 0x55.
    The XOR keeps an all-zero packet from checking out, so no packet is ever empty."""
    crc = 0
    for byte in data:
        crc = _CRC8_TABLE[crc ^ byte]
    return crc ^ 0x55


def _crc8_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC8_TABLE = _crc8_table()


def varint(n: int) -> bytes:
    """LEB128: 7 bits per byte, low bits first, high bit set on all but the last byte."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def checked_state(flags: int, diffs: list[np.ndarray]) -> int:
    """The coder's start state: flags << 8 | CRC-8 of the flags byte and every zigzag symbol as a varint."""
    symbols = b"".join(varint(int(s)) for d in diffs for s in entropy.zigzag(d).ravel())
    return flags << 8 | crc8(bytes([flags]) + symbols)


class Packets:
    """What both ends share: the format's tables and the reference frame's integers."""

    def __init__(self, fmt: BitstreamFormat, reference: list[np.ndarray]):
        self.fmt = fmt
        self.tables = [entropy.Table(t.frequencies) for t in fmt.tensors]
        self.sizes = [t.size for t in fmt.tensors]
        self.reference = reference
        self.last = reference


class PacketEncoder(Packets):
    """Sender side: integers of each frame -> one packet (a key every `key_interval` frames)."""

    index = 0

    def encode(self, values: list[np.ndarray]) -> bytes:
        key = self.index % self.fmt.key_interval == 0
        base = self.reference if key else self.last
        diffs = [table.clamp(q - b) for q, b, table in zip(values, base, self.tables)]
        self.last = [b + d for b, d in zip(base, diffs)]  # what the decoder will hold: the closed loop
        flags = (KEY_FLAG if key else 0) | self.index % SEQUENCE_MODULO
        self.index += 1
        return entropy.encode(list(zip(diffs, self.tables)), start=checked_state(flags, diffs))


class PacketDecoder(Packets):
    """Receiver side: packets in arrival order -> the integers of every frame, never an exception."""

    synced = False  # whether `last` holds the previous frame's true decoded values
    next_index = 0

    def receive(self, packet: bytes) -> list[Decoded]:
        """The frames this packet completes: concealed ones for any gap before it, then its own.
        A damaged packet counts as one concealed frame; a late duplicate yields nothing."""
        try:
            key, seq, diffs = self.unpack(packet)
        except (DamagedPacket, entropy.CorruptPayload):
            return [self.lose()]
        gap = (seq - self.next_index) % SEQUENCE_MODULO
        if gap >= SEQUENCE_MODULO - LATE_WINDOW:
            return []
        frames = [self.lose() for _ in range(gap)]
        if key:
            self.last, self.synced = [r + d for r, d in zip(self.reference, diffs)], True
            frames.append(self._emit("key"))
        elif self.synced:
            self.last = [b + d for b, d in zip(self.last, diffs)]
            frames.append(self._emit("delta"))
        else:
            frames.append(self._emit("concealed"))
        return frames

    def unpack(self, packet: bytes) -> tuple[bool, int, list[np.ndarray]]:
        """(key, frame number mod 128, differences) of an intact packet; DamagedPacket otherwise."""
        diffs, state = entropy.decode(packet, list(zip(self.sizes, self.tables)))
        flags = state >> 8
        if flags > 0xFF or state != checked_state(flags, diffs):
            raise DamagedPacket("checksum mismatch")
        return bool(flags & KEY_FLAG), flags & ~KEY_FLAG, diffs

    def frames_ahead(self, packet: bytes) -> int | None:
        """How many frames past the next expected one an intact packet is; None if it is damaged."""
        try:
            _, seq, _ = self.unpack(packet)
        except (DamagedPacket, entropy.CorruptPayload):
            return None
        return (seq - self.next_index) % SEQUENCE_MODULO

    def lose(self) -> Decoded:
        """One frame whose packet never arrived (or arrived damaged): the last good values."""
        self.synced = False
        return self._emit("concealed")

    def _emit(self, status: Status) -> Decoded:
        frame = Decoded(self.next_index, self.last, status)
        self.next_index += 1
        return frame
