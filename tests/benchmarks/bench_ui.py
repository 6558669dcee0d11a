"""Start-up and long-history benchmarks of the real window.

1. Start to first painted window: ``mangaba-desktop --quit-after-paint`` against a bare PySide6
   QMainWindow started the same way, interleaved runs, wall time from spawning the process to
   the paint report (goal: ratio <= 1.5).
2. Opening a conversation of 100,000 messages against one of 10: time from the click to the
   message view painted, and the extra resident memory (goals: < 300 ms, < 60 MB).

Run: ``QT_QPA_PLATFORM=offscreen python tests/benchmarks/bench_ui.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import emit, log

BARE_WINDOW = """
import sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv[:1])
class Window(QMainWindow):
    painted = False
    def paintEvent(self, event):
        super().paintEvent(event)
        if not self.painted:
            self.painted = True
            QTimer.singleShot(0, lambda: (print("first-paint", flush=True), app.quit()))
window = Window()
window.resize(1200, 780)
window.show()
app.exec()
"""


def time_to_paint(command: list[str]) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("first-paint"):
            elapsed = time.perf_counter() - started
            break
    else:
        raise RuntimeError(f"{command} never painted")
    process.wait(30)
    return elapsed


def bench_start(runs: int) -> dict[str, object]:
    data = tempfile.mkdtemp(prefix="mangaba-bench-start-")
    app = [sys.executable, "-m", "mangaba_desktop", "--data-dir", data, "--quit-after-paint"]
    bare = [sys.executable, "-c", BARE_WINDOW]
    time_to_paint(app), time_to_paint(bare)  # warm the file cache for both
    app_times, bare_times = [], []
    for i in range(runs):
        log(f"start-up run {i + 1}/{runs}")
        bare_times.append(time_to_paint(bare))
        app_times.append(time_to_paint(app))
    app_ms = statistics.median(app_times) * 1000
    bare_ms = statistics.median(bare_times) * 1000
    return {
        "app_median_ms": round(app_ms, 1),
        "bare_qmainwindow_median_ms": round(bare_ms, 1),
        "ratio": round(app_ms / bare_ms, 3),
        "goal_ratio_max": 1.5,
        "met": app_ms / bare_ms <= 1.5,
    }


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fill(path: Path, big: int, small: int) -> tuple[int, int]:
    from mangaba_desktop.core.store import Database

    Database(path).close()
    db = sqlite3.connect(path)
    now = time.time()
    ids = []
    for title, count in (("Big", big), ("Small", small)):
        cursor = db.execute(
            "INSERT INTO conversations (title, created_at, updated_at) VALUES (?, ?, ?)",
            (title, now, now),
        )
        conversation = cursor.lastrowid
        ids.append(conversation)
        rows = (
            (
                conversation,
                "user" if i % 2 == 0 else "assistant",
                f"Message {i}: " + "some **markdown** text with `code` " * (1 + i % 5),
                now + i,
            )
            for i in range(count)
        )
        db.executemany(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (?, ?, ?, ?)",
            rows,
        )
    db.commit()
    db.close()
    return ids[0], ids[1]


def bench_open(big_count: int, runs: int) -> dict[str, object]:
    import qasync

    from mangaba_desktop.ui.app import _make_application
    from tests.helpers.app import running_app, until

    directory = Path(tempfile.mkdtemp(prefix="mangaba-bench-open-"))
    log(f"filling a conversation of {big_count:,} messages")
    big, small = fill(directory / "mangaba.sqlite3", big_count, 10)
    app = _make_application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    results: dict[str, list[float]] = {"big_ms": [], "small_ms": [], "big_mb": [], "small_mb": []}

    async def open_and_paint(pane, conversation_id: int) -> tuple[float, float]:
        pane.conversation_list.selectionModel().clearCurrentIndex()
        await until(lambda: pane.current is None and not pane.messages.rows)
        before = rss_mb()
        started = time.perf_counter()
        pane.select_conversation(conversation_id)
        await until(
            lambda: pane.current and pane.current.id == conversation_id and pane.messages.rows
        )
        pane.message_view.viewport().repaint()
        return (time.perf_counter() - started) * 1000, rss_mb() - before

    async def scenario() -> None:
        async with running_app(directory) as running:
            pane = running.pane
            for _ in range(runs):
                for name, conversation in (("small", small), ("big", big)):
                    elapsed, grown = await open_and_paint(pane, conversation)
                    results[f"{name}_ms"].append(elapsed)
                    results[f"{name}_mb"].append(grown)

    with loop:
        loop.run_until_complete(scenario())
    big_ms = statistics.median(results["big_ms"])
    small_ms = statistics.median(results["small_ms"])
    big_mb = max(results["big_mb"])
    return {
        "messages": big_count,
        "big_open_to_paint_median_ms": round(big_ms, 1),
        "small_open_to_paint_median_ms": round(small_ms, 1),
        "ratio": round(big_ms / small_ms, 3),
        "big_extra_rss_max_mb": round(big_mb, 1),
        "small_extra_rss_max_mb": round(max(results["small_mb"]), 1),
        "goal": "big open < 300 ms and < 60 MB extra",
        "met": big_ms < 300 and big_mb < 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs, 20,000 messages")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    start = bench_start(3 if args.quick else 7)
    opening = bench_open(20_000 if args.quick else 100_000, 2 if args.quick else 5)
    emit(
        "ui",
        quick=args.quick,
        parameters={"start_runs": 3 if args.quick else 7},
        start_to_first_paint=start,
        open_long_conversation=opening,
    )


if __name__ == "__main__":
    main()
