"""The quantize stage: int8 ONNX (onnxruntime and NNCF), 8-bit Core ML, the quality gate and its fallback."""

from __future__ import annotations

import json
import platform
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.batches import iterate_batches
from compress.errors import CompressError
from compress.evaluate import evaluate
from compress.families.base import Part, TensorSpec
from compress.families.registry import get_family
from compress.quantize import EvalSet, OnnxQuantConfig, PipelineGate, quantize_coreml, quantize_onnx
from compress.quantize.bench import bench_rows, format_totals
from compress.quantize.coreml import resolve_mode
from compress.quantize.gate import first_outputs, sqnr_db
from compress.quantize.latency import Comparison, Latency
from compress.quantize.onnx import QuantReport, compact_names, drop_zero_points, int8_and_float_nodes
from compress.quantize.qat import QuantizedPipeline, fold_batchnorms
from compress.quantize.stage import ship_onnx
from compress.quantize.targets import cpu_flags, host_target, int8_types
from compress.recipe import QuantizeConfig, load_recipe
from compress.run import run_recipe

FAST = OnnxQuantConfig(latency_runs=0)
RNG = np.random.default_rng(0)


def export_onnx(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.onnx.export(
        module.eval(),
        (torch.rand(shape),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["output"],
    )
    return path


def feeds(count: int, shape: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    return [{"image": RNG.random(shape, dtype=np.float32)} for _ in range(count)]


class OutlierNet(nn.Module):
    """conv0 is ordinary; conv1 lifts one channel to 1000x the others' range and conv2 scales it back,
    so the tensor between conv1 and conv2 cannot share one int8 scale: the deliberately sensitive layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv0, self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 3, 1)
        with torch.no_grad():
            self.conv1.weight[0] *= 1000
            self.conv1.bias[0] *= 1000
            self.conv2.weight[:, 0] /= 1000

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.conv2(self.conv1(torch.relu(self.conv0(x)))),)


class WarpNet(nn.Module):
    """A conv, a grid_sample (no int8 kernel) and a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.pre, self.post = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        n, _, h, w = x.shape
        ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], -1)[None].expand(n, h, w, 2) * 0.9
        return (self.post(F.grid_sample(self.pre(x), grid, align_corners=False)),)


class WideNet(nn.Module):
    """Weights dominate the file, as in a real student."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 128, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(128, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.body(x),)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """The generic family's student-32 (random init) exported to ONNX, with its calibration and eval data."""
    family = get_family("generic")
    torch.manual_seed(0)
    model = family.build_student(family.resolve_config("student-32", "student")).eval()
    path = export_onnx(family.parts(model)[0].module, (1, 3, 32, 32), tmp_path_factory.mktemp("student") / "net.onnx")
    calib = family.dataset("synthetic", "calibration", (32, 32), 0, 8)
    ev = family.dataset("synthetic", "eval", (32, 32), 0, 4)
    evaluation = EvalSet([{"image": ev[i]["input"][None].numpy()} for i in range(4)])
    return path, [{"image": calib[i]["input"][None].numpy()} for i in range(8)], evaluation, model


# -- target types ----------------------------------------------------------------------------
def test_x86_without_vnni_gets_u8s8_with_reduced_range():
    assert host_target("x86_64", {"avx2", "fma"}) == "x86"
    types = int8_types("x86")
    assert (types.activation, types.weight, types.reduce_range) == ("uint8", "int8", True)


def test_x86_with_vnni_gets_full_range_u8s8():
    assert host_target("x86_64", {"avx2", "avx512_vnni"}) == "x86-vnni"
    assert host_target("x86_64", {"avx_vnni"}) == "x86-vnni"
    types = int8_types("x86-vnni")
    assert (types.activation, types.reduce_range) == ("uint8", False)


def test_arm_gets_s8s8():
    assert host_target("aarch64", {"asimd", "asimddp"}) == "arm"
    assert (int8_types("arm").activation, int8_types("arm").reduce_range) == ("int8", False)


def test_cpu_flags_read_x86_flags_and_arm_features(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nFeatures\t: asimd asimddp\n")
    assert {"avx2", "avx512_vnni", "asimddp"} <= cpu_flags(info)


def test_unknown_target_names_the_field():
    with pytest.raises(CompressError, match="stages.quantize.target"):
        int8_types("riscv")


# -- ONNX --------------------------------------------------------------------------------------
def test_onnx_int8_model_has_int8_weights_and_passes_the_gate(student, tmp_path):
    fp32, calibration, evaluation, _ = student
    report = quantize_onnx(fp32, tmp_path / "net.int8.onnx", calibration, FAST, evaluation)
    model = onnx.load(str(report.path))
    weights = {i.name: i for i in model.graph.initializer}
    dq_inputs = [
        weights[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
    ]
    assert dq_inputs and {w.data_type for w in dq_inputs} <= {onnx.TensorProto.INT8, onnx.TensorProto.INT32}
    assert report.int8_bytes < report.fp32_bytes
    assert report.gate["metric"] == "sqnr_db" and report.gate["passed"] and report.fallback is None
    assert report.types.reduce_range == int8_types("auto").reduce_range


def test_onnx_int8_file_of_a_weight_dominated_net_is_under_a_3_5th_of_fp32(tmp_path):
    fp32 = export_onnx(WideNet(), (1, 3, 16, 16), tmp_path / "wide.onnx")
    report = quantize_onnx(fp32, tmp_path / "wide.int8.onnx", feeds(4, (1, 3, 16, 16)), FAST)
    assert report.int8_bytes * 3.5 <= report.fp32_bytes


def test_onnx_gate_of_a_part_alone_is_the_sqnr_of_int8_vs_fp32(student, tmp_path):
    fp32, calibration, evaluation, _ = student
    report = quantize_onnx(fp32, tmp_path / "net.int8.onnx", calibration, FAST, evaluation)
    expected = sqnr_db(first_outputs(fp32, evaluation.inputs), first_outputs(report.path, evaluation.inputs))
    assert report.gate["metric"] == "sqnr_db" and report.gate["value"] == pytest.approx(expected)


def test_compact_names_keeps_outputs_io_and_compute_node_names(student):
    fp32, _, evaluation, _ = student
    model = onnx.load(str(fp32))
    compact = compact_names(model)
    assert len(compact.SerializeToString()) < len(model.SerializeToString())
    assert [i.name for i in compact.graph.input] == ["image"] and [o.name for o in compact.graph.output] == ["output"]
    assert [n.name for n in compact.graph.node] == [n.name for n in model.graph.node]
    np.testing.assert_array_equal(
        first_outputs(compact, evaluation.inputs)[0], first_outputs(fp32, evaluation.inputs)[0]
    )


def ort_optimized_ops(path: Path, tmp_path: Path) -> Counter:
    """Op types of the graph onnxruntime runs, after its QDQ fusions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.ort.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def test_dropping_zero_points_keeps_outputs_and_int8_kernels(student, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    fp32, calibration, evaluation, _ = student

    class Reader(CalibrationDataReader):
        samples = iter(calibration)

        def get_next(self):
            return next(self.samples, None)

    with_zp = tmp_path / "with_zp.onnx"
    quantize_static(str(fp32), str(with_zp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    before = onnx.load(str(with_zp))
    after = drop_zero_points(before)
    without_zp = tmp_path / "without_zp.onnx"
    onnx.save(after, str(without_zp))

    assert len(after.SerializeToString()) < len(before.SerializeToString())
    constants = {i.name for i in after.graph.initializer}
    dequantize = [n for n in after.graph.node if n.op_type == "DequantizeLinear"]
    assert all(len(n.input) == 2 for n in dequantize if n.input[0] in constants)
    assert all(len(n.input) == 3 for n in dequantize if n.input[0] not in constants)  # activations keep theirs
    np.testing.assert_array_equal(
        first_outputs(after, evaluation.inputs)[0], first_outputs(before, evaluation.inputs)[0]
    )
    fused = ort_optimized_ops(without_zp, tmp_path)
    assert fused == ort_optimized_ops(with_zp, tmp_path) and fused["QLinearConv"] > 0


def test_pipeline_gate_measures_the_family_quality_drop(student, tmp_path):
    fp32, calibration, _, model = student
    family = get_family("generic")
    batches = list(iterate_batches(family.dataset("synthetic", "eval", (32, 32), 0, 3), 1))
    gate = PipelineGate(family, {"net": fp32}, "net", batches, max_drop=0.3)
    assert gate.metric == "psnr_drop"  # the generic family's primary metric
    assert gate.fp32_value == pytest.approx(
        evaluate(family, model, batches)["model"]["psnr"], abs=1e-3
    )  # what `compress eval` reports
    assert gate.measure(fp32) == 0.0
    report = quantize_onnx(fp32, tmp_path / "net.int8.onnx", calibration, FAST, gate)
    assert (
        report.gate["basis"].startswith("family pipeline") and report.gate["value"] == gate.measure(report.path) != 0.0
    )


def test_latency_of_both_models_is_measured_on_the_host_as_a_ratio_per_round(student, tmp_path):
    fp32, calibration, _, _ = student
    report = quantize_onnx(
        fp32, tmp_path / "net.int8.onnx", calibration, OnnxQuantConfig(latency_runs=3, latency_warmup=1)
    )
    assert report.latency.fp32_ms > 0 and report.latency.int8_ms > 0
    latency = report.to_json()["latency"]
    assert latency["int8_over_fp32"] == report.latency.ratio and latency["measured"].startswith("interleaved")
    low, high = latency["int8_over_fp32_quartiles"]
    assert low <= report.latency.ratio <= high


def test_failing_gate_falls_back_layer_by_layer_until_it_passes(tmp_path):
    net = OutlierNet().eval()
    fp32 = export_onnx(net, (1, 3, 16, 16), tmp_path / "outlier.onnx")
    inputs = feeds(4, (1, 3, 16, 16))
    report = quantize_onnx(fp32, tmp_path / "outlier.int8.onnx", feeds(8, (1, 3, 16, 16)), FAST, EvalSet(inputs))
    assert report.gate["value_all_int8"] < FAST.min_sqnr_db  # all-int8 fails...
    assert report.gate["passed"] and report.gate["value"] >= FAST.min_sqnr_db  # ...and the fallback makes it pass
    assert report.fallback.excluded == ["/conv2/Conv", "/conv1/Conv"] or report.fallback.excluded == [
        "/conv1/Conv",
        "/conv2/Conv",
    ]
    assert int8_and_float_nodes(onnx.load(str(report.path)))[0] == ["/conv0/Conv"]  # the ordinary layer stays int8
    assert report.float_ops == {"Conv": 2}


def test_nncf_engine_falls_back_too(tmp_path):
    net = OutlierNet().eval()
    fp32 = export_onnx(net, (1, 3, 16, 16), tmp_path / "outlier.onnx")
    inputs = feeds(4, (1, 3, 16, 16))
    config = OnnxQuantConfig(engine="nncf", latency_runs=0)
    report = quantize_onnx(fp32, tmp_path / "outlier.int8.onnx", feeds(8, (1, 3, 16, 16)), config, EvalSet(inputs))
    assert report.gate["value_all_int8"] < config.min_sqnr_db and report.gate["passed"]
    assert "/conv0/Conv" not in report.fallback.excluded and "/conv0/Conv" in report.int8_nodes


def test_without_fallback_a_failing_gate_is_reported(tmp_path):
    net = OutlierNet().eval()
    fp32 = export_onnx(net, (1, 3, 16, 16), tmp_path / "outlier.onnx")
    inputs = feeds(2, (1, 3, 16, 16))
    config = OnnxQuantConfig(latency_runs=0, fallback=False)
    report = quantize_onnx(fp32, tmp_path / "outlier.int8.onnx", feeds(4, (1, 3, 16, 16)), config, EvalSet(inputs))
    assert not report.passed and report.fallback is None


def test_grid_sample_stays_float_and_is_listed(tmp_path):
    fp32 = export_onnx(WarpNet(), (1, 3, 16, 16), tmp_path / "warp.onnx")
    report = quantize_onnx(fp32, tmp_path / "warp.int8.onnx", feeds(4, (1, 3, 16, 16)), FAST)
    assert report.float_ops == {"GridSample": 1}
    assert len(report.int8_nodes) == 2


def test_nncf_engine_writes_a_qdq_model(student, tmp_path):
    fp32, calibration, evaluation, _ = student
    report = quantize_onnx(
        fp32, tmp_path / "net.nncf.onnx", calibration, OnnxQuantConfig(engine="nncf", latency_runs=0), evaluation
    )
    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert report.engine == "nncf" and report.int8_nodes and report.gate["passed"]


def test_missing_model_and_empty_calibration_are_clear_errors(student, tmp_path):
    fp32, calibration, _, _ = student
    with pytest.raises(CompressError, match="not found"):
        quantize_onnx(tmp_path / "nope.onnx", tmp_path / "out.onnx", calibration, FAST)
    with pytest.raises(CompressError, match="calibration_samples"):
        quantize_onnx(fp32, tmp_path / "out.onnx", [], FAST)


# -- what ships ------------------------------------------------------------------------------
def _report_with_latency(ratio: float) -> QuantReport:
    """A passing report whose int8 file is `ratio` times as slow as fp32, beyond noise."""
    report = QuantReport(
        Path("q/net.int8.onnx"), "ort", int8_types("x86"), 400, 100, ["conv"], {}, gate={"passed": True, "rule": "r"}
    )
    report.latency = Latency(Comparison(ratio, 1.0, ratio, ratio * 0.95, ratio * 1.05, 30, 30), 30, 1, False)
    return report


def test_slower_int8_ships_for_size_when_the_recipe_says_int8_and_says_so():
    entry, note = ship_onnx(
        _report_with_latency(1.5), QuantizeConfig(ship_when_slower="int8"), "q/net.int8.onnx", None, "export/net.onnx"
    )
    assert entry == {"path": "q/net.int8.onnx", "precision": "int8"}
    assert note.startswith("int8 ships for size (ship_when_slower: int8, every region int8): slower on this host")


def test_slower_int8_leaves_fp32_shipped_when_the_recipe_says_fp32():
    previous = {"path": "export/net.onnx", "precision": "fp32"}
    entry, note = ship_onnx(
        _report_with_latency(1.5),
        QuantizeConfig(ship_when_slower="fp32"),
        "q/net.int8.onnx",
        previous,
        "export/net.onnx",
    )
    assert entry == previous and note.startswith("fp32 ships")


def test_faster_int8_ships_whatever_the_recipe_says():
    entry, _ = ship_onnx(
        _report_with_latency(0.5), QuantizeConfig(ship_when_slower="fp32"), "q/net.int8.onnx", None, "export/net.onnx"
    )
    assert entry["precision"] == "int8"


# -- Core ML ---------------------------------------------------------------------------------
def convert_coreml(
    module: nn.Module, shape: tuple[int, ...], path: Path, precision: str = "fp32", target: str = "iOS16"
) -> Path:
    import coremltools as ct

    traced = torch.jit.trace(module.eval(), (torch.rand(shape),))
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="image", shape=shape)],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
        minimum_deployment_target=getattr(ct.target, target),
    )
    mlmodel.save(str(path))
    return path


def test_coreml_8bit_weights_are_int8_and_under_a_3_5th_of_fp32(tmp_path):
    fp32 = convert_coreml(WideNet(), (1, 3, 16, 16), tmp_path / "wide.mlpackage")
    report = quantize_coreml(fp32, tmp_path / "wide.int8.mlpackage", mode="weights")
    assert report.mode == "int8-weights" and report.fp_weights == "FLOAT32"
    assert report.int8_weight_fraction > 0.9
    assert report.int8_bytes * 3.5 <= report.fp_bytes


def test_coreml_8bit_weights_include_small_depthwise_kernels(tmp_path):
    depthwise = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=16)
    )  # 144 weights each < 2048
    fp32 = convert_coreml(depthwise, (1, 3, 16, 16), tmp_path / "dw.mlpackage")
    report = quantize_coreml(fp32, tmp_path / "dw.int8.mlpackage", mode="weights")
    assert report.weights.get("INT8", 0) >= 3 * 16 + 16 * 9  # both kernels (plus their zero points)


def test_w8a8_needs_ios17():
    with pytest.raises(CompressError, match="iOS17"):
        resolve_mode("w8a8", 7)
    assert resolve_mode("auto", 7)[0] == "weights"


@pytest.mark.skipif(platform.system() == "Darwin", reason="macOS calibrates W8A8 for real")
def test_w8a8_falls_back_to_weights_where_coremltools_cannot_predict(tmp_path):
    mode, notes = resolve_mode("auto", 8)
    assert mode == "weights" and "macOS" in notes[0]


# -- the stage -------------------------------------------------------------------------------
SMALL = {"teacher": {"config": "student-32"}}  # no distill: the run quantizes this small teacher
# ship_when_slower int8: full int8 ships whatever this host's timings say, so that tests can assert what ships.
STAGE = {"calibration_samples": 4, "eval_samples": 2, "target": "x86", "ship_when_slower": "int8"}
TIMING = {"profile": {"runs": 3, "warmup": 1}}  # the quantize stage times with the profile stage's settings


def test_stage_quantizes_every_exported_format_and_updates_shipped(write_recipe, tmp_path):
    recipe = load_recipe(
        write_recipe([{"export": {"real_inputs": 1, "random_inputs": 1}}, {"quantize": STAGE}, TIMING], **SMALL)
    )
    summary = run_recipe(recipe, run_dir=tmp_path / "run", until="quantize", quiet=True)
    assert summary.artifacts["quantized"] == {
        "net": {"onnx": "quantize/net.int8.onnx", "coreml": "quantize/net.int8.mlpackage"}
    }
    assert summary.artifacts["shipped"]["net"]["coreml"] == {
        "path": "quantize/net.int8.mlpackage",
        "precision": "int8-weights",
    }
    assert summary.artifacts["shipped"]["net"]["onnx"] == {
        "path": "quantize/net.int8.onnx",
        "precision": "int8",
    }  # ship_when_slower: int8
    record = json.loads((tmp_path / "run" / "quantize" / "record.json").read_text())
    onnx_metrics, coreml_metrics = record["metrics"]["net"]["onnx"], record["metrics"]["net"]["coreml"]
    assert onnx_metrics["gate"]["metric"] == "psnr_drop" and onnx_metrics["gate_basis"].startswith("family pipeline")
    assert onnx_metrics["latency"]["runs"] == 3 and onnx_metrics["latency"]["int8_over_fp32"] > 0
    assert onnx_metrics["types"]["target"] == "x86" and onnx_metrics["types"]["reduce_range"] is True
    assert coreml_metrics["fp_weights"] == "FLOAT16" and coreml_metrics["fp32_basis"].startswith("an fp32 conversion")
    assert record["metrics"]["eval_samples"] == {"net": 2} and record["metrics"]["calibration_samples"] == {"net": 4}
    assert [g["name"] for g in record["gates"]] == [
        "quantize.net.onnx.psnr_drop",
        "quantize.pipeline.psnr_drop",
    ] and summary.passed
    assert set(record["metrics"]["int8_vs_fp32"]) == {"net", "pipeline"}
    rows = bench_rows(record["metrics"])  # what `python -m compress.quantize.bench` prints
    assert [(r["part"], r["format"]) for r in rows] == [("net", "onnx"), ("net", "coreml")]
    assert rows[0]["int8_over_fp32_latency"] == onnx_metrics["latency"]["int8_over_fp32"]


def test_bench_totals_add_up_the_parts_of_each_format_and_the_files_that_ship():
    rows = [
        {"format": "onnx", "fp32_bytes": 400, "int8_bytes": 150, "shipped": "int8"},
        {"format": "onnx", "fp32_bytes": 200, "int8_bytes": 50, "shipped": "fp32"},
        {"format": "coreml", "fp32_bytes": 300, "int8_bytes": 120, "shipped": "int8-weights"},
    ]
    assert format_totals(rows) == {
        "onnx": {"fp32_bytes": 600, "int8_bytes": 200, "shipped_bytes": 350, "fp32_over_int8_size": 3.0},
        "coreml": {"fp32_bytes": 300, "int8_bytes": 120, "shipped_bytes": 120, "fp32_over_int8_size": 2.5},
    }


def test_stage_without_export_says_what_to_add(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe([{"quantize": STAGE}], **SMALL))
    with pytest.raises(CompressError, match="export stage"):
        run_recipe(recipe, run_dir=tmp_path / "run", quiet=True)


@pytest.mark.skipif(
    shutil.which("c++") is None, reason="nncf compiles its CPU fake-quantize kernels on first use: needs a C++ compiler"
)
def test_stage_with_qat_trains_the_quantized_parts_and_writes_int8_qdq(write_recipe, tmp_path):
    qat = {"steps": 3, "batch_size": 2, "train_samples": 4, "lr": 1e-4, "checkpoint_every": 3}
    stages = [
        {"export": {"formats": ["onnx"], "real_inputs": 1, "random_inputs": 1}},
        {"quantize": {**STAGE, "qat": qat}},
        TIMING,
    ]
    summary = run_recipe(
        load_recipe(write_recipe(stages, **SMALL)), run_dir=tmp_path / "run", until="quantize", quiet=True
    )
    record = json.loads((tmp_path / "run" / "quantize" / "record.json").read_text())
    assert record["metrics"]["qat"]["steps"] == 3
    assert record["metrics"]["net"]["onnx"]["engine"] == "nncf-qat" and summary.passed
    model = onnx.load(str(tmp_path / "run" / "quantize" / "net.int8.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    int8 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    weights = [producers[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]
    assert weights and all(w.op_type == "DequantizeLinear" and w.input[0] in int8 for w in weights)
    assert "FakeQuantize" not in {n.op_type for n in model.graph.node}


def test_stage_refuses_qat_without_onnx_naming_the_field(write_recipe, tmp_path):
    stages = [{"export": {"formats": ["coreml"]}}, {"quantize": {**STAGE, "formats": ["coreml"], "qat": {"steps": 1}}}]
    with pytest.raises(CompressError, match="stages.quantize.formats"):
        run_recipe(load_recipe(write_recipe(stages, **SMALL)), run_dir=tmp_path / "run", quiet=True)


def test_folding_batchnorms_keeps_the_outputs():
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()), nn.Conv2d(8, 3, 1)
    ).eval()
    with torch.no_grad():
        net[0][1].running_mean.uniform_(-1, 1)
        net[0][1].running_var.uniform_(0.5, 2)
    x = torch.rand(1, 3, 8, 8)
    expected = net(x)
    fold_batchnorms(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


def test_qat_pipeline_trains_with_the_batchnorm_statistics_it_has():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    part = Part(
        "net",
        "receiver",
        "per_frame",
        net,
        [TensorSpec("image", (1, 3, 8, 8))],
        [TensorSpec("prediction", (1, 3, 8, 8))],
    )
    QuantizedPipeline(get_family("generic"), [part], (8, 8)).train()
    assert net[0].training and not net[1].training  # one sample per call: batch statistics would be one frame's


def test_the_run_quality_after_quantize_is_that_of_the_shipped_files(write_recipe, tmp_path):
    recipe = load_recipe(
        write_recipe(
            [
                {"export": {"formats": ["onnx"], "real_inputs": 1, "random_inputs": 1}},
                {"quantize": {**STAGE, "formats": ["onnx"]}},
                TIMING,
            ],
            **SMALL,
        )
    )
    summary = run_recipe(recipe, run_dir=tmp_path / "run", until="quantize", quiet=True)
    quality = summary.artifacts["quality"]
    assert quality["measured_on"]["model"] == "the shipped ONNX files through onnxruntime (net int8)"
    assert quality["measured_on"]["samples"] == STAGE["eval_samples"] and set(quality["vs_ground_truth"]) == {
        "psnr",
        "l1",
        "ssim",
    }


def test_the_old_sample_count_key_is_refused_with_its_new_name(write_recipe):
    with pytest.raises(CompressError, match="eval_batches was renamed eval_samples"):
        load_recipe(write_recipe([{"export": {}}, {"quantize": {"eval_batches": 4}}]))
