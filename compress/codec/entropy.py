"""Entropy coding of integer differences: rANS with integer frequency tables (constriction).

Each tensor has a table of 2R+1 frequencies over the zigzag symbols of the differences -R..R,
summing to 2^24. Tables are integers shipped in the manifest, so an app's decoder rebuilds
exactly the model the encoder used: no floating point sits between the two ends.
constriction's `Categorical(perfect=False)` given the weights f - 1 (which sum to 2^24 - n)
reproduces those frequencies exactly (it adds one to each weight); tests decode its output
with the few lines of docs/bitstream.md to prove it.

Why rANS and not Exp-Golomb: on the demo bundle's keypoints rANS needs fewer bytes per packet
at every step (`python -m compress.codec.bench`, table "coders" in docs/codec.md).
Byte granularity: the coder emits 32-bit little-endian words whose last one holds the top of
the state, so up to three trailing zero bytes carry nothing and are dropped; the decoder pads
the payload back to whole words.
"""

from __future__ import annotations

import constriction
import numpy as np

from compress.codec.format import PRECISION, TOTAL_FREQUENCY

WORD_BYTES = 4
# Share of a fitted table given to a two-sided geometric tail, so differences never seen in
# the fitting clips stay affordable on a user's clips.
TAIL_WEIGHT = 0.02


class CorruptPayload(ValueError):
    """A payload that no encoder of this format wrote (wrong length, leftover state)."""


def zigzag(d: np.ndarray) -> np.ndarray:
    """Signed -> unsigned: 0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ..."""
    d = np.asarray(d, dtype=np.int64)
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def unzigzag(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.int64)
    return np.where(s % 2 == 0, s // 2, -(s + 1) // 2)


class Table:
    """A frequency table over the differences -radius..radius and its constriction model."""

    def __init__(self, frequencies: list[int]):
        self.frequencies = np.asarray(frequencies, dtype=np.int64)
        self.radius = (len(self.frequencies) - 1) // 2
        self.model = constriction.stream.model.Categorical((self.frequencies - 1).astype(np.float64), perfect=False)

    def clamp(self, d: np.ndarray) -> np.ndarray:
        """Differences the table can code: the encoder sends these, and both ends use them."""
        return np.clip(np.asarray(d, dtype=np.int64), -self.radius, self.radius)

    def bits(self, d: np.ndarray) -> float:
        """Ideal code length of (clamped) differences under this table."""
        s = zigzag(self.clamp(d)).ravel()
        return float(np.sum(PRECISION - np.log2(self.frequencies[s])))


def encode(items: list[tuple[np.ndarray, Table]], start: int = 0) -> bytes:
    """Differences (already clamped) of several tensors, each with its table, as one payload.

    The coder starts from the state `start` (< 2^32) instead of 0: a decoder ends on it. A
    few bits placed there cost next to nothing, because the first symbols pushed from a
    small state leave room for them (see docs/bitstream.md, "Entropy coding")."""
    coder = (
        constriction.stream.stack.AnsCoder(np.array([start], dtype=np.uint32))
        if start
        else constriction.stream.stack.AnsCoder()
    )
    for d, table in reversed(items):  # a stack: the last tensor pushed is the first decoded
        symbols = zigzag(d).ravel().astype(np.int32)
        if symbols.size:
            coder.encode_reverse(symbols, table.model)
    data = coder.get_compressed().astype("<u4").tobytes()
    return data[: len(data) - _trailing_zeros(data)]


def decode(payload: bytes, items: list[tuple[int, Table]]) -> tuple[list[np.ndarray], int]:
    """(the differences of `count` values per table, the state the coder ends on);
    CorruptPayload if words are left over, which no encoder leaves."""
    padded = payload + b"\0" * (-len(payload) % WORD_BYTES)
    words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        out = [unzigzag(coder.decode(table.model, count)) if count else np.zeros(0, np.int64) for count, table in items]
    except ValueError as exc:  # e.g. a last word of zero, which no encoder writes
        raise CorruptPayload(str(exc)) from None
    rest = coder.get_compressed()
    if len(rest) > 1:
        raise CorruptPayload("words left over after the last value")
    return out, int(rest[0]) if len(rest) else 0


def fit_frequencies(differences: np.ndarray, radius: int) -> list[int]:
    """A table for differences like these: their histogram over -radius..radius, mixed with a
    two-sided geometric tail of the same mean magnitude, in integers summing to 2^24."""
    d = np.clip(np.asarray(differences, dtype=np.int64).ravel(), -radius, radius)
    values = np.arange(-radius, radius + 1)
    histogram = np.bincount(d + radius, minlength=2 * radius + 1).astype(np.float64)
    histogram = histogram / max(histogram.sum(), 1.0)
    mean = float(np.abs(d).mean()) if d.size else 1.0
    theta = mean / (1 + mean) if mean > 0 else 0.5  # P(|d| = k) ~ theta^k has this mean magnitude
    tail = theta ** np.abs(values).astype(np.float64)
    probabilities = (1 - TAIL_WEIGHT) * histogram + TAIL_WEIGHT * tail / tail.sum()
    zig = zigzag(values)
    ordered = np.zeros_like(probabilities)
    ordered[zig] = probabilities
    return _integer_frequencies(ordered)


def entropy_bits(differences: np.ndarray) -> float:
    """Empirical entropy of the differences, in bits for all of them (a rate estimate)."""
    _, counts = np.unique(np.asarray(differences).ravel(), return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def exp_golomb_bits(differences: np.ndarray, k: int) -> int:
    """Bits of order-k Exp-Golomb codes of the zigzag differences (the alternative coder measured)."""
    n = zigzag(differences).ravel() + (1 << k)
    return int(np.sum(2 * np.floor(np.log2(n)).astype(np.int64) + 1 - k))


def _integer_frequencies(probabilities: np.ndarray) -> list[int]:
    """Probabilities -> integers >= 1 summing to 2^24 (largest remainders get the spare units)."""
    free = TOTAL_FREQUENCY - len(probabilities)
    scaled = probabilities / probabilities.sum() * free
    base = np.floor(scaled).astype(np.int64)
    spare = free - int(base.sum())
    base[np.argsort(-(scaled - base), kind="stable")[:spare]] += 1
    return (base + 1).tolist()


def _trailing_zeros(data: bytes) -> int:
    """Zero bytes at the end of the last word (at most three: padding restores a whole word)."""
    count = 0
    while count < WORD_BYTES - 1 and count < len(data) and data[len(data) - 1 - count] == 0:
        count += 1
    return count
