"""The Performance pane with 4 live series at 100 points a second each, against the same pane
with nothing arriving.

A real :class:`MetricsCollector` (no database: the pane is measured, not SQLite) is fed 100
points a second on each of four series (request latency, time to first token, tokens/s,
context retrieval), on a qasync loop (offscreen), the real pane shown at 1280x900 on its
5-minute window, after a quarter of an hour of the same stream (what memory keeps). Measured:

1. frames: each refresh that redrew the charts (reading the metrics, drawing, and the repaint
   it causes, done at once);
2. CPU: the process's CPU time over the run, pane shown and streaming, against the same feed
   with the pane hidden (the feed's own cost), as a share of one core;
3. loop lag: how late a 5 ms sleep wakes up, i.e. the longest the GUI thread was held.

    QT_QPA_PLATFORM=offscreen python tests/benchmarks/bench_charts.py          # 10 s each
    QT_QPA_PLATFORM=offscreen python tests/benchmarks/bench_charts.py --quick  # 3 s each

Goals: frame p99 under 16 ms; the pane under 5 % of one core while open and streaming.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import emit, log, summary_ms

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GOAL_FRAME_MS = 16.0
GOAL_CPU_PERCENT = 5.0
LAG_PROBE_S = 0.005
RATE = 100  # points a second, each series


def _series() -> tuple[str, ...]:
    from mangaba_desktop.core import metrics

    return (
        metrics.REQUEST_LATENCY,
        metrics.TIME_TO_FIRST_TOKEN,
        metrics.TOKENS_PER_SECOND,
        metrics.RETRIEVAL_TIME,
    )


async def run(pane: Any, collector: Any, seconds: float, *, feed: bool) -> dict[str, Any]:
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QApplication

    series = SERIES
    frames: list[float] = []
    lags: list[float] = []
    original = pane.refresh

    def timed_draw(*args: Any, **kwargs: Any) -> None:
        drawn = pane.redraws
        started = time.perf_counter()
        original(*args, **kwargs)
        if pane.redraws == drawn:
            return  # nothing new: a tick that only looked
        # The repaint the redraw asked for, done now so that it is counted (only the charts
        # that changed have asked).
        window = pane.window()
        QApplication.sendPostedEvents(window, QEvent.Type.UpdateRequest)
        for view in pane.views.values():
            QApplication.sendPostedEvents(view.plot.viewport(), QEvent.Type.UpdateRequest)
        frames.append(time.perf_counter() - started)

    pane.refresh = timed_draw
    pane._timer.timeout.disconnect()
    pane._timer.timeout.connect(lambda: timed_draw())
    stop = time.monotonic() + seconds

    async def feeder() -> int:
        sent = 0
        started = time.monotonic()
        while time.monotonic() < stop:
            due = int((time.monotonic() - started) * RATE)
            while sent < due:
                for index, metric in enumerate(series):
                    collector.observe(metric, 10.0 + (sent % 50) + index, agent="a", model="m")
                sent += 1
            await asyncio.sleep(0.01)
        return sent

    async def prober() -> None:
        while time.monotonic() < stop:
            asked = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_S)
            lags.append(max(0.0, time.perf_counter() - asked - LAG_PROBE_S))

    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    sent, _ = await asyncio.gather(feeder() if feed else asyncio.sleep(seconds, 0), prober())
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    pane._timer.timeout.disconnect()
    pane._timer.timeout.connect(lambda: original())
    pane.refresh = original
    return {
        "frames": frames,
        "lags": lags,
        "cpu_percent": 100.0 * cpu / wall,
        "points_per_series": sent,
    }


async def main(seconds: float, quick: bool) -> None:
    from PySide6.QtWidgets import QApplication, QMainWindow

    from mangaba_desktop.core.events import EventBus
    from mangaba_desktop.core.metrics import LIVE_WINDOW_S, MetricsCollector
    from mangaba_desktop.ui.charts import PerformancePane

    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    bus = EventBus()
    collector = MetricsCollector(bus)  # no sampler task, no database: only the fed series
    # A quarter of an hour already streamed at the same rate (what memory keeps), so that
    # the pane reads the way it would after a while, not from a nearly empty collector.
    log("filling the last 15 minutes")
    now = time.time()
    count = int(LIVE_WINDOW_S * RATE)
    for index in range(count):
        at = now - LIVE_WINDOW_S + index / RATE
        for offset, metric in enumerate(SERIES):
            collector.observe(metric, 10.0 + (index % 50) + offset, agent="a", model="m", at=at)
    window = QMainWindow()
    pane = PerformancePane(collector, bus, spawn)
    window.setCentralWidget(pane)
    window.resize(1280, 900)
    window.show()
    await pane.start()
    QApplication.processEvents()

    log(f"empty pane, {seconds:g} s")
    empty = await run(pane, collector, seconds, feed=False)
    log(f"streaming, pane shown, {seconds:g} s")
    shown = await run(pane, collector, seconds, feed=True)
    log(f"streaming, pane hidden, {seconds:g} s")
    window.hide()
    hidden = await run(pane, collector, seconds, feed=True)
    await pane.flush()
    window.close()

    pane_cpu = shown["cpu_percent"] - hidden["cpu_percent"]
    frames = summary_ms(shown["frames"])
    emit(
        "charts",
        quick=quick,
        parameters={
            "series": 4,
            "points_per_second_each": RATE,
            "seconds": seconds,
            "window": "5 min",
            "size": "1280x900",
            "qpa": os.environ.get("QT_QPA_PLATFORM", ""),
        },
        frame_ms=frames,
        frames_per_second=round(len(shown["frames"]) / seconds, 1),
        empty_pane_frame_ms=summary_ms(empty["frames"]),
        loop_lag_ms=summary_ms(shown["lags"]),
        empty_loop_lag_ms=summary_ms(empty["lags"]),
        process_cpu_percent_shown=round(shown["cpu_percent"], 1),
        process_cpu_percent_hidden=round(hidden["cpu_percent"], 1),
        pane_cpu_percent_of_one_core=round(pane_cpu, 1),
        points_per_series=shown["points_per_series"],
        goal_frame_p99_ms=GOAL_FRAME_MS,
        goal_pane_cpu_percent=GOAL_CPU_PERCENT,
        met=frames.get("p99_ms", 0) < GOAL_FRAME_MS and pane_cpu < GOAL_CPU_PERCENT,
    )


SERIES: tuple[str, ...] = ()

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    import qasync

    from mangaba_desktop.ui.app import _make_application

    SERIES = _series()
    app = _make_application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(main(3.0 if options.quick else 10.0, options.quick))
