"""Prediction intervals: the bound from leave-one-out errors, its inversion to ms, extrapolated
nodes, and what profiles, `compress profile --json` and the fps gate carry."""

from __future__ import annotations

import json
import math

import pytest

from compress.bench import calibrate, costmodel, interval
from compress.bench import profile as prof
from compress.bench.stage import fps_gate
from compress.recipe import FpsTarget


@pytest.mark.parametrize("n", [5, 9, 19, 40])
def test_the_bound_is_the_split_conformal_quantile_of_the_loo_errors(n):
    errors = [(-1) ** i * (i + 1) / 100 for i in range(n)]  # magnitudes 0.01 .. n/100
    bound, coverage = interval.error_bound(errors)
    k = min(n, math.ceil((n + 1) * interval.LEVEL))
    assert bound == pytest.approx(k / 100)
    assert coverage == pytest.approx(k / (n + 1))


def test_widening_recovers_a_true_latency_off_by_the_bound_either_way():
    predicted, q = 10.0, 0.2
    low, high = interval.widen(predicted, predicted, q)
    # predicted / true - 1 = +q (over-predicted) or -q (under-predicted): the true latency is an end
    assert (low, high) == pytest.approx((predicted / (1 + q), predicted / (1 - q)))
    assert interval.widen(predicted, predicted, 1.0)[1] is None


@pytest.mark.parametrize(
    "ms, target_fps, expected", [([25, 40], 30, True), ([20, 30], 30, False), ([35, 50], 30, False)]
)
def test_an_interval_straddles_a_target_only_when_it_holds_both_verdicts(ms, target_fps, expected):
    assert interval.straddles(ms, target_fps) is expected


def test_only_an_extrapolated_node_has_its_bytes_priced_across_its_class_range():
    model = interval.IntervalModel(0.1, 0.8, frozenset({"Add"}), {"grid_sample": (0.5, 4.0)})
    assert model.node_range("memory", "Add", 3.0, 2.0, 0.5) == (3.0, 3.0)
    # 2 MB at 0.5 ms/MB of a 1.0 ms node: priced at 4.0 ms/MB it takes 1.0 + (4.0 - 0.5) * 2
    assert model.node_range("grid_sample", "GridSample", 1.0, 2.0, 0.5) == (1.0, 8.0)


def test_an_op_type_with_its_own_range_is_priced_across_it_instead_of_its_class_range():
    ranges = {"memory": (0.5, 1.0), "op:ArgMax": (0.5, 4.0)}
    model = interval.IntervalModel(0.1, 0.8, frozenset(), ranges)
    assert model.node_range("memory", "ArgMax", 1.0, 2.0, 0.5) == (1.0, 8.0)
    assert model.node_range("memory", "Gather", 1.0, 2.0, 0.5) == (1.0, 2.0)


def test_a_carried_argmax_rate_gets_its_own_range_and_leaves_the_memory_range_as_it_was():
    own = {"conv.gmac": 20.0, "memory.mb": 0.1, "grid_sample.mb": 0.1}
    host = {"conv.gmac": 10.0, "memory.mb": 0.01, "op:Resize.mb": 0.06, "grid_sample.mb": 1.0}
    ranges = calibrate.rate_range(own, host)
    with_argmax = calibrate.rate_range(own, {**host, "op:ArgMax.mb": 0.2, "reduction_aliased.mb": 0.3})
    assert with_argmax["memory"] == ranges["memory"] == [0.02, 0.12]
    assert with_argmax["op:ArgMax"] == [0.1, pytest.approx(1.0)]  # (0.2 + 0.3) ms/MB at twice the conv time


def test_a_carried_depth_to_space_rate_gets_its_own_range_without_the_reductions_aliasing_term():
    own = {"conv.gmac": 20.0, "memory.mb": 0.1, "grid_sample.mb": 0.1}
    host = {"conv.gmac": 10.0, "memory.mb": 0.01, "grid_sample.mb": 1.0, "reduction_aliased.mb": 0.3}
    ranges = calibrate.rate_range(own, {**host, "op:DepthToSpace.mb": 0.15})
    assert ranges["memory"] == calibrate.rate_range(own, host)["memory"]
    assert ranges["op:DepthToSpace"] == [0.1, pytest.approx(0.3)]  # 0.15 ms/MB at twice the conv time


def test_loo_errors_vanish_on_data_the_form_explains_and_a_point_alone_in_a_column_has_none():
    truth = {"conv.gmac": 30.0, "conv_int8.gmac": 20.0, "memory.mb": 0.5}
    feats = [{"conv.gmac": g, "memory.mb": mb} for g, mb in [(0.5, 10), (1.0, 3), (0.2, 40), (2.0, 5)]]
    feats.append({"conv_int8.gmac": 0.5, "memory.mb": 2.0})
    columns = [["conv.gmac"], ["conv_int8.gmac"], ["memory.mb"]]
    errors = calibrate.leave_one_out(feats, calibrate.price(feats, truth), columns)
    assert errors[-1] is None
    assert errors[:-1] == pytest.approx([0.0] * 4, abs=1e-9)


def test_the_iphone8_profile_bound_comes_from_its_recorded_loo_errors():
    block = costmodel.load_profile("iphone8").meta["calibrations"][1]["interval"]
    recorded = [r["relative_error"] for r in block["leave_one_out"] if r["relative_error"] is not None]
    bound, coverage = interval.error_bound(recorded)
    assert (block["relative_error_bound"], block["nominal_coverage"]) == (round(bound, 4), round(coverage, 3))
    assert {r["network"] for r in block["leave_one_out"]} >= {"inception_v4 fp32"}


def test_every_predicted_json_row_carries_an_interval_around_its_estimate(tiny_onnx, capsys):
    prof.profile_command(str(tiny_onnx), "profile:iphone8", as_json=True)
    (row,) = json.loads(capsys.readouterr().out)
    low, high = row["interval_ms"]
    assert low < row["p50_ms"] < high
    assert 0 < row["interval_coverage"] < 1 and 0 <= row["extrapolated_share"] <= 1


def test_an_extrapolated_op_type_shows_in_the_share_and_widens_the_interval(tmp_path):
    from tiny_models import export_onnx
    from torch import nn

    class Softmaxed(nn.Module):  # Softmax: in no iPhone 8 reference network
        def forward(self, x):
            return nn.functional.softmax(x.flatten(2), dim=-1)

    path = export_onnx(Softmaxed(), (1, 8, 32, 32), tmp_path / "softmax.onnx")
    pred = costmodel.predict(path, "profile:iphone8")
    block = costmodel.load_profile("iphone8").meta["calibrations"][1]["interval"]
    assert pred["extrapolated_op_types"] == ["Softmax"] and pred["extrapolated_share"] > 0.5
    low, high = pred["interval_ms"]
    assert high > pred["ms"] / (1 - block["relative_error_bound"])  # wider than the referenced-node bound


def test_the_gate_says_when_the_deciding_prediction_straddles_its_target(tiny_onnx):
    (row,) = prof.profile(tiny_onnx, "profile:iphone8")
    row |= {"precision": "fp32", "format": "onnx"}
    low, high = row["interval_ms"]
    inside = FpsTarget(device="profile:iphone8", part="tiny", fps=2e3 / (low + high))  # between 1000/high and 1000/low
    outside = FpsTarget(device="profile:iphone8", part="tiny", fps=0.5e3 / high)  # met even at the upper end
    assert "straddles" in fps_gate(inside, [row]).detail
    assert "straddles" not in fps_gate(outside, [row]).detail and fps_gate(outside, [row]).passed
