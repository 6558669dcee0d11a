"""What the Performance pane charts: each chart's lines, and the time windows it offers."""

from __future__ import annotations

from dataclasses import dataclass

from ...core import metrics


@dataclass(frozen=True)
class Line:
    metric: str
    stat: str
    label: str
    colour: str


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    lines: tuple[Line, ...]
    labelled: bool = True
    """Whether the agent, provider and model filters apply (the process's figures are the
    whole app's)."""


BLUE, ORANGE, RED, GREEN, PURPLE, GREY = (
    "#1e88e5",
    "#fb8c00",
    "#e53935",
    "#43a047",
    "#8e24aa",
    "#546e7a",
)

CHARTS: tuple[Chart, ...] = (
    Chart(
        "latency",
        "Request latency",
        "ms",
        (
            Line(metrics.REQUEST_LATENCY, "p50", "p50", BLUE),
            Line(metrics.REQUEST_LATENCY, "p95", "p95", ORANGE),
        ),
    ),
    Chart(
        "first-token",
        "Time to first token",
        "ms",
        (
            Line(metrics.TIME_TO_FIRST_TOKEN, "p50", "p50", BLUE),
            Line(metrics.TIME_TO_FIRST_TOKEN, "p95", "p95", ORANGE),
        ),
    ),
    Chart(
        "speed",
        "Tokens per second",
        "tokens/s",
        (Line(metrics.TOKENS_PER_SECOND, "p50", "median", GREEN),),
    ),
    Chart(
        "traffic",
        "Requests and errors",
        "per minute",
        (
            Line(metrics.REQUESTS, "rate_per_min", "requests", BLUE),
            Line(metrics.ERRORS, "rate_per_min", "errors", RED),
        ),
    ),
    Chart(
        "retrieval",
        "Context retrieval",
        "ms",
        (
            Line(metrics.RETRIEVAL_TIME, "p50", "p50", PURPLE),
            Line(metrics.RETRIEVAL_TIME, "p95", "p95", ORANGE),
        ),
    ),
    Chart(
        "memory",
        "Memory (resident)",
        "MB",
        (Line(metrics.RSS, "max", "app", GREY),),
        labelled=False,
    ),
    Chart(
        "cpu",
        "CPU",
        "% of one core",
        (
            Line(metrics.CPU, "mean", "app", GREY),
            Line(metrics.LOCAL_MODEL_CPU, "mean", "local model", GREEN),
        ),
        labelled=False,
    ),
)


@dataclass(frozen=True)
class Window:
    label: str
    seconds: float
    step_s: float
    """Seconds per point; a whole number of minutes for a stored window, as stored steps are."""
    refresh_s: float
    """How often the chart is read again when new data came: the live window twice a step
    (the last step fills as it is watched), the stored ones every few seconds."""
    stored: bool
    """Read from the minutes kept in the database (beyond what memory holds)."""


WINDOWS: tuple[Window, ...] = (
    Window("5 min", 5 * 60, 2, 0.5, stored=False),
    Window("1 h", 3600, 60, 5.0, stored=True),
    Window("24 h", 24 * 3600, 10 * 60, 30.0, stored=True),
    Window("7 days", 7 * 24 * 3600, 3600, 60.0, stored=True),
)
