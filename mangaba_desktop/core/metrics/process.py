"""The app's own process as the Performance pane shows it: memory, CPU, threads, open files, and
the share of the CPU the embedded model takes.

The process's CPU time comes from ``time.process_time()``, which the system keeps to the
nanosecond; psutil's, counted in scheduler ticks and rescaled, drifts by a tenth either way over
a second. The local model generates on a thread of its own (see
:mod:`mangaba_desktop.core.providers.local_model`), whose native id it records; that thread's
times in ``psutil.Process().threads()`` tell its share apart. llama.cpp may add worker threads
of its own when it runs on more than one thread, and those are not told apart from the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from ..providers.local_model import generating_thread_ids, local_model_cpu_seconds

MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class ProcessReading:
    """One look at the process. CPU figures are percent of one core (may pass 100) since the
    previous reading, so the first reading has none."""

    at: float
    """Unix time of the reading."""
    rss_mb: float
    threads: int
    cpu_percent: float | None = None
    open_files: int | None = None
    """None where the system does not tell (permissions)."""
    local_model_cpu_percent: float | None = None
    """None until a local model has generated in this process."""


class ProcessSampler:
    """Reads this process's figures with psutil; each :meth:`read` compares with the last.

    A read takes 1 to 3 ms with a few dozen threads and open files (more with more),
    so the collector calls it off the event loop. One caller at a time.

    Args:
        model_threads: the native ids of the threads that run the local model.
    """

    def __init__(
        self,
        model_threads: Callable[[], Iterable[int]] = generating_thread_ids,
        model_cpu_seconds: Callable[[], float] = local_model_cpu_seconds,
    ) -> None:
        self.process = psutil.Process()
        self.model_threads = model_threads
        self.model_cpu_seconds = model_cpu_seconds
        """The local model's own count, for where thread ids do not match (macOS)."""
        self._last_model_seconds = model_cpu_seconds()
        self._last: tuple[float, float, dict[int, float]] | None = None
        """When the last reading was taken (monotonic), the process's CPU seconds then, and
        each thread's."""

    def read(self) -> ProcessReading:
        process = self.process
        with process.oneshot():
            rss = process.memory_info().rss
            busy = time.process_time()
            try:
                per_thread = {t.id: t.user_time + t.system_time for t in process.threads()}
                thread_count = len(per_thread)
            except psutil.Error:
                per_thread = {}
                thread_count = process.num_threads()
            try:
                open_files: int | None = len(process.open_files())
            except psutil.Error:
                open_files = None
        now = time.monotonic()
        counted = self.model_cpu_seconds()
        cpu: float | None = None
        model_cpu: float | None = None
        if self._last is not None:
            last_at, last_busy, last_per_thread = self._last
            elapsed = now - last_at
            if elapsed > 0:
                cpu = max(0.0, busy - last_busy) / elapsed * 100.0
                model_ids = per_thread.keys() & set(self.model_threads())
                used: float | None = None
                if model_ids:
                    # A thread born since the last reading spent all its time in between.
                    used = sum(
                        max(0.0, per_thread[i] - last_per_thread.get(i, 0.0)) for i in model_ids
                    )
                elif counted > self._last_model_seconds:
                    # psutil names threads otherwise here: the model's own count serves.
                    used = counted - self._last_model_seconds
                if used is not None:
                    # Tick counting can put a thread a little above the precise total.
                    model_cpu = min(cpu, used / elapsed * 100.0)
        self._last = (now, busy, per_thread)
        self._last_model_seconds = counted
        return ProcessReading(
            at=time.time(),
            rss_mb=rss / MEBIBYTE,
            threads=thread_count,
            cpu_percent=cpu,
            open_files=open_files,
            local_model_cpu_percent=model_cpu,
        )
