"""The bench reports (compress/results.py) render from the results JSON alone, for any family's task."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from compress import results
from compress.families.registry import get_family
from compress.families.task import Metric

PARTS = ["enc", "ctx", "dec"]


def metric(name: str, unit: str, higher: bool, against: tuple[str, ...] = ("ground_truth", "teacher")) -> dict:
    return Metric(name, unit, higher, against=against).to_json()  # type: ignore[arg-type]


def row(model: str, precision: str, quality: dict[str, float], teacher_quality: dict[str, float], **extra) -> dict:
    return {
        "model": model,
        "kind": "student",
        "params": 1234,
        "precision": precision,
        "mb": 0.5,
        "gflops": {"enc": 0.1, "ctx": 0.2, "dec": 0.3},
        "host_ms": {"enc": {"1": 2.0, "2": 1.5}, "ctx": {"1": 100.0, "2": 90.0}, "dec": {"1": 3.0, "2": 2.5}},
        "iphone8_fps": {"enc": 400.0, "ctx": 10.0, "dec": 100.0},
        "quality": {"vs_ground_truth": quality, "vs_teacher": teacher_quality},
        **extra,
    }


def result(
    metrics: list[dict],
    baseline: dict[str, float] | None,
    student: dict[str, float],
    teacher: dict[str, float],
    roles: tuple[str, str, str] = ("sender", "receiver", "receiver"),
) -> dict:
    """A results dict as `run` writes it; parts enc (per frame), ctx (per call), dec (per frame)."""
    names = [m["name"] for m in metrics]
    vs_teacher = {n: 0.5 for n in names}
    return {
        "created_utc": "2026-01-01T00:00:00+00:00",
        "host": {"processor": "x86_64"},
        "command": "make bench",
        "family": "fam",
        "task": {
            "description": "a task",
            "primary_metric": names[0],
            "metrics": metrics,
            "baseline_label": "output = input",
        },
        "parts": [
            {"name": p, "role": r, "cadence": c}
            for p, r, c in zip(PARTS, roles, ("per_frame", "per_call", "per_frame"))
        ],
        "recipe": {"name": "fam-demo", "student": "small", "comparison": "fam-pruned"},
        "eval": {"data": "synthetic", "limit": 2, "samples": 16, "input_size": [32, 32]},
        "latency_runs": 3,
        "baseline": None if baseline is None else {**baseline, "samples": 16},
        "rows": [
            row("teacher", "fp32", teacher, vs_teacher),
            row("distilled student", "fp32", student, vs_teacher),
            row("distilled + pruned", "int8", student, vs_teacher, shipped=True),
        ],
        "stage_wall_s": {"fam-demo": {"lint": 1.0, "distill": 2.0}, "fam-pruned": {"prune": 3.0}},
        "prune": {
            "targets": {"gflops": 0.5},
            "quality_before": {"vs_ground_truth": teacher},
            "quality_after": {"vs_ground_truth": student},
        },
        "quantize": None,
        "loss_curve": "/nonexistent/loss.png",
    }


# A video-call task whose primary metric is higher-is-better, with a metric only against the teacher ...
PSNR_TASK = [metric("psnr", "dB", True), metric("l1", "", False), metric("kp", "", False, ("teacher",))]
# ... and an on-device task whose primary metric is lower-is-better.
ERROR_TASK = [metric("error", "px", False), metric("accuracy", "%", True)]


def header(markdown: str, first: str) -> list[str]:
    found = next(row for row in markdown.splitlines() if row.startswith(first))
    return [c.strip() for c in found.strip("|").split("|")]


def test_quality_columns_come_from_the_task_metrics():
    psnr = results.results_markdown(
        result(PSNR_TASK, {"psnr": 20.0, "l1": 0.05}, {"psnr": 24.0, "l1": 0.04}, {"psnr": 25.0, "l1": 0.03})
    )
    assert header(psnr, "| model")[-5:] == [
        "psnr vs GT",
        "l1 vs GT",
        "psnr vs teacher",
        "l1 vs teacher",
        "kp vs teacher",
    ]
    assert "psnr (dB, higher is better, primary)" in psnr and "kp (lower is better, vs teacher only)" in psnr
    assert 'Baseline "output = input": psnr 20.00 dB, l1 0.0500.' in psnr

    error = results.results_markdown(
        result(
            ERROR_TASK,
            {"error": 3.0, "accuracy": 50.0},
            {"error": 2.0, "accuracy": 60.0},
            {"error": 1.9, "accuracy": 61.0},
            roles=("app", "app", "app"),
        )
    )
    assert header(error, "| model")[-4:] == ["error vs GT", "accuracy vs GT", "error vs teacher", "accuracy vs teacher"]
    assert "psnr" not in error and "error (px, lower is better, primary)" in error
    assert (
        "| teacher / distilled student (table above) | 1.90 px / 2.00 px: 0.10 px (5.3%) worse (target <= 15% worse) |"
        in error
    )


def test_parts_come_from_cadence_not_names():
    res = result(PSNR_TASK, None, {"psnr": 24.0, "l1": 0.04}, {"psnr": 25.0, "l1": 0.03})
    assert results.per_frame_parts(res) == ["enc", "dec"]
    r = res["rows"][0]
    assert results.per_frame(r, res, "host_ms") == 5.0  # enc + dec; the per-call ctx (100 ms) is left out
    assert results.per_frame(r, res, "gflops") == pytest.approx(0.4)
    md = results.results_markdown(res)
    assert header(md, "| model")[3:8] == [
        "GFLOPs enc / ctx / dec",
        "host ms 1 thr per frame (enc + dec)",
        "host ms 2 thr",
        "iPhone 8 fps enc (pred.)",
        "iPhone 8 fps dec (pred.)",
    ]
    # A video call: sender (enc, 400 fps) and receiver (dec, 100 fps) run on two phones; the receiver is the busiest.
    assert results.device_fps(r, res) == pytest.approx(100.0)
    # On one phone the per-frame parts run one after the other: 1 / (1/400 + 1/100) = 80 fps.
    one_phone = {**res, "parts": [{**p, "role": "app"} for p in res["parts"]]}
    assert results.device_fps(r, one_phone) == pytest.approx(80.0)


def test_part_records_take_cadence_and_role_from_the_family():
    family = get_family("generic")
    model = family.build_student(family.resolve_config("student-32", "student"))
    assert results.part_records(family, model) == [
        {"name": p.name, "role": p.role, "cadence": p.cadence} for p in family.parts(model)
    ]


@pytest.mark.parametrize(
    "task, baseline, student, teacher, beats",
    [
        (PSNR_TASK, {"psnr": 20.0, "l1": 0.05}, {"psnr": 24.0, "l1": 0.04}, {"psnr": 25.0, "l1": 0.03}, True),
        (PSNR_TASK, {"psnr": 26.0, "l1": 0.05}, {"psnr": 24.0, "l1": 0.04}, {"psnr": 25.0, "l1": 0.03}, False),
        (
            ERROR_TASK,
            {"error": 3.0, "accuracy": 50.0},
            {"error": 2.0, "accuracy": 40.0},
            {"error": 1.9, "accuracy": 61.0},
            True,
        ),
        (
            ERROR_TASK,
            {"error": 1.0, "accuracy": 50.0},
            {"error": 2.0, "accuracy": 60.0},
            {"error": 1.9, "accuracy": 61.0},
            False,
        ),
    ],
)
def test_beats_baseline_in_the_primary_metrics_direction(task, baseline, student, teacher, beats):
    res = result(task, baseline, student, teacher)
    assert results.beats_baseline(res) is beats
    p = task[0]["name"]
    line = next(row for row in results.checks_markdown(res) if row.startswith('| student beats "output = input"'))
    assert line.startswith(f'| student beats "output = input" ({p} ') and line.endswith(
        f"| {'yes' if beats else 'no'} |"
    )


def test_no_baseline_no_verdict():
    res = result(ERROR_TASK, None, {"error": 2.0, "accuracy": 60.0}, {"error": 1.9, "accuracy": 61.0})
    assert results.beats_baseline(res) is None
    md = results.results_markdown(res)
    assert "student beats" not in md and "Baseline" not in md


def test_worse_follows_the_direction():
    higher, lower = Metric("psnr", "dB", True), Metric("error", "", False)
    assert results.worse(higher, 25.0, 24.0) == pytest.approx(0.04)
    assert results.worse(lower, 2.0, 2.2) == pytest.approx(0.1)
    assert results.worse(lower, 2.0, 1.8) == pytest.approx(-0.1)
    assert results._worse_text(lower, 2.0, 1.8) == "0.20 (10.0%) better"


def test_reports_render_from_json_under_root(tmp_path: Path):
    """`--from-json` rewrites results.md, pareto.png and the README headline under --root, measuring nothing."""
    res = result(
        ERROR_TASK, {"error": 3.0, "accuracy": 50.0}, {"error": 2.0, "accuracy": 60.0}, {"error": 1.9, "accuracy": 61.0}
    )
    (tmp_path / "docs").mkdir()
    source = tmp_path / "in.json"
    source.write_text(json.dumps(res))
    (tmp_path / "README.md").write_text("# x\n<!-- headline:start (by make bench) -->\nold\n<!-- headline:end -->\n")
    results.main(["--root", str(tmp_path), "--from-json", str(source)])
    assert json.loads((tmp_path / "docs" / "results.json").read_text()) == res
    assert (tmp_path / "docs" / "pareto.png").stat().st_size > 0
    readme = (tmp_path / "README.md").read_text()
    assert header(readme, "| |") == [
        "",
        "MB",
        "GFLOPs per frame",
        "iPhone 8 fps (busiest phone, predicted)",
        "host fps 1 thread",
        "error vs GT",
        "accuracy vs GT",
    ]
    assert "| teacher (fam, 32x32) | 0.50 | 0.400 | 100 | 200 | 1.90 | 61.00 |" in readme
    assert "| shipped student (small, distilled + pruned + int8) |" in readme
    assert (tmp_path / "docs" / "results.md").read_text() == results.results_markdown(copy.deepcopy(res))


def test_a_suffix_gives_another_familys_reports_their_own_names_and_headline_page(tmp_path: Path):
    res = result(PSNR_TASK, {"psnr": 20.0, "l1": 0.1}, {"psnr": 22.0, "l1": 0.05}, {"psnr": 23.0, "l1": 0.04})
    (tmp_path / "docs" / "models").mkdir(parents=True)
    source = tmp_path / "in.json"
    source.write_text(json.dumps(res))
    page = tmp_path / "docs" / "models" / "fam.md"
    page.write_text("<!-- headline:start -->\n<!-- headline:end -->\n")
    args = ["--root", str(tmp_path), "--from-json", str(source), "--suffix=-fam"]
    results.main([*args, "--headline-doc", "docs/models/fam.md"])
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == [
        "models",
        "pareto-fam.png",
        "results-fam.json",
        "results-fam.md",
    ]
    assert "![size vs quality](pareto-fam.png)" in (tmp_path / "docs" / "results-fam.md").read_text()
    assert "details in docs/results-fam.md" in page.read_text()


def test_a_suffix_that_is_not_a_file_name_exits_2(tmp_path: Path):
    with pytest.raises(SystemExit) as exc:
        results.main(["--root", str(tmp_path), "--from-json", "x.json", "--suffix", "../fam"])
    assert exc.value.code == 2


def test_without_a_comparison_the_stage_table_has_the_demo_recipe_only():
    res = result(PSNR_TASK, None, {"psnr": 22.0, "l1": 0.05}, {"psnr": 23.0, "l1": 0.04})
    res["recipe"]["comparison"], res["stage_wall_s"] = None, {"fam-demo": {"lint": 1.0}}
    md = results.results_markdown(res)
    assert "| fam-demo | 1.0 |" in md and "pruned teacher" not in md


def test_models_table_goes_through_the_recipes_family(write_recipe):
    recipe = write_recipe([{"lint": {}}], teacher={"config": "teacher-32"}, student={"config": "student-32"})
    family, table = results.models_table([recipe])
    assert family == "generic"
    lines = table.splitlines()
    assert [row.split("|")[1:3] for row in lines if "**all**" in row] == [
        [" teacher-32 ", " teacher "],
        [" student-32 ", " student "],
    ]


def test_the_shipped_row_is_the_precision_the_quantize_stage_shipped():
    res = result(PSNR_TASK, None, {"psnr": 22.0, "l1": 0.05}, {"psnr": 23.0, "l1": 0.04})
    res["rows"].insert(2, row("distilled + pruned", "fp32", {"psnr": 22.0, "l1": 0.05}, {"psnr": 1.0, "l1": 1.0}))
    assert results.shipped_precision(res) is None  # no quantize stage
    res["quantize"] = {p: {"onnx": {"shipped": "fp32"}} for p in PARTS}  # int8 was slower on the host
    results.mark_shipped(res, results.shipped_precision(res))
    assert [(r["model"], r["precision"]) for r in res["rows"] if r["shipped"]] == [("distilled + pruned", "fp32")]
    res["quantize"]["dec"]["onnx"]["shipped"] = "int8"
    assert results.shipped_precision(res) == "int8"
