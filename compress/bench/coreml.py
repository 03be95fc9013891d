"""`coreml`: a Core ML prediction loop on this Mac's CPU (compute units CPU_ONLY).

Core ML runs models only on macOS; elsewhere coremltools converts but cannot predict, so this
device refuses with a clear message (use profile:iphone8 for a prediction).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import CompressError

# Core ML multiarray data types (FeatureTypes_pb2.ArrayFeatureType) -> numpy.
ARRAY_DTYPES = {65568: np.float32, 65552: np.float16, 65600: np.float64, 131104: np.int32}


def check_platform() -> None:
    if platform.system() != "Darwin":
        raise CompressError(
            f"--device coreml: Core ML predictions need macOS (this is {platform.system()}); "
            "run `compress profile` on a Mac, or use --device profile:iphone8 for a predicted latency"
        )


def random_inputs(model: Any, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for feature in model.get_spec().description.input:
        array = feature.type.multiArrayType
        if not feature.type.HasField("multiArrayType"):
            raise CompressError(f"coreml: input {feature.name!r} is not a multiarray; only tensor inputs can be timed")
        feeds[feature.name] = rng.random(tuple(array.shape), dtype=np.float32).astype(
            ARRAY_DTYPES.get(array.dataType, np.float32)
        )
    return feeds


def measure(
    models: list[Path], threads: int = 1, warmup: int = 5, runs: int = 30, top: int = 10
) -> list[dict[str, Any]]:
    """p50/p90/p99/fps of each .mlpackage / .mlmodel; Core ML picks its own thread count, so threads is None."""
    check_platform()
    import coremltools as ct

    results = []
    for path in models:
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        feeds = random_inputs(model)
        for _ in range(warmup):
            model.predict(feeds)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model.predict(feeds)
            times.append((time.perf_counter() - start) * 1e3)
        p50, p90, p99 = (float(np.percentile(times, q)) for q in (50, 90, 99))
        results.append(
            {
                "model": str(path),
                "threads": None,
                "warmup": warmup,
                "runs": runs,
                "p50_ms": p50,
                "p90_ms": p90,
                "p99_ms": p99,
                "mean_ms": float(np.mean(times)),
                "fps": 1e3 / p50,
                "times_ms": times,
                "ops": [],
            }
        )
    return results
