"""Usage snippets for app developers, rendered from templates/ with the manifest's names.

The bundle's flow picks the program; the inputs' `feed` in the manifest wires it.

video_call, one class per phone:
  sender    start_call(reference frame) -> call message: the reference frame (when the receiver
                                           needs it) and sender outputs computed on it, sent once
            frame(camera frame)         -> keypoints message: the per-frame sender outputs
  receiver  start_call(call message)    -> runs the per-call parts once, keeps their outputs
            render(keypoints message)   -> runs the per-frame parts, returns their outputs

on_device, one class `OnDeviceModel` that one app holds, with each asset as an array:
            start(app inputs)           -> runs the per-call parts once, keeps their outputs
            run(app inputs)             -> runs the per-frame parts, returns their outputs

templates/<language>/ holds each language's code: one template per flow (its classes and
usage) and the pieces flows share: `helpers` (load and run a model), `frame_helper` (8-bit RGB
-> frame tensor) and `asset_helper` (read an asset file). A `Dialect` says how one line of it
(load a model, run a part, name a value) is written in that language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from compress import __version__
from compress.bundle.manifest import AssetFile, Feed, InputTensor, Manifest, PartEntry, Tensor, is_image
from compress.errors import CompressError

# Where a value lives inside a snippet function.
Scope = str  # "camera_frame" | "reference_frame" | "inputs" | "values" | "call" | "keypoints" | "state"


@dataclass(frozen=True)
class Ref:
    scope: Scope
    key: str = ""


@dataclass
class Step:
    """Run one part; args are (input name, where its value is)."""

    part: PartEntry
    args: list[tuple[str, Ref]]


@dataclass
class CallPlan:
    sender: list[PartEntry]
    receiver: list[PartEntry]
    sender_start: list[Step]
    sender_frame: list[Step]
    receiver_start: list[Step]
    receiver_frame: list[Step]
    send_reference_frame: bool
    send_camera_frame: bool


@dataclass
class AppPlan:
    start: list[Step]
    run: list[Step]


def plan_call(manifest: Manifest) -> CallPlan:
    """The sender/receiver program of a video-call bundle, per call and per frame."""
    parts = manifest.parts
    sender = [p for p in parts if p.role == "sender"]
    receiver = [p for p in parts if p.role == "receiver"]
    receiver_feeds = [i.feed for p in receiver for i in p.inputs]
    on_reference = _sender_parts_on_reference(manifest, sender, receiver_feeds)
    return CallPlan(
        sender=sender,
        receiver=receiver,
        sender_start=_steps(manifest, on_reference, "sender_start"),
        sender_frame=_steps(manifest, [p for p in sender if p.cadence == "per_frame"], "sender_frame"),
        receiver_start=_steps(manifest, [p for p in receiver if p.cadence == "per_call"], "receiver_start"),
        receiver_frame=_steps(manifest, [p for p in receiver if p.cadence == "per_frame"], "receiver_frame"),
        send_reference_frame=any(f.source == "reference_frame" for f in receiver_feeds),
        send_camera_frame=any(f.source == "camera_frame" for f in receiver_feeds),
    )


def plan_app(manifest: Manifest) -> AppPlan:
    """The program of an on-device bundle: per-call parts once at start, per-frame parts on every run."""
    return AppPlan(
        start=_steps(manifest, [p for p in manifest.parts if p.cadence == "per_call"], "app_start"),
        run=_steps(manifest, [p for p in manifest.parts if p.cadence == "per_frame"], "app_run"),
    )


def _sender_parts_on_reference(
    manifest: Manifest, sender: list[PartEntry], receiver_feeds: list[Feed]
) -> list[PartEntry]:
    """Sender parts that run on the reference frame at call start: per-call ones, those whose
    outputs the receiver takes on the reference frame, and what those depend on."""
    needed = {p.name for p in sender if p.cadence == "per_call"}
    needed |= {
        f.part
        for f in receiver_feeds
        if f.source == "part_output" and f.frame == "reference_frame" and manifest.part(f.part).role == "sender"
    }
    grew = True
    while grew:
        deps = {i.feed.part for p in sender if p.name in needed for i in p.inputs if i.feed.part}
        grew = not deps <= needed
        needed |= deps
    return [p for p in sender if p.name in needed]


def _steps(manifest: Manifest, parts: list[PartEntry], context: str) -> list[Step]:
    steps, local = [], set()
    for part in parts:
        steps.append(Step(part, [(i.name, _ref(manifest, part, i, context, local)) for i in part.inputs]))
        local |= {o.name for o in part.outputs}
    return steps


# (snippet function, where an input's value comes from) -> (scope, key); key None: the output's
# name (the input's own name for app inputs). A "values" scope holds outputs of parts that ran
# earlier in the same function.
FEEDS: dict[tuple[str, str], tuple[Scope, str | None]] = {
    # At call start the sender's parts run on the reference frame, whatever frame they take per frame.
    ("sender_start", "camera_frame"): ("reference_frame", ""),
    ("sender_start", "reference_frame"): ("reference_frame", ""),
    ("sender_start", "sender_per_frame@camera_frame"): ("values", None),
    ("sender_start", "sender_per_frame@reference_frame"): ("values", None),
    ("sender_start", "sender_per_call@reference_frame"): ("values", None),
    ("sender_frame", "camera_frame"): ("camera_frame", ""),
    ("sender_frame", "sender_per_frame@camera_frame"): ("values", None),
    ("receiver_start", "reference_frame"): ("call", "reference_frame"),
    ("receiver_start", "sender_per_frame@reference_frame"): ("call", None),
    ("receiver_start", "sender_per_call@reference_frame"): ("call", None),
    ("receiver_start", "receiver_per_call@reference_frame"): ("values", None),
    ("receiver_frame", "camera_frame"): ("keypoints", "camera_frame"),
    ("receiver_frame", "reference_frame"): ("call", "reference_frame"),
    ("receiver_frame", "sender_per_frame@camera_frame"): ("keypoints", None),
    ("receiver_frame", "sender_per_frame@reference_frame"): ("call", None),
    ("receiver_frame", "sender_per_call@reference_frame"): ("call", None),
    ("receiver_frame", "receiver_per_call@reference_frame"): ("state", None),
    ("receiver_frame", "receiver_per_frame@camera_frame"): ("values", None),
    # On device the app passes its inputs to start() and run(); per-call outputs are kept as state.
    ("app_start", "app_input"): ("inputs", None),
    ("app_start", "app_per_call"): ("values", None),
    ("app_run", "app_input"): ("inputs", None),
    ("app_run", "app_per_call"): ("state", None),
    ("app_run", "app_per_frame"): ("values", None),
}


def _ref(manifest: Manifest, part: PartEntry, tensor: InputTensor, context: str, local: set[str]) -> Ref:
    """Where input `tensor` of `part` is found in the snippet function `context`."""
    feed = tensor.feed
    producer = manifest.part(feed.part) if feed.part else None
    kind = (
        feed.source
        if producer is None
        else f"{producer.role}_{producer.cadence}" + (f"@{feed.frame}" if feed.frame else "")
    )
    found = FEEDS.get((context, kind))
    if found is None or (found[0] == "values" and feed.output not in local):
        raise CompressError(
            f"part {part.name!r} input {tensor.name!r} ({kind}) "
            f"cannot be fed in the snippets' {manifest.flow} program; "
            "check the part order and the input's name (docs/bundle.md, 'feed')"
        )
    scope, key = found
    return Ref(scope, (feed.output or tensor.name) if key is None else key)


def _frame_format(manifest: Manifest) -> Tensor | None:
    """The one format of the frames the RGB helper makes: a call's camera and reference frames
    (required), or the RGB images an app feeds (None when it feeds none)."""
    inputs = [i for p in manifest.parts for i in p.inputs]
    if manifest.flow == "on_device":
        frames = [i for i in inputs if i.feed.source == "app_input" and is_image(i, channels=(3,))]
        if not frames:
            return None
    else:
        frames = [i for i in inputs if i.feed.source in ("camera_frame", "reference_frame")]
    if not frames:
        raise CompressError("no part takes a camera or reference frame; the snippets need one image input")
    first = frames[0]
    key = lambda t: (t.shape, t.layout, t.value_range, t.dtype)  # noqa: E731
    odd = [t.name for t in frames if key(t) != key(first)]
    if odd:
        raise CompressError(
            f"frame inputs {[first.name] + odd} differ in shape, layout, range or dtype; "
            "the snippets assume one frame format"
        )
    if first.shape[1 if first.layout == "NCHW" else 3] != 3:
        raise CompressError(f"frame input {first.name!r} {first.shape} is not 3-channel RGB, which the snippets assume")
    return first


# -- languages -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dialect:
    ext: str  # templates/<language>/<piece>.<ext>.tmpl
    output: str  # path inside the bundle: {flow} (snake case) or {Flow} (Pascal case)
    format: str  # the model format the language loads
    ident: Callable[[str], str]  # part name -> variable name
    refs: dict[Scope, str]  # how each scope is written, {key} placeholder
    field: str  # one model field/init line: {var}, {path}
    init: str  # "" when `field` already loads the model
    run: str  # one run line: {var}, {args}
    arg: str  # one argument: {name}, {expr}
    with_frame: str  # a message: the `values` map plus one frame: {name}, {var}
    asset_field: str  # the map of assets: {entries}
    asset_init: str  # "" when `asset_field` already fills it, else the line that does: {entries}
    asset_entry: str  # one asset: {name}, {path}, {resource}, {dtype}, {shape}
    no_fields: str = ""  # what a class without models holds instead
    float32_only: bool = False  # handles float32 tensors only
    float32_assets: bool = False  # reads float32 assets only


def _snake(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_")


def _camel(name: str) -> str:
    head, *rest = _snake(name).split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _pascal(name: str) -> str:
    camel = _camel(name)
    return camel[:1].upper() + camel[1:]


DIALECTS: dict[str, Dialect] = {
    "python": Dialect(
        ext="py",
        output="snippets/{flow}.py",
        format="onnx",
        ident=_snake,
        refs={
            "camera_frame": "camera_frame",
            "reference_frame": "reference_frame",
            "inputs": 'inputs["{key}"]',
            "values": 'values["{key}"]',
            "call": 'self.call["{key}"]',
            "keypoints": 'keypoints["{key}"]',
            "state": 'self.state["{key}"]',
        },
        field='        self.{var} = load("{path}")',
        init="",
        run="        values.update(run(self.{var}, {{{args}}}))",
        arg='"{name}": {expr}',
        with_frame='{{"{name}": {var}, **values}}',
        asset_field="        self.assets: Tensors = {{\n{entries}\n        }}",
        asset_init="",
        asset_entry='            "{name}": load_asset("{path}", "{dtype}", [{shape}]),',
        no_fields="        pass",
    ),
    "kotlin": Dialect(
        ext="kt",
        output="snippets/{Flow}.kt",
        format="onnx",
        ident=_camel,
        refs={
            "camera_frame": "cameraFrame",
            "reference_frame": "referenceFrame",
            "inputs": 'inputs.getValue("{key}")',
            "values": 'values.getValue("{key}")',
            "call": 'call.getValue("{key}")',
            "keypoints": 'keypoints.getValue("{key}")',
            "state": 'state.getValue("{key}")',
        },
        field='    private val {var} = loadModel(context, "{path}")',
        init="",
        run="        values += {var}.infer(mapOf({args}))",
        arg='"{name}" to {expr}',
        with_frame='values + ("{name}" to {var})',
        asset_field="    val assets: Map<String, Asset> = mapOf(\n{entries}\n    )",
        asset_init="",
        asset_entry='        "{name}" to loadAsset(context, "{path}", intArrayOf({shape})),',
        float32_only=True,
        float32_assets=True,
    ),
    "swift": Dialect(
        ext="swift",
        output="snippets/{Flow}.swift",
        format="coreml",
        ident=_camel,
        refs={
            "camera_frame": "cameraFrame",
            "reference_frame": "referenceFrame",
            "inputs": 'inputs["{key}"]!',
            "values": 'values["{key}"]!',
            "call": 'call["{key}"]!',
            "keypoints": 'keypoints["{key}"]!',
            "state": 'state["{key}"]!',
        },
        field="    private let {var}: MLModel",
        init='        {var} = try loadModel("{path}")',
        # `predict`, not `run`: inside OnDeviceModel a free function `run` would be shadowed by its `run` method.
        run="        values.merge(try predict({var}, [{args}])) {{ _, new in new }}",
        arg='"{name}": {expr}',
        with_frame='values.merging(["{name}": {var}]) {{ current, _ in current }}',
        asset_field="    let assets: [String: Asset]",
        asset_init="        assets = [\n{entries}\n        ]",
        asset_entry='            "{name}": try loadAsset("{resource}", shape: [{shape}]),',
        float32_assets=True,
    ),
}


def model_path(part: PartEntry, dialect: Dialect) -> str:
    """How the language names the part's model: the bundle path (ONNX) or the Core ML resource."""
    path = part.files[dialect.format].path
    if dialect.format == "coreml":  # Xcode compiles <part>.mlpackage to <part>.mlmodelc
        return path.rsplit("/", 1)[-1].split(".mlpackage")[0].removesuffix(".mlmodel")
    return path


def render_snippet(manifest: Manifest, language: str) -> tuple[str, str]:
    """(bundle path, text) of one language's snippet of the bundle's flow."""
    dialect = DIALECTS[language]
    _check_types(manifest, language, dialect)
    frame = _frame_format(manifest)
    values = {
        "title": f"{manifest.name} {manifest.version}",
        "tool_version": __version__,
        **(_frame_values(frame) if frame else {}),
        **(_call_values(manifest, dialect) if manifest.flow == "video_call" else _app_values(manifest, dialect)),
    }
    # Shared pieces, filled first; video-call snippets do not load assets (the manifest lists them).
    pieces = {
        "helpers": True,
        "frame_helper": frame is not None,
        "asset_helper": manifest.flow == "on_device" and bool(manifest.assets),
    }
    values.update(
        {
            piece: fill(_template(language, dialect, piece), values).rstrip("\n") if wanted else ""
            for piece, wanted in pieces.items()
        }
    )
    text = fill(_template(language, dialect, manifest.flow), values)
    return dialect.output.format(flow=manifest.flow, Flow=_pascal(manifest.flow)), text


def _template(language: str, dialect: Dialect, piece: str) -> str:
    return resources.files("compress.bundle").joinpath("templates", language, f"{piece}.{dialect.ext}.tmpl").read_text()


def _check_types(manifest: Manifest, language: str, dialect: Dialect) -> None:
    """The language's snippet can load every part's format and handle every tensor and asset type."""
    missing = [p.name for p in manifest.parts if dialect.format not in p.files]
    if missing:
        raise CompressError(
            f"the {language} snippet loads {dialect.format} models, which parts {missing} do not ship; "
            f"add {dialect.format!r} to bundle.formats or drop {language!r} from bundle.snippets"
        )
    if dialect.float32_only:
        odd = [
            f"{p.name}.{t.name} ({t.dtype})"
            for p in manifest.parts
            for t in p.inputs + p.outputs
            if t.dtype != "float32"
        ]
        if odd:
            raise CompressError(
                f"the {language} snippet handles float32 tensors only, not {', '.join(odd)}; "
                f"drop {language!r} from bundle.snippets"
            )
    if dialect.float32_assets and manifest.flow == "on_device":
        odd = [f"{a.name} ({a.dtype})" for a in manifest.assets if a.dtype != "float32"]
        if odd:
            raise CompressError(
                f"the {language} snippet reads float32 assets only, not {', '.join(odd)}; "
                f"drop {language!r} from bundle.snippets"
            )


# -- what the templates are filled with ------------------------------------------------------
def _lines(steps: list[Step], d: Dialect) -> str:
    """One run line per step, each input taken from where it lives."""

    def ref(r: Ref) -> str:
        return d.refs[r.scope].format(key=r.key)

    return "\n".join(
        d.run.format(var=d.ident(s.part.name), args=", ".join(d.arg.format(name=n, expr=ref(r)) for n, r in s.args))
        for s in steps
    )


def _fields(parts: list[PartEntry], template: str, d: Dialect) -> str:
    return "\n".join(template.format(var=d.ident(p.name), path=model_path(p, d)) for p in parts) if template else ""


def _assets(assets: list[AssetFile], template: str, d: Dialect) -> str:
    """The assets map (declared or filled by `template`), one entry per asset; "" without assets."""
    entries = "\n".join(
        d.asset_entry.format(
            name=a.name,
            path=a.path,
            resource=a.path.rsplit("/", 1)[-1].removesuffix(".bin"),
            dtype=a.dtype,
            shape=", ".join(map(str, a.shape)),
        )
        for a in assets
    )
    return template.format(entries=entries) if assets and template else ""


def _names(parts: list[PartEntry] | list[Step]) -> str:
    return ", ".join(p.part.name if isinstance(p, Step) else p.name for p in parts) or "no model"


def _tensor_doc(t: Tensor) -> str:
    return f"{'x'.join(map(str, t.shape))} {t.dtype} {t.layout}, {t.normalization}"


def _call_values(manifest: Manifest, d: Dialect) -> dict[str, str]:
    plan = plan_call(manifest)

    def message(frame: Scope, with_frame: bool) -> str:
        # Every template collects the outputs to send in a map named `values`.
        return d.with_frame.format(name=frame, var=d.refs[frame]) if with_frame else "values"

    return {
        "per_call_summary": (
            f"the sender runs {_names(plan.sender_start)} on the reference frame, "
            f"the receiver runs {_names(plan.receiver_start)}"
        ),
        "per_frame_summary": (
            f"the sender runs {_names(plan.sender_frame)} on the camera frame, "
            f"the receiver runs {_names(plan.receiver_frame)}"
        ),
        "sender_doc": _names(plan.sender),
        "receiver_doc": _names(plan.receiver),
        "result_doc": ", ".join(o.name for s in plan.receiver_frame for o in s.part.outputs) or "none",
        "sender_fields": _fields(plan.sender, d.field, d) or d.no_fields,
        "sender_init": _fields(plan.sender, d.init, d),
        "receiver_fields": _fields(plan.receiver, d.field, d) or d.no_fields,
        "receiver_init": _fields(plan.receiver, d.init, d),
        "sender_start_call": _lines(plan.sender_start, d),
        "sender_frame": _lines(plan.sender_frame, d),
        "receiver_start_call": _lines(plan.receiver_start, d),
        "receiver_render": _lines(plan.receiver_frame, d),
        "call_message": message("reference_frame", plan.send_reference_frame),
        "frame_message": message("camera_frame", plan.send_camera_frame),
    }


def _app_values(manifest: Manifest, d: Dialect) -> dict[str, str]:
    plan = plan_app(manifest)

    def app_inputs(steps: list[Step]) -> dict[str, InputTensor]:
        return {t.name: t for s in steps for t in s.part.inputs if t.feed.source == "app_input"}

    def inputs_doc(steps: list[Step]) -> str:
        return ", ".join(app_inputs(steps)) or "no input"

    every = app_inputs(plan.start + plan.run)
    return {
        "task": manifest.task.description,
        "per_call_summary": _names(plan.start),
        "per_frame_summary": _names(plan.run),
        "inputs_doc": "; ".join(f"{name} ({_tensor_doc(t)})" for name, t in every.items()) or "no input",
        "parts_doc": _names(manifest.parts),
        "start_inputs_doc": inputs_doc(plan.start),
        "run_inputs_doc": inputs_doc(plan.run),
        "result_doc": ", ".join(o.name for s in plan.run for o in s.part.outputs) or "none",
        "fields": _fields(manifest.parts, d.field, d),
        "init": _fields(manifest.parts, d.init, d),
        "asset_fields": _assets(manifest.assets, d.asset_field, d),
        "asset_init": _assets(manifest.assets, d.asset_init, d),
        "start": _lines(plan.start, d),
        "run": _lines(plan.run, d),
    }


def _frame_values(frame: Tensor) -> dict[str, str]:
    nchw = frame.layout == "NCHW"
    height, width = (frame.shape[2], frame.shape[3]) if nchw else (frame.shape[1], frame.shape[2])
    low, high = frame.value_range or (0.0, 1.0)
    return {
        "frame_doc": _tensor_doc(frame),
        "frame_shape_list": ", ".join(map(str, frame.shape)),
        "frame_layout": frame.layout,
        "frame_dtype": frame.dtype,
        "frame_height": str(height),
        "frame_width": str(width),
        "frame_low": repr(float(low)),
        "frame_high": repr(float(high)),
        "frame_index": "(c * height + y) * width + x" if nchw else "(y * width + x) * 3 + c",
        "swift_dtype": {"float32": ".float32", "float16": ".float16"}.get(frame.dtype, ".float32"),
    }


_MARK = re.compile(r"\{\{ (\w+) \}\}")


def fill(template: str, values: dict[str, str]) -> str:
    """Replace `{{ key }}` marks; a line holding only a mark that fills to nothing is dropped."""
    unknown = sorted(set(_MARK.findall(template)) - set(values))
    if unknown:
        raise CompressError(f"snippet template uses unknown marks {unknown}")
    out = []
    for line in template.splitlines():
        only = _MARK.fullmatch(line.strip())
        if only and not values[only.group(1)]:
            continue
        out.append(_MARK.sub(lambda m: values[m.group(1)], line))
    return "\n".join(out) + "\n"
