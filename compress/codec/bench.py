"""`python -m compress.codec.bench`: rate and quality of calls through bundles vs H.264, H.265, AV1.

    python -m compress.codec.bench [--bundle DIR]... [--clips 3] [--frames 250] [--root .]
    python -m compress.codec.bench --from-json docs/codec.json   # re-render the reports only

Without --bundle it measures the demo bundle (recipes/fomm-mobile-demo.yaml, run or resumed
under exported/bench/runs) and the 256x256 smoke bundle (recipes/fomm-mobile.yaml with the
settings of `make smoke`). Per bundle, on the same held-out synthetic clips at its frame size
and 25 fps:
- the generative path with the manifest's steps scaled by 1/8 ... 4 (tables refitted on the
  training clips for each), every byte of the stream counted;
- x264 (veryslow, and medium + zerolatency), x265 and SVT-AV1, CRF from good to each one's
  floor (its lowest reachable rate), encoder-information SEI stripped;
- the entropy coder (rANS) against Exp-Golomb on the same differences.
Writes docs/codec.md, docs/codec.json, docs/rate_quality.png and the README's codec paragraph.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from compress.checkpoints import portable
from compress.codec import entropy
from compress.codec.call import DEFAULT_FPS, Clip, bitstream_format, encode_stream, kbit_s, quality, read_clip, receive
from compress.codec.classical import CODECS, Codec, encode_clip
from compress.codec.fit import STEPS, fit_clips, fit_tensors
from compress.codec.flow import CallFlow, Observed, load_flow
from compress.codec.format import BitstreamFormat
from compress.codec.packets import PacketEncoder

DEMO = "fomm-mobile-demo"
SMOKE = "fomm-mobile"
# `make smoke`'s overrides (a test keeps them equal): every stage of the full-size recipe, a few
# steps each, on a randomly initialised vox-256 teacher.
SMOKE_OVERRIDES = [
    "stages.distill.steps=2",
    "stages.distill.batch_size=2",
    "stages.distill.train_samples=4",
    "stages.distill.eval_batches=1",
    "stages.prune.iterations=1",
    "stages.prune.importance=magnitude",
    "stages.prune.finetune.steps=1",
    "stages.prune.finetune.batch_size=2",
    "stages.prune.finetune.train_samples=2",
    "stages.prune.finetune.eval_batches=1",
    "stages.quantize.calibration_samples=2",
    "stages.quantize.eval_samples=1",
    "stages.profile.runs=12",
    "stages.profile.warmup=1",
]
STEP_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
CRF_POINTS = 7  # per codec, from its best CRF to its floor
METRICS = ("psnr", "ssim", "ms_ssim")
UNITS = {"psnr": "dB", "ssim": "", "ms_ssim": ""}
BUDGET_KBIT_S, BUDGET_LOSS_DB = 3.0, 0.3  # issue #20, at 25 fps
EXP_GOLOMB_ORDERS = range(0, 9)
RATE_TICKS = (0.5, 1, 2, 5, 10, 20, 50, 100)


@dataclass
class BenchClips:
    """The held-out clips measured, and the training clips tables are refitted on."""

    test: list[Clip]
    test_observed: list[Observed]
    train_observed: list[Observed]


# -- measuring ---------------------------------------------------------------------------
def measure_bundle(label: str, bundle: Path, clips: int, frames: int) -> dict[str, Any]:
    flow = load_flow(bundle)
    fmt = bitstream_format(flow)
    test = [read_clip(f"synthetic:{i}", flow.frame_size, frames) for i in range(clips)]
    data = BenchClips(
        test,
        [flow.observe(c.frames, fmt.reference.qp) for c in test],
        [flow.observe(c, fmt.reference.qp) for c in fit_clips("synthetic", flow.frame_size)],
    )
    unquantized = [
        quality(flow.receive(o.reference, o.reference_values, o.values), o.frames) for o in data.test_observed
    ]
    generative = [generative_point(flow, scaled(flow, fmt, data, s), data, unquantized, s) for s in STEP_SCALES]
    return {
        "label": label,
        "bundle": portable(bundle),  # docs name no machine's folders
        "frame_size": list(flow.frame_size),
        "clips": [c.name for c in test],
        "frames": frames,
        "fps": float(DEFAULT_FPS),
        "unquantized": _mean(unquantized),
        "generative": generative,
        "classical": {
            name: [classical_point(test, codec, crf) for crf in crf_sweep(codec)] for name, codec in CODECS.items()
        },
        "coders": coder_comparison(fmt, data),
    }


def scaled(flow: CallFlow, fmt: BitstreamFormat, data: BenchClips, scale: float) -> BitstreamFormat:
    """The manifest's format with every step times `scale` (tables refitted at those steps)."""
    if scale == 1:
        return fmt
    steps = {(t.part, t.name): t.step * scale for t in fmt.tensors}
    return fmt.model_copy(update={"tensors": fit_tensors(flow, data.train_observed, steps, fmt.key_interval)})


def generative_point(
    flow: CallFlow, fmt: BitstreamFormat, data: BenchClips, unquantized: list[dict], scale: float
) -> dict[str, Any]:
    rows = []
    for clip, observed, exact in zip(data.test, data.test_observed, unquantized):
        stream = encode_stream(fmt, observed, clip.fps)
        received, _ = receive(flow, fmt, stream.data)
        q = quality(received, clip.frames)
        rows.append(
            {
                "kbit_s": kbit_s(len(stream.data), clip),
                "keypoints_kbit_s": kbit_s(stream.packets + stream.length_prefixes, clip),
                "reference_kbit_s": kbit_s(stream.picture + stream.reference_values, clip),
                **q,
                "psnr_loss_db": exact["psnr"] - q["psnr"],
            }
        )
    return {"scale": scale, "steps": {f"{t.part}.{t.name}": t.step for t in fmt.tensors}, **_mean(rows)}


def crf_sweep(codec: Codec) -> list[int]:
    best, floor = codec.crf
    return sorted({round(best + (floor - best) * i / (CRF_POINTS - 1)) for i in range(CRF_POINTS)})


def classical_point(clips: list[Clip], codec: Codec, crf: int) -> dict[str, Any]:
    rows = []
    for clip in clips:
        encoded = encode_clip(clip.frames, clip.fps, codec, crf)
        rows.append({"kbit_s": kbit_s(encoded.bytes, clip), **quality(encoded.frames, clip.frames)})
    return {"crf": crf, **_mean(rows)}


def coder_comparison(fmt: BitstreamFormat, data: BenchClips) -> dict[str, Any]:
    """Mean bits per packet on the test clips at the manifest's steps: rANS as shipped (flags
    and checksum inside its start state), and order-k Exp-Golomb codes (k per tensor, chosen on
    the training clips) in whole bytes plus a flags byte and a CRC-8 byte; for scale, the
    tables' ideal code length of the differences alone."""
    train = [diffs for o in data.train_observed for _, diffs in _packets(fmt, o)]
    orders = [
        min(EXP_GOLOMB_ORDERS, key=lambda k: sum(entropy.exp_golomb_bits(d[i], k) for d in train))
        for i in range(len(fmt.tensors))
    ]
    tables = [entropy.Table(t.frequencies) for t in fmt.tensors]
    test = [packet for o in data.test_observed for packet in _packets(fmt, o)]
    golomb = [2 + math.ceil(sum(entropy.exp_golomb_bits(d, k) for d, k in zip(diffs, orders)) / 8) for _, diffs in test]
    return {
        "rans_bits": round(8 * float(np.mean([len(packet) for packet, _ in test])), 1),
        "exp_golomb_bits": round(8 * float(np.mean(golomb)), 1),
        "ideal_bits": round(float(np.mean([sum(t.bits(d) for d, t in zip(diffs, tables)) for _, diffs in test])), 1),
        "exp_golomb_orders": {f"{t.part}.{t.name}": k for t, k in zip(fmt.tensors, orders)},
    }


def _packets(fmt: BitstreamFormat, observed: Observed) -> list[tuple[bytes, list[np.ndarray]]]:
    """Per frame, the packet and the (clamped) differences it carries."""
    reference = [t.quantize(observed.reference_values[(t.part, t.name)]) for t in fmt.tensors]
    encoder = PacketEncoder(fmt, reference)
    out = []
    for index, values in enumerate(observed.values):
        base = reference if index % fmt.key_interval == 0 else encoder.last
        packet = encoder.encode([t.quantize(values[(t.part, t.name)]) for t in fmt.tensors])
        out.append((packet, [a - b for a, b in zip(encoder.last, base)]))
    return out


def _mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        k: None if any(r[k] is None for r in rows) else round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]
    }


# -- comparing -----------------------------------------------------------------------------
def matched_ratio(point: dict[str, Any], curve: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The classical rate at the generative point's quality, interpolated in log-rate between
    measured points, over the generative rate; no number where the curves do not overlap."""
    quality, rate = point[metric], point["kbit_s"]
    pts = sorted((p["kbit_s"], p[metric]) for p in curve if p[metric] is not None)
    if quality is None or not pts:
        return {"ratio": None, "note": "not measured"}
    best = max(q for _, q in pts)
    floor_rate, floor_quality = pts[0]
    if quality > best:
        return {"ratio": None, "note": f"never reached: the codec's best measured is {_fmt(best, metric)}"}
    if quality <= floor_quality:
        return {
            "ratio": None,
            "note": f"no overlap: at its floor ({floor_rate:.2f} kbit/s) the codec is already at "
            f"{_fmt(floor_quality, metric)}",
        }
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if q0 < quality <= q1:
            matched = math.exp(math.log(r0) + (quality - q0) / (q1 - q0) * (math.log(r1) - math.log(r0)))
            return {"ratio": round(matched / rate, 2), "classical_kbit_s": round(matched, 2), "note": ""}
    return {"ratio": None, "note": "the codec's curve is not monotone around this quality"}


def shipped_point(result: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in result["generative"] if p["scale"] == 1.0)


def _fmt(value: float, metric: str) -> str:
    return f"{value:.2f} dB" if metric == "psnr" else f"{value:.4f}"


# -- reporting -----------------------------------------------------------------------------
def codec_markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Keypoint bitstream vs classical codecs",
        "",
        f"Generated by `{res['command']}` on {res['created_utc']}; raw numbers in docs/codec.json, curves in "
        "docs/rate_quality.png, the format in docs/bitstream.md.",
        "",
        "Every rate is the stream's bytes x 8 / the clip's duration: for the generative path the whole call stream "
        "(header, the reference frame coded once as H.264 intra and amortised over the clip, one packet per frame "
        "with its length prefix); for the classical codecs their elementary stream without encoder-information SEI. "
        "IP/UDP/RTP "
        "headers (40 bytes per packet, 8 kbit/s at 25 packets/s when each frame travels alone) are in neither. "
        "Quality is measured on RGB frames against the camera frames; MS-SSIM only where the frame's shorter side "
        "exceeds 160 pixels.",
        "",
    ]
    for r in res["bundles"]:
        lines += bundle_markdown(r)
    return "\n".join(lines) + "\n"


def bundle_markdown(r: dict[str, Any]) -> list[str]:
    metrics = [m for m in METRICS if r["unquantized"][m] is not None]
    point = shipped_point(r)
    h, w = r["frame_size"]
    lines = [
        f"## {r['label']}",
        "",
        f"Bundle `{r['bundle']}`, {len(r['clips'])} held-out synthetic clips of {r['frames']} frames, "
        f"{w}x{h} at {r['fps']:g} fps. Unquantized keypoints: "
        + ", ".join(f"{m} {_fmt(r['unquantized'][m], m)}" for m in metrics)
        + ".",
        "",
    ]
    lines += _budget(point)
    if all(step >= STEPS[0] for step in point["steps"].values()):
        lines += [
            "The fitter chose the coarsest step for every tensor: this bundle's receiver barely reacts to the values "
            "(an untrained model), so its packets carry little beyond their check words.",
            "",
        ]
    lines += [
        "### Generative path: steps swept (scale 1 = the manifest's)",
        "",
        "| scale | steps | kbit/s | keypoints | reference frame | "
        + " | ".join(metrics)
        + " | PSNR loss vs unquantized |",
        "|---|---|---|---|---|" + "---|" * len(metrics) + "---|",
    ]
    for p in r["generative"]:
        steps = ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in p["steps"].items())
        lines.append(
            f"| {p['scale']:g} | {steps} | {p['kbit_s']:.2f} | {p['keypoints_kbit_s']:.2f} | "
            f"{p['reference_kbit_s']:.2f} | "
            + " | ".join(_fmt(p[m], m) for m in metrics)
            + f" | {p['psnr_loss_db']:.3f} dB |"
        )
    lines += [
        "",
        "### Classical codecs: lowest reachable rate (CRF at its maximum)",
        "",
        "| codec | CRF | kbit/s | " + " | ".join(metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for name, curve in r["classical"].items():
        floor = min(curve, key=lambda p: p["kbit_s"])
        lines.append(
            f"| {name} | {floor['crf']} | {floor['kbit_s']:.2f} | "
            + " | ".join(_fmt(floor[m], m) for m in metrics)
            + " |"
        )
    lines += [
        "",
        f"### Rate ratio at matched quality (classical kbit/s / generative {point['kbit_s']:.2f} kbit/s "
        "at the manifest's steps)",
        "",
        "| codec | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for name, curve in r["classical"].items():
        cells = []
        for m in metrics:
            match = matched_ratio(point, curve, m)
            cells.append(
                f"{match['ratio']:.2f}x ({match['classical_kbit_s']:.2f} kbit/s)"
                if match["ratio"]
                else f"n/a: {match['note']}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    c = r["coders"]
    lines += [
        "",
        "### Entropy coder (bits per packet, test clips, manifest's steps)",
        "",
        "| rANS, flags and CRC-8 in its start state (shipped) "
        "| Exp-Golomb (best order per tensor) + flags byte + CRC-8 byte, whole bytes "
        "| ideal code length of the differences under the tables, nothing else |",
        "|---|---|---|",
        f"| {c['rans_bits']:.1f} | {c['exp_golomb_bits']:.1f} | {c['ideal_bits']:.1f} |",
        "",
        "The format's coder is rANS because of this measurement: "
        f"{c['exp_golomb_bits'] - c['rans_bits']:.1f} bits per packet fewer than Exp-Golomb "
        f"({(c['exp_golomb_bits'] - c['rans_bits']) * r['fps'] / 1000:.2f} kbit/s at {r['fps']:g} fps).",
        "",
    ]
    return lines


def _budget(point: dict[str, Any]) -> list[str]:
    rate_ok = point["kbit_s"] <= BUDGET_KBIT_S
    loss_ok = point["psnr_loss_db"] <= BUDGET_LOSS_DB
    return [
        f"Budget (<= {BUDGET_KBIT_S:g} kbit/s with <= {BUDGET_LOSS_DB:g} dB PSNR loss vs unquantized keypoints): "
        f"{point['kbit_s']:.2f} kbit/s ({'met' if rate_ok else 'missed'}; "
        f"keypoint packets {point['keypoints_kbit_s']:.2f}, "
        f"reference frame {point['reference_kbit_s']:.2f}), loss {point['psnr_loss_db']:.3f} dB "
        f"({'met' if loss_ok else 'missed'}).",
        "",
    ]


def readme_markdown(res: dict[str, Any]) -> str:
    r = res["bundles"][0]
    point = shipped_point(r)
    floor = min(r["classical"]["x264-veryslow"], key=lambda p: p["kbit_s"])
    h, w = r["frame_size"]
    return (
        f"A call through the demo bundle ({w}x{h}, 25 fps, held-out synthetic clips) "
        f"streams **{point['kbit_s']:.2f} kbit/s** "
        f"(keypoint packets {point['keypoints_kbit_s']:.2f}, the reference frame {point['reference_kbit_s']:.2f} over "
        f"{r['frames'] / r['fps']:g} s) at "
        f"PSNR {point['psnr']:.2f} dB; x264's lowest rate on the same clips is {floor['kbit_s']:.2f} kbit/s "
        f"(veryslow, CRF {floor['crf']}) at {floor['psnr']:.2f} dB. `compress call CLIP --bundle B` measures a clip; "
        "docs/codec.md has H.265 "
        "and AV1 too.\n"
    )


def rate_quality_png(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    bundles = res["bundles"]
    fig, axes = plt.subplots(
        len(bundles), len(METRICS), figsize=(4.2 * len(METRICS), 3.4 * len(bundles)), squeeze=False
    )
    for row, r in zip(axes, bundles):
        point = shipped_point(r)
        for ax, m in zip(row, METRICS):
            if r["unquantized"][m] is None:
                ax.text(0.5, 0.5, f"{m}: frames too small", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            gen = r["generative"]
            ax.plot(
                [p["kbit_s"] for p in gen], [p[m] for p in gen], "o-", color="black", label="keypoints (steps x1/8..x4)"
            )
            ax.plot([point["kbit_s"]], [point[m]], "*", color="red", markersize=12, label="manifest's steps")
            for name, curve in r["classical"].items():
                ax.plot([p["kbit_s"] for p in curve], [p[m] for p in curve], ".--", label=name)
            ax.set_xscale("log")
            lo, hi = ax.get_xlim()
            ticks = [t for t in RATE_TICKS if lo <= t <= hi]
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("kbit/s (whole stream)")
            ax.set_ylabel(f"{m} {UNITS[m]}".strip())
            ax.set_title(f"{r['label'].split(' (')[0]}: {m}", fontsize=9)  # labels' details are in codec.md
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(res: dict[str, Any], docs: Path, readme: Path) -> None:
    from compress.results import replace_marked

    docs.mkdir(exist_ok=True)
    (docs / "codec.json").write_text(json.dumps(res, indent=2) + "\n")
    (docs / "codec.md").write_text(codec_markdown(res))
    rate_quality_png(res, docs / "rate_quality.png")
    replace_marked(readme, "codec", readme_markdown(res))


# -- bundles ---------------------------------------------------------------------------------
def default_bundles(out: Path) -> list[tuple[str, Path]]:
    """The demo bundle and the 256x256 smoke bundle, from their recipes (resumed when unchanged)."""
    from compress.recipe import load_recipe
    from compress.run import run_recipe

    demo = run_recipe(load_recipe(DEMO), out=out / "runs", resume=True, quiet=True)
    smoke = run_recipe(
        load_recipe(SMOKE, [*SMOKE_OVERRIDES, f"stages.bundle.out={out / 'smoke-bundle'}"]),
        out=out / "runs",
        resume=True,
        quiet=True,
    )
    return [
        ("demo bundle (FOMM demo teacher -> Mob M-SPADE student, 64x64)", Path(demo.artifacts["bundle"])),
        (
            "smoke-size 256x256 bundle (random-init vox-256 teacher, a few training steps: "
            "rates are real, quality is not a model's)",
            Path(smoke.artifacts["bundle"]),
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", type=Path, action="append", help="a video-call bundle (repeatable; default: demo and smoke bundles)"
    )
    parser.add_argument("--clips", type=int, default=3, help="held-out synthetic clips per bundle")
    parser.add_argument("--frames", type=int, default=250, help="frames per clip (250 = 10 s at 25 fps)")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="the repository: docs and README.md are written there (default: the current directory)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where the recipes' runs go (default: ROOT/exported/bench)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="CODEC_JSON",
        help="measure nothing: rewrite codec.md, rate_quality.png and the README paragraph from a codec.json",
    )
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' progress bars, as in the CLI
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        write_reports(res, root / "docs", root / "README.md")
        return
    bundles = (
        [(f"bundle {b}", b) for b in args.bundle]
        if args.bundle
        else default_bundles(args.out or root / "exported" / "bench")
    )
    res = {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m compress.codec.bench", *argv]),
        "bundles": [measure_bundle(label, path, args.clips, args.frames) for label, path in bundles],
    }
    write_reports(res, root / "docs", root / "README.md")
    print(codec_markdown(res))


if __name__ == "__main__":
    main()
