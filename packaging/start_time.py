"""Cold start of the built binary against the source install: process start to the first
painted window (``--quit-after-paint``), interleaved runs, each in a fresh data folder.

    python packaging/start_time.py --binary dist/mangaba-desktop/mangaba-desktop [--runs 5]

Prints one JSON object; the goal is the binary within 1.3 x the source install (median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_RATIO = 1.3
ROOT = Path(__file__).resolve().parents[1]


def started_in(command: list[str]) -> float:
    """Seconds from launching ``command`` to its report of the first painted window."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
        env["HOME"] = folder  # nothing of the builder's own settings or data
        began = time.perf_counter()
        process = subprocess.Popen(
            [*command, "--data-dir", folder, "--quit-after-paint"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("first-paint-ms"):
                painted = time.perf_counter() - began
                break
        else:
            raise RuntimeError(f"{command[0]} never painted (exit {process.wait()})")
        process.wait(timeout=60)
        return painted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    built = [str(Path(options.binary).resolve())]
    source = [options.python, "-m", "mangaba_desktop"]
    started_in(built)  # the first run of each warms the disk cache; not counted
    started_in(source)
    times: dict[str, list[float]] = {"binary": [], "source": []}
    for _ in range(options.runs):
        times["binary"].append(started_in(built))
        times["source"].append(started_in(source))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["binary"] / medians["source"]
    print(
        json.dumps(
            {
                "benchmark": "cold start to first paint",
                "runs": options.runs,
                "binary_s": [round(t, 3) for t in times["binary"]],
                "source_s": [round(t, 3) for t in times["source"]],
                "binary_median_s": round(medians["binary"], 3),
                "source_median_s": round(medians["source"], 3),
                "ratio": round(ratio, 2),
                "goal_ratio": GOAL_RATIO,
                "met": ratio <= GOAL_RATIO,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
