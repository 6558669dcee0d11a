"""Performance metrics: request latency, time to first token, tokens/s, errors, cost, context
retrieval time, and the process's memory and CPU, live and for the last week."""

from .collector import (
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
    THREADS,
    TIME_TO_FIRST_TOKEN,
    TOKENS_PER_SECOND,
    MetricsCollector,
)
from .percentiles import STATS, LogHistogram, Summary, percentile
from .process import ProcessReading, ProcessSampler

__all__ = [
    "COST",
    "CPU",
    "ERRORS",
    "LIVE_WINDOW_S",
    "LOCAL_MODEL_CPU",
    "OPEN_FILES",
    "REQUESTS",
    "REQUEST_LATENCY",
    "RETENTION_S",
    "RETRIEVAL_TIME",
    "RSS",
    "STATS",
    "THREADS",
    "TIME_TO_FIRST_TOKEN",
    "TOKENS_PER_SECOND",
    "LogHistogram",
    "MetricsCollector",
    "ProcessReading",
    "ProcessSampler",
    "Summary",
    "percentile",
]
