"""Summaries of metric values: exact percentiles of raw samples, and a mergeable histogram for
the stored minutes.

A minute's p95 is exact for that minute, but the p95 of an hour is not the mean of sixty p95s:
rows that must be merged (longer steps, several labels) are merged through their histograms,
whose log-spaced buckets keep every percentile within :data:`RELATIVE_ACCURACY` of the truth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
STATS = ("p50", "p95", "p99", "mean", "max", "sum", "count", "rate_per_min")
"""What a query can ask of each step's values. ``rate_per_min`` is the sum per minute of the
step (a counter's events a minute, dollars a minute for the cost)."""
ZERO_WHEN_EMPTY = frozenset({"sum", "count", "rate_per_min"})
"""Stats that are 0 for a step without values (the others leave a gap)."""

RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
SMALLEST = 1e-9
"""Values at or below this (0 % CPU, a free reply) are counted in the histogram's zero bucket."""


def check_stat(stat: str) -> str:
    if stat not in STATS:
        raise ValueError(f"Unknown stat {stat!r}; one of {', '.join(STATS)}.")
    return stat


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of ``ordered``, which is sorted and not empty.

    Linear interpolation between the closest ranks: the value at rank ``(n - 1) * q / 100``,
    counted from 0. This is numpy's default and ``statistics.quantiles(method="inclusive")``.
    """
    if not ordered:
        raise ValueError("The percentile of no values is undefined.")
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def p50_p95(samples: Iterable[float]) -> tuple[float | None, float | None]:
    """The median and 95th percentile of ``samples`` (in any order); None, None without any."""
    ordered = sorted(samples)
    if not ordered:
        return None, None
    return percentile(ordered, 50), percentile(ordered, 95)


def stat_of_values(values: Sequence[float], stat: str, step_s: float) -> float:
    """``stat`` of the raw ``values`` of one step of ``step_s`` seconds, exactly."""
    if stat == "count":
        return float(len(values))
    if stat == "sum":
        return math.fsum(values)
    if stat == "rate_per_min":
        return math.fsum(values) * 60.0 / step_s
    if stat == "mean":
        return math.fsum(values) / len(values)
    if stat == "max":
        return max(values)
    return percentile(sorted(values), PERCENTILES[check_stat(stat)])


@dataclass
class LogHistogram:
    """Counts of values in buckets ``(γ^(i-1), γ^i]``, γ chosen for :data:`RELATIVE_ACCURACY`.

    Values are taken as non-negative: anything at or below :data:`SMALLEST` counts as zero.
    """

    zeros: int = 0
    buckets: dict[int, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.zeros + sum(self.buckets.values())

    def add(self, value: float, count: int = 1) -> None:
        if value <= SMALLEST:
            self.zeros += count
            return
        index = math.ceil(math.log(value) / _LOG_GAMMA)
        self.buckets[index] = self.buckets.get(index, 0) + count

    def merge(self, other: LogHistogram) -> None:
        self.zeros += other.zeros
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count

    def quantile(self, q: float) -> float:
        """The ``q``-th percentile (0 to 100), within the relative accuracy of the value at
        the same rank as :func:`percentile` takes (rounded down)."""
        total = self.count
        if not total:
            raise ValueError("The percentile of no values is undefined.")
        rank = math.floor((total - 1) * q / 100.0)
        seen = self.zeros
        if seen > rank:
            return 0.0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen > rank:
                # The middle of the bucket in relative terms: at most α from any value in it.
                return 2.0 * _GAMMA**index / (_GAMMA + 1.0)
        raise AssertionError("rank beyond the histogram's count")

    def to_json(self) -> str:
        return json.dumps(
            {"zeros": self.zeros, "buckets": sorted(self.buckets.items())}, separators=(",", ":")
        )

    @classmethod
    def from_json(cls, text: str) -> LogHistogram:
        data = json.loads(text)
        return cls(int(data["zeros"]), {int(i): int(c) for i, c in data["buckets"]})


@dataclass
class Summary:
    """Count, sum, extremes and distribution of some values (a minute, a merged step).

    ``exact`` holds p50, p95 and p99 while they are known exactly (one minute's own values);
    merged summaries estimate them from the histogram, within the values' range. Histograms
    read from the database stay JSON until a percentile needs them: a chart of counts over a
    week never parses one.
    """

    count: int
    sum: float
    min: float
    max: float
    exact: tuple[float, float, float] | None = None
    histogram_parts: list[LogHistogram | str] = field(default_factory=list)
    """The histograms of what was merged, each a :class:`LogHistogram` or its JSON."""

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        ordered = sorted(values)
        if not ordered:
            raise ValueError("A summary needs at least one value.")
        histogram = LogHistogram()
        for value in ordered:
            histogram.add(value)
        return cls(
            count=len(ordered),
            sum=math.fsum(ordered),
            min=ordered[0],
            max=ordered[-1],
            exact=(percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99)),
            histogram_parts=[histogram],
        )

    @property
    def histogram(self) -> LogHistogram:
        """The histogram of all the values (not to be changed: it may be shared)."""
        parts = self.histogram_parts
        if len(parts) != 1 or not isinstance(parts[0], LogHistogram):
            total = LogHistogram()
            for part in parts:
                total.merge(
                    part if isinstance(part, LogHistogram) else LogHistogram.from_json(part)
                )
            self.histogram_parts = [total]
        first = self.histogram_parts[0]
        assert isinstance(first, LogHistogram)
        return first

    def merge(self, other: Summary) -> None:
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.histogram_parts = [*self.histogram_parts, *other.histogram_parts]
        self.exact = None

    def ready_for(self, stat: str) -> None:
        """Parse now what ``stat`` will need (on a worker thread, so that it is quick later)."""
        if stat in PERCENTILES and self.exact is None:
            self.histogram  # noqa: B018 (merges the parts once)

    def percentile(self, q: float) -> float:
        if self.exact is not None and q in (50.0, 95.0, 99.0):
            return self.exact[(50.0, 95.0, 99.0).index(q)]
        return min(self.max, max(self.min, self.histogram.quantile(q)))

    def stat(self, stat: str, step_s: float) -> float:
        """``stat`` of these values as one step of ``step_s`` seconds."""
        if stat == "count":
            return float(self.count)
        if stat == "sum":
            return self.sum
        if stat == "rate_per_min":
            return self.sum * 60.0 / step_s
        if stat == "mean":
            return self.sum / self.count
        if stat == "max":
            return self.max
        return self.percentile(PERCENTILES[check_stat(stat)])


def merged(parts: Sequence[Summary]) -> Summary:
    """One summary of all of ``parts`` (not changed); a single part is returned as it is."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    total = Summary(first.count, first.sum, first.min, first.max, None, list(first.histogram_parts))
    for part in parts[1:]:
        total.merge(part)
    return total
