"""Keypoint-like values, a bitstream format made by hand, and the decoder as docs/bitstream.md writes it."""

from __future__ import annotations

import numpy as np

from compress.codec.entropy import fit_frequencies
from compress.codec.format import BitstreamFormat, ReferenceCoding, TensorCoding


def random_walk(frames: int, shape: tuple[int, ...], seed: int, step: float = 0.02) -> np.ndarray:
    """[frames, *shape] float values that drift like keypoints: a smooth random walk."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, step, (frames, *shape)), axis=0) + rng.uniform(-0.5, 0.5, shape)


def make_format(key_interval: int = 10) -> BitstreamFormat:
    """Two tensors shaped like FOMM's keypoints and jacobians, tables fitted on a random walk."""
    tensors = []
    for name, shape, step in (("kp_value", (1, 10, 2), 1 / 64), ("kp_jacobian", (1, 10, 2, 2), 1 / 8)):
        q = np.round(random_walk(200, shape, seed=len(name)) / step).astype(np.int64)
        diffs = np.concatenate([np.diff(q, axis=0).ravel(), (q[::key_interval] - q[0]).ravel()])
        tensors.append(
            TensorCoding(
                part="kp_detector", name=name, shape=list(shape), step=step, frequencies=fit_frequencies(diffs, 200)
            )
        )
    return BitstreamFormat(key_interval=key_interval, reference=ReferenceCoding(qp=30), tensors=tensors)


def spec_decode(payload: bytes, items: list[tuple[int, list[int]]]) -> tuple[list[int], int] | None:
    """The decoder exactly as docs/bitstream.md writes it: (symbols, end state), or None where it
    calls the payload damaged."""
    payload += b"\0" * (-len(payload) % 4)
    words = [int.from_bytes(payload[i : i + 4], "little") for i in range(0, len(payload), 4)]
    state = 0
    if words:
        state = words.pop()
        if state == 0:
            return None
    if words:
        state = (state << 32) | words.pop()
    symbols = []
    for count, f in items:
        c = np.concatenate([[0], np.cumsum(f)])
        for _ in range(count):
            x = state & (2**24 - 1)
            s = int(np.searchsorted(c, x, side="right") - 1)
            state = (state >> 24) * f[s] + (x - int(c[s]))
            if state < 2**32 and words:
                state = (state << 32) | words.pop()
            symbols.append(s)
    return (symbols, state) if not words and state < 2**32 else None
