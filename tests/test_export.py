"""Export: ONNX (opset 17, simplified, metadata, parity) and Core ML (inspected program), end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest
import torch

from compress.errors import CompressError
from compress.export import (
    COREML_NO_PREDICT,
    coreml_parity,
    export_coreml,
    export_onnx,
    inspect_coreml,
    onnx_parity,
    spectral_norm_modules,
)
from compress.families.base import Part, TensorSpec
from compress.families.registry import get_family
from compress.recipe import load_recipe
from compress.run import run_recipe

BUNDLE = {"name": "demo", "version": "1.2.3", "family": "generic"}


@pytest.fixture(scope="module")
def part() -> Part:
    family = get_family("generic")
    torch.manual_seed(0)
    model = family.build_student(family.resolve_config(None, "student")).eval()
    return family.parts(model)[0]


@pytest.fixture(scope="module")
def onnx_path(part: Part, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(part, tmp_path_factory.mktemp("onnx") / "net.onnx", metadata=BUNDLE)


@pytest.fixture(scope="module", params=["fp16", "fp32"])
def coreml_package(
    request: pytest.FixtureRequest, part: Part, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    path = export_coreml(
        part, tmp_path_factory.mktemp("coreml") / "net.mlpackage", precision=request.param, metadata=BUNDLE
    )
    return request.param, path


def test_onnx_is_opset_17_with_static_shapes(onnx_path: Path, part: Part) -> None:
    model = onnx.load(str(onnx_path))
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*model.graph.input, *model.graph.output]]
    assert dims == [list(s.shape) for s in [*part.inputs, *part.outputs]]
    assert [v.name for v in model.graph.input] == ["image"] and [v.name for v in model.graph.output] == ["output"]


def test_onnx_metadata_names_bundle_part_and_normalization(onnx_path: Path) -> None:
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert {k: props[k] for k in BUNDLE} == BUNDLE
    assert (props["part"], props["role"], props["cadence"]) == ("net", "app", "per_frame")
    assert json.loads(props["normalization"])["image"]["value_range"] == [0.0, 1.0]


def test_onnx_simplify_removes_nodes(onnx_path: Path, part: Part, tmp_path: Path) -> None:
    plain = export_onnx(part, tmp_path / "plain.onnx", simplify=False)
    assert len(onnx.load(str(onnx_path)).graph.node) < len(onnx.load(str(plain)).graph.node)


def test_onnx_parity_within_tolerance(onnx_path: Path, part: Part) -> None:
    parity = onnx_parity(part, onnx_path, [part.example_inputs(seed) for seed in range(3)], rtol=1e-3, atol=1e-4)
    assert parity["output"]["passed"] and parity["output"]["max_rel_err"] < 1e-3


def test_onnx_parity_catches_a_different_network(onnx_path: Path, tmp_path: Path) -> None:
    family = get_family("generic")
    torch.manual_seed(1)  # other weights, same architecture
    other = family.parts(family.build_student(family.resolve_config(None, "student")).eval())[0]
    parity = onnx_parity(other, onnx_path, [other.example_inputs(0)], rtol=1e-3, atol=1e-4)
    assert not parity["output"]["passed"] and parity["output"]["max_abs_err"] > 1e-2


def test_onnx_export_rejects_outputs_that_do_not_match_the_specs(part: Part, tmp_path: Path) -> None:
    wrong = Part(part.name, part.role, part.cadence, part.module, part.inputs, [*part.outputs, part.outputs[0]])
    with pytest.raises(CompressError, match="declares 2 outputs"):
        export_onnx(wrong, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_coreml_program_has_the_part_interface(coreml_package: tuple[str, Path], part: Part) -> None:
    info = inspect_coreml(coreml_package[1])
    assert info["target"] == "iOS16" and info["unsupported_ops"] == [] and info["cpu_only_ops"] == []
    assert info["ops"]["conv"] == sum(isinstance(m, torch.nn.Conv2d) for m in part.module.modules())
    io = [(f["name"], f["shape"], f["dtype"]) for f in info["inputs"] + info["outputs"]]
    assert io == [("image", [1, 3, 32, 32], "FLOAT32"), ("output", [1, 3, 32, 32], "FLOAT32")]
    assert info["inputs"][0]["description"].startswith("degraded frame")
    assert (info["metadata"]["name"], info["metadata"]["part"]) == ("demo", "net")


def test_coreml_weights_follow_the_compute_precision(coreml_package: tuple[str, Path]) -> None:
    precision, path = coreml_package
    assert list(inspect_coreml(path)["weight_dtypes"]) == ["FLOAT16" if precision == "fp16" else "FLOAT32"]


def test_coreml_program_holds_each_numeric_constant_once(coreml_package: tuple[str, Path]) -> None:
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    spec = ct.models.MLModel(str(coreml_package[1]), skip_model_load=True).get_spec()
    main = spec.mlProgram.functions["main"]
    values = [op.attributes["val"] for op in main.block_specializations[main.opset].operations if op.type == "const"]
    # strides, pads, dilations: shared, not one const per conv (pad_type strings come from a later pass)
    numeric = [v.SerializeToString() for v in values if v.type.tensorType.dataType != MIL_pb2.STRING]
    assert len(numeric) > 1 and len(set(numeric)) == len(numeric)


@pytest.mark.skipif(sys.platform != "darwin", reason=COREML_NO_PREDICT)
def test_coreml_parity_on_macos(coreml_package: tuple[str, Path], part: Part) -> None:
    precision, path = coreml_package
    rtol = 2e-2 if precision == "fp16" else 1e-3
    parity = coreml_parity(part, path, [part.example_inputs(seed) for seed in range(2)], rtol=rtol, atol=1e-3)
    assert parity["output"]["passed"]


def _run(tmp_path: Path, stages: str) -> tuple[Path, dict]:
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(f"name: tiny\nversion: 0.2.0\nfamily: generic\nstages: {stages}\n")
    run_dir = tmp_path / "run"
    summary = run_recipe(load_recipe(recipe_path), run_dir=run_dir, quiet=True)
    return run_dir, summary.artifacts


def test_export_stage_writes_both_formats_and_records_parity(tmp_path: Path) -> None:
    run_dir, artifacts = _run(tmp_path, "[{lint: {}}, {export: {random_inputs: 2, real_inputs: 2}}]")
    assert artifacts["exported"] == {"net": {"onnx": "export/onnx/net.onnx", "coreml": "export/coreml/net.mlpackage"}}
    assert artifacts["shipped"]["net"]["coreml"] == {"path": "export/coreml/net.mlpackage", "precision": "fp16"}
    assert artifacts["shipped"]["net"]["onnx"]["precision"] == "fp32"
    assert (run_dir / "export/coreml/net.mlpackage").is_dir()
    record = json.loads((run_dir / "export/record.json").read_text())
    net = record["metrics"]["parts"]["net"]
    assert net["onnx"]["parity"]["output"]["passed"] and record["metrics"]["inputs"]["real"] == {"net": 2}
    props = {p.key: p.value for p in onnx.load(str(run_dir / "export/onnx/net.onnx")).metadata_props}
    assert (props["name"], props["version"], props["model_kind"]) == ("tiny", "0.2.0", "teacher")
    if sys.platform != "darwin":
        assert net["coreml"]["parity_skipped"] == COREML_NO_PREDICT


def test_export_stage_fails_naming_part_and_output_when_parity_fails(tmp_path: Path) -> None:
    # atol 0 and a relative tolerance below float32 rounding: no exporter can pass.
    with pytest.raises(CompressError, match="net: ONNX output differs.*output output"):
        _run(tmp_path, "[{export: {formats: [onnx], rtol: 1.0e-12, atol: 0}}]")


@pytest.mark.slow
@pytest.mark.parametrize("role,config", [("teacher", "demo-64"), ("student", "mobile-64")])
def test_fomm_parts_export_to_both_formats_with_parity(role: str, config: str, tmp_path: Path) -> None:
    family = get_family("fomm")
    build = family.build_teacher if role == "teacher" else family.build_student
    model = build(family.resolve_config(config, role)).eval()
    for part in family.parts(model):
        path = export_onnx(part, tmp_path / f"{part.name}.onnx", metadata=BUNDLE)
        parity = onnx_parity(part, path, [part.example_inputs(seed) for seed in range(2)], rtol=1e-3, atol=1e-4)
        assert all(row["passed"] for row in parity.values()), (part.name, parity)
        info = inspect_coreml(export_coreml(part, tmp_path / f"{part.name}.mlpackage", metadata=BUNDLE))
        assert [f["name"] for f in info["outputs"]] == [s.name for s in part.outputs]
        assert info["unsupported_ops"] == []
        if part.name == "generator.per_frame":
            assert info["cpu_only_ops"] == ["resample"]


class SpectralConv(torch.nn.Module):
    """One spectrally normalised conv (the old hook API, as public SPADE checkpoints use): image -> (y,)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 4, 3, padding=1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.conv(image),)


def _spectral_part() -> Part:
    torch.manual_seed(0)
    net = SpectralConv()
    for _ in range(3):  # training passes move u and v: weight_orig / sigma is no longer weight_orig
        net(torch.rand(1, 3, 8, 8))
    specs = [TensorSpec("image", (1, 3, 8, 8))], [TensorSpec("y", (1, 4, 8, 8))]
    return Part("net", "sender", "per_frame", net.eval(), *specs)


def test_spectral_norm_is_baked_into_the_onnx_weight_and_the_model_keeps_its_hook(tmp_path: Path) -> None:
    part = _spectral_part()
    path = export_onnx(part, tmp_path / "net.onnx")
    graph = onnx.load(str(path)).graph
    assert [n.op_type for n in graph.node] == ["Conv"] and len(graph.initializer) == 2  # weight, bias
    parity = onnx_parity(part, path, [part.example_inputs(seed) for seed in range(2)], rtol=1e-5, atol=1e-6)
    assert parity["y"]["passed"]
    assert hasattr(part.module.conv, "weight_orig") and spectral_norm_modules(part.module) == ["conv"]
