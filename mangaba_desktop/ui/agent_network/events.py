"""The hub's events brought to the pane in batches, however fast the agents talk."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from ...core import events
from ...core.events import EventBus

FLUSH_INTERVAL_MS = 50
"""Events reach the pane at most this often: a burst of messages is one repaint, not hundreds."""

NAMES = (
    events.NETWORK_NODE,
    events.NETWORK_LINK,
    events.NETWORK_MESSAGE,
    # The agents' calls to their models, drawn as model endpoints.
    events.AI_REQUEST_STARTED,
    events.AI_REQUEST_COMPLETED,
)


class NetworkEvents(QObject):
    """Queues ``network.*`` and ``ai.request.*`` events and hands them over in order, in one
    batch.

    The hub publishes from the loop thread, which under qasync is the GUI thread; the batching
    is for speed, so that 100 messages a second (four events each) cost a few flushes.

    Signals:
        arrived(list): a batch of ``(name, payload)`` pairs, oldest first.
    """

    arrived = Signal(list)

    def __init__(self, bus: EventBus, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(FLUSH_INTERVAL_MS)
        self._timer.timeout.connect(self.flush)
        self._unsubscribe = [bus.subscribe(name, self._on_event) for name in NAMES]

    def _on_event(self, name: str, payload: dict[str, Any]) -> None:
        self._pending.append((name, payload))
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Deliver what is queued now."""
        self._timer.stop()
        if self._pending:
            pending, self._pending = self._pending, []
            self.arrived.emit(pending)

    def close(self) -> None:
        """Deliver what is queued, then stop listening."""
        self.flush()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
