"""What every benchmark script shares: machine facts, percentiles, the JSON it prints.

The scripts are run by hand (``python tests/benchmarks/bench_NAME.py [--quick]``), not by
pytest; each prints one JSON object on stdout and its progress on stderr.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare two runs."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation, like numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """n, p50, p95, p99, mean and max of durations given in seconds, in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def log(message: str) -> None:
    """Progress for the person watching; stdout stays one JSON object."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(benchmark: str, *, quick: bool, parameters: dict[str, Any], **fields: Any) -> None:
    """Print the benchmark's one JSON object."""
    result = {
        "benchmark": benchmark,
        "quick": quick,
        "machine": machine(),
        "parameters": parameters,
        **fields,
    }
    print(json.dumps(result, indent=2, default=str))


# -- databases built once and reused -----------------------------------------------------------


def meta_path(db_path: Path) -> Path:
    """Where the description of a cached benchmark database lives."""
    return db_path.with_name(db_path.name + ".meta.json")


def cached_meta(db_path: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The description of ``db_path`` if it was built from ``spec``, else ``None``."""
    try:
        meta = json.loads(meta_path(db_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("spec") != spec or not db_path.is_file():
        return None
    return meta


def warm_os_cache(db_path: Path) -> None:
    """Read the file once so that every contender starts from the same warm page cache."""
    with open(db_path, "rb") as file:
        while file.read(16 * 1024 * 1024):
            pass
