"""Record what the core publishes on its bus, and await events instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mangaba_desktop.core.events import EventBus

Predicate = Callable[[str, dict[str, Any]], bool]


class EventLog:
    """Every event published on ``bus`` from now on, in order."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self.unsubscribe = bus.subscribe("*", self._on_event)

    def _on_event(self, name: str, payload: dict[str, Any]) -> None:
        self.events.append((name, payload))
        for condition, future in list(self._waiters):
            if not future.done() and condition():
                future.set_result(None)

    def names(self, prefix: str = "") -> list[str]:
        return [name for name, _ in self.events if name.startswith(prefix)]

    def payloads(self, name: str) -> list[dict[str, Any]]:
        return [payload for n, payload in self.events if n == name]

    async def wait_for(self, name: str, count: int = 1, within: float = 10.0) -> None:
        """Return once ``count`` events ``name`` have been published (in all), failing with
        TimeoutError after ``within`` seconds."""

        def reached() -> bool:
            return len(self.payloads(name)) >= count

        if reached():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (reached, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(within):
                await future
        finally:
            self._waiters.remove(entry)
