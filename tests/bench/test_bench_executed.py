"""Host profiles price the graph onnxruntime executes: its optimised graph, NCHWc and plain-path
convs as separate classes, layout reorders as memory traffic, fused and unfused activations."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import export_onnx
from torch import nn

from compress.bench import costmodel, executed, machine

BLOCK = machine.channel_block(machine.this_host().flags)
needs_nchwc = pytest.mark.skipif(BLOCK == 1, reason="onnxruntime blocks channels (NCHWc) only on AVX2/AVX-512 CPUs")


def conv_net(tmp_path: Path, channels: int, act: nn.Module, name: str) -> Path:
    """image -> conv (channels) -> act -> depthwise conv (channels) -> act."""
    model = nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), act, nn.Conv2d(channels, channels, 3, padding=1, groups=channels), act
    )
    return export_onnx(model, (1, 3, 32, 32), tmp_path / f"{name}.onnx")


def classes(costs: list[costmodel.NodeCost]) -> dict[str, list[costmodel.NodeCost]]:
    out: dict[str, list[costmodel.NodeCost]] = {}
    for c in costs:
        out.setdefault(c.op_class, []).append(c)
    return out


@needs_nchwc
def test_the_optimised_graph_of_a_block_aligned_net_has_nchwc_convs_and_reorders(tmp_path):
    path = conv_net(tmp_path, 32, nn.ReLU(), "aligned")
    ops = {(n.domain, n.op_type) for n in executed.optimized_graph(path).graph.node}
    assert {(executed.NCHWC, "Conv"), (executed.NCHWC, "ReorderOutput")} <= ops


@needs_nchwc
def test_reorders_are_priced_as_the_bytes_they_copy(tmp_path):
    costs = executed.analyse(conv_net(tmp_path, 32, nn.ReLU(), "aligned"), BLOCK)
    (reorder,) = classes(costs)["reorder"]
    assert reorder.op_type == "ReorderOutput" and reorder.bytes == 2 * 32 * 32 * 32 * 4  # NCHWc in, NCHW out
    assert costmodel.totals(costs)["reorder.mb"] == pytest.approx(reorder.bytes / 1e6)


@needs_nchwc
def test_a_reorder_prices_its_bytes_beyond_the_spill_size_once_more(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 64, 1), nn.ReLU())  # 64x192x192 floats: 9.4 MB each way
    (reorder,) = classes(executed.analyse(export_onnx(model, (1, 3, 192, 192), tmp_path / "big.onnx"), BLOCK))[
        "reorder"
    ]
    assert reorder.bytes > costmodel.REORDER_SPILL
    assert reorder.features()["reorder_spill.mb"] == pytest.approx((reorder.bytes - costmodel.REORDER_SPILL) / 1e6)


@needs_nchwc
def test_nchwc_convs_carry_the_share_of_the_cache_their_networks_conv_weights_fill(tmp_path):
    path = conv_net(tmp_path, 32, nn.ReLU(), "aligned")  # weights: 32x3x3x3 and 32x1x3x3 floats
    weights = 4 * (32 * 3 * 9 + 32 * 9)
    half = executed.analyse(path, BLOCK, cache_bytes=2 * weights)
    assert {c.cold_share for c in half if c.kernel is not None} == {0.5}
    assert {c.cold_share for c in executed.analyse(path, BLOCK, cache_bytes=weights // 2) if c.kernel} == {1.0}
    conv = next(c for c in half if c.kernel is not None)
    conv.kernel_ms = 0.2
    assert conv.features()[costmodel.KERNEL_COLD] == pytest.approx(0.1)


@needs_nchwc
def test_plain_path_convs_carry_no_cache_share(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 22, 3, padding=1), nn.ReLU(), nn.Conv2d(22, 22, 3, padding=1))
    costs = executed.analyse(export_onnx(model, (1, 3, 32, 32), tmp_path / "odd.onnx"), BLOCK, cache_bytes=1)
    assert all(c.cold_share == 0 for c in costs if c.op_class in ("conv_nchw", "depthwise_nchw"))
    assert any(c.op_class == "conv_nchw" for c in costs)


@needs_nchwc
def test_block_aligned_convs_take_the_nchwc_classes(tmp_path):
    by_class = classes(executed.analyse(conv_net(tmp_path, 32, nn.ReLU(), "aligned"), BLOCK))
    assert len(by_class["conv"]) == 1 and len(by_class["depthwise"]) == 1
    assert "conv_nchw" not in by_class and "depthwise_nchw" not in by_class


@needs_nchwc
def test_channel_counts_off_the_block_are_priced_on_the_plain_path(tmp_path):
    """22 channels: the image stem runs blocked (3 input channels are read as they are, the 22 outputs
    padded), the convs it feeds stay in NCHW (im2col + GEMM, per channel for the depthwise one)."""
    model = nn.Sequential(
        nn.Conv2d(3, 22, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(22, 22, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(22, 22, 3, padding=1, groups=22),
        nn.ReLU(),
    )
    costs = executed.analyse(export_onnx(model, (1, 3, 32, 32), tmp_path / "odd.onnx"), BLOCK)
    kernels = [(c.op_type, c.kernel) for c in costs if c.kernel is not None]
    assert [(op, k.op_class, k.cin, k.cout) for op, k in kernels] == [
        ("Conv", "conv", 3, -(-22 // BLOCK) * BLOCK),
        ("FusedConv", "conv_nchw", 22, 22),  # the Relu fused into it
        ("FusedConv", "depthwise_nchw", 22, 22),
    ]
    assert [c.op_type for c in costs if c.op_class == "reorder"] == ["ReorderOutput"]


def test_a_relu_fuses_into_its_conv_and_costs_nothing_of_its_own(tmp_path):
    costs = executed.analyse(conv_net(tmp_path, 32, nn.ReLU(), "relu"), BLOCK)
    assert not [c for c in costs if c.op_type == "Relu"]
    assert all(c.activation_bytes == 0 for c in costs)


def test_a_fused_sigmoid_adds_its_output_bytes_as_activation_work(tmp_path):
    costs = executed.analyse(conv_net(tmp_path, 32, nn.Sigmoid(), "sigmoid"), BLOCK)
    convs = [c for c in costs if c.kernel is not None]
    assert convs and all(c.activation_bytes == 32 * 32 * 32 * 4 for c in convs)
    assert not [c for c in costs if c.op_type == "Sigmoid"]


def test_a_fused_relu6_is_priced_as_clip_by_its_own_feature(tmp_path):
    costs = executed.analyse(conv_net(tmp_path, 32, nn.ReLU6(), "relu6"), BLOCK)
    convs = [c for c in costs if c.kernel is not None]
    assert convs and all(c.activation == "Clip" for c in convs)
    assert all(c.features()["activation_clip.mb"] == 32 * 32 * 32 * 4 / 1e6 for c in convs)


def test_a_hardswish_fused_into_a_conv_is_priced_by_its_own_feature(tmp_path):
    costs = executed.analyse(conv_net(tmp_path, 32, nn.Hardswish(), "hardswish"), BLOCK)
    fused = [c for c in costs if c.activation == "HardSwish"]
    assert fused and all(c.features()["activation_hardswish.mb"] > 0 for c in fused)
    assert all("activation.mb" not in c.features() for c in fused)


def test_an_unfused_hardswish_is_priced_as_its_own_elementwise_passes(tmp_path):
    """onnxruntime has no HardSwish kernel of its own: where it does not fuse it into the conv before it
    (it does after the stem here, not after the depthwise conv), it runs the op's function, HardSigmoid
    then Mul, each a pass over the tensor."""
    costs = executed.analyse(conv_net(tmp_path, 32, nn.Hardswish(), "hardswish"), BLOCK)
    passes = [c for c in costs if c.op_type in {"HardSigmoid", "Mul"}]
    assert len(passes) == 2 and all(c.op_class == "memory" and c.bytes > 0 for c in passes)


def test_every_node_of_the_optimised_graph_gets_its_shapes(tmp_path):
    costs = executed.analyse(conv_net(tmp_path, 24, nn.Hardswish(), "shapes"), BLOCK)
    assert all(c.bytes > 0 for c in costs if c.op_class != "free")
    assert all(c.macs > 0 and c.kernel is not None for c in costs if c.op_class in {"conv", "conv_nchw"})


def test_a_profile_that_prices_the_executed_graph_analyses_it(tmp_path, tiny_onnx):
    profile = costmodel.DeviceProfile("h", tmp_path / "h.yaml", {1: {"run": 0.0}}, {"graph": costmodel.EXECUTED_GRAPH})
    assert [c.op_type for c in profile.analyse(tiny_onnx)] == [c.op_type for c in executed.analyse(tiny_onnx, 1)]
    exported = costmodel.DeviceProfile("p", tmp_path / "p.yaml", {1: {"run": 0.0}}, {})
    assert "Relu" in [c.op_type for c in exported.analyse(tiny_onnx)]  # the exported graph, fusion guessed
