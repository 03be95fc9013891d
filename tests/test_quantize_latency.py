"""int8 never slower than float on this host: paired timings, regions kept float, what ships and why.

The decisions are tested on given timings (a timer that prices each region by whether it runs
int8), the plumbing once on real onnxruntime timings without asserting what they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pydantic
import pytest
import torch
from torch import nn

from compress.quantize import EvalSet, OnnxQuantConfig, quantize_onnx
from compress.quantize.bench import bench_rows
from compress.quantize.gate import QualityGate
from compress.quantize.latency import (
    Comparison,
    Latency,
    MixedPrecision,
    RegionLatency,
    Timer,
    compare,
    region_of,
    regions,
)
from compress.quantize.onnx import QuantReport, int8_and_float_nodes
from compress.quantize.stage import OnnxShipping, fit_size_target, ship_onnx
from compress.quantize.targets import int8_types
from compress.recipe import QuantizeConfig, load_recipe
from compress.run import run_recipe
from tests.test_quantize import SMALL, STAGE, TIMING, export_onnx, feeds

ROUNDS = 30
SHAPE = (1, 3, 16, 16)


class Blend(nn.Module):
    """Elementwise arithmetic only: in int8 every step adds a dequantize and a quantize."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(6):
            x = x * 0.9 + 0.1
        return x


class TwoRegionNet(nn.Module):
    """Two regions: `/features` (convolutions) and `/blend` (elementwise)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        )
        self.blend = Blend()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.blend(self.features(x)),)


@pytest.fixture(scope="module")
def two_regions(tmp_path_factory) -> Path:
    return export_onnx(TwoRegionNet(), SHAPE, tmp_path_factory.mktemp("two_regions") / "net.onnx")


class ConvThenBlend(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.blend = Blend()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blend(self.conv(x))


class ConvAndBlendRegionNet(TwoRegionNet):
    """`/features` (convolutions) and `/head`: a convolution and elementwise arithmetic in one region."""

    def __init__(self) -> None:
        super().__init__()
        self.head = ConvThenBlend()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.head(self.features(x)),)


@pytest.fixture(scope="module")
def conv_and_blend(tmp_path_factory) -> Path:
    return export_onnx(ConvAndBlendRegionNet(), SHAPE, tmp_path_factory.mktemp("conv_and_blend") / "net.onnx")


def priced_timer(int8_extra_ms: dict[str, float], jitter: float = 0.0) -> Timer:
    """Times a model at 1 ms plus `int8_extra_ms[region]` for each region that runs int8 in it.

    Every round has its own machine load, shared by the models of that round; `jitter` adds noise
    of that relative size to each run on its own.
    """

    def time(paths):
        rng = np.random.default_rng(0)
        load = 1 + 0.5 * rng.random(ROUNDS)
        times = []
        for path in paths:
            ms = 1.0 + sum(int8_extra_ms.get(r, 0.0) for r in int8_regions(path))
            times.append(list(ms * load * (1 + jitter * rng.standard_normal(ROUNDS))))
        return times

    return time


def priced_by_op(int8_extra_ms: dict[tuple[str, str], float]) -> Timer:
    """Times a model at 1 ms plus `int8_extra_ms[(region, op type)]` for each node of that kind running int8."""

    def time(paths):
        load = 1 + 0.5 * np.random.default_rng(0).random(ROUNDS)
        times = []
        for path in paths:
            model = onnx.load(str(path))
            op_types = {node.name: node.op_type for node in model.graph.node}
            int8 = int8_and_float_nodes(model)[0]
            ms = 1.0 + sum(int8_extra_ms.get((region_of(n), op_types[n]), 0.0) for n in int8)
            times.append(list(ms * load))
        return times

    return time


def quantize(fp32: Path, out: Path, timer: Timer, evaluation=None, **config) -> QuantReport:
    return quantize_onnx(
        fp32, out, feeds(4, SHAPE), OnnxQuantConfig(latency_runs=ROUNDS, **config), evaluation, timer=timer
    )


def int8_regions(path: Path) -> set[str]:
    return {region_of(n) for n in int8_and_float_nodes(onnx.load(str(path)))[0]}


# -- regions and noise -------------------------------------------------------------------------
def test_a_region_is_the_top_level_module_of_the_node_name():
    nodes = ["/spade_blocks.1/spade/conv/Conv", "/bottleneck/bottleneck.0/Add", "/bottleneck/Add", "/Add_3"]
    assert regions(nodes) == {
        "/spade_blocks.1": ["/spade_blocks.1/spade/conv/Conv"],
        "/bottleneck": ["/bottleneck/bottleneck.0/Add", "/bottleneck/Add"],
        "/": ["/Add_3"],  # the top module's own forward
    }
    assert regions(["Conv_0", "Add_1"]) == {"/": ["Conv_0", "Add_1"]}  # a graph without module paths is one region


def test_a_module_path_every_node_shares_is_split_one_level_further():
    nodes = ["/kp_detector/predictor/conv/Conv", "/kp_detector/kp/Conv", "/kp_detector/Mul"]
    assert list(regions(nodes)) == ["/kp_detector/predictor", "/kp_detector/kp", "/kp_detector"]


def test_a_ratio_is_the_median_of_the_rounds_and_its_noise_their_quartiles():
    int8, fp32 = [1.0, 1.1, 1.2, 1.3, 1.4], [1.0] * 5
    assert compare(int8, fp32) == Comparison(1.2, 1.0, 1.2, 1.1, 1.3, rounds_slower=4, rounds=5)


def test_slower_beyond_noise_means_slower_in_three_rounds_of_four_and_more_often_than_chance():
    fp32 = [1.0] * 20
    assert compare([1.1] * 15 + [0.9] * 5, fp32).slower
    assert not compare([1.1] * 10 + [0.9] * 10, fp32).slower  # slower in half the rounds: noise


def test_three_rounds_are_too_few_to_call_anything_slower():
    three = compare([2.0] * 3, [1.0] * 3)
    assert three.low > 1 and not three.slower  # a coin comes up "slower" 3 times in 3 one time in 8


# -- what stays float --------------------------------------------------------------------------
def test_a_region_slower_in_int8_is_kept_float_and_the_others_stay_int8(two_regions, tmp_path):
    timer = priced_timer({"/blend": 0.3, "/features": -0.2})
    report = quantize(two_regions, tmp_path / "net.int8.onnx", timer)
    assert report.mixed_precision.kept_float == ["/blend"]
    assert int8_regions(report.path) == {"/features"}
    assert all(n.startswith("/blend/") for n in report.mixed_precision.float_nodes)


def test_a_slow_region_keeps_its_convolutions_int8_when_only_its_elementwise_ops_are_slow(conv_and_blend, tmp_path):
    prices = {("/head", "Conv"): -0.1, ("/head", "Mul"): 0.05, ("/head", "Add"): 0.05, ("/features", "Conv"): -0.2}
    report = quantize(conv_and_blend, tmp_path / "net.int8.onnx", priced_by_op(prices))
    mixed = report.mixed_precision
    assert mixed.kept_float == ["/head"] and mixed.weights_int8 and mixed.weights_int8_vs_float.ratio < 1
    model = onnx.load(str(report.path))
    op_types = {node.name: node.op_type for node in model.graph.node}
    assert {op_types[n] for n in int8_and_float_nodes(model)[0] if n.startswith("/head/")} == {"Conv"}
    assert mixed.float_nodes and all(op_types[n] in ("Mul", "Add") for n in mixed.float_nodes)


def test_a_slow_region_goes_wholly_float_when_its_convolutions_are_slow_in_int8_too(conv_and_blend, tmp_path):
    prices = {("/head", "Conv"): 0.1, ("/head", "Mul"): 0.05, ("/head", "Add"): 0.05, ("/features", "Conv"): -0.2}
    report = quantize(conv_and_blend, tmp_path / "net.int8.onnx", priced_by_op(prices))
    mixed = report.mixed_precision
    assert mixed.kept_float == ["/head"] and not mixed.weights_int8 and mixed.weights_int8_vs_float.slower
    assert int8_regions(report.path) == {"/features"}


def test_a_region_slower_within_noise_stays_int8(two_regions, tmp_path):
    report = quantize(two_regions, tmp_path / "net.int8.onnx", priced_timer({"/blend": 0.01}, jitter=0.1))
    blend = next(r for r in report.mixed_precision.regions if r.region == "/blend")
    assert blend.int8_vs_float.low <= 1 < blend.int8_vs_float.ratio
    assert report.mixed_precision.kept_float == [] and int8_regions(report.path) == {"/features", "/blend"}


def test_preferring_size_keeps_every_region_int8(two_regions, tmp_path):
    report = quantize(two_regions, tmp_path / "net.int8.onnx", priced_timer({"/blend": 0.3}), latency_fallback=False)
    assert report.mixed_precision is None and int8_regions(report.path) == {"/features", "/blend"}
    assert report.latency.slower  # it is slower, and it is int8 anyway


class FailsWithFloatNodes(QualityGate):
    """Passes while every region is int8, fails once any compute node is float: a gate the regions' float
    version would miss."""

    metric, bound, lower_is_better = "float_nodes", 0.0, True

    def __init__(self) -> None:
        self.measured = 0

    def measure(self, model):
        self.measured += 1
        model = onnx.load(str(model)) if isinstance(model, Path) else model
        return float(sum(n.op_type in ("Conv", "Mul", "Add") for n in int8_and_float_nodes(model)[1]))


class CountsMeasurements(QualityGate):
    """Always passes, with the number of models measured so far; remembers them."""

    metric, bound, lower_is_better = "calls", 100.0, True

    def __init__(self) -> None:
        self.models: list[onnx.ModelProto] = []

    def measure(self, model):
        self.models.append(model)
        return float(len(self.models))


def test_the_gate_is_rechecked_with_the_regions_float(two_regions, tmp_path):
    gate = CountsMeasurements()
    report = quantize(two_regions, tmp_path / "net.int8.onnx", priced_timer({"/blend": 0.3}), gate)
    assert len(gate.models) == 2  # all int8, then with /blend float
    assert {region_of(n) for n in int8_and_float_nodes(gate.models[-1])[0]} == {"/features"}
    assert report.gate["value_all_int8"] == 1.0 and report.gate["value"] == report.mixed_precision.gate_value == 2.0


def test_when_the_gate_fails_with_the_regions_float_every_region_stays_int8(two_regions, tmp_path):
    gate = FailsWithFloatNodes()
    report = quantize(two_regions, tmp_path / "net.int8.onnx", priced_timer({"/blend": 0.3}), gate)
    assert gate.measured == 2 and report.passed
    assert report.mixed_precision.kept_float == [] and "gate fails" in report.mixed_precision.note
    assert int8_regions(report.path) == {"/features", "/blend"}


def test_the_record_lists_each_region_with_both_latencies_and_the_files_final_ratio(two_regions, tmp_path):
    """Real onnxruntime timings on this host: what is measured, not what it comes to."""
    report = quantize_onnx(
        two_regions,
        tmp_path / "net.int8.onnx",
        feeds(4, SHAPE),
        OnnxQuantConfig(latency_runs=5, latency_warmup=1),
        EvalSet(feeds(2, SHAPE)),
    )
    record = report.to_json()
    regions = record["mixed_precision"]["regions"]
    assert set(regions) == {"/features", "/blend"}
    for region in regions.values():
        assert region["int8_ms"] > 0 and region["float_ms"] > 0
        assert region["quartiles"][0] <= region["int8_over_float"] <= region["quartiles"][1]
    assert int8_regions(report.path).isdisjoint(record["mixed_precision"]["kept_float"])
    latency = record["latency"]
    assert latency["measured"] == "interleaved rounds, runner thread CPU time" and latency["runs"] == 5
    assert latency["int8_over_fp32_quartiles"][0] <= latency["int8_over_fp32"] <= latency["int8_over_fp32_quartiles"][1]


def test_a_target_other_than_this_host_is_not_judged_by_this_hosts_timings(two_regions, tmp_path):
    other = next(t for t in ("arm", "x86") if t != int8_types().target)
    report = quantize(two_regions, tmp_path / "net.int8.onnx", priced_timer({"/blend": 0.3}), target=other)
    assert report.mixed_precision is None and "not run: the target is" in report.notes[0]


# -- what ships --------------------------------------------------------------------------------
def report_with(
    int8_vs_fp32: Comparison, kept_float: tuple[str, ...] = (), int8_nodes: tuple[str, ...] = ("/a/Conv",)
) -> QuantReport:
    """A passing report whose final file times `int8_vs_fp32` and whose `kept_float` regions went float for speed."""
    report = QuantReport(
        Path("q/net.int8.onnx"), "ort", int8_types("x86"), 400, 100, list(int8_nodes), {}, gate={"passed": True}
    )
    report.latency = Latency(int8_vs_fp32, ROUNDS, 1, host_int8_dot_product=False)
    slower = Comparison(1.3, 1.0, 1.3, 1.2, 1.4, ROUNDS, ROUNDS)
    report.mixed_precision = MixedPrecision([RegionLatency(r, 3, slower, kept_float=True) for r in kept_float])
    return report


SLOWER = Comparison(1.2, 1.0, 1.2, 1.1, 1.3, ROUNDS, ROUNDS)
WITHIN_NOISE = Comparison(1.02, 1.0, 1.02, 0.97, 1.06, ROUNDS // 2 + 2, ROUNDS)


def ship(report: QuantReport, mode: str = "mixed") -> tuple[dict, str]:
    return ship_onnx(report, QuantizeConfig(ship_when_slower=mode), "q/net.int8.onnx", None, "export/net.onnx")


def test_int8_within_noise_of_fp32_ships():
    entry, note = ship(report_with(WITHIN_NOISE, ("/blend",)))
    assert entry["precision"] == "int8"
    assert note.startswith("int8 with /blend kept float ships, not shown slower than fp32 beyond noise: 1.02x")


def test_int8_still_slower_after_the_regions_went_float_leaves_fp32_shipped():
    entry, note = ship(report_with(SLOWER, ("/blend",)))
    assert entry["precision"] == "fp32" and note.startswith("fp32 ships: int8 with /blend kept float is slower")


def test_every_region_float_ships_the_fp32_file():
    entry, note = ship(report_with(WITHIN_NOISE, ("/a",), int8_nodes=()))
    assert entry == {"path": "export/net.onnx", "precision": "fp32"} and "every region" in note


def test_preferring_size_ships_slower_int8_and_says_so():
    entry, note = ship(report_with(SLOWER), "int8")
    assert entry["precision"] == "int8" and note.startswith("int8 ships for size (ship_when_slower: int8")


def shipping(report: QuantReport, fp32_bytes: int, int8_bytes: int, mode: str = "mixed") -> OnnxShipping:
    report.fp32_bytes, report.int8_bytes = fp32_bytes, int8_bytes
    entry, note = ship(report, mode)
    return OnnxShipping(report, entry, note, {"path": "q/net.int8.onnx", "precision": "int8"})


def no_requantizing(name):
    pytest.fail(f"{name} was quantized again")


def test_float_parts_over_the_size_target_ship_int8_for_size_largest_file_first():
    ships = {
        "small": shipping(report_with(SLOWER), 400_000, 100_000),
        "large": shipping(report_with(SLOWER), 4_000_000, 1_000_000),
        "fast": shipping(report_with(WITHIN_NOISE), 2_000_000, 500_000),
    }
    fit_size_target(ships, 2.0, no_requantizing)  # 0.4 + 4.0 + 0.5 MB as shipped; int8 "large" alone makes it 1.9
    assert [ships[n].entry["precision"] for n in ("small", "large", "fast")] == ["fp32", "int8", "int8"]
    assert ships["large"].note.startswith("int8 ships for size: with this part fp32 the ONNX files are 4.90 MB")
    assert ships["small"].note.startswith("fp32 ships")


def test_float_parts_within_the_size_target_or_without_one_stay_float():
    for target in (5.0, None):
        ships = {"net": shipping(report_with(SLOWER), 4_000_000, 1_000_000)}
        fit_size_target(ships, target, no_requantizing)
        assert ships["net"].entry["precision"] == "fp32"


def test_a_part_kept_float_for_quality_is_never_shipped_int8_for_size():
    report = report_with(SLOWER)
    report.gate = {"passed": False, "rule": "psnr_drop <= 0.3"}
    ships = {"net": shipping(report, 4_000_000, 1_000_000)}
    fit_size_target(ships, 1.0, no_requantizing)
    assert ships["net"].entry["precision"] == "fp32"


def test_mixed_is_the_default_and_an_unknown_mode_is_refused():
    assert QuantizeConfig().ship_when_slower == "mixed"
    with pytest.raises(pydantic.ValidationError):
        QuantizeConfig(ship_when_slower="fastest")


# -- the stage ---------------------------------------------------------------------------------
ONNX_ONLY = [{"export": {"formats": ["onnx"], "real_inputs": 1, "random_inputs": 1}}]


def run_quantize(write_recipe, tmp_path: Path, **quantize) -> dict:
    stages = [*ONNX_ONLY, {"quantize": {**STAGE, "formats": ["onnx"], **quantize}}, TIMING]
    recipe = load_recipe(write_recipe(stages, **SMALL))
    run_recipe(recipe, run_dir=tmp_path / "run", until="quantize", quiet=True)
    return json.loads((tmp_path / "run" / "quantize" / "record.json").read_text())


def test_the_stage_record_and_bench_table_list_the_regions_and_iphone8_int8_is_for_size(write_recipe, tmp_path):
    record = run_quantize(write_recipe, tmp_path, target="auto", ship_when_slower="mixed")
    onnx_record = record["metrics"]["net"]["onnx"]
    assert onnx_record["mixed_precision"]["regions"] and onnx_record["latency"]["int8_over_fp32"] > 0
    (row,) = bench_rows(record["metrics"])
    assert (
        row["float_regions"] is not None and row["int8_over_fp32_latency"] == onnx_record["latency"]["int8_over_fp32"]
    )
    # the profile stage's default devices include profile:iphone8, whose profile says int8_compute: false
    assert record["metrics"]["int8_for_size"]["profile:iphone8"].startswith("int8 ships on profile:iphone8 for size")
    assert "for size, not speed" in record["summary"]


def test_the_stage_preferring_size_says_so_in_the_record(write_recipe, tmp_path):
    record = run_quantize(write_recipe, tmp_path, target="auto", ship_when_slower="int8")
    onnx_record = record["metrics"]["net"]["onnx"]
    assert onnx_record["mixed_precision"] is None
    assert "latency-aware mixed precision off: ship_when_slower: int8 (size matters more)" in onnx_record["notes"]


def test_regions_kept_float_over_the_size_target_go_int8_for_size_largest_file_first():
    ships = {
        "big": shipping(report_with(WITHIN_NOISE, ("/dense_motion",)), 5_000_000, 4_500_000),
        "small": shipping(report_with(WITHIN_NOISE, ("/first",)), 60_000, 50_000),
        "plain": shipping(report_with(WITHIN_NOISE), 4_000_000, 1_000_000),
    }
    requantized = []

    def all_int8(name):
        requantized.append(name)
        return shipping(report_with(SLOWER), 5_000_000, 1_250_000, mode="int8")  # as the stage asks

    fit_size_target(ships, 3.0, all_int8)  # 4.5 + 0.05 + 1.0 MB; "big" with every region int8: 2.3 MB
    assert requantized == ["big"] and ships["big"].entry["precision"] == "int8"
    assert ships["big"].note.startswith(
        "every region int8 for size: with /dense_motion kept float the ONNX files were 5.55 MB"
    )


def test_a_part_still_slower_with_float_regions_goes_every_region_int8_for_size():
    ships = {"net": shipping(report_with(SLOWER, ("/dense_motion",)), 5_000_000, 4_500_000)}
    assert ships["net"].entry["precision"] == "fp32"  # int8 with its float region was still slower
    fit_size_target(ships, 3.0, lambda name: shipping(report_with(SLOWER), 5_000_000, 1_250_000, mode="int8"))
    assert ships["net"].entry["precision"] == "int8" and ships["net"].bytes == 1_250_000


def test_regions_kept_float_within_the_size_target_stay_float():
    ships = {"net": shipping(report_with(WITHIN_NOISE, ("/a",)), 5_000_000, 2_000_000)}
    fit_size_target(ships, 3.0, no_requantizing)
    assert ships["net"].report.mixed_precision.kept_float == ["/a"]
