"""Work the settings pages start: kept while it runs, cancelled when the dialog closes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Tasks:
    """Runs coroutines through the app's ``spawn`` and remembers them until they end.

    A page's coroutine touches its widgets when it resumes, so whatever is still running when
    the dialog closes is cancelled (a thread it waits on finishes on its own).
    """

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self.spawn = spawn
        self._running: set[asyncio.Future[Any]] = set()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        task = self.spawn(coroutine)
        if isinstance(task, asyncio.Future):
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return task

    def cancel(self) -> None:
        for task in list(self._running):
            task.cancel()
        self._running.clear()
