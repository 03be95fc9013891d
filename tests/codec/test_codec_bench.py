"""The rate-quality benchmark: matched-quality ratios without extrapolation, and its reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compress.codec.bench import SMOKE_OVERRIDES, main, matched_ratio

CURVE = [{"kbit_s": 4.0, "psnr": 24.0}, {"kbit_s": 8.0, "psnr": 28.0}, {"kbit_s": 16.0, "psnr": 32.0}]


def test_the_matched_rate_is_interpolated_in_log_rate_between_measured_points() -> None:
    match = matched_ratio({"kbit_s": 2.0, "psnr": 26.0}, CURVE, "psnr")
    assert match["classical_kbit_s"] == pytest.approx(5.66, abs=0.01)  # sqrt(4 * 8)
    assert match["ratio"] == pytest.approx(2.83, abs=0.01)


@pytest.mark.parametrize("quality, note", [(22.0, "no overlap"), (33.0, "never reached")])
def test_no_ratio_is_given_where_the_curves_do_not_overlap(quality: float, note: str) -> None:
    match = matched_ratio({"kbit_s": 2.0, "psnr": quality}, CURVE, "psnr")
    assert match["ratio"] is None and note in match["note"]


@pytest.mark.slow
def test_the_bench_writes_its_table_curves_json_and_readme_paragraph(call_bundle: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- codec:start -->\nold\n<!-- codec:end -->\n")
    main(
        [
            "--bundle",
            str(call_bundle),
            "--clips",
            "1",
            "--frames",
            "12",
            "--root",
            str(tmp_path),
        ]
    )
    docs = tmp_path / "docs"
    res = json.loads((docs / "codec.json").read_text())
    bundle = res["bundles"][0]
    assert [p["scale"] for p in bundle["generative"]] == [0.125, 0.25, 0.5, 1.0, 2.0, 4.0]
    assert set(bundle["classical"]) == {"x264-veryslow", "x264-zerolatency", "x265-slow", "svt-av1"}
    assert "Rate ratio at matched quality" in (docs / "codec.md").read_text()
    assert (docs / "rate_quality.png").read_bytes()[:4] == b"\x89PNG"
    assert "x264's lowest rate" in readme.read_text() and "old" not in readme.read_text()
    table = (docs / "codec.md").read_text()
    (docs / "codec.md").unlink()
    main(["--from-json", str(docs / "codec.json"), "--root", str(tmp_path)])  # re-rendered, nothing measured
    assert (docs / "codec.md").read_text() == table


def test_the_bench_builds_its_smoke_bundle_with_the_overrides_of_make_smoke() -> None:
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    smoke = makefile.split("SMOKE :=", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    overrides = [s.strip() for s in smoke.split("--set")[1:]]
    assert [o for o in overrides if not o.startswith("stages.bundle.out=")] == SMOKE_OVERRIDES
