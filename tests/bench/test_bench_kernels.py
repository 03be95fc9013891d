"""Per-kernel models: refitted from measurements stored as CSV, deterministically; bad data is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from compress.bench import costmodel, kernels
from compress.errors import CompressError

STORED = costmodel.DEVICES_DIR / "host-x86-kernels.csv"


def synthetic_rows() -> list[kernels.Measured]:
    """Kernels of every class with a time that is linear in their work plus a shape effect."""
    rows = []
    for i, config in enumerate(kernels.initial_sample(80, seed=3)):
        op_class = kernels.CONV_CLASSES[i % 4]
        groups = config.cin if op_class.startswith("depthwise") else 1
        cout = config.cin if groups > 1 else config.cout
        side = -(-config.size // config.stride)
        kernel = kernels.Kernel(op_class, config.cin, cout, groups, config.k, config.stride, side, side)
        ms = kernel.macs / 1e8 * (1.3 if config.cin % 16 else 1.0) + 0.002
        rows.append(kernels.Measured(kernel, ms))
    return rows


def test_stored_measurements_round_trip_through_csv(tmp_path):
    rows = synthetic_rows()
    assert kernels.read_csv(kernels.write_csv(tmp_path / "k.csv", rows)) == [
        kernels.Measured(r.kernel, round(r.ms, 6)) for r in rows
    ]


def test_the_model_refits_deterministically_from_the_stored_data():
    rows = kernels.read_csv(STORED)
    probe = [r.kernel for r in rows[::25]]
    first, second = kernels.KernelModel(rows).predict(probe), kernels.KernelModel(list(rows)).predict(probe)
    assert np.array_equal(first, second)


def test_the_stored_host_data_has_every_conv_class_and_predicts_its_own_kernels_closely():
    rows = kernels.read_csv(STORED)
    assert {r.kernel.op_class for r in rows} == set(kernels.CONV_CLASSES)
    predicted = kernels.KernelModel(rows).predict([r.kernel for r in rows])
    errors = predicted / np.array([r.ms for r in rows]) - 1
    assert np.median(np.abs(errors)) < 0.10  # in-sample; the cross-validated figure is in docs/latency.md


def test_trees_correct_what_the_linear_terms_miss():
    """Off-block channel counts cost 30 % more here: the linear terms alone cannot say which kernels."""
    rows = synthetic_rows()
    model = kernels.KernelModel(rows)
    measured = np.array([r.ms for r in rows])
    linear = np.array([model.classes[r.kernel.op_class].coef @ r.kernel.linear_features() for r in rows])
    with_trees = model.predict([r.kernel for r in rows])
    assert np.median(np.abs(with_trees / measured - 1)) < np.median(np.abs(linear / measured - 1))


def test_a_class_without_measurements_cannot_be_priced():
    rows = [r for r in synthetic_rows() if r.kernel.op_class != "conv_nchw"]
    kernel = kernels.Kernel("conv_nchw", 22, 22, 1, 3, 1, 8, 8)
    with pytest.raises(CompressError, match="no measured kernels of class conv_nchw"):
        kernels.KernelModel(rows).predict([kernel])


@pytest.mark.parametrize(
    "line, problem",
    [
        ("conv,32,32,1,3,1,8,8,abc", "malformed kernel measurement"),
        ("conv,32,32,1,3,1,8,8,-1", "not positive"),
        ("pool,32,32,1,3,1,8,8,0.1", "unknown class 'pool'"),
        ("conv,32,32,1,3,1,8,0.1", "8 fields, expected 9"),
        ("depthwise,30,30,4,3,1,8,8,0.1", "impossible shape"),
    ],
)
def test_loading_malformed_measurements_names_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "k.csv"
    path.write_text(",".join(kernels.COLUMNS) + "\nconv,32,32,1,3,1,8,8,0.1\n" + line + "\n")
    with pytest.raises(CompressError, match=f"k.csv:3: .*{problem}"):
        kernels.read_csv(path)


def test_a_wrong_header_is_refused(tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(CompressError, match="expected the header"):
        kernels.read_csv(path)


def test_neighbours_keep_the_kernel_size_stride_and_map_and_move_the_channels():
    config = kernels.Config(40, 72, 3, 2, 64, False)
    near = kernels.neighbours(config, 6, seed=0)
    assert len(near) == 6 and config not in near
    assert all((c.k, c.stride, c.size, c.depthwise) == (3, 2, 64, False) for c in near)
    assert all(0.5 * 40 <= c.cin <= 1.5 * 40 + 3 and 0.5 * 72 <= c.cout <= 1.5 * 72 + 3 for c in near)


def test_a_profile_naming_its_kernel_data_prices_convs_with_the_per_kernel_model(tmp_path, tiny_onnx):
    kernels.write_csv(tmp_path / "h-kernels.csv", synthetic_rows())
    data = {
        "device": "h",
        "graph": costmodel.EXECUTED_GRAPH,
        "kernels": "h-kernels.csv",
        "calibrations": {1: {"coefficients": {f"{c}.kms": 1.0 for c in kernels.CONV_CLASSES}}},
    }
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(data))
    profile = costmodel.load_profile("h", tmp_path / "h.yaml")
    convs = [c for c in profile.analyse(tiny_onnx) if c.kernel is not None]
    assert convs and all(c.kernel_ms > 0 for c in convs)
    assert profile.predict_ms(convs, 1) == pytest.approx(sum(c.kernel_ms for c in convs))


def test_each_kernel_priced_conv_is_charged_less_the_fixed_cost_its_kernel_carried_alone(tmp_path, tiny_onnx):
    kernels.write_csv(tmp_path / "h-kernels.csv", synthetic_rows())
    coefficients = {f"{c}.kms": 1.0 for c in kernels.CONV_CLASSES} | {costmodel.KERNEL_ALONE: 0.001}
    data = {
        "device": "h",
        "graph": costmodel.EXECUTED_GRAPH,
        "kernels": "h-kernels.csv",
        "calibrations": {1: {"coefficients": coefficients}},
    }
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(data))
    profile = costmodel.load_profile("h", tmp_path / "h.yaml")
    convs = [c for c in profile.analyse(tiny_onnx) if c.kernel is not None]
    assert profile.predict_ms(convs, 1) == pytest.approx(sum(c.kernel_ms for c in convs) - 0.001 * len(convs))


def test_network_configs_are_the_convs_of_a_network(tiny_onnx):
    import onnx

    configs = kernels.network_configs(onnx.load(str(tiny_onnx)))
    assert configs == [kernels.Config(3, 8, 3, 1, 32, False), kernels.Config(8, 8, 3, 1, 32, True)]


def test_the_stored_data_file_exists_where_the_profile_names_it():
    meta = costmodel.load_profile("host-x86").meta
    assert Path(costmodel.DEVICES_DIR / meta["kernels"]) == STORED


def test_the_host_profile_gives_the_iphone8_calibration_a_dense_conv_rate_to_carry_rates_by():
    from compress.bench import calibrate

    rates = calibrate.host_rates(costmodel.load_profile("host-x86"))
    assert rates["conv.gmac"] > 0
    own = {"conv.gmac": 2 * rates["conv.gmac"], "memory.mb": 0.1, "grid_sample.mb": 0.1}
    ranges = calibrate.rate_range(own, rates)
    assert ranges["grid_sample"][1] == pytest.approx(2 * rates["grid_sample.mb"], rel=1e-3)


def test_a_measurements_file_is_fitted_once_per_version(tmp_path):
    import os

    path = kernels.write_csv(tmp_path / "k.csv", synthetic_rows())
    first = kernels.fitted(path)
    assert kernels.fitted(path) is first
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000))  # rewritten: a new version
    assert kernels.fitted(path) is not first
