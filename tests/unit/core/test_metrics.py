"""The metrics core: percentiles, labels, the bus and the process as sources, minutes kept in a
real SQLite file across a restart, and a week's retention."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from mangaba_desktop.core import events
from mangaba_desktop.core.agent import Runtime
from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.metrics import (
    COST,
    CPU,
    ERRORS,
    LIVE_WINDOW_S,
    LOCAL_MODEL_CPU,
    OPEN_FILES,
    REQUEST_LATENCY,
    REQUESTS,
    RETENTION_S,
    RETRIEVAL_TIME,
    RSS,
    STATS,
    THREADS,
    TIME_TO_FIRST_TOKEN,
    TOKENS_PER_SECOND,
    MetricsCollector,
    ProcessSampler,
    Summary,
    percentile,
)
from mangaba_desktop.core.metrics.percentiles import RELATIVE_ACCURACY
from mangaba_desktop.core.providers.local_model import (
    generating_thread_ids,
    local_model_cpu_seconds,
)
from mangaba_desktop.core.store import Database, MessageStatus
from tests.helpers.db import execute_file, query_file
from tests.helpers.events import EventLog
from tests.helpers.sources import ScriptedSource, words

MINUTE = 60


def reference(values: list[float], stat: str, step_s: float) -> float:
    """What each stat must be, computed another way: the standard library's quantiles
    (``inclusive``: numpy's default interpolation) and plain arithmetic."""
    if stat in ("p50", "p95", "p99"):
        q = int(stat[1:])
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
    return {
        "mean": statistics.fmean(values),
        "max": max(values),
        "sum": math.fsum(values),
        "count": float(len(values)),
        "rate_per_min": math.fsum(values) / (step_s / 60),
    }[stat]


def past_minute(minutes_ago: int) -> float:
    """The start of the minute ``minutes_ago`` minutes before this one."""
    return (time.time() // MINUTE - minutes_ago) * MINUTE


@pytest_asyncio.fixture
async def collector(database: Database, bus: EventBus) -> AsyncIterator[MetricsCollector]:
    collector = MetricsCollector(bus, database)
    yield collector
    await collector.close()


# -- percentiles --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 3, 10, 101, 1000])
def test_percentile_agrees_with_the_standard_library(size):
    rng = random.Random(size)
    values = [round(rng.lognormvariate(5, 1), 1) for _ in range(size)]  # with ties when rounded
    values += values[: size // 4]
    expected = statistics.quantiles(values, n=100, method="inclusive")
    ordered = sorted(values)

    for q in range(1, 100):
        assert percentile(ordered, q) == pytest.approx(expected[q - 1], rel=1e-12)
    assert percentile(ordered, 0) == ordered[0]
    assert percentile(ordered, 100) == ordered[-1]


def test_percentile_of_one_value_is_that_value_and_of_none_is_an_error():
    assert percentile([42.0], 99) == 42.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_merged_summaries_keep_percentiles_within_the_stated_accuracy():
    """Rows merged into a longer step (or across labels) estimate each percentile from their
    histograms: within 1 % of the value at the same rank (rounded down) of all the values."""
    rng = random.Random(7)
    minutes = [[rng.lognormvariate(6, 1.2) for _ in range(rng.randint(1, 300))] for _ in range(60)]
    minutes.append([0.0, 0.0, 3.0])  # zeros (an idle CPU, a free reply) count too
    everything = sorted(v for minute in minutes for v in minute)

    total = Summary.of(minutes[0])
    for minute in minutes[1:]:
        total.merge(Summary.of(minute))

    assert total.count == len(everything)
    assert total.sum == pytest.approx(math.fsum(everything))
    assert (total.min, total.max) == (everything[0], everything[-1])
    for q in (1, 10, 50, 90, 95, 99, 99.9):
        at_rank = everything[math.floor((len(everything) - 1) * q / 100)]
        assert total.percentile(q) == pytest.approx(at_rank, rel=RELATIVE_ACCURACY, abs=1e-9)


# -- the collector in memory --------------------------------------------------------------------


def test_query_gives_each_stat_per_step_from_the_samples():
    collector = MetricsCollector(EventBus())
    rng = random.Random(3)
    start = 1_000_020.0  # a multiple of the 5 s step
    in_steps: dict[float, list[float]] = {start: [], start + 10: []}  # start + 5 stays empty
    for step_start, values in in_steps.items():
        for _ in range(37):
            value = rng.uniform(1, 900)
            values.append(value)
            collector.observe(REQUEST_LATENCY, value, at=step_start + rng.uniform(0, 4.999))
    collector.observe(REQUEST_LATENCY, 5.0, at=start - 1)  # before the window
    collector.observe(REQUEST_LATENCY, 5.0, at=start + 15)  # at its end, excluded

    for stat in STATS:
        points = collector.query(
            REQUEST_LATENCY, since=start, until=start + 15, step_s=5, stat=stat
        )

        expected = [(t, reference(v, stat, 5)) for t, v in sorted(in_steps.items())]
        if stat in ("count", "sum", "rate_per_min"):
            expected.insert(1, (start + 5, 0.0))  # counts are 0 where nothing happened
        assert [t for t, _ in points] == [t for t, _ in expected], stat
        assert [v for _, v in points] == pytest.approx([v for _, v in expected], rel=1e-9), stat


def test_steps_are_aligned_so_the_first_one_holds_since():
    collector = MetricsCollector(EventBus())
    collector.increment(REQUESTS, at=1_000_003.0)

    points = collector.query(
        REQUESTS, since=1_000_007.0, until=1_000_020.0, step_s=10, stat="count"
    )

    assert points == [(1_000_000.0, 1.0), (1_000_010.0, 0.0)]


def test_an_unknown_stat_or_too_many_steps_is_refused():
    collector = MetricsCollector(EventBus())
    with pytest.raises(ValueError, match="Unknown stat"):
        collector.query(RSS, since=0, until=10, stat="median")
    with pytest.raises(ValueError, match="steps asked"):
        collector.query(RSS, since=0, until=time.time(), step_s=1)


def test_labels_filter_the_samples_and_are_listed():
    collector = MetricsCollector(EventBus())
    at = 1_000_020.0  # a minute's start
    samples = {
        ("ana", "openai", "openai/gpt-4o-mini"): [100.0, 300.0],
        ("ana", "mangaba-local", "mangaba-local/SmolLM2"): [900.0],
        ("bruno", "openai", "openai/gpt-4o-mini"): [50.0, 70.0, 90.0],
    }
    for (agent, provider, model), values in samples.items():
        for value in values:
            collector.observe(
                REQUEST_LATENCY, value, agent=agent, provider=provider, model=model, at=at
            )

    def values_of(**labels) -> tuple[list[float], list[float]]:
        window = {"since": at, "until": at + 60, "step_s": 60, **labels}
        counts = collector.query(REQUEST_LATENCY, stat="count", **window)
        tops = collector.query(REQUEST_LATENCY, stat="max", **window)
        return [v for _, v in counts], [v for _, v in tops]

    assert values_of() == ([6], [900.0])
    assert values_of(agent="ana") == ([3], [900.0])
    assert values_of(agent="ana", provider="openai") == ([2], [300.0])
    assert values_of(model="openai/gpt-4o-mini") == ([5], [300.0])
    assert values_of(agent="bruno", provider="mangaba-local") == ([0], [])
    assert collector.label_values() == {
        "agent": ["ana", "bruno"],
        "provider": ["mangaba-local", "openai"],
        "model": ["mangaba-local/SmolLM2", "openai/gpt-4o-mini"],
    }


def test_version_grows_with_each_sample_and_latest_is_the_newest():
    collector = MetricsCollector(EventBus())
    before = collector.version

    collector.set_gauge(RSS, 120.0, at=10.0)
    collector.set_gauge(RSS, 130.0, at=11.0)

    assert collector.version == before + 2
    assert collector.latest(RSS) == 130.0
    assert collector.latest(CPU) is None
    unchanged = collector.version
    collector.query(RSS, since=0, until=20)
    assert collector.version == unchanged


# -- the bus as a source ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_real_chat_turn_feeds_the_request_metrics(store, agents, contexts, bus, collector):
    source = ScriptedSource(words(12), interval=0.01)
    chat = ChatService(store, source, bus, agents=agents, contexts=contexts)
    agent = await agents.default()
    await contexts.add(agent.id, "The Oceanário is in Parque das Nações.")
    conversation = await store.create(agent_id=agent.id)
    began = time.time()

    await chat.send(conversation.id, "Where is the Oceanário?")
    reply = await chat.wait(conversation.id)

    assert reply.status == MessageStatus.COMPLETE
    labels = {"agent": agent.id, "provider": "scripted", "model": source.default_model}
    until = time.time() + 1

    def one(metric: str, stat: str = "max") -> float:
        points = collector.query(metric, since=began, until=until, step_s=3600, stat=stat)
        values = [v for _, v in points if v]
        assert len(values) == 1, metric
        return values[0]

    assert one(REQUESTS, "count") == 1
    assert one(REQUEST_LATENCY) == pytest.approx(reply.latency_ms)
    assert one(TIME_TO_FIRST_TOKEN) == pytest.approx(reply.time_to_first_token_ms)
    assert one(TOKENS_PER_SECOND) == pytest.approx(reply.tokens_per_second)
    errors = collector.query(ERRORS, since=began, until=until, step_s=3600, stat="count")
    assert errors and sum(v for _, v in errors) == 0
    # The context search was timed, and the time is the turn's.
    retrieval = collector.query(RETRIEVAL_TIME, since=began, until=until, step_s=3600, **labels)
    assert len(retrieval) == 1 and 0 < retrieval[0][1] < reply.latency_ms + 1000
    assert collector.label_values() == {
        "agent": [agent.id],
        "provider": ["scripted"],
        "model": [source.default_model],
    }

    # A failing reply counts as a request and as an error.
    source.error = RuntimeError("The model went away.")
    await chat.send(conversation.id, "And the aquarium's hours?")
    failed = await chat.wait(conversation.id)

    assert failed.status == MessageStatus.ERROR
    assert one(ERRORS, "count") == 1
    requests = collector.query(REQUESTS, since=began, until=until, step_s=3600, stat="count")
    assert sum(v for _, v in requests) == 2


@pytest.mark.asyncio
async def test_agent_context_and_message_events_are_published(store, agents, contexts, bus):
    log = EventLog(bus)
    chat = ChatService(store, ScriptedSource(["ok"]), bus, agents=agents, contexts=contexts)

    ana = await agents.create("Ana", agent_id="mangaba_0000a0a0")
    again = await agents.create("Ana", agent_id="mangaba_0000a0a0")  # already there
    first = await contexts.add_many(ana.id, ["Lisbon is by the sea.", "Porto is up north."])
    await contexts.add(ana.id, "Lisbon is by the sea.")  # the same text: not added again
    conversation = await store.create(agent_id=ana.id)
    await chat.send(conversation.id, "Hello")
    await chat.wait(conversation.id)

    assert again.id == ana.id
    assert [p["agent"].id for p in log.payloads(events.AGENT_CREATED)] == [ana.id]
    assert log.payloads(events.CONTEXT_ADDED) == [
        {
            "agent_id": ana.id,
            "session_id": None,
            "context_type": "knowledge",
            "context_ids": [c.id for c in first],
        }
    ]
    [received] = log.payloads(events.MESSAGE_RECEIVED)
    question = (await store.history(conversation.id))[0]
    assert received == {
        "conversation_id": conversation.id,
        "message_id": question.id,
        "agent_id": ana.id,
    }
    [retrieved] = log.payloads(events.CONTEXTS_RETRIEVED)
    assert retrieved["retrieval_ms"] > 0 and retrieved["model"] == ScriptedSource.default_model


def test_a_failing_handler_does_not_stop_the_collector_or_the_publisher(caplog):
    bus = EventBus()
    seen: list[str] = []

    def broken(_name, _payload):
        raise RuntimeError("a broken subscriber")

    bus.subscribe(events.AI_REQUEST_COMPLETED, broken)
    collector = MetricsCollector(bus)
    bus.subscribe(events.AI_REQUEST_COMPLETED, lambda name, _p: seen.append(name))
    began = time.time()

    with caplog.at_level(logging.ERROR, logger="mangaba_desktop.core.events"):
        bus.publish(
            events.AI_REQUEST_COMPLETED,
            agent_id="ana",
            provider="openai",
            model="openai/gpt-4o-mini",
            status="complete",
            latency_ms=420.0,
            time_to_first_token_ms=80.0,
            tokens_per_second=55.0,
            prompt_tokens=12,
            completion_tokens=30,
            cost_usd=0.0003,
        )

    assert "a broken subscriber" in caplog.text
    assert seen == [events.AI_REQUEST_COMPLETED]
    assert collector.latest(REQUEST_LATENCY, agent="ana") == 420.0
    assert collector.latest(COST, provider="openai") == 0.0003
    assert collector.query(ERRORS, since=began, step_s=3600, stat="count")[-1][1] == 0


# -- the process as a source --------------------------------------------------------------------


def burn(seconds: float) -> None:
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:
        sum(i * i for i in range(1000))


@pytest.fixture
def burner() -> Iterator[tuple[threading.Thread, threading.Event]]:
    """A thread that burns CPU while its event is set, and waits otherwise."""
    burning = threading.Event()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            if burning.wait(0.01):
                burn(0.01)

    thread = threading.Thread(target=run, name="burner")
    thread.start()
    yield thread, burning
    stop.set()
    thread.join()


def test_the_sampler_reads_the_real_process(tmp_path, burner):
    thread, burning = burner
    sampler = ProcessSampler(model_threads=lambda: {thread.native_id})

    first = sampler.read()
    with open(tmp_path / "held.txt", "w") as held:
        time.sleep(0.3)  # idle: the burner waits
        idle = sampler.read()
        burning.set()
        time.sleep(0.6)
        busy = sampler.read()
        burning.clear()
        assert not held.closed
    after = sampler.read()

    assert first.cpu_percent is None and first.local_model_cpu_percent is None
    assert idle.rss_mb > 1 and idle.threads >= 2
    assert busy.open_files == idle.open_files and after.open_files == idle.open_files - 1
    assert idle.cpu_percent < 15
    # A loaded machine (two cores, other processes) still gives a burning thread this much.
    assert busy.cpu_percent > idle.cpu_percent + 20
    # The burning thread stands for the local model's: its share is told apart.
    assert idle.local_model_cpu_percent < 5
    assert busy.local_model_cpu_percent > 20
    assert busy.local_model_cpu_percent > busy.cpu_percent * 0.6  # the rest of us slept


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="session")
async def test_the_local_models_share_is_its_generating_threads(completions):
    sampler = ProcessSampler()
    sampler.read()

    async for _piece in completions.stream(
        completions.default_model,
        [{"role": "user", "content": "Count from one to twenty in words."}],
        max_tokens=48,
        temperature=0.0,
    ):
        pass
    reading = sampler.read()

    assert generating_thread_ids()
    assert reading.local_model_cpu_percent is not None and reading.local_model_cpu_percent > 5
    collector = MetricsCollector(EventBus())
    collector.record_process(reading)
    assert collector.latest(LOCAL_MODEL_CPU) == reading.local_model_cpu_percent


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="session")
async def test_where_thread_ids_do_not_match_the_models_own_count_gives_its_share(completions):
    # As on macOS, where psutil numbers threads 1..N: no native id matches.
    sampler = ProcessSampler(model_threads=lambda: set())
    sampler.read()
    before = local_model_cpu_seconds()

    async for _piece in completions.stream(
        completions.default_model,
        [{"role": "user", "content": "Count from one to twenty in words."}],
        max_tokens=48,
        temperature=0.0,
    ):
        pass
    reading = sampler.read()

    assert local_model_cpu_seconds() > before
    assert reading.local_model_cpu_percent is not None and reading.local_model_cpu_percent > 5
    assert reading.cpu_percent is not None
    assert reading.local_model_cpu_percent <= reading.cpu_percent


@pytest.mark.asyncio
async def test_started_collector_samples_the_process_until_closed(database, bus):
    collector = MetricsCollector(bus, database, sample_interval_s=0.05)
    began = time.time()
    await collector.start()
    try:
        async with asyncio.timeout(10):
            while sum(v for _, v in collector.query(RSS, since=began, stat="count")) < 4:
                await asyncio.sleep(0.05)
    finally:
        tasks = list(collector._tasks)
        await collector.close()

    assert tasks and all(task.done() for task in tasks)
    for metric in (RSS, CPU, THREADS, OPEN_FILES):
        assert collector.latest(metric) is not None, metric
    assert collector.latest(RSS) > 1 and collector.latest(THREADS) >= 1
    # What it read is on disk when it closes.
    stored = query_file(
        database.path, "SELECT SUM(count) FROM metric_minutes WHERE metric = ?", (RSS,)
    )
    assert stored[0][0] >= 4
    version = collector.version
    await asyncio.sleep(0.2)
    assert collector.version == version  # nothing reads the process after close


# -- minutes on disk ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_minutes_are_stored_and_charted_after_a_restart(db_path, bus):
    rng = random.Random(11)
    minutes = [past_minute(3), past_minute(2)]
    latencies = {m: [rng.uniform(20, 2000) for _ in range(rng.randint(5, 80))] for m in minutes}
    database = Database(db_path)
    collector = MetricsCollector(bus, database)
    for minute, values in latencies.items():
        for value in values:
            collector.observe(
                REQUEST_LATENCY,
                value,
                agent="ana",
                provider="openai",
                model="openai/gpt-4o-mini",
                at=minute + rng.uniform(0, 59.9),
            )
        collector.increment(REQUESTS, len(values), agent="ana", at=minute + 1)
    await collector.close()
    database.close()

    # The next start of the app: a new database object and collector on the same file.
    reopened = Database(db_path)
    later = MetricsCollector(EventBus(), reopened)
    try:
        await later.start()
        assert later.label_values() == {
            "agent": ["ana"],
            "provider": ["openai"],
            "model": ["openai/gpt-4o-mini"],
        }
        for stat in ("p50", "p95", "p99", "mean", "max", "count"):
            points = await later.query_stored(
                REQUEST_LATENCY, since=minutes[0], until=minutes[1] + MINUTE, stat=stat, step_s=60
            )
            expected = [(m, reference(latencies[m], stat, 60)) for m in minutes]
            assert [t for t, _ in points] == minutes, stat
            assert [v for _, v in points] == pytest.approx([v for _, v in expected]), stat
        rate = await later.query_stored(
            REQUESTS, since=minutes[0], until=minutes[1] + MINUTE, stat="rate_per_min", agent="ana"
        )
        assert rate == [(m, float(len(latencies[m]))) for m in minutes]
        assert (
            await later.query_stored(
                REQUEST_LATENCY, since=minutes[0], until=minutes[1] + MINUTE, agent="bruno"
            )
            == []
        )
    finally:
        await later.close()
        reopened.close()


@pytest.mark.asyncio
async def test_stored_minutes_of_several_agents_are_merged_within_the_accuracy(collector):
    rng = random.Random(5)
    minute = past_minute(2)
    everything = []
    for agent in ("ana", "bruno", "carla"):
        for _ in range(rng.randint(20, 200)):
            value = rng.lognormvariate(5, 1)
            everything.append(value)
            collector.observe(REQUEST_LATENCY, value, agent=agent, at=minute + rng.uniform(0, 59))
    await collector.flush()
    everything.sort()

    for stat, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        [(at, value)] = await collector.query_stored(
            REQUEST_LATENCY, since=minute, until=minute + MINUTE, stat=stat, step_s=60
        )
        at_rank = everything[math.floor((len(everything) - 1) * q / 100)]
        assert at == minute
        assert value == pytest.approx(at_rank, rel=RELATIVE_ACCURACY), stat
    [(_, top)] = await collector.query_stored(
        REQUEST_LATENCY, since=minute, until=minute + MINUTE, stat="max", step_s=60
    )
    assert top == everything[-1]


@pytest.mark.asyncio
async def test_a_minute_stored_in_part_is_completed_not_repeated(collector, database):
    began = time.time()
    for value in (10.0, 20.0, 30.0):
        collector.observe(TIME_TO_FIRST_TOKEN, value)
    await collector.flush(final=True)  # the app closes in the middle of a minute
    for value in (40.0, 50.0):
        collector.observe(TIME_TO_FIRST_TOKEN, value)  # and opens again

    window = {"since": began - MINUTE, "until": time.time() + MINUTE, "step_s": 60}
    counts = await collector.query_stored(TIME_TO_FIRST_TOKEN, stat="count", **window)
    sums = await collector.query_stored(TIME_TO_FIRST_TOKEN, stat="sum", **window)
    assert sum(v for _, v in counts) == 5
    assert sum(v for _, v in sums) == 150.0
    await collector.flush(final=True)

    rows = query_file(
        database.path,
        "SELECT minute, count, sum, min, max FROM metric_minutes WHERE metric = ?",
        (TIME_TO_FIRST_TOKEN,),
    )
    assert sum(r[1] for r in rows) == 5 and sum(r[2] for r in rows) == 150.0
    if len(rows) == 1:  # both parts fell in one minute: merged into its row
        assert rows[0][3:] == (10.0, 50.0)
    assert await collector.query_stored(TIME_TO_FIRST_TOKEN, stat="count", **window) == counts


@pytest.mark.asyncio
async def test_rows_older_than_a_week_are_dropped(collector, database):
    week_and_a_day = past_minute(8 * 24 * 60)
    six_days = past_minute(6 * 24 * 60)
    execute_file(
        database.path,
        "INSERT INTO metric_minutes (minute, metric, count, sum, min, max, p50, p95, p99,"
        ' histogram) VALUES (?, ?, 1, 1, 1, 1, 1, 1, 1, \'{"zeros":0,"buckets":[[0,1]]}\')',
        (int(week_and_a_day), RSS),
    )
    collector.set_gauge(RSS, 100.0, at=week_and_a_day + 5)  # too old to keep
    collector.set_gauge(RSS, 200.0, at=six_days + 5)

    await collector.flush()

    assert query_file(database.path, "SELECT minute, max FROM metric_minutes") == [
        (int(six_days), 200.0)
    ]
    assert six_days > time.time() - RETENTION_S > week_and_a_day
    points = await collector.query_stored(
        RSS, since=week_and_a_day, until=six_days + MINUTE, stat="max", step_s=24 * 3600
    )
    assert [v for _, v in points] == [200.0]


@pytest.mark.asyncio
async def test_samples_leave_memory_after_the_live_window_once_stored(collector):
    long_ago = time.time() - LIVE_WINDOW_S - 5 * MINUTE
    collector.set_gauge(RSS, 150.0, at=long_ago)
    collector._forget_old_samples(time.time())
    assert collector.latest(RSS) == 150.0  # not stored yet: kept

    await collector.flush()
    collector._forget_old_samples(time.time())

    assert collector.latest(RSS) is None
    [(_, stored)] = await collector.query_stored(
        RSS, since=long_ago, until=long_ago + 1, stat="max", step_s=60
    )
    assert stored == 150.0


@pytest.mark.asyncio
async def test_the_runtime_runs_the_collector_and_stores_its_minute_on_close(db_path, bus):
    source = ScriptedSource(words(5))
    runtime = Runtime(Database(db_path), source, bus)
    await runtime.start()
    tasks = list(runtime.metrics._tasks)
    conversation = await runtime.conversations.create()
    await runtime.chat.send(conversation.id, "Hello")
    await runtime.chat.wait(conversation.id)

    await runtime.close()

    assert tasks and all(task.done() for task in tasks)
    stored = dict(
        query_file(db_path, "SELECT metric, SUM(count) FROM metric_minutes GROUP BY metric")
    )
    assert stored[REQUESTS] == 1 and stored[REQUEST_LATENCY] == 1 and stored[RSS] >= 1
