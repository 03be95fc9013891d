"""MODEL_CARD.md: what the bundle is for, how good and fast it is, and how it was made.

Written from the manifest alone, so the card can never disagree with it. The opening and the
words for when parts run follow the bundle's flow: a video call between two phones, or one
app on one device.
"""

from __future__ import annotations

from compress.bench.interval import interval_text
from compress.bundle.manifest import InputTensor, Manifest, MetricEntry, RowGate, Tensor

NOT_MEASURED = "not measured"
# When a part runs, in each flow's words (the manifest's cadences are per_call and per_frame).
RUNS = {
    "video_call": {"per_call": "once per call", "per_frame": "every frame"},
    "on_device": {"per_call": "once per session", "per_frame": "every frame"},
}


def render_card(manifest: Manifest) -> str:
    m = manifest
    sections = [
        f"# {m.name} {m.version}\n\n{m.description or f'A {m.family} model compressed for phones.'}",
        _intended_use(m),
        _parts(m),
        _assets(m),
        _tensors(m),
        _quality(m),
        _latency(m),
        _size(m),
        _limitations(m),
        _provenance(m),
    ]
    return "\n\n".join(s.rstrip() for s in sections if s) + "\n"


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _intended_use(m: Manifest) -> str:
    task = f"{m.task.description[:1].upper()}{m.task.description[1:]}, with the {m.family} family"
    snippets = ", ".join(f"`{d.path}`" for d in m.documents if d.path.startswith("snippets/"))
    how = f" The snippets show it with the bundle's names: {snippets}." if snippets else ""
    return (
        "## Intended use\n\n" + (_call_use(m, task) if m.flow == "video_call" else _app_use(m, task)) + how + _misuse(m)
    )


def _call_use(m: Manifest, task: str) -> str:
    senders = [p.name for p in m.parts if p.role == "sender"]
    receivers = [p.name for p in m.parts if p.role == "receiver"]
    flow = []
    if senders:
        flow.append(
            f"the sending phone runs {', '.join(senders)} on its camera frames "
            "and sends the (small) outputs instead of video"
        )
    if receivers:
        flow.append(f"the receiving phone runs {', '.join(receivers)} to render the frames")
    return (
        f"{task}, in a video call between two phones: {'; '.join(flow)}. "
        "Per-call parts run once on the reference frame at the start of a call, per-frame parts on every frame."
    )


def _app_use(m: Manifest, task: str) -> str:
    parts = ", ".join(f"{p.name} ({RUNS['on_device'][p.cadence]})" for p in m.parts)
    once = any(p.cadence == "per_call" for p in m.parts)
    return (
        f"{task}, on one device: one app runs every part: {parts}."
        + (
            " Parts that run once per session do so when the app starts (e.g. per video or scene),"
            " before the per-frame parts."
            if once
            else ""
        )
        + " Inputs come from the app or from the same-named output of a part that ran before."
    )


def _misuse(m: Manifest) -> str:
    if m.flow != "video_call":
        return ""
    return "\n\nNot intended for identity verification, or for animating a person's face without their consent."


def _parts(m: Manifest) -> str:
    rows = [
        [
            p.name,
            p.role,
            RUNS[m.flow][p.cadence],
            fmt,
            f.precision,
            f"`{f.path}`",
            f"{f.bytes / 1e6:.3f}",
            f"`{f.sha256[:12]}`",
        ]
        for p in m.parts
        for fmt, f in p.files.items()
    ]
    return "## Parts\n\n" + _table(["part", "role", "runs", "format", "precision", "file", "MB", "sha256"], rows)


def _assets(m: Manifest) -> str:
    if not m.assets:
        return ""
    rows = [
        [
            a.name,
            f"`{a.path}`",
            a.dtype,
            "x".join(map(str, a.shape)) or "scalar",
            f"{a.bytes / 1e6:.3f}",
            f"`{a.sha256[:12]}`",
            a.description,
        ]
        for a in m.assets
    ]
    return (
        "## Assets\n\nConstants the app needs besides the models: raw little-endian values in C order, no header.\n\n"
        + _table(["asset", "file", "dtype", "shape", "MB", "sha256", "description"], rows)
    )


def _tensors(m: Manifest) -> str:
    out = ["## Inputs and outputs"]
    for p in m.parts:
        tensors = [("in", t) for t in p.inputs] + [("out", t) for t in p.outputs]
        rows = [
            [way, t.name, "x".join(map(str, t.shape)), t.dtype, t.layout, _range(t), t.normalization, _feed(t)]
            for way, t in tensors
        ]
        out.append(
            f"### {p.name}\n\n"
            + _table(["", "name", "shape", "dtype", "layout", "range", "normalization", "comes from"], rows)
        )
    return "\n\n".join(out)


def _range(t: Tensor) -> str:
    return f"[{t.value_range[0]:g}, {t.value_range[1]:g}]" if t.value_range else "-"


def _feed(t: Tensor) -> str:
    if not isinstance(t, InputTensor):
        return "-"
    f = t.feed
    if f.source == "part_output":
        return f"{f.part}.{f.output}" + (f" on the {f.frame.replace('_', ' ')}" if f.frame else "")
    return "the app" if f.source == "app_input" else f"the {f.source.replace('_', ' ')}"


def _quality(m: Manifest) -> str:
    """One column per task metric (unit and direction in the header), one row per reference."""
    q = m.metrics.quality
    groups = {"vs ground truth": q.vs_ground_truth, "vs teacher": q.vs_teacher}
    measured = {label: values for label, values in groups.items() if values}
    metrics = m.task.metrics
    extra = sorted(
        {k for values in measured.values() for k in values} - {x.name for x in metrics}
    )  # quality keys the task does not declare
    names = [x.name for x in metrics] + extra
    text = [
        "## Quality",
        f"Primary metric: {m.task.primary_metric}."
        + "".join(f" {x.name}: {x.description}." for x in metrics if x.description),
    ]
    if q.measured_on:
        text.append(
            f"Measured on {q.measured_on.model}, on {q.measured_on.data}: {q.measured_on.samples} samples. "
            "Check it on your own data."
        )
    if measured:
        text.append(
            _table(
                ["", *(_metric_header(x) for x in metrics), *extra],
                [[label, *(values.get(n) for n in names)] for label, values in measured.items()],
            )
        )
    text += [
        f"{label.capitalize()}: {NOT_MEASURED} (no stage of the run reported it; the manifest holds null)."
        for label, values in groups.items()
        if not values
    ]
    return "\n\n".join(text)


def _metric_header(metric: MetricEntry) -> str:
    unit = f"{metric.unit}, " if metric.unit else ""
    return f"{metric.name} ({unit}{'higher' if metric.higher_is_better else 'lower'} is better)"


def _latency(m: Manifest) -> str:
    rows = [
        [
            r.part,
            r.format,
            r.precision,
            r.device,
            r.source,
            r.threads,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.fps,
            interval_text(r.interval_ms),
            "-" if r.extrapolated_share is None else f"{r.extrapolated_share * 100:.0f} %",
            _row_gate(r.gate),
        ]
        for r in m.metrics.latency
    ]
    header = ["part", "format", "precision", "device", "source", "threads", "p50 ms", "p90 ms", "p99 ms", "fps"]
    body = (
        _table([*header, "interval ms", "extrapolated", "gate"], rows)
        if rows
        else f"{NOT_MEASURED} (the recipe has no profile stage)."
    )
    gates = [[g.name, g.target, g.value, "pass" if g.passed else "FAIL", g.detail] for g in m.metrics.gates]
    gate_table = "\n\n### Gates\n\n" + _table(["gate", "target", "value", "verdict", "detail"], gates) if gates else ""
    return (
        (
            "## Latency\n\n"
            "`measured`: timed on the device; "
            "`predicted`: a cost-model estimate from a device profile, not a measurement; its interval is where the "
            "true latency lies with the profile's nominal coverage, and `extrapolated` the share of the estimate in "
            "op types no reference network of the profile has (docs/latency.md).\n\n"
        )
        + body
        + gate_table
    )


def _row_gate(gate: RowGate | None) -> str:
    if gate is None:
        return "-"
    undecided = "; the interval straddles it: undecided" if gate.straddles else ""
    return f"{'pass' if gate.passed else 'FAIL'} (>= {gate.target_fps:g} fps{undecided})"


def _size(m: Manifest) -> str:
    per_format = ", ".join(f"{fmt} {n / 1e6:.3f} MB" for fmt, n in m.size.per_format.items())
    target = f"; target {m.size.target_mb:g} MB per app (one format)" if m.size.target_mb else ""
    return f"## Size\n\nModel files: {m.size.total_bytes / 1e6:.3f} MB in all ({per_format}){target}."


def _limitations(m: Manifest) -> str:
    items = [
        "Input shapes are fixed (see the tables above); resize and crop inputs to them.",
        (
            "Quality numbers come from the recipe's evaluation data; "
            "inputs unlike it (content, lighting, cameras) may do worse."
        ),
        "Predicted latencies are estimates; only `measured` rows were timed on hardware.",
    ]
    if not (m.metrics.quality.vs_ground_truth or m.metrics.quality.vs_teacher):
        items.append("This run reported no quality metrics: evaluate the bundle before shipping it.")
    return "## Limitations\n\n" + "\n".join(f"- {i}" for i in items)


def _provenance(m: Manifest) -> str:
    return (
        "## How it was made\n\n"
        f"- Tool: {m.tool.name} {m.tool.version}, created {m.created_utc}\n"
        f"- Recipe: {m.recipe.name} (sha256 `{m.recipe.sha256}`), stages: {', '.join(m.recipe.stages)}\n"
        f"- Teacher: sha256 `{m.teacher.sha256}`, {m.teacher.bytes / 1e6:.2f} MB, "
        f"from {m.teacher.source or 'an unrecorded source'}\n"
        "- Check the files with `compress bundle verify <bundle folder>`; manifest.json lists every file's sha256."
    )
