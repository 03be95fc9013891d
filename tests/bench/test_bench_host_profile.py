"""Host profiles describe their machine: fingerprint, channel block from the CPU flags, the
mismatch warning, and a calibration (on a tiny set) that records all of it with int8 terms."""

from __future__ import annotations

import warnings

import pytest
import yaml

from compress.bench import calibrate, costmodel, machine

CPUINFO = (
    "processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni amx_int8\n\n"
    "processor\t: 1\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni amx_int8\n"
)


def test_cpuinfo_gives_the_model_and_every_flag(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    model, flags = machine.read_cpuinfo(path)
    assert model == "Example CPU 9000"
    assert {"avx2", "avx512f", "avx512_vnni", "amx_int8"} <= flags


def test_the_last_level_cache_is_the_highest_level_sysfs_lists(tmp_path):
    for index, (level, size) in enumerate([(1, "48K"), (2, "1024K"), (3, "32768K"), (1, "32K")]):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "level").write_text(f"{level}\n")
        (tmp_path / f"index{index}" / "size").write_text(f"{size}\n")
    assert machine.last_level_cache_bytes(tmp_path) == 32 * 2**20
    assert machine.last_level_cache_bytes(tmp_path / "missing") == 0


def test_numpy_s_cpu_detection_agrees_with_cpuinfo_on_the_flags_both_report():
    """numpy's detection is the fallback off Linux; where both exist they must tell the same story."""
    _, cpuinfo = machine.read_cpuinfo()
    if not cpuinfo:
        pytest.skip("no /proc/cpuinfo to compare with")
    both = {"avx2", "avx512f", "avx512_vnni"}  # in numpy 2's feature table (AVX-VNNI and AMX are not)
    assert machine.numpy_flags() & both == cpuinfo & both


@pytest.mark.parametrize("flags, block", [(("avx2", "avx512f"), 16), (("avx2",), 8), ((), 1)])
def test_the_channel_block_follows_the_cpu_flags(flags, block):
    assert machine.channel_block(flags) == block


def test_differences_name_cpu_flags_and_runtime():
    recorded = machine.HostFingerprint("AMD EPYC", ("avx2",), "1.17.0")
    here = machine.HostFingerprint("Intel Xeon", ("avx2", "avx512f", "amx_int8"), "1.20.1")
    assert machine.differences(recorded, here) == [
        "CPU 'AMD EPYC' vs 'Intel Xeon' here",
        "flags +amx_int8 +avx512f here",
        "onnxruntime 1.17.0 vs 1.20.1 here",
    ]
    assert machine.differences(here, here) == []


def host_profile(tmp_path, fingerprint: machine.HostFingerprint):
    path = tmp_path / "host-x86.yaml"
    data = {"device": "host-x86", "machine": fingerprint.to_json(), "calibrations": {1: {"coefficients": {"run": 1}}}}
    path.write_text(yaml.safe_dump(data))
    return costmodel.load_profile("host-x86", path)


def test_a_host_profile_from_another_machine_warns_once_with_how_to_recalibrate(tmp_path, tiny_onnx):
    elsewhere = machine.HostFingerprint("Some Other CPU", (), "0.0.1")
    with pytest.warns(machine.HostMismatchWarning) as caught:
        costmodel.predict(tiny_onnx, host_profile(tmp_path, elsewhere))
    (warning,) = caught
    message = str(warning.message)
    assert "\n" not in message and "CPU 'Some Other CPU'" in message and "onnxruntime 0.0.1" in message
    assert machine.RECALIBRATE in message


def test_a_host_profile_of_this_machine_predicts_silently_with_its_flags_block(tmp_path, tiny_onnx):
    here = machine.this_host()
    profile = host_profile(tmp_path, here)
    assert profile.channel_block == machine.channel_block(here.flags)
    with warnings.catch_warnings():
        warnings.simplefilter("error", machine.HostMismatchWarning)
        costmodel.predict(tiny_onnx, profile)


def test_a_tiny_host_calibration_records_the_machine_int8_terms_and_its_interval(tmp_path):
    """The calibration pipeline end to end on 2 nets (1 quantized), one micro-graph shape and a few kernels."""
    out = calibrate.calibrate_host(
        tmp_path,
        out=tmp_path / "host.yaml",
        rounds=2,
        seeds=[3, 5],
        int8_seeds=[3],
        micro_shapes=[(8, 16, 16)],
        argmax_shapes=[(16, 32, 32)],
        kernel_sample=40,
        adaptive_rounds=1,
    )
    profile = costmodel.load_profile("host-x86", out)
    assert profile.meta["machine"] == machine.this_host().to_json()
    assert profile.prices_executed_graph and (tmp_path / profile.meta["kernels"]).is_file()
    coef = profile.coef(1)
    assert {"conv_int8.gmac", "conv_int8.mtap", "conv_int8.mb"} <= set(coef)
    interval = profile.meta["calibrations"][1]["interval"]
    assert [row["network"] for row in interval["leave_one_out"]] == ["convnet-003", "convnet-005"]
    errors = [abs(r["relative_error"]) for r in interval["leave_one_out"] if r["relative_error"] is not None]
    assert interval["relative_error_bound"] == max(errors)
    assert {"Conv", "GridSample", "Softmax"} <= set(interval["reference_op_types"])
