"""The architectures bench's reports: a pure function of its results JSON."""

from __future__ import annotations

from pathlib import Path

from compress.bench.architectures import markdown, pareto_png

PART = "generator.per_frame"


def candidate(label: str, frame_ms: float, psnr: float | None, host_ratio: float, slower_rounds: int = 0) -> dict:
    costs = {"predicted_ms": frame_ms, "fixed_ms": frame_ms / 4}
    return {
        "label": label,
        "params": {"kp_detector": 1000, "generator": 2000},
        "int8_mb": 0.003,
        "iphone8": {"kp_detector": costs, PART: costs},
        "host_ms": {PART: {"1": 3.0 * host_ratio, "2": 2.0 * host_ratio}},
        "host_vs_design": {
            "a_ms": 3.0 * host_ratio,
            "b_ms": 3.0,
            "ratio": host_ratio,
            "low": host_ratio * 0.95,
            "high": host_ratio * 1.05,
            "rounds_slower": slower_rounds,
            "rounds": 30,
        },
        "host_load_average": [1.0, 1.5],
        "quality": None if psnr is None else {"l1": 0.03, "psnr": psnr, "ssim": 0.87},
    }


def seed(number: int, psnr: tuple[float, float], floor_ratio: float = 1.4, floor_slower: int = 30) -> dict:
    return {
        "seed": number,
        "candidates": [
            candidate("mobile-256-v1 (unpruned)", 88.0, None, 3.0, 30),
            candidate("mobile-256-v1 at its floor", 8.0, None, floor_ratio, floor_slower),
            candidate("mobile-256-v1 latency-pruned to 26.0 ms", 25.6, psnr[0], 1.8, 30),
            candidate("mobile-256 (unpruned)", 26.0, psnr[1], 1.0, 15),
            candidate("mobile-256 at its floor", 4.0, None, 0.5),
        ],
    }


RESULTS = {
    "created_utc": "2026-11-30T00:00:00+00:00",
    "command": "python -m compress.bench.architectures --steps 2 --seeds 0 1",
    "part": PART,
    "training": {"steps": 2, "batch_size": 4, "lr": 0.002, "eval_batches": 8},
    "seeds": [seed(0, (23.2, 23.4)), seed(1, (23.0, 23.5))],
    "wall_s": 2520.0,
    "cpus": 2,
    "jobs": 2,
}


def test_the_table_has_a_row_per_candidate_with_fixed_and_total_ms_and_untrained_ones_marked() -> None:
    table = markdown(RESULTS)
    assert "| mobile-256-v1 (unpruned) |" in table and "88.0 (22.0)" in table and "not trained" in table
    assert "| mobile-256 (unpruned) |" in table and "26.0 (6.5)" in table and "| 23.40 |" in table


def test_every_seed_has_its_rows_and_the_design_gain_per_seed_and_mean() -> None:
    table = markdown(RESULTS)
    assert "| 1 | mobile-256 (unpruned) |" in table and "| 23.50 |" in table
    assert "+0.20 dB, +0.50 dB (mean +0.35 dB)" in table


def test_the_pareto_plot_is_a_png_of_the_trained_candidates(tmp_path: Path) -> None:
    pareto_png(RESULTS, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_host_ratios_to_the_design_are_in_the_table() -> None:
    table = markdown(RESULTS)
    assert "| 1.80x (1.71-1.89) |" in table and "| 3.0 / 2.0 | 1.00x (0.95-1.05) |" in table


def test_a_baseline_floor_slower_than_the_design_means_no_pruning_reaches_the_design() -> None:
    summary = markdown(RESULTS).splitlines()[-1]
    assert "takes 5.4 ms (1.80x (1.71-1.89) of the design)" in summary
    assert "no pruning of the baseline reaches the design's measured time" in summary


def test_a_baseline_floor_within_noise_of_the_design_is_not_called_slower() -> None:
    results = {**RESULTS, "seeds": [seed(0, (23.2, 23.4), floor_ratio=1.02, floor_slower=16)]}
    assert "a pruned baseline could reach its time" in markdown(results)


def test_the_page_says_how_long_the_command_took_and_on_how_many_cpus() -> None:
    assert "The command took 42 minutes on 2 CPUs, training 2 candidates at once." in markdown(RESULTS)
