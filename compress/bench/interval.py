"""Prediction intervals for the cost model: how far off a predicted latency may be.

Method (the same for every profile):
  1. Leave-one-out (LOO): refit the profile without each reference network and predict it;
     its relative error is e = predicted / measured - 1 (calibrate.leave_one_out).
  2. The error bound q is the k-th smallest |e| of the n LOO errors, k = min(n, ceil((n+1) * 0.9)):
     the split-conformal quantile. If a new network's error is exchangeable with the references'
     (drawn alike), |e_new| <= q with probability k / (n + 1): 83 % for 5 errors (then q is the
     largest), 90 % once n >= 9. That is the nominal coverage a profile records; a network unlike
     every reference is not exchangeable with them, which is what step 3 is for.
  3. Since ms_true = ms_predicted / (1 + e), the nodes whose op types some reference contains get
     [ms / (1 + q), ms / (1 - q)].
  4. A node whose op type no reference contains ("extrapolated") has no error evidence at all: its
     bytes are priced anywhere in its class's rate range (ms per MB, from the profile's
     `rate_range`: the profile's own rate and the rates carried from another calibrated device,
     see calibrate.rate_range), then widened by q as in step 3.
  5. The interval of a network is the sum of its nodes' intervals plus the fixed per-call cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LEVEL = 0.9  # the coverage aimed at; few references give less, and the profile says how much
# What a prediction carries besides its ms: [low, high] ms, nominal coverage, the share of the ms in
# op types no reference contains, and those op types.
INTERVAL_KEYS = ("interval_ms", "interval_coverage", "extrapolated_share", "extrapolated_op_types")


def error_bound(errors: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """(q, nominal coverage) from LOO relative errors: the split-conformal quantile of their magnitudes."""
    magnitudes = sorted(abs(e) for e in errors)
    if not magnitudes:
        raise ValueError("no leave-one-out errors to bound the prediction error with")
    k = min(len(magnitudes), math.ceil((len(magnitudes) + 1) * level))
    return magnitudes[k - 1], k / (len(magnitudes) + 1)


def widen(low_ms: float, high_ms: float, bound: float) -> tuple[float, float | None]:
    """[low / (1 + q), high / (1 - q)]: the true latency when |predicted / true - 1| <= q (no upper end for q >= 1)."""
    return low_ms / (1 + bound), (high_ms / (1 - bound) if bound < 1 else None)


def straddles(interval_ms: Sequence[float | None] | None, target_fps: float) -> bool:
    """Whether a latency interval holds both a latency that meets `target_fps` and one that misses it."""
    if not interval_ms:
        return False
    low, high = interval_ms
    return low is not None and 1e3 / low >= target_fps and (high is None or 1e3 / high < target_fps)


def interval_text(interval_ms: Sequence[float | None] | None) -> str:
    """ "12.3-20.4" (ms), "12.3-inf" without an upper end, "-" without an interval."""
    if not interval_ms:
        return "-"
    low, high = interval_ms
    return f"{low:.1f}-" + ("inf" if high is None else f"{high:.1f}")


def straddle_note(interval_ms: Sequence[float | None] | None, target_fps: float, extrapolated: float | None) -> str:
    """What a gate says when the deciding prediction's interval holds its target; "" otherwise."""
    if not straddles(interval_ms, target_fps):
        return ""
    share = "" if extrapolated is None else f", {extrapolated * 100:.0f} % of the prediction extrapolated"
    return (
        f"interval {interval_text(interval_ms)} ms{share} straddles {target_fps:g} fps: "
        "the prediction cannot tell pass from fail"
    )


@dataclass(frozen=True)
class IntervalModel:
    """A profile's interval data for one thread count (its YAML `interval` block)."""

    bound: float  # q
    coverage: float  # nominal, k / (n + 1)
    reference_op_types: frozenset[str]
    rate_range: dict[str, tuple[float, float]]  # op class or "op:TYPE" -> (low, high) ms/MB for extrapolated nodes

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IntervalModel:
        return cls(
            float(data["relative_error_bound"]),
            float(data["nominal_coverage"]),
            frozenset(data["reference_op_types"]),
            {k: (float(v[0]), float(v[1])) for k, v in (data.get("rate_range") or {}).items()},
        )

    def extrapolated(self, op_type: str) -> bool:
        return op_type not in self.reference_op_types

    def node_range(self, op_class: str, op_type: str, ms: float, mb: float, own_rate: float) -> tuple[float, float]:
        """Before widening by q: a referenced node's predicted ms; an extrapolated node's ms with its bytes
        priced at either end of its class's rate range (and at its own rate, whichever is further out)."""
        own = self.rate_range.get(f"op:{op_type}", self.rate_range.get(op_class))  # an op type's own range first
        if not self.extrapolated(op_type) or own is None:
            return ms, ms
        low, high = own
        return min(ms, ms + (low - own_rate) * mb), max(ms, ms + (high - own_rate) * mb)
