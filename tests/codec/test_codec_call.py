"""`compress call`: a clip through a bundle's sender, stream and receiver, measured and previewed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from compress.bundle import load_manifest
from compress.cli import main
from compress.codec.call import run_call
from compress.codec.stream import read_stream
from compress.data.synthetic import render_clip
from tests.data.media_writers import write_mp4

FRAMES = 20


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def synthetic_call(call_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_call("synthetic", call_bundle, tmp_path_factory.mktemp("synthetic-call"), frames=FRAMES)


def test_a_call_on_a_synthetic_clip_writes_the_stream_the_received_video_and_the_preview(synthetic_call: dict) -> None:
    out = synthetic_call["outputs"]
    assert _frames(Path(out["received_video"])).shape == (FRAMES, 32, 32, 3)
    assert _frames(Path(out["preview_video"])).shape == (FRAMES, 32, 96, 3)  # camera | received | classical
    assert Path(out["preview_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(out["report"]).read_text())["kbit_s"] == synthetic_call["kbit_s"]


def test_the_reported_rate_is_the_stream_files_bytes_times_8_over_the_duration(synthetic_call: dict) -> None:
    size = Path(synthetic_call["outputs"]["bitstream"]).stat().st_size
    assert synthetic_call["kbit_s"] == round(size * 8 / (FRAMES / 25) / 1000, 3)
    parts = synthetic_call["rate_kbit_s"]
    assert abs(parts["keypoints"] + parts["reference_frame"] + parts["stream_header"] - synthetic_call["kbit_s"]) < 0.01


def test_the_stream_file_alone_decodes_every_frame(synthetic_call: dict, call_bundle: Path) -> None:
    stream = read_stream(
        Path(synthetic_call["outputs"]["bitstream"]).read_bytes(), load_manifest(call_bundle).bitstream
    )
    assert len(stream.frames) == FRAMES and synthetic_call["decoded"]["concealed"] == 0


def test_the_report_separates_quantization_cost_and_the_classical_codec(synthetic_call: dict) -> None:
    quality = synthetic_call["quality"]
    assert quality["quantization_cost"]["psnr"] == pytest.approx(
        quality["unquantized"]["psnr"] - quality["received"]["psnr"], abs=1e-3
    )
    assert quality["received"]["ms_ssim"] is None  # 32x32 is too small for five scales
    assert (
        synthetic_call["classical"]["codec"] == "x264-veryslow"
        and synthetic_call["transport_overhead_kbit_s"]["ipv4_udp_rtp"] > 0
    )


def test_a_users_mp4_of_another_size_and_rate_is_cropped_resized_and_timed(call_bundle: Path, tmp_path: Path) -> None:
    clip = (render_clip(9, 15, (40, 56)).frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    video = write_mp4(tmp_path / "user clip.mp4", clip, fps=10)
    report = run_call(str(video), call_bundle, tmp_path / "out")
    assert (report["frames"], report["fps"], report["frame_size"]) == (15, 10.0, [32, 32])
    assert report["kbit_s"] == round((tmp_path / "out" / "call.kps").stat().st_size * 8 / 1.5 / 1000, 3)
    assert _frames(tmp_path / "out" / "received.mp4").shape == (15, 32, 32, 3)
    assert (
        _frames(tmp_path / "out" / "preview.mp4").shape == (15, 32, 96, 3)
        and (tmp_path / "out" / "preview.png").is_file()
    )


def test_the_cli_prints_the_report_as_json(call_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["call", "synthetic:1", "--bundle", str(call_bundle), "--frames", "5", "--out", str(tmp_path), "--json"])
    assert json.loads(capsys.readouterr().out)["frames"] == 5


def test_the_cli_prints_rate_and_quality_lines(
    call_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(["call", "synthetic", "--bundle", str(call_bundle), "--frames", "5", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "kbit/s = keypoints" in out and "unquantized values" in out and "x264-veryslow crf" in out


@pytest.mark.parametrize("clip, message", [("missing.mp4", "no such video"), ("broken.mp4", "cannot read this video")])
def test_a_bad_clip_exits_2_naming_the_file(
    call_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture, clip: str, message: str
) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SystemExit) as exit_:
        main(["call", str(tmp_path / clip), "--bundle", str(call_bundle), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and clip in err and message in err
    assert not (tmp_path / "out").exists()


def test_a_bundle_without_a_bitstream_format_is_refused_with_the_command_that_adds_one(
    call_bundle: Path, tmp_path: Path
) -> None:
    bundle = shutil.copytree(call_bundle, tmp_path / "old-bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["bitstream"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="compress codec fit"):
        run_call("synthetic", bundle, tmp_path / "out", frames=3)
