"""The keypoint bitstream format as the bundle manifest declares it (docs/bitstream.md).

The format is data, not code: which sender outputs travel in every frame's packet, the
quantization step of each, the integer frequency tables of the entropy coder, how often a key
payload is sent and how the reference frame is coded. An app reads it from `manifest.json`
(`bitstream`); the Python reference encoder and decoder (stream.py) read the same object.
Any video-call family's sender outputs fit it: nothing here names a FOMM tensor.
"""

from __future__ import annotations

import struct
import zlib
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

FORMAT_VERSION = 1
# rANS over 32-bit words with a 64-bit state and 24-bit probabilities (constriction's AnsCoder).
CODER = "rans32"
PRECISION = 24
TOTAL_FREQUENCY = 1 << PRECISION


def quantize(value: np.ndarray, step: float) -> np.ndarray:
    """round(value / step) as integers: what travels for a value at this step."""
    return np.round(np.asarray(value, dtype=np.float64) / step).astype(np.int64)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceCoding(Strict):
    """How the reference frame is coded once per call: one intra picture of a standard codec."""

    codec: Literal["h264"] = Field("h264", description="H.264 Annex-B elementary stream, one IDR picture, no SEI")
    qp: int = Field(ge=0, le=51, description="the constant quantizer of the intra picture")


class TensorCoding(Strict):
    """One sender output sent in every packet: a quantization step and a symbol table.

    A value v is sent as the integer q = round(v / step) and decoded as q * step. The packet
    carries zigzag-mapped integer differences (0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ...):
    q(t) - q(t-1) in a delta packet, q(t) - q(reference frame) in a key packet. A difference
    beyond the table (|d| > (len - 1) / 2) is clamped by the encoder; the closed loop corrects
    it in the next frames.
    """

    part: str = Field(description="the sender part that outputs the tensor")
    name: str = Field(description="the output's name in the manifest")
    shape: list[int]
    step: float = Field(gt=0)
    frequencies: list[int] = Field(min_length=3, description="frequency of each zigzag symbol, summing to 2^24")

    @field_validator("frequencies")
    @classmethod
    def _normalized(cls, v: list[int]) -> list[int]:
        if len(v) % 2 == 0:
            raise ValueError(f"{len(v)} symbols: a table covers -R..R, an odd count")
        if min(v) < 1 or sum(v) != TOTAL_FREQUENCY:
            raise ValueError(
                f"frequencies must be >= 1 and sum to 2^{PRECISION} = {TOTAL_FREQUENCY} (they sum to {sum(v)})"
            )
        return v

    @property
    def size(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count

    @property
    def key(self) -> str:
        """`part.name`, how reports and errors name the tensor."""
        return f"{self.part}.{self.name}"

    def quantize(self, value: np.ndarray) -> np.ndarray:
        """The integers a value is sent as (flattened)."""
        return quantize(value, self.step).ravel()

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """What the receiver feeds its networks, in the output's shape."""
        return (np.asarray(q, dtype=np.float64) * self.step).astype(np.float32).reshape(self.shape)


class BitstreamFormat(Strict):
    """The `bitstream` section of a video-call bundle's manifest."""

    version: Literal[1] = FORMAT_VERSION
    coder: Literal["rans32"] = CODER
    precision_bits: Literal[24] = PRECISION
    key_interval: int = Field(ge=1, description="a key payload every this many frames (frame 0 is one)")
    reference: ReferenceCoding
    tensors: list[TensorCoding] = Field(min_length=1, description="in packet order")

    def fingerprint(self) -> bytes:
        """4 bytes every stream header carries: a stream decodes only with the format that wrote it.

        CRC-32 of everything decoding depends on, in a layout any language rebuilds in a few
        lines: key interval (u32), reference QP (u8), then per tensor its step (float64), element
        count, table length and frequencies (u32 each), all little-endian."""
        layout = struct.pack("<IB", self.key_interval, self.reference.qp)
        for t in self.tensors:
            layout += struct.pack(f"<dII{len(t.frequencies)}I", t.step, t.size, len(t.frequencies), *t.frequencies)
        return struct.pack("<I", zlib.crc32(layout))
