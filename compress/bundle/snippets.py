"""Usage snippets for app developers, rendered from templates/ with the manifest's names.

Every snippet shows the same video-call flow, derived from the inputs' `feed` in the manifest:

  sender    start_call(reference frame) -> call message: the reference frame (when the receiver
                                           needs it) and sender outputs computed on it, sent once
            frame(camera frame)         -> keypoints message: the per-frame sender outputs
  receiver  start_call(call message)    -> runs the per-call parts once, keeps their outputs
            render(keypoints message)   -> runs the per-frame parts, returns their outputs

The templates hold the structure of each language; a `Dialect` says how one line of it
(load a model, run a part, name a value) is written in that language.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Callable

from compress import __version__
from compress.bundle.manifest import Feed, InputTensor, Manifest, PartEntry, Tensor
from compress.errors import CompressError

# Where a value lives inside a snippet function.
Scope = str  # "camera_frame" | "reference_frame" | "values" | "call" | "keypoints" | "state"


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
class Flow:
    sender: list[PartEntry]
    receiver: list[PartEntry]
    sender_start: list[Step]
    sender_frame: list[Step]
    receiver_start: list[Step]
    receiver_frame: list[Step]
    send_reference_frame: bool
    send_camera_frame: bool
    frame: Tensor


def plan_flow(manifest: Manifest) -> Flow:
    """The sender/receiver program of a bundle, per call and per frame."""
    parts = manifest.parts
    sender = [p for p in parts if p.role == "sender"]
    receiver = [p for p in parts if p.role == "receiver"]
    receiver_feeds = [i.feed for p in receiver for i in p.inputs]
    on_reference = _sender_parts_on_reference(manifest, sender, receiver_feeds)
    return Flow(
        sender=sender,
        receiver=receiver,
        sender_start=_steps(manifest, on_reference, "sender_start"),
        sender_frame=_steps(manifest, [p for p in sender if p.cadence == "per_frame"], "sender_frame"),
        receiver_start=_steps(manifest, [p for p in receiver if p.cadence == "per_call"], "receiver_start"),
        receiver_frame=_steps(manifest, [p for p in receiver if p.cadence == "per_frame"], "receiver_frame"),
        send_reference_frame=any(f.source == "reference_frame" for f in receiver_feeds),
        send_camera_frame=any(f.source == "camera_frame" for f in receiver_feeds),
        frame=_frame_format(manifest),
    )


def _sender_parts_on_reference(manifest: Manifest, sender: list[PartEntry], receiver_feeds: list[Feed]) -> list[PartEntry]:
    """Sender parts that run on the reference frame at call start: per-call ones, those whose
    outputs the receiver takes on the reference frame, and what those depend on."""
    needed = {p.name for p in sender if p.cadence == "per_call"}
    needed |= {f.part for f in receiver_feeds if f.source == "part_output" and f.frame == "reference_frame" and manifest.part(f.part).role == "sender"}
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


# (snippet function, where an input's value comes from) -> (scope, key); key None: the output's name.
# A "values" scope holds outputs of parts that ran earlier in the same function.
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
}


def _ref(manifest: Manifest, part: PartEntry, tensor: InputTensor, context: str, local: set[str]) -> Ref:
    """Where input `tensor` of `part` is found in the snippet function `context`."""
    feed = tensor.feed
    producer = manifest.part(feed.part) if feed.part else None
    kind = feed.source if producer is None else f"{producer.role}_{producer.cadence}@{feed.frame}"
    found = FEEDS.get((context, kind))
    if found is None or (found[0] == "values" and feed.output not in local):
        raise CompressError(
            f"part {part.name!r} input {tensor.name!r} ({kind}) cannot be fed in the snippets' call flow; "
            "check the part order and the input's name (docs/bundle.md, 'feed')"
        )
    scope, key = found
    return Ref(scope, (feed.output or "") if key is None else key)


def _frame_format(manifest: Manifest) -> Tensor:
    frames = [i for p in manifest.parts for i in p.inputs if i.feed.source in ("camera_frame", "reference_frame")]
    if not frames:
        raise CompressError("no part takes a camera or reference frame; the snippets need one image input")
    first = frames[0]
    key = lambda t: (t.shape, t.layout, t.value_range, t.dtype)  # noqa: E731
    odd = [t.name for t in frames if key(t) != key(first)]
    if odd:
        raise CompressError(f"frame inputs {[first.name] + odd} differ in shape, layout, range or dtype; the snippets assume one frame format")
    if first.shape[1 if first.layout == "NCHW" else 3] != 3:
        raise CompressError(f"frame input {first.name!r} {first.shape} is not 3-channel RGB, which the snippets assume")
    return first


# -- languages -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dialect:
    template: str
    output: str  # path inside the bundle
    format: str  # the model format the language loads
    ident: Callable[[str], str]  # part name -> variable name
    refs: dict[Scope, str]  # how each scope is written, {key} placeholder
    field: str  # one model field/init line: {var}, {path}
    init: str  # "" when `field` already loads the model
    run: str  # one run line: {var}, {args}
    arg: str  # one argument: {name}, {expr}
    with_frame: str  # a message: the `values` map plus one frame: {name}, {var}
    no_fields: str = ""  # what a class without models holds instead
    float32_only: bool = False


def _snake(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_")


def _camel(name: str) -> str:
    head, *rest = _snake(name).split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


DIALECTS: dict[str, Dialect] = {
    "python": Dialect(
        template="python.py.tmpl",
        output="snippets/video_call.py",
        format="onnx",
        ident=_snake,
        refs={"camera_frame": "camera_frame", "reference_frame": "reference_frame", "values": 'values["{key}"]',
              "call": 'self.call["{key}"]', "keypoints": 'keypoints["{key}"]', "state": 'self.state["{key}"]'},
        field='        self.{var} = load("{path}")',
        init="",
        run="        values.update(run(self.{var}, {{{args}}}))",
        arg='"{name}": {expr}',
        with_frame='{{"{name}": {var}, **values}}',
        no_fields="        pass",
    ),
    "kotlin": Dialect(
        template="kotlin.kt.tmpl",
        output="snippets/VideoCall.kt",
        format="onnx",
        ident=_camel,
        refs={"camera_frame": "cameraFrame", "reference_frame": "referenceFrame", "values": 'values.getValue("{key}")',
              "call": 'call.getValue("{key}")', "keypoints": 'keypoints.getValue("{key}")', "state": 'state.getValue("{key}")'},
        field='    private val {var} = loadModel(context, "{path}")',
        init="",
        run="        values += {var}.infer(mapOf({args}))",
        arg='"{name}" to {expr}',
        with_frame='values + ("{name}" to {var})',
        float32_only=True,
    ),
    "swift": Dialect(
        template="swift.swift.tmpl",
        output="snippets/VideoCall.swift",
        format="coreml",
        ident=_camel,
        refs={"camera_frame": "cameraFrame", "reference_frame": "referenceFrame", "values": 'values["{key}"]!',
              "call": 'call["{key}"]!', "keypoints": 'keypoints["{key}"]!', "state": 'state["{key}"]!'},
        field="    private let {var}: MLModel",
        init='        {var} = try loadModel("{path}")',
        run="        values.merge(try run({var}, [{args}])) {{ _, new in new }}",
        arg='"{name}": {expr}',
        with_frame='values.merging(["{name}": {var}]) {{ current, _ in current }}',
    ),
}


def model_path(part: PartEntry, dialect: Dialect) -> str:
    """How the language names the part's model: the bundle path (ONNX) or the Core ML resource."""
    path = part.files[dialect.format].path
    if dialect.format == "coreml":  # Xcode compiles <part>.mlpackage to <part>.mlmodelc
        return path.rsplit("/", 1)[-1].split(".mlpackage")[0].removesuffix(".mlmodel")
    return path


def render_snippet(manifest: Manifest, language: str) -> tuple[str, str]:
    """(bundle path, text) of one language's snippet."""
    dialect = DIALECTS[language]
    missing = [p.name for p in manifest.parts if dialect.format not in p.files]
    if missing:
        raise CompressError(f"the {language} snippet loads {dialect.format} models, which parts {missing} do not ship; add {dialect.format!r} to bundle.formats or drop {language!r} from bundle.snippets")
    if dialect.float32_only:
        odd = [f"{p.name}.{t.name} ({t.dtype})" for p in manifest.parts for t in p.inputs + p.outputs if t.dtype != "float32"]
        if odd:
            raise CompressError(f"the {language} snippet handles float32 tensors only, not {', '.join(odd)}; drop {language!r} from bundle.snippets")
    flow = plan_flow(manifest)
    values = {**_common_values(manifest, flow), **_code_values(flow, dialect)}
    text = fill(resources.files("compress.bundle").joinpath("templates", dialect.template).read_text(), values)
    return dialect.output, text


def _code_values(flow: Flow, d: Dialect) -> dict[str, str]:
    def ref(r: Ref) -> str:
        return d.refs[r.scope].format(key=r.key)

    def lines(steps: list[Step]) -> str:
        return "\n".join(
            d.run.format(var=d.ident(s.part.name), args=", ".join(d.arg.format(name=n, expr=ref(r)) for n, r in s.args)) for s in steps
        )

    def message(frame: Scope, with_frame: bool) -> str:
        # Every template collects the outputs to send in a map named `values`.
        return d.with_frame.format(name=frame, var=d.refs[frame]) if with_frame else "values"

    def fields(parts: list[PartEntry], template: str) -> str:
        return "\n".join(template.format(var=d.ident(p.name), path=model_path(p, d)) for p in parts) if template else ""

    return {
        "sender_fields": fields(flow.sender, d.field) or d.no_fields,
        "sender_init": fields(flow.sender, d.init),
        "receiver_fields": fields(flow.receiver, d.field) or d.no_fields,
        "receiver_init": fields(flow.receiver, d.init),
        "sender_start_call": lines(flow.sender_start),
        "sender_frame": lines(flow.sender_frame),
        "receiver_start_call": lines(flow.receiver_start),
        "receiver_render": lines(flow.receiver_frame),
        "call_message": message("reference_frame", flow.send_reference_frame),
        "frame_message": message("camera_frame", flow.send_camera_frame),
    }


def _common_values(manifest: Manifest, flow: Flow) -> dict[str, str]:
    frame = flow.frame
    nchw = frame.layout == "NCHW"
    height, width = (frame.shape[2], frame.shape[3]) if nchw else (frame.shape[1], frame.shape[2])
    low, high = frame.value_range or (0.0, 1.0)

    def names(parts: list[PartEntry] | list[Step]) -> str:
        return ", ".join(p.part.name if isinstance(p, Step) else p.name for p in parts) or "no model"

    return {
        "title": f"{manifest.name} {manifest.version}",
        "tool_version": __version__,
        "per_call_summary": f"the sender runs {names(flow.sender_start)} on the reference frame, the receiver runs {names(flow.receiver_start)}",
        "per_frame_summary": f"the sender runs {names(flow.sender_frame)} on the camera frame, the receiver runs {names(flow.receiver_frame)}",
        "sender_doc": names(flow.sender),
        "receiver_doc": names(flow.receiver),
        "result_doc": ", ".join(o.name for s in flow.receiver_frame for o in s.part.outputs) or "none",
        "frame_doc": f"{'x'.join(map(str, frame.shape))} {frame.dtype} {frame.layout}, {frame.normalization}",
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
