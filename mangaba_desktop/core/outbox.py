"""Replies waiting for their model: retried with back-off until it can be reached.

A reply whose model could not be reached (and no fallback answered) is stored with status
``queued``; the outbox sends it again after 2 s, 5 s, 15 s, ... up to every 2 minutes, at once
when the network comes back (:meth:`Outbox.nudge`), and streams the answer into the same row.
The user can cancel it or send it to another model. Queued replies are rows like any other, so
quitting keeps them and the next start picks them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import events
from .chat import ChatService
from .events import EventBus
from .store import Message, MessageStatus

log = logging.getLogger(__name__)

DELAYS_S: tuple[float, ...] = (2.0, 5.0, 15.0, 30.0, 60.0, 120.0)


@dataclass
class Waiting:
    message_id: int
    conversation_id: int
    attempts: int = 0
    due: float = 0.0


class Outbox:
    """Sends queued replies again until they get an answer.

    Args:
        chat: the pipeline that sends them.
        bus: where replies are announced as queued and finished.
        delays: seconds before each retry (the last one repeats).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        chat: ChatService,
        bus: EventBus,
        *,
        delays: Sequence[float] = DELAYS_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chat = chat
        self.bus = bus
        self.delays = tuple(delays)
        self.clock = clock
        self.waiting: dict[int, Waiting] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = bus.subscribe(events.MESSAGE_QUEUED, self._on_queued)

    # -- what the user does --------------------------------------------------------------------

    def nudge(self) -> None:
        """Try every waiting reply now (the network came back)."""
        now = self.clock()
        for waiting in self.waiting.values():
            waiting.due = now
        self._wake.set()

    async def cancel(self, message_id: int) -> Message:
        cancelled = await self.chat.cancel_queued(message_id)
        self.waiting.pop(message_id, None)
        return cancelled

    async def send_with(self, message_id: int, model: str | None = None) -> Message:
        """Send the waiting reply now (to ``model`` if given). Raises ``RuntimeError`` while
        its conversation has a reply streaming, and it keeps waiting."""
        started = await self.chat.resume(message_id, model)
        self.waiting.pop(message_id, None)
        return started

    # -- running -------------------------------------------------------------------------------

    async def start(self) -> int:
        """Pick up the replies queued before the last quit; returns how many."""
        for message in await self.chat.store.queued():
            self._add(message, due=self.clock())
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        self._wake.set()
        return len(self.waiting)

    async def stop(self) -> None:
        self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _on_queued(self, _name: str, payload: dict[str, Any]) -> None:
        message: Message = payload["message"]
        previous = self.waiting.get(message.id or 0)
        attempts = previous.attempts + 1 if previous else 0
        self._add(message, attempts=attempts)
        log.info("reply %s queued (attempt %d): %s", message.id, attempts + 1, message.error or "")
        self._wake.set()

    def _add(self, message: Message, *, attempts: int = 0, due: float | None = None) -> None:
        assert message.id is not None
        delay = self.delays[min(attempts, len(self.delays) - 1)]
        self.waiting[message.id] = Waiting(
            message.id,
            message.conversation_id,
            attempts,
            self.clock() + delay if due is None else due,
        )

    def next_retry_in(self, message_id: int) -> float | None:
        waiting = self.waiting.get(message_id)
        return None if waiting is None else max(0.0, waiting.due - self.clock())

    async def _run(self) -> None:
        while True:
            now = self.clock()
            due = sorted(
                (w for w in self.waiting.values() if w.due <= now), key=lambda w: w.message_id
            )
            for waiting in due:
                await self._retry(waiting)
            upcoming = [w.due for w in self.waiting.values()]
            timeout = max(0.05, min(upcoming) - self.clock()) if upcoming else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _retry(self, waiting: Waiting) -> None:
        if self.waiting.get(waiting.message_id) is not waiting:
            return
        if self.chat.is_streaming(waiting.conversation_id):
            waiting.due = self.clock() + 1.0  # after the reply streaming there now
            return
        try:
            await self.chat.resume(waiting.message_id)
        except LookupError:
            self.waiting.pop(waiting.message_id, None)  # cancelled, deleted or sent meanwhile
            return
        except RuntimeError:
            waiting.due = self.clock() + 1.0
            return
        except Exception as exc:  # the store failed: keep it waiting, try later
            log.warning("queued reply %s could not be resent: %s", waiting.message_id, exc)
            waiting.attempts += 1
            waiting.due = self.clock() + self.delays[min(waiting.attempts, len(self.delays) - 1)]
            return
        try:
            stored = await self.chat.wait(waiting.conversation_id)
        except Exception as exc:  # its final write failed; the row says what is left
            log.warning("resending reply %s failed: %s", waiting.message_id, exc)
            return
        if stored is None or stored.status != MessageStatus.QUEUED:
            # Answered (or failed for good): the queued event did not re-add it.
            current = self.waiting.get(waiting.message_id)
            if current is waiting:
                del self.waiting[waiting.message_id]
