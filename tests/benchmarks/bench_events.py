"""The event bus's publishing cost with the metrics collector subscribed, against a bus with no
subscribers, measured in the same run.

Publishes ``ai.request.completed`` (the collector's busiest handler: seven samples per event)
and ``message.delta`` (the most frequent event, which the collector does not read) in rounds
that alternate between the two buses, and times each publish on its own for the percentiles.
Then times the collector's own work off the publishing path: a live-window query over a full
series, storing a minute of samples to a real SQLite file, and charts of a stored week.

    python tests/benchmarks/bench_events.py            # 200,000 events a round, 7 rounds
    python tests/benchmarks/bench_events.py --quick    # 20,000 events a round, 3 rounds

Goal: the collector adds under 5 µs to an ``ai.request.completed`` publish.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import emit, log, summary_ms

from mangaba_desktop.core import events
from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.metrics import REQUEST_LATENCY, RETENTION_S, RSS, MetricsCollector
from mangaba_desktop.core.metrics.collector import MAX_SAMPLES_PER_SERIES
from mangaba_desktop.core.store import Database

GOAL_ADDED_US = 5.0

COMPLETED = {
    "conversation_id": 7,
    "message_id": 42,
    "request_id": "4f1c2b8e9d0a4b6c8e2f1a3b5c7d9e0f",
    "agent_id": "mangaba_1a2b3c4d",
    "model": "openai/gpt-4o-mini",
    "status": "complete",
    "latency_ms": 812.5,
    "time_to_first_token_ms": 143.0,
    "prompt_tokens": 512,
    "completion_tokens": 96,
    "tokens_per_second": 143.5,
    "context_ids": [1, 2, 3],
    "provider": "openai",
    "cost_usd": 0.000134,
}
DELTA = {"conversation_id": 7, "message_id": 42, "delta": "word "}


def per_event_ns(publish: Callable[[], None], count: int) -> float:
    """Nanoseconds per publish over ``count`` back-to-back publishes."""
    started = time.perf_counter_ns()
    for _ in range(count):
        publish()
    return (time.perf_counter_ns() - started) / count


def one_by_one_s(publish: Callable[[], None], count: int) -> list[float]:
    """Each publish's own duration in seconds (timer overhead included, the same for both)."""
    timer = time.perf_counter
    durations = []
    for _ in range(count):
        started = timer()
        publish()
        durations.append(timer() - started)
    return durations


def publisher(bus: EventBus, name: str, payload: dict[str, Any]) -> Callable[[], None]:
    def publish() -> None:
        bus.publish(name, **payload)

    return publish


def compare(name: str, payload: dict[str, Any], count: int, rounds: int) -> dict[str, Any]:
    bare = EventBus()
    watched = EventBus()
    collector = MetricsCollector(watched)
    contenders = {
        "no_subscribers": publisher(bare, name, payload),
        "with_collector": publisher(watched, name, payload),
    }
    batch_ns: dict[str, list[float]] = {key: [] for key in contenders}
    singles: dict[str, list[float]] = {key: [] for key in contenders}
    for publish in contenders.values():  # warm up
        per_event_ns(publish, min(count, 5_000))
    for round_ in range(rounds):
        # Alternating order each round: neither side always runs on a warmer machine.
        order = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
        for key in order:
            gc.collect()
            batch_ns[key].append(per_event_ns(contenders[key], count))
            singles[key].extend(one_by_one_s(contenders[key], count // 10))
    result: dict[str, Any] = {}
    for key in contenders:
        median_ns = statistics.median(batch_ns[key])
        result[key] = {
            "per_event_us": round(median_ns / 1000, 3),
            "events_per_s": round(1e9 / median_ns),
            "rounds_per_event_us": [round(ns / 1000, 3) for ns in batch_ns[key]],
            "single_publish": summary_ms(singles[key]),
        }
    added_us = result["with_collector"]["per_event_us"] - result["no_subscribers"]["per_event_us"]
    result["added_by_collector_us"] = round(added_us, 3)
    result["collector_version"] = collector.version
    return result


class Ticker:
    """Wakes every millisecond on the running loop while entered, recording how late."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.005)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            self.lateness.append(time.perf_counter() - due)


def query_cost(samples: int, repeats: int) -> dict[str, Any]:
    """A 10-minute live chart query over one series holding ``samples`` samples."""
    collector = MetricsCollector(EventBus())
    now = time.time()
    for i in range(samples):
        collector.observe(
            REQUEST_LATENCY, 100.0 + i % 900, agent="a", at=now - 600 + i * 600 / samples
        )
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        collector.query(REQUEST_LATENCY, since=now - 600, until=now, stat="p95", step_s=5)
        durations.append(time.perf_counter() - started)
    return {"samples": samples, "p95_every_5s_over_10_min": summary_ms(durations)}


async def flush_cost(samples: int) -> dict[str, Any]:
    """Storing one minute of ``samples`` samples over 84 series (12 metrics, 7 agents): how
    long the flush takes, and how late a 1 ms ticker on the event loop wakes meanwhile."""
    with tempfile.TemporaryDirectory() as folder:
        database = Database(Path(folder) / "bench.sqlite3")
        try:
            collector = MetricsCollector(EventBus(), database)
            minute = (time.time() // 60 - 1) * 60
            for i in range(samples):
                collector.observe(
                    f"bench.metric_{i % 12}",
                    float(i % 1000),
                    agent=f"agent_{i % 7}",
                    at=minute + (i % 60),
                )
            async with Ticker() as ticker:
                started = time.perf_counter()
                rows = await collector.flush()
                whole = time.perf_counter() - started
        finally:
            database.close()
    return {
        "samples": samples,
        "rows": rows,
        "flush_ms": round(whole * 1000, 3),
        "loop_lateness_during_flush": summary_ms(ticker.lateness),
    }


async def stored_week_query(repeats: int) -> dict[str, Any]:
    """Charts of a week and of a day (120 points each) from a week of stored minutes of one
    metric: how long each takes, and how late a 1 ms ticker on the event loop wakes."""
    with tempfile.TemporaryDirectory() as folder:
        database = Database(Path(folder) / "bench.sqlite3")
        try:
            collector = MetricsCollector(EventBus(), database)
            now = time.time()
            first = (now // 60 - RETENTION_S // 60 + 1) * 60
            minutes = int((now - first) // 60)
            for i in range(minutes):
                collector.set_gauge(RSS, 200.0 + i % 97, at=first + i * 60 + 1)
            log(f"storing {minutes:,} minutes")
            await collector.flush()
            result: dict[str, Any] = {"minutes_stored": minutes}
            for name, span in (("week", RETENTION_S - 120), ("day", 24 * 3600.0)):
                durations: list[float] = []
                async with Ticker() as ticker:
                    for _ in range(repeats):
                        started = time.perf_counter()
                        await collector.query_stored(RSS, since=now - span, stat="p95")
                        durations.append(time.perf_counter() - started)
                result[name] = {
                    "query": summary_ms(durations),
                    "loop_lateness": summary_ms(ticker.lateness),
                }
        finally:
            database.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, rounds = (20_000, 3) if args.quick else (200_000, 7)

    log(f"ai.request.completed: {rounds} rounds of {count:,} events on each bus")
    completed = compare(events.AI_REQUEST_COMPLETED, COMPLETED, count, rounds)
    log(f"message.delta: {rounds} rounds of {count:,} events on each bus")
    delta = compare(events.MESSAGE_DELTA, DELTA, count, rounds)
    log("live-window query over a full series")
    query = query_cost(MAX_SAMPLES_PER_SERIES, 20 if args.quick else 50)
    log("storing a minute")
    flushes = [asyncio.run(flush_cost(n)) for n in (600, 6_000, 60_000)]
    log("charts of a stored week")
    stored = asyncio.run(stored_week_query(5 if args.quick else 20))

    emit(
        "events",
        quick=args.quick,
        parameters={"events_per_round": count, "rounds": rounds},
        goal_added_us=GOAL_ADDED_US,
        met_goal=completed["added_by_collector_us"] < GOAL_ADDED_US,
        ai_request_completed=completed,
        message_delta=delta,
        query=query,
        flush=flushes,
        stored_week=stored,
    )


if __name__ == "__main__":
    sys.exit(main())
