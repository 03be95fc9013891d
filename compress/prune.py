"""Structured pruning to a budget with torch-pruning's DepGraph, then distillation fine-tuning.

A family lists its prunable networks (`Family.prunables`): flat-tensor wrappers around the real
sub-networks, example inputs to trace them with, and the layers whose output width is an
interface (keypoint, jacobian, mask, occlusion and RGB heads). DepGraph groups every layer
whose channels must go together; an importance criterion ranks the channels of each group; the
lowest-ranked go, widths rounded down to a multiple of `round_to`.

Two ops of the FOMM graphs are traced by DepGraph as if they tied channels together when they
do not: `grid_sample`'s grid (an [N, H, W, 2] field of coordinates, not channels) and operands
that broadcast over the channel axis (the [N, 1, H, W] occlusion map multiplying the warped
features). Left alone, the encoder's channels would be bound to the flow and occlusion heads
(which are protected, so nothing in the encoder could be pruned; torch-pruning issue #510).
`ChannelFlow` traces them as what they are: the sampled input's channels flow through to the
output, and the grid and broadcast operands leave the graph as extra outputs, so the layers
that compute them are still traced and pruned on their own. It also pins the groups whose width
is fixed by data from outside the graph (a constant operand of the same channel count, a
depthwise convolution reading a network input, a grid's (x, y) axis): they are protected.

The search: the least pruning ratio that meets the budget, by bisection on deep copies (per
network for scope "uniform", one ratio ranked across all networks for scope "global"). A budget
that cannot be met even at the largest ratio is reported with how far it missed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode

from compress.batches import iterate_batches, recipe_dataset
from compress.checkpoints import save_model
from compress.distill import distill
from compress.errors import CompressError
from compress.families.base import Family, Part, Prunable
from compress.families.loading import load_model
from compress.families.task import Task
from compress.recipe import DistillConfig, PruneConfig
from compress.run import Gate, RunContext, StageResult, measured_on
from compress.stats import count_params, gflops, size_mb

IMPORTANCE = ("magnitude", "taylor", "bn_scale")
SCOPES = ("uniform", "global")
MAX_RATIO = 1.0  # every group down to `round_to` channels (protected layers keep theirs)
RATIO_TOLERANCE = 1 / 64  # bisection stops when the bracket is this narrow
TAYLOR_BATCHES = 4


# -- tracing: what DepGraph must not read as channel coupling ---------------------------------------
# Binary elementwise ops whose operands broadcast (torch function names, in-place and reflected too).
_ELEMENTWISE = frozenset(
    f"{pre}{op}{post}"
    for op in ("add", "sub", "mul", "div", "truediv")
    for pre, post in (("", ""), ("", "_"), ("__", "__"), ("__r", "__"), ("__i", "__"))
) | {"true_divide", "maximum", "minimum"}


class ChannelFlow(TorchFunctionMode):
    """While DepGraph traces a forward: cut the graph edges that carry no channel correspondence,
    and note the tensors whose channel count is fixed by data from outside the graph.

    Cut (the tensor is used detached and kept in `cut`, which the caller returns as an extra
    output, so that the layers computing it stay in the graph, pruned by their own groups):
    - `grid_sample`'s grid: output channel c is input channel c; the grid's last axis is (x, y).
    - an operand of size 1 on the channel axis (dim 1 of a rank >= 4 result) of a binary
      elementwise op: it scales or shifts every channel alike.
    Pinned (kept in `pinned`; the groups that compute them must keep their width):
    - `grid_sample`'s grid: a layer whose channels become its (x, y) axis cannot shrink;
    - the result of a binary elementwise op with a constant operand (network input, buffer)
      of the same channel count, e.g. FOMM's mask times the sparse motions (K + 1 each);
    - the output of a grouped convolution reading a constant input: its channels are the input's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cut: list[torch.Tensor] = []
        self.pinned: list[torch.Tensor] = []

    def __torch_function__(
        self, func: Callable, types: Any, args: Sequence[Any] = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name == "grid_sample":
            grid = kwargs["grid"] if "grid" in kwargs else args[1]
            if grid.requires_grad:
                self.pinned.append(grid)
            if "grid" in kwargs:
                kwargs["grid"] = self._detach(grid)
            else:
                args = (args[0], self._detach(grid), *args[2:])
            return func(*args, **kwargs)
        if name in _ELEMENTWISE:
            args, pin = self._elementwise(args)
            out = func(*args, **kwargs)
            if pin:
                self.pinned.append(out)
            return out
        out = func(*args, **kwargs)
        if name in _CONV and _groups(args, kwargs) > 1 and not args[0].requires_grad and out.requires_grad:
            self.pinned.append(out)
        return out

    def _detach(self, t: torch.Tensor) -> torch.Tensor:
        if not t.requires_grad:
            return t
        if t.grad_fn is not None:  # computed by layers (a leaf parameter has nothing to trace)
            self.cut.append(t)
        return t.detach()

    def _elementwise(self, args: Sequence[Any]) -> tuple[tuple[Any, ...], bool]:
        """(args with channel-broadcast operands detached, whether a constant operand fixes the channels)."""
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        rank = max((t.dim() for t in tensors), default=0)
        if len(tensors) < 2 or rank < 4:
            return tuple(args), False

        def channels(t: torch.Tensor) -> int:
            dim = t.dim() - (rank - 1)  # operands align on the right
            return t.shape[dim] if dim >= 0 else 1

        if max(channels(t) for t in tensors) == 1:
            return tuple(args), False
        pin = any(not t.requires_grad and channels(t) > 1 for t in tensors) and any(t.requires_grad for t in tensors)
        return tuple(self._detach(a) if isinstance(a, torch.Tensor) and channels(a) == 1 else a for a in args), pin


_CONV = frozenset({"conv1d", "conv2d", "conv3d"})


def _groups(args: Sequence[Any], kwargs: dict[str, Any]) -> int:
    return int(kwargs.get("groups", args[6] if len(args) > 6 else 1))


class FlowTrace:
    """DepGraph's `forward_fn`: the forward under `ChannelFlow`, returning the cut tensors as extra
    outputs; `flow.pinned` is read after the trace (`pinned_layers`)."""

    def __init__(self) -> None:
        self.flow = ChannelFlow()

    def __call__(
        self, module: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]
    ) -> tuple[Any, list[torch.Tensor]]:
        self.flow = ChannelFlow()
        with self.flow:
            out = module(inputs) if isinstance(inputs, torch.Tensor) else module(*inputs)
        return out, self.flow.cut


def pinned_layers(graph: tp.DependencyGraph, pinned: Sequence[torch.Tensor]) -> list[nn.Module]:
    """The layers of every group that produces a pinned tensor: pruning must leave them alone."""
    nodes = {node.grad_fn: node for node in graph.module2node.values() if node.grad_fn is not None}
    layers: list[nn.Module] = []
    for t in pinned:
        node = nodes.get(t.grad_fn)
        if node is None:  # not traced: no prunable layer depends on it
            continue
        prune_out = graph.get_pruner_of_module(node.module).prune_out_channels
        for dep, _ in graph.get_pruning_group(node.module, prune_out, list(range(t.shape[1]))):
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, nn.Module):
                layers.append(dep.target.module)
    return layers


class _Pruner(tp.pruner.BasePruner):
    """BasePruner whose widths round down to a multiple of `round_to` but never below it.

    torch-pruning rounds down to 0 at high ratios and then skips the group whole, so the size
    would stop shrinking (and bisection would see a non-monotone curve).
    """

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        keep = current_channels - n_pruned
        keep = max(keep - keep % round_to, min(round_to, current_channels))
        return current_channels - keep


class _Networks(nn.Module):
    """All prunable networks as one module, so that global pruning ranks channels across them."""

    def __init__(self, prunables: list[Prunable]):
        super().__init__()
        self.nets = nn.ModuleList(p.module for p in prunables)
        self.arity = [len(p.example_inputs) for p in prunables]

    def forward(self, *inputs: torch.Tensor) -> tuple[Any, ...]:
        outs, start = [], 0
        for net, n in zip(self.nets, self.arity):
            outs.append(net(*inputs[start : start + n]))
            start += n
        return tuple(outs)


def _importance(name: str) -> tp.importance.Importance:
    if name == "magnitude":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.TaylorImportance()
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise CompressError(f"prune.importance: {name!r} is not one of {', '.join(IMPORTANCE)}")


def _protected(model: nn.Module, prunable: Prunable, protect: Sequence[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in protect if n not in modules]
    if missing:
        examples = ", ".join(n for n in list(modules)[1:6])
        raise CompressError(
            f"prune.protect: the model has no module {missing[0]!r} (module paths look like {examples})"
        )
    return [*prunable.protected, *(modules[n] for n in protect)]


# -- pruning at given ratios -------------------------------------------------------------------------
def prune_model(
    family: Family,
    model: nn.Module,
    ratios: dict[str, float],
    *,
    scope: str = "uniform",
    importance: str = "magnitude",
    round_to: int = 8,
    protect: Sequence[str] = (),
    gradients: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A pruned deep copy of `model`.

    `ratios`: {network: channel pruning ratio} for scope "uniform" (each layer loses that share
    of its channels; a network left out is not pruned), {"global": ratio} for scope "global"
    (channels ranked across all networks). `gradients` ({parameter name: grad}) feed Taylor importance.
    """
    if scope not in SCOPES:
        raise CompressError(f"prune.scope: {scope!r} is not one of {', '.join(SCOPES)}")
    pruned = copy.deepcopy(model)
    if gradients is not None:
        for name, p in pruned.named_parameters():
            p.grad = gradients[name].clone() if name in gradients else None
    prunables = family.prunables(pruned)
    names = {"global"} if scope == "global" else {p.name for p in prunables}
    if not set(ratios) <= names:
        raise CompressError(
            f"prune: ratios for {sorted(set(ratios) - names)}: "
            f"scope {scope!r} takes ratios for {', '.join(sorted(names))}"
        )
    if scope == "global":
        ratio = ratios.get("global", 0.0)
        if ratio > 0:
            ignored = [m for p in prunables for m in _protected(pruned, p, protect)]
            custom = {k: v for p in prunables for k, v in p.customized_pruners.items()}
            joint = _Networks(prunables)
            inputs = tuple(t for p in prunables for t in p.example_inputs)
            _step(joint, inputs, importance, ratio, ignored, custom, round_to, global_pruning=True)
    else:
        for p in prunables:
            if ratios.get(p.name, 0.0) > 0:
                _step(
                    p.module,
                    p.example_inputs,
                    importance,
                    ratios[p.name],
                    _protected(pruned, p, protect),
                    p.customized_pruners,
                    round_to,
                )
    for p in pruned.parameters():
        p.grad = None
    return pruned.eval()


def _step(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    importance: str,
    ratio: float,
    ignored: list[nn.Module],
    custom: dict[Any, Any],
    round_to: int,
    global_pruning: bool = False,
) -> None:
    trace = FlowTrace()
    with torch.enable_grad():  # DepGraph traces through autograd
        pruner = _Pruner(
            module,
            inputs,
            importance=_importance(importance),
            global_pruning=global_pruning,
            pruning_ratio=min(ratio, MAX_RATIO),
            ignored_layers=ignored,
            round_to=round_to,
            customized_pruners=custom or None,
            forward_fn=trace,
        )
    for layer in pinned_layers(pruner.DG, trace.flow.pinned):
        pruner.ignored_layers.extend(layer.modules())
    pruner.step()


# -- budgets and measurements --------------------------------------------------------------------------
@dataclass
class Budget:
    """What the pruned model must fit; at least one field set.

    size_mb: parameters of all prunable networks at `precision` (the precision the bundle ships).
    gflops: {network or part name: GFLOPs}; gflops_ratio: keep this share of each network's GFLOPs.
    latency_ms: {part name: ms} predicted by the cost model of device profile `device`.
    """

    size_mb: float | None = None
    precision: str = "int8"
    gflops: dict[str, float] = field(default_factory=dict)
    gflops_ratio: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    device: str = "profile:iphone8"

    @classmethod
    def from_config(cls, cfg: PruneConfig) -> Budget:
        return cls(cfg.size_mb, cfg.precision, dict(cfg.gflops), cfg.gflops_ratio, dict(cfg.latency_ms), cfg.device)

    @classmethod
    def from_targets(
        cls, targets: dict[str, float], precision: str = "int8", device: str = "profile:iphone8"
    ) -> Budget:
        """The budget of resolved `targets` (absolute limits)."""
        budget = cls(targets.get("size_mb"), precision, device=device)
        for key, limit in targets.items():
            kind, _, name = key.partition(":")
            if kind == "gflops":
                budget.gflops[name] = limit
            elif kind == "latency_ms":
                budget.latency_ms[name] = limit
        return budget

    def targets(self, family: Family, model: nn.Module) -> dict[str, float]:
        """Flat limits {metric: limit}, metrics "size_mb", "gflops:NAME", "latency_ms:NAME";
        `gflops_ratio` becomes a GFLOPs limit per network of `model`."""
        out: dict[str, float] = {}
        if self.size_mb is not None:
            out["size_mb"] = self.size_mb
        out.update({f"gflops:{name}": limit for name, limit in self.gflops.items()})
        if self.gflops_ratio is not None:
            for p in family.prunables(model):
                key = f"gflops:{p.name}"
                out[key] = min(out.get(key, float("inf")), self.gflops_ratio * gflops(p.module, p.example_inputs))
        out.update({f"latency_ms:{name}": limit for name, limit in self.latency_ms.items()})
        if not out:
            raise CompressError("prune: no budget; set size_mb, gflops, gflops_ratio or latency_ms in the prune stage")
        networks = _measurable(family, model)
        parts = [p.name for p in family.parts(model)]
        for key in out:
            kind, _, name = key.partition(":")
            if kind == "gflops" and name not in networks:
                raise CompressError(
                    f"prune.gflops: the {family.name} family has no network or part {name!r} "
                    f"(known: {', '.join(networks)})"
                )
            if kind == "latency_ms" and name not in parts:
                raise CompressError(
                    f"prune.latency_ms: the {family.name} family has no part {name!r} (known: {', '.join(parts)})"
                )
        return out


def cycle_targets(start: dict[str, float], targets: dict[str, float], fraction: float) -> dict[str, float]:
    """Limits a geometric `fraction` of the way from `start` (measured) to `targets` (cycle i of n: i / n)."""
    return {
        k: t if start[k] <= t or fraction >= 1 else start[k] * (t / start[k]) ** fraction for k, t in targets.items()
    }


def _measurable(
    family: Family, model: nn.Module, prunables: list[Prunable] | None = None
) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    """{network or part name: (flat-tensor module, example inputs)}."""
    out = {p.name: (p.module, p.example_inputs) for p in prunables or family.prunables(model)}
    for part in family.parts(model):
        out.setdefault(part.name, (part.module, part.example_inputs()))
    return out


def measure(
    family: Family, model: nn.Module, metrics: Iterable[str], precision: str = "int8", device: str = "profile:iphone8"
) -> dict[str, float]:
    """The value of each metric ("size_mb", "gflops:NAME", "latency_ms:NAME") for `model`."""
    metrics = list(metrics)
    prunables = family.prunables(model)
    modules = _measurable(family, model, prunables) if any(m.startswith("gflops:") for m in metrics) else {}
    parts = {p.name: p for p in family.parts(model)} if any(m.startswith("latency_ms:") for m in metrics) else {}
    out = {}
    for metric in metrics:
        kind, _, name = metric.partition(":")
        if kind == "size_mb":
            out[metric] = size_mb(_unique_params(prunables), precision)
        elif kind == "gflops":
            out[metric] = gflops(*modules[name])
        else:
            out[metric] = _predicted_ms(parts[name], device, precision)
    return out


def _unique_params(prunables: list[Prunable]) -> int:
    seen: dict[int, int] = {}
    for p in prunables:
        seen.update({id(t): t.numel() for t in p.module.parameters()})
    return sum(seen.values())


FIXED_COST_RATIO = 0.99  # every prunable layer keeps 1 % of its channels (at least one)


def floor_model(family: Family, model: nn.Module) -> nn.Module:
    """A copy of `model` with every prunable layer pruned to (almost) no channels: what is left is the
    work pruning cannot remove (full-resolution warps, blends, interface layers). Spectral norm is
    baked first (torch-pruning cannot prune its reparametrisation; a floor is only priced)."""
    from compress.export import spectral_norm_baked

    model = spectral_norm_baked(model)
    return prune_model(family, model, {p.name: FIXED_COST_RATIO for p in family.prunables(model)}, round_to=1)


def fixed_costs(
    family: Family, model: nn.Module, device: str = "profile:iphone8"
) -> dict[str, dict[str, float | None]]:
    """Per part, the predicted ms as it is and at its floor (`floor_model`; None for a model its family
    does not prune, e.g. the LivePortrait teacher). Priced in float, as a device without int8
    arithmetic runs it."""
    try:
        floor = floor_model(family, model)
    except CompressError:  # its family has no prunable networks for it
        floor = None
    fixed = {part.name: round(_predicted_ms(part, device, "fp32"), 2) for part in family.parts(floor)} if floor else {}
    return {
        part.name: {"predicted_ms": round(_predicted_ms(part, device, "fp32"), 2), "fixed_ms": fixed.get(part.name)}
        for part in family.parts(model)
    }


def _predicted_ms(part: Part, device: str, precision: str) -> float:
    """The latency the device profile's cost model predicts for `part`: priced as int8 when the bundle
    ships int8 and the device computes in int8, as the profile stage will price it, on the graph the
    export stage writes (simplified: the raw trace's shape computations leave some convolutions
    without static shapes, which the cost model cannot price)."""
    from compress.bench.costmodel import predict
    from compress.bench.stage import float_compute
    from compress.export import onnx_model, simplified

    int8 = precision == "int8" and not float_compute(device)
    graph = simplified(onnx_model(part, max(17, part.min_opset)), part.name)
    return float(predict(graph, device, precision="int8" if int8 else "auto")["ms"])


def _owners(family: Family, model: nn.Module, metric: str) -> frozenset[str]:
    """The prunable networks whose pruning changes `metric` (those sharing parameters with its module)."""
    prunables = family.prunables(model)
    if metric == "size_mb":
        return frozenset(p.name for p in prunables)
    module = _measurable(family, model)[metric.split(":", 1)[1]][0]
    params = {id(t) for t in module.parameters()}
    return frozenset(p.name for p in prunables if params & {id(t) for t in p.module.parameters()})


def miss_message(metric: str, value: float, target: float, device: str = "") -> str:
    """E.g. "size 3.4 MB vs budget 3.0 MB: 13 % over"."""
    over = 100 * (value / target - 1)
    if metric == "size_mb":
        return f"size {value:.3g} MB vs budget {target:.3g} MB: {over:.0f} % over"
    kind, name = metric.split(":", 1)
    if kind == "gflops":
        return f"{name} {value:.3g} GFLOPs vs budget {target:.3g} GFLOPs: {over:.0f} % over"
    return f"{name} {value:.3g} ms vs budget {target:.3g} ms on {device}: {over:.0f} % over"


def network_stats(family: Family, model: nn.Module, precision: str = "int8") -> dict[str, dict[str, float]]:
    """{network: {params, size_mb at precision, gflops}} of each prunable network."""
    return {
        p.name: {
            "params": count_params(p.module),
            "size_mb": round(size_mb(count_params(p.module), precision), 4),
            "gflops": round(gflops(p.module, p.example_inputs), 4),
        }
        for p in family.prunables(model)
    }


# -- the search --------------------------------------------------------------------------------------------
@dataclass
class PruneReport:
    """The pruned copy (`model`; the input is left unchanged) and how it relates to the budget."""

    model: nn.Module
    ratios: dict[str, float]
    targets: dict[str, float]
    achieved: dict[str, float]
    misses: list[str]
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    probes: int
    wall_s: float

    @property
    def met(self) -> bool:
        return not self.misses

    def to_json(self) -> dict[str, Any]:
        return {
            "ratios": {k: round(v, 4) for k, v in self.ratios.items()},
            "targets": self.targets,
            "achieved": self.achieved,
            "met": self.met,
            "misses": self.misses,
            "networks_before": self.before,
            "networks_after": self.after,
            "probes": self.probes,
            "wall_s": round(self.wall_s, 2),
        }


def prune_to_budget(
    family: Family,
    model: nn.Module,
    budget: Budget,
    importance: str = "magnitude",
    scope: str = "uniform",
    round_to: int = 8,
    protect: Sequence[str] = (),
    calibration_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    teacher: nn.Module | None = None,
    loss_weights: dict[str, Any] | None = None,
) -> PruneReport:
    """Prune a copy of `model` with the least ratio that meets `budget`.

    Taylor importance needs `calibration_batches`: the loss is the family's distillation loss
    against `teacher` (with `loss_weights`), or, without a teacher, the squared norm of the
    model's own outputs (the channels the outputs depend on most are kept).
    """
    start = time.perf_counter()
    if importance not in IMPORTANCE:
        raise CompressError(f"prune.importance: {importance!r} is not one of {', '.join(IMPORTANCE)}")
    targets = budget.targets(family, model)
    precision, device = budget.precision, budget.device
    gradients = None
    if importance == "taylor":
        if calibration_batches is None:
            raise CompressError(
                "prune: importance 'taylor' needs calibration batches (a backward pass ranks the channels)"
            )
        gradients = taylor_gradients(family, model, calibration_batches, teacher, loss_weights)

    probes = 0

    def attempt(ratios: dict[str, float], metrics: Iterable[str]) -> tuple[nn.Module, dict[str, float]]:
        nonlocal probes
        probes += 1
        pruned = prune_model(
            family,
            model,
            ratios,
            scope=scope,
            importance=importance,
            round_to=round_to,
            protect=protect,
            gradients=gradients,
        )
        return pruned, measure(family, pruned, metrics, precision, device)

    networks = [p.name for p in family.prunables(model)]
    if scope == "global":
        ratio, pruned, _ = _least_ratio(lambda r: attempt({"global": r}, targets), targets)
        ratios = {"global": ratio}
    else:
        ratios, pruned = _uniform_search(family, model, networks, targets, attempt)
    achieved = measure(family, pruned, targets, precision, device)
    misses = [miss_message(k, achieved[k], t, device) for k, t in targets.items() if achieved[k] > t * (1 + 1e-9)]
    return PruneReport(
        pruned,
        ratios,
        targets,
        achieved,
        misses,
        network_stats(family, model, precision),
        network_stats(family, pruned, precision),
        probes,
        time.perf_counter() - start,
    )


def _uniform_search(
    family: Family,
    model: nn.Module,
    networks: list[str],
    targets: dict[str, float],
    attempt: Callable[[dict[str, float], Iterable[str]], tuple[nn.Module, dict[str, float]]],
) -> tuple[dict[str, float], nn.Module]:
    """Per network: the least ratio meeting the targets only it affects; then one common floor
    on all networks' ratios for the targets several share (the total size)."""
    owners = {k: _owners(family, model, k) for k in targets}
    ratios = dict.fromkeys(networks, 0.0)
    for net in networks:
        own = {k: t for k, t in targets.items() if owners[k] == {net}}
        if own:
            # the others leave `own` alone; the lambda runs within this iteration
            ratios[net] = _least_ratio(lambda r, net=net, own=own: attempt({net: r}, own), own)[0]
    shared = {k: t for k, t in targets.items() if len(owners[k]) > 1}
    if not shared:
        return ratios, attempt(ratios, ())[0]
    base = dict(ratios)
    floor, pruned, _ = _least_ratio(lambda r: attempt({n: max(base[n], r) for n in networks}, shared), shared)
    return {n: max(base[n], floor) for n in networks}, pruned


def _least_ratio(
    attempt: Callable[[float], tuple[nn.Module, dict[str, float]]], targets: dict[str, float]
) -> tuple[float, nn.Module, dict[str, float]]:
    """Bisection for the least ratio whose result fits `targets`; MAX_RATIO's result if none does."""

    def fits(values: dict[str, float]) -> bool:
        return all(values[k] <= t * (1 + 1e-9) for k, t in targets.items())

    lo_model, lo_values = attempt(0.0)
    if fits(lo_values):
        return 0.0, lo_model, lo_values
    lo, hi, best = 0.0, MAX_RATIO, None
    while hi - lo > RATIO_TOLERANCE:
        mid = (lo + hi) / 2
        pruned, values = attempt(mid)
        if fits(values):
            hi, best = mid, (mid, pruned, values)
        else:
            lo = mid
    return best or (MAX_RATIO, *attempt(MAX_RATIO))  # fits within the tolerance, or the budget is out of reach


# -- Taylor importance -------------------------------------------------------------------------------------
def taylor_gradients(
    family: Family,
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    teacher: nn.Module | None = None,
    loss_weights: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """{parameter name: gradient} of the Taylor loss summed over `batches` (model in eval mode).

    Parameters the loss does not reach get zero gradients (Taylor importance reads every layer of a group).
    """
    weights = loss_weights if loss_weights is not None else family.loss_weights({})
    work = copy.deepcopy(model).eval()
    work.zero_grad(set_to_none=True)
    n = 0
    for batch in batches:
        out = family.forward(work, batch)
        if teacher is not None:
            with torch.no_grad():
                ref = family.forward(teacher.eval(), batch)
            loss = family.distill_loss(ref, out, batch, weights)[0]
        else:
            loss = sum(v.float().pow(2).mean() for v in out.values() if isinstance(v, torch.Tensor) and v.requires_grad)
        loss.backward()
        n += 1
    if n == 0:
        raise CompressError("prune: importance 'taylor' got no calibration batches")
    return {
        name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach() for name, p in work.named_parameters()
    }


# -- the stage ------------------------------------------------------------------------------------------------
def prune_stage(cfg: PruneConfig, ctx: RunContext) -> StageResult:
    """Prune the current model (or the teacher) to the budget in `cfg.iterations` prune -> fine-tune cycles.

    Artifacts: the pruned model and its quality. A budget missed even at the largest ratio is
    reported (summary, record) and fails a gate, and the best result is still saved.
    """
    family, recipe = ctx.family, ctx.recipe
    rel = _input_model(cfg, ctx)
    model, meta = load_model(ctx.path(rel), family)
    teacher = ctx.teacher()
    budget = Budget.from_config(cfg)
    targets = budget.targets(family, model)
    start = measure(family, model, targets, cfg.precision, cfg.device)
    ft = cfg.finetune or DistillConfig()

    def batches(split: str, count: int) -> list[dict[str, torch.Tensor]]:
        return list(
            iterate_batches(recipe_dataset(recipe, family, meta["config"], split, count * ft.batch_size), ft.batch_size)
        )

    eval_batches = batches("eval", ft.eval_batches)
    calibration = batches("calibration", TAYLOR_BATCHES) if cfg.importance == "taylor" else None
    quality = family.quality(model, eval_batches, teacher=teacher)
    before = network_stats(family, model, cfg.precision)
    cycles: list[dict[str, Any]] = []
    for i in range(1, cfg.iterations + 1):
        limits = cycle_targets(start, targets, i / cfg.iterations)
        cycle = Budget.from_targets(limits, cfg.precision, cfg.device)
        ctx.log(f"cycle {i}/{cfg.iterations}: " + ", ".join(f"{k} <= {v:.4g}" for k, v in limits.items()))
        # Pruning the teacher itself: a distillation loss against it is zero, so Taylor uses the output norm.
        reference = None if (rel == ctx.artifacts["teacher"] and i == 1) else teacher
        report = prune_to_budget(
            family,
            model,
            cycle,
            cfg.importance,
            cfg.scope,
            cfg.round_to,
            cfg.protect,
            calibration,
            reference,
            family.loss_weights(ft.loss),
        )
        model = report.model
        row: dict[str, Any] = {
            "cycle": i,
            **report.to_json(),
            "quality_pruned": family.quality(model, eval_batches, teacher=teacher),
        }
        if cfg.finetune is not None:
            train = recipe_dataset(recipe, family, meta["config"], "train", cfg.finetune.train_samples)
            tuned = distill(
                model, teacher, family, cfg.finetune, train, ctx.stage_dir / f"finetune-{i}", progress=not ctx.quiet
            )
            row["finetune"] = {"steps": tuned.steps, "final_loss": tuned.final_loss, "wall_s": round(tuned.wall_s, 2)}
            row["quality_finetuned"] = family.quality(model, eval_batches, teacher=teacher)
        cycles.append(row)
        ctx.log(f"cycle {i}: ratios {row['ratios']}, " + ("budget met" if report.met else "; ".join(report.misses)))

    out = ctx.stage_dir / "pruned.safetensors"
    save_model(
        out,
        model,
        family=family.name,
        kind=meta["kind"],
        config=meta["config"],
        extra={"pruned_from": rel, "ratios": cycles[-1]["ratios"]},
    )
    achieved, misses = report.achieved, report.misses
    final_quality = cycles[-1].get("quality_finetuned", cycles[-1]["quality_pruned"])
    gates = [
        Gate(
            f"prune.{k}",
            t,
            achieved[k],
            achieved[k] <= t * (1 + 1e-9),
            miss_message(k, achieved[k], t, cfg.device) if achieved[k] > t * (1 + 1e-9) else "",
        )
        for k, t in targets.items()
    ]
    metrics = {
        "input": rel,
        "kind": meta["kind"],
        "importance": cfg.importance,
        "scope": cfg.scope,
        "round_to": cfg.round_to,
        "precision": cfg.precision,
        "targets": targets,
        "start": start,
        "achieved": achieved,
        "met": not misses,
        "misses": misses,
        "networks_before": before,
        "networks_after": network_stats(family, model, cfg.precision),
        "quality_before": quality,
        "quality_after": final_quality,
        "cycles": cycles,
    }
    on = measured_on(ctx, f"the pruned {meta['kind']} in torch, fp32", eval_batches)
    return StageResult(
        artifacts={"model": ctx.rel(out), "quality": {**final_quality, "measured_on": on}},
        metrics=metrics,
        gates=gates,
        summary=_summary(metrics, family.task),
    )


def _input_model(cfg: PruneConfig, ctx: RunContext) -> str:
    if cfg.model == "teacher":
        return ctx.artifacts["teacher"]
    if cfg.model == "model" and "model" not in ctx.artifacts:
        raise CompressError(
            "prune.model: 'model' needs an earlier stage that makes one (distill); use model: teacher or auto"
        )
    return ctx.artifacts.get("model") or ctx.artifacts["teacher"]


def _summary(metrics: dict[str, Any], task: Task) -> str:
    before, after = metrics["networks_before"], metrics["networks_after"]
    networks = ", ".join(
        f"{n} {before[n]['params'] / 1e3:.0f}k -> {after[n]['params'] / 1e3:.0f}k params "
        f"({before[n]['gflops']:.3g} -> {after[n]['gflops']:.3g} GFLOPs)"
        for n in before
    )
    size = f"{_total(before):.3g} -> {_total(after):.3g} MB {metrics['precision']}"
    verdict = "budget met" if metrics["met"] else "; ".join(metrics["misses"])
    quality = " -> ".join(task.headline(metrics[k]) for k in ("quality_before", "quality_after"))
    return f"{networks}; {size}; {verdict}; {quality}"


def _total(networks: dict[str, dict[str, float]]) -> float:
    return sum(n["size_mb"] for n in networks.values())
