"""Calibration: the least-squares fit, profile files, and the reference architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.bench import calibrate, costmodel, validate, zoo
from compress.errors import CompressError


def test_the_fit_recovers_the_coefficients_that_made_the_data():
    truth = {"conv.gmac": 30.0, "memory.mb": 0.5, "layer": 0.02}
    feats = [
        {"conv.gmac": g, "memory.mb": mb, "layer": n}
        for g, mb, n in [(0.5, 10, 30), (1.0, 3, 10), (0.2, 40, 80), (2.0, 5, 50)]
    ]
    measured = calibrate.price(feats, truth)
    result = calibrate.fit(feats, measured, [["conv.gmac"], ["memory.mb"], ["layer"]])
    assert result.coefficients == pytest.approx(truth)
    assert result.rms == pytest.approx(0, abs=1e-9)


def test_grouped_features_share_one_coefficient_and_fixed_ones_are_kept():
    feats = [{"depthwise.mb": d, "memory.mb": m, "layer": 1.0} for d, m in [(1, 2), (3, 1), (2, 2)]]
    measured = [0.1 * (d + m) + 0.5 for d, m in [(1, 2), (3, 1), (2, 2)]]
    result = calibrate.fit(feats, measured, [["depthwise.mb", "memory.mb"]], fixed={"layer": 0.5})
    assert result.coefficients == pytest.approx({"layer": 0.5, "depthwise.mb": 0.1, "memory.mb": 0.1})


def test_coefficients_are_never_negative():
    feats = [{"conv.gmac": 1.0, "memory.mb": 1.0}, {"conv.gmac": 2.0, "memory.mb": 1.0}]
    result = calibrate.fit(feats, [2.0, 1.0], [["conv.gmac"], ["memory.mb"]])  # more MACs, less time
    assert all(v >= 0 for v in result.coefficients.values())


def test_a_written_profile_loads_and_prices_with_its_coefficients(tmp_path):
    feats = [{"conv.gmac": 1.0, "run": 1.0}, {"conv.gmac": 2.0, "run": 1.0}]
    result = calibrate.fit(feats, [11.0, 21.0], [["conv.gmac"], ["run"]])
    path = calibrate.write_profile(
        tmp_path / "bench-phone.yaml", {"device": "bench-phone", "channel_block": 4}, {1: result}, {}
    )
    profile = costmodel.load_profile("bench-phone", path)
    assert profile.coef(1) == pytest.approx({"conv.gmac": 10.0, "run": 1.0})
    assert profile.channel_block == 4
    assert profile.meta["calibrations"][1]["fit"]["free_parameters"] == 2


def test_a_profile_with_an_unknown_feature_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("calibrations: {1: {coefficients: {conv.teraflops: 1.0}}}\n")
    with pytest.raises(CompressError, match="unknown cost features"):
        costmodel.load_profile("bad", path)


def test_host_fit_takes_memory_rates_from_single_op_graphs_and_refits_per_node_costs_on_networks():
    micro = [{"memory.mb": mb, "layer": n, "run": 1.0} for mb, n in [(1, 1), (4, 1), (2, 8), (8, 3), (3, 5)]]
    micro_ms = calibrate.price(micro, {"memory.mb": 0.1, "layer": 0.002, "run": 0.01})
    nets = [
        {"conv.kms": k, "memory.mb": mb, "layer": n, "run": 1.0} for k, mb, n in [(1, 1, 10), (2, 3, 40), (0.5, 2, 25)]
    ]
    nets += [{"conv.kms": 3.0, "memory.mb": 1.0, "layer": 60, "run": 1.0}]
    truth = {"conv.kms": 1.2, "memory.mb": 0.1, "layer": 0.005, "run": 0.03}  # a network's nodes cost more
    result = calibrate.fit_host(micro, micro_ms, nets, calibrate.price(nets, truth))
    assert {k: result.coefficients[k] for k in truth} == pytest.approx(truth, rel=1e-6)


def test_the_network_fit_takes_off_the_fixed_cost_each_kernel_carried_when_timed_alone():
    micro = [{"memory.mb": mb, "layer": n, "run": 1.0} for mb, n in [(1, 1), (4, 1), (2, 8), (8, 3), (3, 5)]]
    micro_ms = calibrate.price(micro, {"memory.mb": 0.1, "layer": 0.002, "run": 0.01})
    # kernels' summed alone-times, the convs among them (KERNEL_ALONE counts -1 each), nodes
    shapes = [(1.0, 8, 10), (2.0, 30, 40), (0.5, 20, 25), (3.0, 12, 60), (0.2, 15, 18)]
    nets = [
        {"conv.kms": k, costmodel.KERNEL_ALONE: -float(c), "memory.mb": 1.0, "layer": n, "run": 1.0}
        for k, c, n in shapes
    ]
    truth = {"conv.kms": 1.1, costmodel.KERNEL_ALONE: 0.002, "layer": 0.001, "run": 0.02, "memory.mb": 0.1}
    result = calibrate.fit_host(micro, micro_ms, nets, calibrate.price(nets, truth))
    assert result.coefficients[costmodel.KERNEL_ALONE] == pytest.approx(0.002, rel=1e-6)


def test_reorder_rates_separate_the_copy_rate_from_the_rate_beyond_the_spill_size():
    spill = costmodel.REORDER_SPILL / 1e6
    mbs = [0.5, 2.0, 6.0, spill + 4, spill + 40, spill + 100]
    sample = calibrate.KernelSample([], [(mb, 0.001 + 0.012 * mb + 0.02 * max(0.0, mb - spill)) for mb in mbs])
    assert sample.reorder_rates() == pytest.approx({"reorder.mb": 0.012, "reorder_spill.mb": 0.02}, rel=1e-6)


def test_one_round_cannot_tell_how_well_a_measurement_repeats(tmp_path):
    with pytest.raises(CompressError, match="at least 2"):
        calibrate.host_latencies([tmp_path / "m.onnx"], rounds=1)


def test_a_stretch_of_a_round_slowed_by_load_is_divided_by_the_slowdown_its_reference_timings_saw():
    quiet = np.array([2.0, 4.0, 8.0])  # three models, one reference timing before every two and one after the last
    values = np.stack([np.tile(quiet[:, None], 5), np.tile(quiet[:, None], 5)])  # rounds x models x runs
    # what the reference saw (rounds x timings): round 0 slows down from its second timing on, round 1 throughout;
    # a model is priced by the mean of the two timings around it
    slowdown = np.array([[0.0, 0.3, 0.3], [0.2, 0.2, 0.2]])
    values[0, :2] *= 1.15
    values[0, 2] *= 1.3
    values[1] *= 1.2
    assert calibrate.referenced_fastest(values, slowdown, every=2) == pytest.approx(quiet)


def test_a_reference_network_is_timed_around_every_stretch_of_every_round(tiny_onnx, tmp_path):
    times = calibrate.host_latencies(
        [tiny_onnx] * (calibrate.REFERENCE_EVERY + 1), rounds=2, warmup=1, runs=2, reference=("tiny", tiny_onnx)
    )
    assert len(times.fastest) == len(times.unreferenced_repeat) == calibrate.REFERENCE_EVERY + 1
    assert np.array(times.reference.slowdown).shape == (2, 3)  # before each of two stretches and after the last
    assert min(min(r) for r in times.reference.slowdown) == 0.0 and times.reference.ms > 0
    assert 0 <= times.reference.to_json()["disturbed_share"] <= 1


def test_single_op_graphs_price_the_op_they_are_named_for(tmp_path):
    micro = dict(calibrate.memory_microbenchmarks(tmp_path))
    assert len(micro) == len(calibrate.MICRO_SHAPES) * 22 + len(calibrate.ARGMAX_SHAPES)
    feats = calibrate.host_features(
        [micro["softmax-spatial 16x64x64"], micro["gridsample 16x64x64"], micro["relu-chain-8 16x64x64"]], 8
    )
    assert feats[0]["op:Softmax.mb"] > 0 and feats[0]["memory.mb"] == 0
    assert feats[1]["grid_sample.mb"] > 0
    assert (feats[2]["layer"], feats[2]["run"]) == (8, 1)


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_the_spec_mac_count_matches_the_built_network(seed):
    spec = zoo.random_convnet_spec(seed)
    assert zoo.convnet_macs(spec) == zoo.count_macs(zoo.build_convnet(spec), (1, 3, spec.resolution, spec.resolution))


@pytest.mark.parametrize(
    "name, params_m, macs_m",
    [("mobilenet_v1_1.0_224", 4.2, 569), ("nasnet_mobile", 5.3, 564), ("squeezenet_1.0", 1.25, 830)],
)
def test_reference_networks_have_their_published_size(name, params_m, macs_m):
    ref = zoo.REFERENCES[name]
    model = ref.build()
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, rel=0.03)
    assert zoo.count_macs(model, (1, 3, ref.resolution, ref.resolution)) / 1e6 == pytest.approx(macs_m, rel=0.03)


def test_inception_resnet_v2_has_its_published_parameter_count():
    assert sum(p.numel() for p in zoo.inception_resnet_v2().parameters()) / 1e6 == pytest.approx(55.8, rel=0.01)


def test_inception_v4_has_its_published_parameter_count():
    assert sum(p.numel() for p in zoo.inception_v4().parameters()) / 1e6 == pytest.approx(42.7, rel=0.01)


def test_inception_v4_reaches_its_8x8x1536_head_at_299():
    features = zoo.inception_v4().features.eval()
    with torch.no_grad():
        assert features(torch.zeros(1, 3, 299, 299)).shape == (1, 1536, 8, 8)


def test_the_iphone8_profile_records_the_iphone_xs_cross_check_of_every_reference():
    rows = costmodel.load_profile("iphone8").meta["cross_check_iphone_xs"]["rows"]
    assert [(r["network"], r["precision"], r["published_ms"]) for r in rows] == calibrate.IPHONE_XS_POINTS
    iphone8 = {(n, p): ms for n, p, ms in calibrate.IPHONE8_POINTS}
    assert [r["xs_over_iphone8"] for r in rows] == [
        round(r["published_ms"] / iphone8[(r["network"], r["precision"])], 3) for r in rows
    ]


def test_update_docs_rewrites_only_the_generated_section(tmp_path):
    doc = tmp_path / "latency.md"
    doc.write_text(f"# Title\nintro\n{validate.DOC_BEGIN}\nold figures\n{validate.DOC_END}\noutro\n")
    validate.update_docs(doc, f"{validate.DOC_BEGIN}\nnew figures\n{validate.DOC_END}")
    assert doc.read_text() == f"# Title\nintro\n{validate.DOC_BEGIN}\nnew figures\n{validate.DOC_END}\noutro\n"


def test_flow_warp_exports_a_grid_sample(tmp_path):
    spec = zoo.ConvNetSpec("w", 32, 8, ((8, 1, 1),), 3, False, False, warp=True)
    path = zoo.export_onnx(zoo.build_convnet(spec), (torch.zeros(1, 3, 32, 32),), tmp_path / "w.onnx")
    assert "grid_sample" in {c.op_class for c in costmodel.analyse(path)}
