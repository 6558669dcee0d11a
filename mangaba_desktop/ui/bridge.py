"""Core events as Qt signals on the GUI thread, with fast streams batched before a repaint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from ..core import events
from ..core.events import EventBus

REPAINT_INTERVAL_MS = 33
"""Stream text reaches the view at most about 30 times a second, however fast tokens come."""


class EventBridge(QObject):
    """Re-emits the chat core's events as signals; stream deltas arrive batched.

    Signals:
        conversation_created(Conversation), conversation_updated(Conversation),
        conversation_deleted(int), message_added(Message),
        text_grown(int message_id, int conversation_id, str appended),
        message_finished(Message), message_updated(Message),
        messages_removed(int conversation_id, list[int]),
        error(str).
    """

    conversation_created = Signal(object)
    conversation_updated = Signal(object)
    conversation_deleted = Signal(int)
    message_added = Signal(object)
    text_grown = Signal(int, int, str)
    message_finished = Signal(object)
    message_updated = Signal(object)
    messages_removed = Signal(int, list)
    error = Signal(str)

    def __init__(self, bus: EventBus, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: dict[int, tuple[int, list[str]]] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REPAINT_INTERVAL_MS)
        self._timer.timeout.connect(self.flush)
        routes: dict[str, Callable[[dict[str, Any]], None]] = {
            events.CONVERSATION_CREATED: lambda p: self.conversation_created.emit(
                p["conversation"]
            ),
            events.CONVERSATION_UPDATED: lambda p: self.conversation_updated.emit(
                p["conversation"]
            ),
            events.CONVERSATION_DELETED: lambda p: self.conversation_deleted.emit(
                p["conversation_id"]
            ),
            events.MESSAGE_ADDED: lambda p: self.message_added.emit(p["message"]),
            events.MESSAGE_DELTA: self._on_delta,
            events.MESSAGE_FINISHED: self._on_finished,
            events.MESSAGE_UPDATED: lambda p: self.message_updated.emit(p["message"]),
            events.MESSAGES_REMOVED: lambda p: self.messages_removed.emit(
                p["conversation_id"], list(p["message_ids"])
            ),
            events.ERROR_OCCURRED: lambda p: self.error.emit(p["message"]),
        }
        self._unsubscribe = [
            bus.subscribe(name, lambda _name, payload, route=route: route(payload))
            for name, route in routes.items()
        ]

    def close(self) -> None:
        self.flush()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _on_delta(self, payload: dict[str, Any]) -> None:
        message_id = payload["message_id"]
        entry = self._pending.get(message_id)
        if entry is None:
            self._pending[message_id] = (payload["conversation_id"], [payload["delta"]])
        else:
            entry[1].append(payload["delta"])
        if not self._timer.isActive():
            self._timer.start()

    def _on_finished(self, payload: dict[str, Any]) -> None:
        self.flush()
        self.message_finished.emit(payload["message"])

    def flush(self) -> None:
        """Deliver batched text now."""
        self._timer.stop()
        pending, self._pending = self._pending, {}
        for message_id, (conversation_id, parts) in pending.items():
            self.text_grown.emit(message_id, conversation_id, "".join(parts))
