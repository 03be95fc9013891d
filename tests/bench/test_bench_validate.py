"""The validation report's statistics: intervals of the shares and the noise ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from compress.bench.validate import noise_ceiling, share_within, summary_line, wilson_interval


def test_the_wilson_interval_matches_its_closed_form_at_half_and_stays_inside_0_1_at_the_ends():
    # p = 1/2, n = 10, z = 1.96: centre 1/2, half width z * sqrt(1/40 + z^2/400) / (1 + z^2/10)
    low, high = wilson_interval(5, 10)
    half = 1.96 * np.sqrt(0.025 + 1.96**2 / 400) / (1 + 1.96**2 / 10)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_the_share_within_a_bound_counts_absolute_errors():
    result = share_within(np.array([0.05, -0.08, 0.15, -0.3]), 0.10)
    assert result["share"] == 0.5 and result["interval_95"][0] < 0.5 < result["interval_95"][1]


def test_the_noise_ceiling_is_the_share_of_networks_whose_halves_agree_within_the_bound():
    assert noise_ceiling(np.array([0.01, 0.02, 0.12, 0.5]), 0.10) == 0.5


def test_the_summary_prints_the_interval_and_the_ceiling_next_to_the_score():
    held_out = {
        "networks": 4,
        "within_10pct": 0.5,
        "within_20pct": 0.75,
        "within_10pct_interval_95": (0.15, 0.85),
        "within_20pct_interval_95": (0.3, 0.95),
        "noise_ceiling_10pct": 1.0,
        "noise_ceiling_20pct": 1.0,
        "median_abs_error": 0.1,
        "max_abs_error": 0.3,
    }
    line = summary_line(
        {"held_out": held_out, "calibration": {"networks": 3, "rms_relative_error": 0.05}, "repeatability_median": 0.01}
    )
    assert "50% within +-10% (95 % CI 15-85 %, noise ceiling 100 %)" in line


def test_k_fold_predicts_every_network_without_the_kernels_only_its_fold_has():
    from compress.bench import costmodel, kernels
    from compress.bench.validate import kfold

    def kernel_of(config: kernels.Config) -> kernels.Kernel:
        return kernels.Kernel("conv", config.cin, config.cout, 1, config.k, config.stride, config.size, config.size)

    shared = kernels.initial_sample(30, seed=5)
    shared = [c for c in shared if not c.depthwise][:12]
    own = [kernels.Config(20 + i, 30, 3, 1, 16, False) for i in range(6)]  # one kernel per network
    table = {c: kernels.Measured(kernel_of(c), kernel_of(c).macs / 1e8 + 0.01) for c in shared + own}
    costs = [[costmodel.NodeCost(f"n{i}", "Conv", "conv", kernel=kernel_of(c))] for i, c in enumerate(own)]
    measured = [table[c].ms for c in own]
    out = kfold([f"net{i}" for i in range(6)], costs, measured, {"run": 0.0}, table, [{c} for c in own], folds=3)
    assert sorted(r["fold"] for r in out) == [0, 0, 1, 1, 2, 2]
    for config, result in zip(own, out):
        model, coefficients = result["model"]
        assert table[config] not in model.rows
        assert result["predicted_ms"] > 0 and "conv.kms" in coefficients


def test_student_nets_export_every_part_of_a_family_preset_unpruned_and_pruned_with_what_it_adopts(tmp_path):
    import onnx

    from compress.bench.validate import student_nets

    nets = student_nets(tmp_path, {"cse": ("mobile-64",)}, (0.0, 0.5))
    assert [(name, info["kind"]) for name, _, info in nets] == [  # the lookup is not pruned: it is listed once
        ("cse student-mobile-64 embedder", "cse"),
        ("cse student-mobile-64 lookup", "cse"),
        ("cse student-mobile-64-pruned0.5 embedder", "cse-pruned"),
    ]

    def weights(path) -> int:
        """Elements of the initializers and Constant nodes."""
        graph = onnx.load(str(path)).graph
        constants = [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        return sum(int(np.prod(t.dims)) for t in [*graph.initializer, *constants])

    assert weights(nets[2][1]) < weights(nets[0][1])
    assert weights(nets[1][1]) >= 27554 * 16  # it searches the default teacher's smpl_27554 vertex table
