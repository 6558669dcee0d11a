"""The metrics the Performance pane charts, collected from the event bus and the process.

Every value is a sample ``(time, value)`` of a metric with three labels: agent, provider and
model (``''`` when a metric has none). Counters (:meth:`MetricsCollector.increment`), gauges
(:meth:`~MetricsCollector.set_gauge`) and histograms (:meth:`~MetricsCollector.observe`) are kept
the same way; they differ in the stat a chart asks of them (a counter's ``rate_per_min``, a
gauge's ``max`` or ``mean``, a histogram's ``p95``).

Raw samples stay in memory for :data:`LIVE_WINDOW_S` (the live charts); each finished minute is
summarised into one row per metric and labels and written to SQLite, kept for
:data:`RETENTION_S` (the 1 h, 24 h and 7 day charts, and the charts after a restart).

Recording is the publisher's cost, paid on the event loop for every request: a handler appends
to an in-memory series and returns; summaries and SQLite happen once a minute, elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any

from sqlmodel import Session

from .. import events
from ..events import EventBus
from ..store.database import Database
from .minutes import (
    LABEL_NAMES,
    MINUTE_S,
    Labels,
    minute_of,
    minute_rows,
    store_minutes,
    stored_label_values,
    stored_steps,
)
from .percentiles import ZERO_WHEN_EMPTY, Summary, check_stat, merged, stat_of_values
from .process import ProcessReading, ProcessSampler

log = logging.getLogger(__name__)

REQUEST_LATENCY = "request.latency_ms"
TIME_TO_FIRST_TOKEN = "request.ttft_ms"
TOKENS_PER_SECOND = "request.tokens_per_s"
REQUESTS = "request.count"
"""One per reply that ended (a queued reply counts once it is sent)."""
ERRORS = "request.errors"
"""One per reply that ended in an error."""
COST = "request.cost_usd"
RETRIEVAL_TIME = "context.retrieval_ms"
RSS = "process.rss_mb"
CPU = "process.cpu_percent"
"""Percent of one core, as ``top`` shows it: up to 100 times the number of cores."""
THREADS = "process.threads"
OPEN_FILES = "process.open_files"
LOCAL_MODEL_CPU = "local_model.cpu_percent"
"""The local model's generating thread, percent of one core."""

OUT_OF_ORDER_S = 60.0
"""How far a sample may be recorded out of time order (an ``at`` given by the caller) and still
be found by :meth:`MetricsCollector.query`: it reads each series newest first and stops this
long before the start."""
LIVE_WINDOW_S = 15 * 60.0
"""How long raw samples stay in memory (the live charts show the last 10 minutes)."""
RETENTION_S = 7 * 24 * 3600.0
SAMPLE_INTERVAL_S = 1.0
DEFAULT_POINTS = 120
"""Steps in a query that names no step."""
MAX_POINTS = 20_000
MAX_SAMPLES_PER_SERIES = 50_000
"""Bounds the memory of one series under a flood of events (the oldest samples go first)."""
FLUSH_GRACE_S = 0.5
"""How long after a minute ends it is stored."""

_REQUEST_VALUES = (
    (REQUEST_LATENCY, "latency_ms"),
    (TIME_TO_FIRST_TOKEN, "time_to_first_token_ms"),
    (TOKENS_PER_SECOND, "tokens_per_second"),
    (COST, "cost_usd"),
)

Series = deque[tuple[float, float]]


def _step(since: float, until: float, step_s: float | None, default_at_least: float) -> float:
    if step_s is None:
        return max(default_at_least, (until - since) / DEFAULT_POINTS)
    if not step_s > 0:
        raise ValueError("step_s must be positive.")
    return step_s


def _step_indices(since: float, until: float, step: float) -> range:
    """The indices of the steps from the one holding ``since`` to the one before ``until``."""
    indices = range(math.floor(since / step), math.ceil(until / step))
    if len(indices) > MAX_POINTS:
        raise ValueError(f"{len(indices):,} steps asked; at most {MAX_POINTS:,} at a time.")
    return indices


class MetricsCollector:
    """Counters, gauges and histograms labelled by agent, provider and model, fed by the bus
    (``ai.request.completed``, ``contexts.retrieved``) and by a once-a-second look at the
    process; queried by the Performance pane.

    Args:
        bus: where requests and retrievals are published.
        database: where finished minutes are kept; nothing is kept when None.
        sampler: reads the process's figures.
        sample_interval_s: how often the process is read.

    Attributes:
        version: grows whenever a sample arrives, so a chart can skip a redraw when it has not.
    """

    def __init__(
        self,
        bus: EventBus,
        database: Database | None = None,
        *,
        sampler: ProcessSampler | None = None,
        sample_interval_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self.bus = bus
        self.database = database
        self.sampler = sampler or ProcessSampler()
        self.sample_interval_s = sample_interval_s
        self.version = 0
        self._series: dict[str, dict[Labels, Series]] = {}
        self._seen: dict[str, set[str]] = {name: set() for name in LABEL_NAMES}
        """Every agent, provider and model recorded or stored (never forgotten)."""
        self._stored_until = 0.0
        """Samples before this time are in the database (or were, before pruning)."""
        self._storing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe = [
            bus.subscribe(events.AI_REQUEST_COMPLETED, self._on_request_completed),
            bus.subscribe(events.CONTEXTS_RETRIEVED, self._on_contexts_retrieved),
        ]

    # -- recording -----------------------------------------------------------------------------

    def increment(
        self,
        metric: str,
        value: float = 1.0,
        *,
        agent: str = "",
        provider: str = "",
        model: str = "",
        at: float | None = None,
    ) -> None:
        """Count ``value`` more of ``metric`` (at ``at``, Unix time, now by default)."""
        self._record(metric, (agent, provider, model), value, time.time() if at is None else at)

    def set_gauge(
        self,
        metric: str,
        value: float,
        *,
        agent: str = "",
        provider: str = "",
        model: str = "",
        at: float | None = None,
    ) -> None:
        """``metric`` is ``value`` now (or at ``at``)."""
        self._record(metric, (agent, provider, model), value, time.time() if at is None else at)

    def observe(
        self,
        metric: str,
        value: float,
        *,
        agent: str = "",
        provider: str = "",
        model: str = "",
        at: float | None = None,
    ) -> None:
        """One more value of the distribution ``metric`` (a latency, a cost).

        A sample older than the last stored minute (``at`` far in the past) is charted from
        memory but never stored.
        """
        self._record(metric, (agent, provider, model), value, time.time() if at is None else at)

    def _record(self, metric: str, labels: Labels, value: float, at: float) -> None:
        by_labels = self._series.get(metric)
        if by_labels is None:
            by_labels = self._series[metric] = {}
        series = by_labels.get(labels)
        if series is None:
            series = by_labels[labels] = deque(maxlen=MAX_SAMPLES_PER_SERIES)
            for name, label in zip(LABEL_NAMES, labels, strict=True):
                if label:
                    self._seen[name].add(label)
        series.append((at, value))
        self.version += 1

    def _on_request_completed(self, _name: str, payload: dict[str, Any]) -> None:
        status = payload.get("status")
        if status == "queued":
            return  # not sent: it ends again when it is
        at = time.time()
        labels = (
            payload.get("agent_id") or "",
            payload.get("provider") or "",
            payload.get("model") or "",
        )
        self._record(REQUESTS, labels, 1.0, at)
        if status == "error":
            self._record(ERRORS, labels, 1.0, at)
        for metric, key in _REQUEST_VALUES:
            value = payload.get(key)
            if value is not None:
                self._record(metric, labels, float(value), at)

    def _on_contexts_retrieved(self, _name: str, payload: dict[str, Any]) -> None:
        retrieval_ms = payload.get("retrieval_ms")
        if retrieval_ms is None:
            return
        model = payload.get("model") or ""
        # The provider a reply will use is known only when it answers; its model's prefix is
        # what the chat pipeline assumes until then.
        labels = (payload.get("agent_id") or "", model.partition("/")[0], model)
        self._record(RETRIEVAL_TIME, labels, float(retrieval_ms), time.time())

    def record_process(self, reading: ProcessReading) -> None:
        """Keep one reading of the process's figures."""
        unlabelled = ("", "", "")
        self._record(RSS, unlabelled, reading.rss_mb, reading.at)
        self._record(THREADS, unlabelled, float(reading.threads), reading.at)
        for metric, value in (
            (CPU, reading.cpu_percent),
            (OPEN_FILES, reading.open_files),
            (LOCAL_MODEL_CPU, reading.local_model_cpu_percent),
        ):
            if value is not None:
                self._record(metric, unlabelled, float(value), reading.at)

    # -- queries -------------------------------------------------------------------------------

    def query(
        self,
        metric: str,
        *,
        since: float,
        until: float | None = None,
        stat: str = "p50",
        agent: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        step_s: float | None = None,
    ) -> list[tuple[float, float]]:
        """``stat`` of ``metric`` per step, from the samples in memory (the last
        :data:`LIVE_WINDOW_S` seconds at least).

        Args:
            metric: one of the metric names of this module.
            since: Unix time of the first step; steps are aligned on multiples of ``step_s``,
                so the first one starts at or before ``since``.
            until: the end (excluded); now by default.
            stat: one of :data:`~.percentiles.STATS`; percentiles are exact.
            agent: only this agent's samples; any agent's when None (and so for the others).
            step_s: seconds per point; ``(until - since) / 120`` by default, at least 1.
                At most :data:`MAX_POINTS` steps (ValueError).

        Returns:
            ``(step start, value)`` in time order. A step without samples is left out, except
            for ``count``, ``sum`` and ``rate_per_min``, where it is 0. The step still filling
            reads low for those three.
        """
        check_stat(stat)
        until = time.time() if until is None else until
        step = _step(since, until, step_s, 1.0)
        indices = _step_indices(since, until, step)
        start = indices.start * step
        values: dict[int, list[float]] = defaultdict(list)
        oldest = start - OUT_OF_ORDER_S
        for series in self._matching(metric, agent, provider, model):
            # Newest first, stopping well before the start: a chart asking for its last few
            # seconds reads those, not the whole quarter of an hour kept.
            for at, value in reversed(series):
                if at < oldest:
                    break
                if start <= at < until:
                    values[math.floor(at / step)].append(value)
        points = []
        for index in indices:
            found = values.get(index)
            if found:
                points.append((index * step, stat_of_values(found, stat, step)))
            elif stat in ZERO_WHEN_EMPTY:
                points.append((index * step, 0.0))
        return points

    async def query_stored(
        self,
        metric: str,
        *,
        since: float,
        until: float | None = None,
        stat: str = "p50",
        agent: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        step_s: float | None = None,
    ) -> list[tuple[float, float]]:
        """As :meth:`query`, over the minutes kept in the database (up to
        :data:`RETENTION_S` back) and the samples not stored yet.

        Steps are whole minutes (``step_s`` rounded up to a multiple of 60). A step of one
        minute of one series has exact percentiles; a step that merges minutes or labels has
        them within 1 % (see :mod:`.percentiles`).
        """
        check_stat(stat)
        until = time.time() if until is None else until
        step = math.ceil(_step(since, until, step_s, MINUTE_S) / MINUTE_S) * MINUTE_S
        indices = _step_indices(since, until, step)
        start = indices.start * step
        async with self._storing:  # no minute is both on disk and in memory meanwhile
            stored: dict[int, Summary] = {}
            if self.database is not None:
                labels = {"agent": agent, "provider": provider, "model": model}
                stored = await self.database.read(
                    lambda s: stored_steps(s, metric, start, until, step, stat, labels)
                )
            fresh: dict[int, list[float]] = defaultdict(list)
            since_stored = max(start, self._stored_until)
            for series in self._matching(metric, agent, provider, model):
                for at, value in series:
                    if since_stored <= at < until:
                        fresh[math.floor(at / step)].append(value)
        points = []
        for index in indices:
            summary, values = stored.get(index), fresh.get(index)
            if summary is not None:
                if values:
                    summary = merged([summary, Summary.of(values)])
                points.append((index * step, summary.stat(stat, step)))
            elif values:
                points.append((index * step, stat_of_values(values, stat, step)))
            elif stat in ZERO_WHEN_EMPTY:
                points.append((index * step, 0.0))
        return points

    def latest(
        self,
        metric: str,
        *,
        agent: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> float | None:
        """The most recent value of ``metric`` in memory (a gauge's current value)."""
        newest: tuple[float, float] | None = None
        for series in self._matching(metric, agent, provider, model):
            if series and (newest is None or series[-1][0] >= newest[0]):
                newest = series[-1]
        return None if newest is None else newest[1]

    def label_values(self) -> dict[str, list[str]]:
        """The agents, providers and models seen (in memory and in the database), sorted."""
        return {name: sorted(self._seen[name]) for name in LABEL_NAMES}

    def _matching(
        self, metric: str, agent: str | None, provider: str | None, model: str | None
    ) -> Iterator[Series]:
        for (a, p, m), series in self._series.get(metric, {}).items():
            if (
                (agent is None or a == agent)
                and (provider is None or p == provider)
                and (model is None or m == model)
            ):
                yield series

    # -- storing -------------------------------------------------------------------------------

    async def flush(self, *, final: bool = False) -> int:
        """Store the finished minutes not stored yet (with ``final``, the samples of the
        current minute too) and drop the rows older than :data:`RETENTION_S`; returns the
        rows written. A failed write leaves the samples to the next flush."""
        if self.database is None:
            return 0
        async with self._storing:
            now = time.time()
            until = now if final else minute_of(now)
            since = self._stored_until
            # Copying the series is all the loop does; the summaries, a few milliseconds per
            # thousand samples, are made on the writer thread.
            snapshot = [
                (metric, labels, list(series))
                for metric, by_labels in self._series.items()
                for labels, series in by_labels.items()
            ]

            def job(session: Session) -> int:
                rows = minute_rows(snapshot, since, until)
                store_minutes(session, rows, now - RETENTION_S)
                return len(rows)

            written = await self.database.write(job)
            self._stored_until = max(since, until)
            return written

    def _forget_old_samples(self, now: float) -> None:
        """Drop samples older than the live window that are stored (or have no store)."""
        keep_from = now - LIVE_WINDOW_S
        if self.database is not None:
            keep_from = min(keep_from, self._stored_until)
        for by_labels in self._series.values():
            for labels, series in list(by_labels.items()):
                # Samples arrive in time order (but for an explicit ``at``, which may wait
                # here a little longer).
                while series and series[0][0] < keep_from:
                    series.popleft()
                if not series:
                    del by_labels[labels]

    # -- running -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn the labels already stored, then read the process every
        ``sample_interval_s`` and store each minute as it ends."""
        if self._tasks:
            return
        if self.database is not None:
            try:
                stored = await self.database.read(stored_label_values)
            except Exception as exc:  # the charts still work on what comes next
                log.warning("the stored metric labels could not be read: %s", exc)
            else:
                for name, values in stored.items():
                    self._seen[name].update(values)
        self._tasks = [
            asyncio.create_task(self._sample_forever(), name="metrics-sampler"),
            asyncio.create_task(self._store_every_minute(), name="metrics-minutes"),
        ]

    async def close(self) -> None:
        """Stop collecting and store what is not stored yet; the database must still be open."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.flush(final=True)
        except Exception as exc:
            log.warning("the last minute of metrics was not stored: %s", exc)

    async def _sample_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                # psutil reads /proc once per thread and open file: a millisecond or more in
                # the app, too long for the loop that paints the window.
                reading = await asyncio.to_thread(self.sampler.read)
            except Exception as exc:
                log.warning("reading the process's figures failed: %s", exc)
            else:
                self.record_process(reading)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.sample_interval_s - elapsed))

    async def _store_every_minute(self) -> None:
        while True:
            now = time.time()
            await asyncio.sleep(minute_of(now) + MINUTE_S - now + FLUSH_GRACE_S)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("storing a minute of metrics failed (kept for the next): %s", exc)
            self._forget_old_samples(time.time())
