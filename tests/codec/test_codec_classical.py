"""Standard codecs through PyAV: sizes without encoder-information SEI, frames decoded back."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from compress.codec.call import Clip, match_rate
from compress.codec.classical import CODECS, _start_codes, decode_picture, encode_clip, encode_picture
from compress.data.synthetic import render_clip


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return (render_clip(5, 12, 64).frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def _nal_types(packet: bytes, hevc: bool) -> set[int]:
    starts = _start_codes(packet)
    headers = [packet[packet.index(b"\x00\x00\x01", s) + 3] for s in starts]
    return {(h >> 1) & 0x3F if hevc else h & 0x1F for h in headers}


@pytest.mark.parametrize("name, sei, hevc", [("x264-veryslow", {6}, False), ("x265-slow", {39, 40}, True)])
def test_encoder_information_sei_is_stripped_and_the_stream_still_decodes(frames, name, sei, hevc) -> None:
    encoded = encode_clip(frames, Fraction(25), CODECS[name], 40)
    assert not any(_nal_types(p, hevc) & sei for p in encoded.packets)
    assert encoded.frames.shape == frames.shape


def test_svt_av1_decodes_every_frame(frames) -> None:
    assert encode_clip(frames, Fraction(25), CODECS["svt-av1"], 50).frames.shape == frames.shape


def test_a_higher_crf_costs_fewer_bytes(frames) -> None:
    codec = CODECS["x264-zerolatency"]
    assert encode_clip(frames, Fraction(25), codec, 45).bytes < encode_clip(frames, Fraction(25), codec, 25).bytes


def test_the_reference_picture_is_one_h264_intra_picture_without_sei(frames) -> None:
    picture = encode_picture(frames[0], qp=30)
    assert 6 not in _nal_types(picture, hevc=False) and 5 in _nal_types(picture, hevc=False)  # 5: IDR slice
    decoded = decode_picture(picture)
    assert decoded.shape == frames[0].shape and np.abs(decoded.astype(int) - frames[0]).mean() < 8


def test_the_same_rate_is_the_best_crf_within_the_target(frames) -> None:
    clip = Clip("synthetic", frames, Fraction(25))
    codec = CODECS["x264-zerolatency"]
    target = encode_clip(frames, clip.fps, codec, 38).bytes
    crf, encoded = match_rate(clip, codec, target)
    assert encoded.bytes <= target and encode_clip(frames, clip.fps, codec, crf - 1).bytes > target
