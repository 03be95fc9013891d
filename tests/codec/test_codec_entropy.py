"""rANS with integer tables: exact round trips, byte granularity, and the decoder of docs/bitstream.md."""

from __future__ import annotations

import numpy as np
import pytest
from keypoint_streams import spec_decode

from compress.codec import entropy
from compress.codec.format import TOTAL_FREQUENCY


def _tables(rng: np.random.Generator, count: int) -> list[entropy.Table]:
    return [
        entropy.Table(
            entropy.fit_frequencies(rng.laplace(0, rng.uniform(0.3, 20), 500).round(), int(rng.integers(1, 300)))
        )
        for _ in range(count)
    ]


def test_zigzag_interleaves_signs_and_inverts() -> None:
    d = np.array([0, -1, 1, -2, 2, -1000, 1000])
    assert entropy.zigzag(d).tolist() == [0, 1, 2, 3, 4, 1999, 2000]
    assert entropy.unzigzag(entropy.zigzag(d)).tolist() == d.tolist()


def test_fitted_frequencies_are_positive_integers_summing_to_two_to_the_24() -> None:
    freqs = entropy.fit_frequencies(np.array([0, 0, 0, 1, -1, 3]), radius=50)
    assert len(freqs) == 101 and min(freqs) >= 1 and sum(freqs) == TOTAL_FREQUENCY
    assert freqs[0] == max(freqs)  # zigzag symbol 0 (difference 0) is the most frequent


def test_differences_round_trip_through_several_tables() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        tables = _tables(rng, 3)
        diffs = [t.clamp(rng.laplace(0, 5, int(rng.integers(0, 40))).round()) for t in tables]
        start = int(rng.integers(0, 2**16))
        decoded, end = entropy.decode(
            entropy.encode(list(zip(diffs, tables)), start), [(len(d), t) for d, t in zip(diffs, tables)]
        )
        assert [x.tolist() for x in decoded] == [d.tolist() for d in diffs] and end == start


def test_the_documented_decoder_reads_constriction_output_bit_exactly() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        tables = _tables(rng, 2)
        diffs = [t.clamp(rng.laplace(0, 8, int(rng.integers(0, 60))).round()) for t in tables]
        start = int(rng.integers(0, 2**16))
        payload = entropy.encode(list(zip(diffs, tables)), start)
        expected = [int(s) for d in diffs for s in entropy.zigzag(d)]
        assert spec_decode(payload, [(len(d), t.frequencies.tolist()) for d, t in zip(diffs, tables)]) == (
            expected,
            start,
        )


def test_payloads_have_byte_granularity_not_word_granularity() -> None:
    rng = np.random.default_rng(2)
    table = _tables(rng, 1)[0]
    sizes = {len(entropy.encode([(table.clamp(rng.laplace(0, 6, n).round()), table)])) % 4 for n in range(1, 80)}
    assert sizes == {0, 1, 2, 3}


def test_a_frame_without_motion_costs_only_its_start_state() -> None:
    table = entropy.Table(entropy.fit_frequencies(np.zeros(100), radius=4))
    payload = entropy.encode([(np.zeros(20, np.int64), table)], start=0x8312)
    assert payload == bytes([0x12, 0x83])
    diffs, end = entropy.decode(payload, [(20, table)])
    assert diffs[0].tolist() == [0] * 20 and end == 0x8312


def test_the_start_state_rides_almost_free_once_a_symbol_moves() -> None:
    rng = np.random.default_rng(5)
    table = _tables(rng, 1)[0]
    sizes = []
    for _ in range(200):
        d = table.clamp(rng.laplace(0, 3, 40).round())
        sizes.append(
            len(entropy.encode([(d, table)], start=int(rng.integers(1, 2**16)))) - len(entropy.encode([(d, table)]))
        )
    assert np.mean(sizes) < 0.5  # 16 bits of start state cost less than half a byte on average


def test_a_payload_with_words_left_over_is_corrupt() -> None:
    table = _tables(np.random.default_rng(3), 1)[0]
    payload = entropy.encode([(np.array([3, -2, 5]), table)])
    with pytest.raises(entropy.CorruptPayload):
        entropy.decode(payload + b"\x17\x2a\x01\x09\x11\x22\x33\x44", [(3, table)])


def test_a_payload_ending_in_a_zero_word_is_corrupt() -> None:
    table = _tables(np.random.default_rng(4), 1)[0]
    with pytest.raises(entropy.CorruptPayload):
        entropy.decode(b"\x05\x00\x00\x00\x00\x00\x00\x00", [(3, table)])


def test_exp_golomb_lengths_match_the_code_definition() -> None:
    # zigzag 0, 1, 2, 3 -> EG0 lengths 1, 3, 3, 5; EG1 lengths 2, 2, 4, 4
    assert entropy.exp_golomb_bits(np.array([0, -1, 1, -2]), 0) == 1 + 3 + 3 + 5
    assert entropy.exp_golomb_bits(np.array([0, -1, 1, -2]), 1) == 2 + 2 + 4 + 4
