"""Metrics kept on disk: one row a minute per metric and labels, for a week.

The jobs here run on the database's threads (writes on its writer, reads on its readers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, col, delete, select

from ..store.models import MetricMinute
from .percentiles import Summary, merged

Labels = tuple[str, str, str]
"""Agent, provider and model; ``''`` for a label a metric does not have."""
LABEL_NAMES = ("agent", "provider", "model")
MINUTE_S = 60


def minute_of(at: float) -> int:
    """The start of the minute ``at`` (Unix time) falls in."""
    return int(at // MINUTE_S) * MINUTE_S


def summary_of_row(row: MetricMinute) -> Summary:
    return Summary(
        count=row.count,
        sum=row.sum,
        min=row.min,
        max=row.max,
        exact=(row.p50, row.p95, row.p99),
        histogram_parts=[row.histogram],
    )


def row_of(minute: int, metric: str, labels: Labels, summary: Summary) -> MetricMinute:
    agent, provider, model = labels
    return MetricMinute(
        minute=minute,
        metric=metric,
        agent=agent,
        provider=provider,
        model=model,
        count=summary.count,
        sum=summary.sum,
        min=summary.min,
        max=summary.max,
        p50=summary.percentile(50.0),
        p95=summary.percentile(95.0),
        p99=summary.percentile(99.0),
        histogram=summary.histogram.to_json(),
    )


def minute_rows(
    series: Iterable[tuple[str, Labels, Iterable[tuple[float, float]]]], since: float, until: float
) -> list[MetricMinute]:
    """One row per minute, metric and labels of the samples ``(time, value)`` of each
    ``(metric, labels, samples)`` that fall in ``[since, until)``."""
    minutes: dict[tuple[int, str, Labels], list[float]] = defaultdict(list)
    for metric, labels, samples in series:
        for at, value in samples:
            if since <= at < until:
                minutes[(minute_of(at), metric, labels)].append(value)
    return [
        row_of(minute, metric, labels, Summary.of(values))
        for (minute, metric, labels), values in minutes.items()
    ]


def store_minutes(session: Session, rows: list[MetricMinute], oldest: float) -> None:
    """Add ``rows``, merged into the rows already kept for the same minute and labels (a minute
    stored in part when the app last closed), then drop every row older than ``oldest``."""
    for row in rows:
        if row.minute < oldest:
            continue
        key = (row.minute, row.metric, row.agent, row.provider, row.model)
        existing = session.get(MetricMinute, key)
        if existing is None:
            session.add(row)
            continue
        summary = summary_of_row(existing)
        summary.merge(summary_of_row(row))
        combined = row_of(row.minute, row.metric, (row.agent, row.provider, row.model), summary)
        for name in ("count", "sum", "min", "max", "p50", "p95", "p99", "histogram"):
            setattr(existing, name, getattr(combined, name))
    session.exec(delete(MetricMinute).where(col(MetricMinute.minute) < oldest))


_STEP_ROWS = """
    SELECT minute, count, sum, min, max, p50, p95, p99, histogram FROM metric_minutes
    WHERE metric = ? AND minute >= ? AND minute < ?
"""


def stored_steps(
    session: Session,
    metric: str,
    since: float,
    until: float,
    step_s: int,
    stat: str,
    labels: dict[str, str | None],
) -> dict[int, Summary]:
    """The kept minutes of ``metric`` starting in ``[since, until)`` with the given labels
    (None: any), merged into steps of ``step_s`` seconds (a multiple of 60), by step index
    (``minute // step_s``), ready for ``stat``.

    Runs on a reader thread: a week of minutes is ten thousand rows, read as plain tuples
    because ORM objects would take most of the time.
    """
    sql = _STEP_ROWS
    params: list[Any] = [metric, since, until]
    for name in LABEL_NAMES:
        wanted = labels.get(name)
        if wanted is not None:
            sql += f" AND {name} = ?"
            params.append(wanted)
    steps: dict[int, list[Summary]] = defaultdict(list)
    rows = session.connection().exec_driver_sql(sql, tuple(params))
    for minute, count, total, low, high, p50, p95, p99, histogram in rows:
        steps[minute // step_s].append(
            Summary(count, total, low, high, (p50, p95, p99), [histogram])
        )
    ready = {index: merged(parts) for index, parts in steps.items()}
    for summary in ready.values():
        summary.ready_for(stat)
    return ready


def stored_label_values(session: Session) -> dict[str, set[str]]:
    """Every agent, provider and model the kept rows name."""
    found: dict[str, set[str]] = {name: set() for name in LABEL_NAMES}
    for name, column in zip(
        LABEL_NAMES, (MetricMinute.agent, MetricMinute.provider, MetricMinute.model), strict=True
    ):
        found[name].update(v for v in session.exec(select(column).distinct()).all() if v)
    return found
