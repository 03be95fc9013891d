"""The cost model: per-node work counted from ONNX shapes, priced by device profiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_models import export_onnx
from torch import nn

from compress.bench import costmodel
from compress.bench.calibrate import IPHONE8_POINTS, reference_models
from compress.errors import CompressError


class DwBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Conv2d(3, 12, 3, padding=1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)

    def forward(self, x):
        y = torch.relu(self.dense(x))
        return self.dw(y) + y


@pytest.fixture
def block(tmp_path: Path) -> Path:
    return export_onnx(DwBlock(), (1, 3, 16, 16), tmp_path / "block.onnx")


def by_class(costs):
    out = {}
    for c in costs:
        out.setdefault(c.op_class, []).append(c)
    return out


def test_conv_macs_come_from_weight_and_output_shapes(block):
    classes = by_class(costmodel.analyse(block))
    (dense,) = classes["conv"]
    (dw,) = classes["depthwise"]
    assert dense.macs == 12 * 16 * 16 * 3 * 3 * 3
    assert dw.macs == 12 * 16 * 16 * 3 * 3


def test_relu_after_a_conv_is_fused_and_free_but_the_residual_add_is_priced(block):
    costs = costmodel.analyse(block)
    assert {c.op_type: c.op_class for c in costs}["Relu"] == "free"
    (add,) = by_class(costs)["memory"]
    assert add.op_type == "Add" and add.bytes == 3 * 12 * 16 * 16 * 4


def test_channel_block_pads_conv_channels_but_not_the_image_input(block):
    dense = by_class(costmodel.analyse(block, channel_block=8))["conv"][0]
    assert dense.macs == 16 * 16 * 16 * 3 * 3 * 3  # 12 output channels compute as 16, 3 input channels stay 3


def test_int8_precision_prices_dense_convs_as_int8_with_one_byte_tensors(block):
    costs = costmodel.analyse(block, precision="int8")
    assert [c.op_class for c in costs if c.op_type == "Conv"] == ["conv_int8", "depthwise"]
    assert by_class(costs)["memory"][0].bytes == 3 * 12 * 16 * 16


class RandomFrames:
    """onnxruntime calibration reader: two random frames for the model's one input."""

    def __init__(self, input_name: str):
        self.items = iter([{input_name: np.random.rand(1, 3, 16, 16).astype(np.float32)} for _ in range(2)])

    def get_next(self):
        return next(self.items, None)


def test_a_qdq_quantized_model_has_its_convs_priced_as_int8(block, tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    quantized = tmp_path / "q.onnx"
    quantize_static(
        str(block),
        str(quantized),
        RandomFrames(onnx.load(str(block)).graph.input[0].name),
        quant_format=QuantFormat.QDQ,
    )
    costs = costmodel.analyse(quantized)
    assert costmodel.is_quantized(onnx.load(str(quantized)))
    assert "conv_int8" in {c.op_class for c in costs}
    assert all(c.op_class == "free" for c in costs if c.op_type in costmodel.QUANT)


def test_a_broadcast_with_a_short_inner_run_counts_one_segment_per_run(tmp_path):
    class Offsets(nn.Module):
        def forward(self, grid):  # 1xKxHxWx2 minus a per-keypoint 1xKx1x1x2 mean, as FOMM's heatmaps do
            return grid - grid.mean(dim=(2, 3), keepdim=True)

    path = export_onnx(Offsets(), (1, 4, 8, 8, 2), tmp_path / "offsets.onnx")
    (sub,) = [c for c in costmodel.analyse(path) if c.op_type == "Sub"]
    assert sub.segments == 4 * 8 * 8  # runs of 2 elements


def test_a_gather_counts_one_block_per_index_and_leading_element(tmp_path):
    class Lookup(nn.Module):  # a CSE lookup's two gathers: rows of a table by a map of ids, then scores[..., 0]
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.randn(32, 5, 4))

        def forward(self, ids, scores):
            return self.table[ids], scores[..., 0]

    path = tmp_path / "lookup.onnx"
    args = (torch.zeros(1, 6, 7, dtype=torch.int64), torch.rand(1, 6, 7, 5, 1))
    torch.onnx.export(Lookup(), args, str(path), opset_version=17, dynamo=False)
    gathers = {c.blocks: c for c in costmodel.analyse(path) if c.op_type == "Gather"}
    assert sorted(gathers) == [6 * 7, 6 * 7 * 5]  # one 5x4 row per id; one float per leading element
    assert gathers[6 * 7].features()["gather.mblock"] == pytest.approx(6 * 7 / 1e6)


@pytest.mark.parametrize(
    "channels, side, axis, aliased",
    [
        (1024, 32, 1, True),  # channel planes 4 KiB apart: every reduced element in one cache set
        (1024, 56, 1, False),  # 12544 bytes apart
        (8, 32, 1, False),  # 4 KiB apart, but no more of them than a cache set has ways
        (64, 64, 3, False),  # along the innermost axis the elements are contiguous
        (4096, 32, 1, True),  # past ALIASED_SATURATED the long-axis term stops growing
    ],
)
def test_an_argmax_counts_its_bytes_as_aliased_only_when_its_stride_is_a_multiple_of_4_kib(
    tmp_path, channels, side, axis, aliased
):
    class Search(nn.Module):
        def forward(self, x):
            return x.argmax(dim=axis, keepdim=True)

    path = export_onnx(Search(), (1, channels, side, side), tmp_path / "argmax.onnx")
    (node,) = [c for c in costmodel.analyse(path) if c.op_type == "ArgMax"]
    feats = node.features()
    assert ("reduction_aliased.mb" in feats) == aliased
    if aliased:
        assert feats["reduction_aliased.mb"] == channels * side * side * 4 / 1e6
        # the long-axis term grows with how far the reduced length passes ALIASED_LONG, up to ALIASED_SATURATED
        long = min(channels, costmodel.ALIASED_SATURATED) / costmodel.ALIASED_LONG - 1
        assert feats["reduction_aliased_long.mb"] == pytest.approx(feats["reduction_aliased.mb"] * long)


def test_a_profile_prices_every_priced_node_and_sums_them(block):
    profile = costmodel.load_profile("iphone8")
    pred = costmodel.predict(block, "profile:iphone8")
    assert pred["ms"] == pytest.approx(sum(ms for _, ms in pred["nodes"]))
    assert pred["ms"] == pytest.approx(profile.predict_ms(costmodel.analyse(block), 1))
    assert pred["ms"] > 0


def test_an_uncalibrated_thread_count_is_refused_with_the_calibrated_ones(block):
    with pytest.raises(CompressError, match="calibrated for threads 1, not 4"):
        costmodel.predict(block, "profile:iphone8", threads=4)


def test_an_unknown_profile_names_the_known_ones():
    with pytest.raises(CompressError, match="known: .*iphone8"):
        costmodel.load_profile("pixel99")


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(CompressError, match="ONNX model not found"):
        costmodel.analyse(tmp_path / "nope.onnx")


def test_the_iphone8_profile_reproduces_its_recorded_mobilenet_predictions(tmp_path):
    """The YAML's coefficients and reference table must match the current cost model and zoo."""
    profile = costmodel.load_profile("iphone8")
    recorded = {(r["network"], r["precision"]): r["predicted_ms"] for r in profile.meta["references"]}
    assert {(n, p) for n, p, _ in IPHONE8_POINTS} == set(recorded)
    path = reference_models(tmp_path, names=["mobilenet_v1_1.0_224"])["mobilenet_v1_1.0_224"]
    for precision in ("fp32", "int8"):
        ms = profile.predict_ms(costmodel.analyse(path, precision), 1)
        assert ms == pytest.approx(recorded[("mobilenet_v1_1.0_224", precision)], abs=0.01)
