"""The Context pane over a million contexts, against the same pane over a thousand.

Builds (once, then reuses) a database of ``--contexts`` contexts through the app's schema, its
full-text triggers included, and a baseline of 1,000; then, on each, with the real pane on a
qasync loop (offscreen):

1. open: from creating the pane to its first rows painted (agents, chats, count, first page);
2. jumps: scroll to 25 %, 50 % and 100 % of the table with a cold page cache, time until every
   visible row is filled and painted;
3. page loads: p50/p95 of every page read the pane made;
4. operations: a new order or filter (priority, content, a full-text word, an agent), time until
   the first rows are back;
5. loop lag: the longest the event loop (the GUI thread) was held while all that ran.

    QT_QPA_PLATFORM=offscreen python tests/benchmarks/bench_context_pane.py          # 1,000,000
    QT_QPA_PLATFORM=offscreen python tests/benchmarks/bench_context_pane.py --quick  # 50,000

Goals: open and every jump under 300 ms at 1,000,000 contexts; the longest loop stall no more
than 20 ms over the baseline's (a stall that grows with the table is a bug; the pane's own
construction and first paint hold the loop for about the same time at any size).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import emit, log, meta_path, summary_ms

from mangaba_desktop.core.context.passages import digest

GENERATOR_VERSION = 1
"""Bump when the generated data changes, so that cached databases are rebuilt."""
GOAL_MS = 300.0
GOAL_EXTRA_LAG_MS = 20.0
BASELINE_CONTEXTS = 1_000
CACHE_DIR = Path("/tmp/mangaba-bench")

KINDS = ["conversation", "task", "knowledge", "memory", "system", "user_profile"]
TAGS = [
    "travel", "python", "family", "work", "health", "recipes", "finance", "music", "books",
    "garden", "car", "house", "school", "sports", "movies", "code", "ideas", "shopping",
]  # fmt: skip


# -- the database ---------------------------------------------------------------------------------


def words(rng: random.Random, size: int) -> list[str]:
    onsets = "b c d f g h j l m n p r s t v br cl dr fl gr pl pr st tr ch".split()  # noqa: SIM905
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "io"]
    codas = ["", "", "n", "r", "s", "l", "m", "nd", "st"]
    found: dict[str, None] = {}
    while len(found) < size:
        word = "".join(
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
            for _ in range(rng.choice((1, 2, 2, 3)))
        )
        if len(word) >= 3:
            found[word] = None
    return list(found)


def build(db_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Create the database through the app's migrations, then bulk-insert the contexts with
    the full-text triggers in place, in one transaction."""
    from mangaba_desktop.core.store import Database

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    meta_path(db_path).unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    Database(db_path).close()
    rng = random.Random(spec["seed"])
    vocabulary = words(rng, 4000)
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocabulary))))
    started = time.perf_counter()
    connection = sqlite3.connect(db_path, isolation_level=None)
    connection.execute("PRAGMA synchronous = OFF")
    now = time.time()
    first_time = now - 365 * 24 * 3600
    connection.execute("BEGIN")
    agents = [f"bench_agent_{i}" for i in range(spec["agents"])]
    connection.executemany(
        "INSERT INTO agents (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
        [(agent, f"Agent {i}", now + i, now + i) for i, agent in enumerate(agents)],
    )
    sessions = [(f"{i:032x}", agents[i % len(agents)]) for i in range(spec["sessions"])]
    connection.executemany(
        "INSERT INTO conversations (title, created_at, updated_at, agent_id, session_id)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (f"Chat {i}: {' '.join(rng.choices(vocabulary[:300], k=3))}", now, now, agent, sid)
            for i, (sid, agent) in enumerate(sessions)
        ],
    )
    total = spec["contexts"]
    step = (now - first_time) / total
    batch = 20_000
    for start in range(0, total, batch):
        rows = []
        for i in range(start + 1, min(start + batch, total) + 1):
            if rng.random() < 0.4:
                session_id, agent = None, agents[i % len(agents)]
            else:
                session_id, agent = sessions[rng.randrange(len(sessions))]
            kind = rng.choice(KINDS)
            content = " ".join(
                rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(6, 40))
            )
            content = content[0].upper() + content[1:] + "."
            tags = json.dumps(rng.sample(TAGS, rng.choice((0, 1, 1, 2))))
            priority = rng.choices((1, 2, 3, 4), (50, 30, 15, 5))[0]
            touched = rng.random() < 0.6
            archived = i > 100 and rng.random() < 0.02
            rows.append(
                (
                    i,
                    agent,
                    session_id,
                    content,
                    kind,
                    priority,
                    tags,
                    first_time + i * step,
                    first_time + i * step + rng.random() * 86400 if touched else None,
                    rng.randint(1, 40) if touched else 0,
                    rng.randrange(1, i - 50) if archived else None,
                    int(archived),
                    digest(kind, content),
                )
            )
        connection.executemany(
            "INSERT INTO contexts (id, agent_id, session_id, content, context_type, priority,"
            " tags, created_at, last_accessed, access_count, parent_id, archived, digest)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        done = start + len(rows)
        if (start // batch) % 10 == 9 or done == total:
            rate = done / (time.perf_counter() - started)
            log(f"inserted {done:,}/{total:,} contexts ({rate:,.0f}/s)")
    connection.execute("COMMIT")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.execute("ANALYZE")
    connection.close()
    meta = {
        "spec": spec,
        "build_seconds": round(time.perf_counter() - started, 1),
        "common_word": vocabulary[0],
        "middle_word": vocabulary[200],
    }
    meta_path(db_path).write_text(json.dumps(meta), encoding="utf-8")
    return meta


def stored_count(db_path: Path) -> int:
    """Contexts in the file now (something may have added some since it was built)."""
    connection = sqlite3.connect(db_path)
    try:
        return int(connection.execute("SELECT count(*) FROM contexts").fetchone()[0])
    finally:
        connection.close()


def prepared(count: int, seed: int, rebuild: bool) -> tuple[Path, dict[str, Any], bool]:
    spec = {
        "generator": GENERATOR_VERSION,
        "contexts": count,
        "agents": 5,
        "sessions": 500 if count >= 10_000 else 20,
        "seed": seed,
    }
    db_path = CACHE_DIR / f"contexts-{count}.sqlite3"
    if not rebuild:
        try:
            meta = json.loads(meta_path(db_path).read_text(encoding="utf-8"))
            if meta.get("spec") == spec and db_path.is_file() and stored_count(db_path) == count:
                log(f"reusing {db_path}")
                return db_path, meta, True
        except (OSError, ValueError):
            pass
    log(f"building {db_path} with {count:,} contexts")
    return db_path, build(db_path, spec), False


# -- timing the pane ------------------------------------------------------------------------------


async def until(predicate: Callable[[], Any], limit: float = 60.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.001)


class LoopLag:
    """How late a 5 ms sleep wakes up: the time the loop (the GUI thread) was held elsewhere."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lags.append(max(0.0, time.perf_counter() - started - 0.005))

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._probe())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def visible_loaded(pane: Any) -> bool:
    rows = pane.visible_rows()
    return all(pane.model.context_at(r) is not None for r in rows)


async def measure(db_path: Path, meta: dict[str, Any], runs: int) -> dict[str, Any]:
    from PySide6.QtWidgets import QAbstractItemView

    from mangaba_desktop.core.context import ContextFilter, ContextStore
    from mangaba_desktop.core.events import EventBus
    from mangaba_desktop.core.store import AgentStore, ConversationStore, Database
    from mangaba_desktop.ui.context_browser import ContextPane

    database = Database(db_path)
    bus = EventBus()
    contexts = ContextStore(database, bus)
    page_times: list[float] = []
    original_page = contexts.page

    async def timed_page(where: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original_page(where, **kwargs)
        finally:
            page_times.append(time.perf_counter() - started)

    contexts.page = timed_page  # type: ignore[method-assign]
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    def new_pane() -> ContextPane:
        pane = ContextPane(
            contexts, AgentStore(database, bus), ConversationStore(database, bus), bus, spawn
        )
        pane.resize(1280, 800)
        pane.show()
        return pane

    async def close(pane: ContextPane) -> None:
        while tasks:
            await asyncio.gather(*list(tasks))
        await pane.flush()
        pane.hide()
        pane.deleteLater()
        await asyncio.sleep(0)

    lag = LoopLag()
    lag.start()
    try:
        warm = new_pane()  # connections, statement cache, hot pages
        await warm.start()
        await close(warm)

        open_times: list[float] = []
        paint_times: list[float] = []
        for run in range(runs):
            started = time.perf_counter()
            pane = new_pane()
            await pane.start()
            await until(lambda p=pane: visible_loaded(p))
            paint_started = time.perf_counter()
            pane.table.viewport().repaint()
            paint_times.append(time.perf_counter() - paint_started)
            open_times.append(time.perf_counter() - started)
            count = pane.model.rowCount()
            if run < runs - 1:
                await close(pane)
        open_page_times = list(page_times)

        page_times.clear()
        jumps: dict[str, list[float]] = {"25%": [], "50%": [], "100%": []}
        for round_ in range(runs):
            for name, fraction in (("25%", 0.25), ("50%", 0.5), ("100%", 1.0)):
                await pane.model.refresh()  # a cold cache: only the first page is kept
                row = max(0, int(fraction * (count - 1)) - round_ * 997)
                started = time.perf_counter()
                pane.table.scrollTo(
                    pane.model.index(row, 0), QAbstractItemView.ScrollHint.PositionAtTop
                )
                pane.table.viewport().repaint()  # asks for the rows now in view
                await until(lambda p=pane: visible_loaded(p))
                paint_started = time.perf_counter()
                pane.table.viewport().repaint()
                paint_times.append(time.perf_counter() - paint_started)
                jumps[name].append(time.perf_counter() - started)
        jump_page_times = list(page_times)

        agent = (await AgentStore(database, bus).list())[1].id
        operations = {
            "sort_priority_desc": ("priority", True, ContextFilter()),
            "sort_last_accessed_desc": ("last_accessed", True, ContextFilter()),
            "sort_content_asc": ("content", False, ContextFilter()),
            "search_common_word": ("created_at", True, ContextFilter(text=meta["common_word"])),
            "search_middle_word": ("created_at", True, ContextFilter(text=meta["middle_word"])),
            "filter_agent": ("created_at", True, ContextFilter(agent_id=agent)),
            "filter_tag": ("created_at", True, ContextFilter(tag="travel")),
            "filter_critical": ("created_at", True, ContextFilter(priorities=frozenset({4}))),
        }
        operation_times: dict[str, Any] = {}
        for name, (sort, descending, where) in operations.items():
            times = []
            for _ in range(max(2, runs // 2)):
                pane.model.sort_key, pane.model.descending = sort, descending
                pane.model.set_filter(where)
                started = time.perf_counter()
                found = await pane.model.refresh()
                pane.table.viewport().repaint()
                times.append(time.perf_counter() - started)
            operation_times[name] = {**summary_ms(times), "rows": found}
        times = []
        for _ in range(max(2, runs // 2)):
            started = time.perf_counter()
            sessions = await contexts.sessions(agent)
            times.append(time.perf_counter() - started)
        operation_times["agent_sessions_for_filter"] = {**summary_ms(times), "rows": len(sessions)}
        await close(pane)
    finally:
        await lag.stop()
        database.close()
    return {
        "contexts": count,
        "open_to_first_rows": summary_ms(open_times),
        "jump_to_rows_filled": {name: summary_ms(times) for name, times in jumps.items()},
        "page_loads_on_open": summary_ms(open_page_times),
        "page_loads_on_jumps": summary_ms(jump_page_times),
        "paint_visible_rows": summary_ms(paint_times),
        "operations": operation_times,
        "loop_lag": summary_ms(lag.lags),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 contexts, fewer runs")
    parser.add_argument("--contexts", type=int, help="contexts to store (1,000,000)")
    parser.add_argument("--runs", type=int, help="repetitions of each measure (7)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    count = args.contexts or (50_000 if args.quick else 1_000_000)
    runs = args.runs or (3 if args.quick else 7)

    big_path, big_meta, big_reused = prepared(count, args.seed, args.rebuild)
    small_path, small_meta, _ = prepared(BASELINE_CONTEXTS, args.seed, args.rebuild)

    import qasync

    from mangaba_desktop.ui.app import _make_application

    app = _make_application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        log(f"timing the pane over {BASELINE_CONTEXTS:,} contexts")
        small = loop.run_until_complete(measure(small_path, small_meta, runs))
        log(f"timing the pane over {count:,} contexts")
        big = loop.run_until_complete(measure(big_path, big_meta, runs))

    def ratio(path: Callable[[dict[str, Any]], float]) -> float:
        return round(path(big) / max(path(small), 1e-3), 2)

    worst_jump = max(j["p95_ms"] for j in big["jump_to_rows_filled"].values())
    open_p95 = big["open_to_first_rows"]["p95_ms"]
    lag_max = big["loop_lag"]["max_ms"]
    baseline_lag_max = small["loop_lag"]["max_ms"]
    emit(
        "context_pane",
        quick=args.quick,
        parameters={
            "contexts": count,
            "baseline_contexts": BASELINE_CONTEXTS,
            "runs": runs,
            "db": str(big_path),
            "db_bytes": big_path.stat().st_size,
            "db_reused": big_reused,
            "build_seconds": big_meta["build_seconds"],
            "sqlite": sqlite3.sqlite_version,
            "window": "1280x800 offscreen",
            "notes": [
                "jumps start from a cold page cache (the model refreshed before each)",
                "operations set the model's order and filter directly: sort_content_asc is "
                "what the pane refuses above 100,000 rows",
                "loop_lag includes the benchmark's own synchronous repaints (paint_visible_rows)",
            ],
        },
        big=big,
        baseline=small,
        ratios_big_over_baseline={
            "open_p50": ratio(lambda r: r["open_to_first_rows"]["p50_ms"]),
            "jump_100%_p50": ratio(lambda r: r["jump_to_rows_filled"]["100%"]["p50_ms"]),
            "page_load_p95": ratio(lambda r: r["page_loads_on_jumps"]["p95_ms"]),
        },
        goal={
            "target": (
                f"open and jumps p95 < {GOAL_MS:g} ms; longest loop stall < the baseline's "
                f"+ {GOAL_EXTRA_LAG_MS:g} ms"
            ),
            "open_p95_ms": open_p95,
            "worst_jump_p95_ms": worst_jump,
            "loop_lag_max_ms": lag_max,
            "baseline_loop_lag_max_ms": baseline_lag_max,
            "met": (
                open_p95 < GOAL_MS
                and worst_jump < GOAL_MS
                and lag_max < baseline_lag_max + GOAL_EXTRA_LAG_MS
            ),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
