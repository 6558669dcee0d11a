"""The core's event bus: plain callbacks, no Qt.

Handlers run synchronously, in subscription order, on the thread that publishes (the event loop's,
in the app). A handler that raises is logged and the others still run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]

# Event names published by the chat core.
CONVERSATION_CREATED = "conversation.created"
CONVERSATION_UPDATED = "conversation.updated"
CONVERSATION_DELETED = "conversation.deleted"
MESSAGE_ADDED = "message.added"
MESSAGE_DELTA = "message.delta"
MESSAGE_FINISHED = "message.finished"
MESSAGE_UPDATED = "message.updated"
"""A stored message changed outside a stream (a queued reply started again): ``message``."""
MESSAGE_QUEUED = "message.queued"
"""A reply waits for its model to be reachable (``message``); the outbox takes it from here."""
MESSAGES_REMOVED = "messages.removed"
MESSAGE_RECEIVED = "message.received"
"""A user's message is stored and goes to its agent: ``conversation_id``, ``message_id``,
``agent_id``."""
AI_REQUEST_STARTED = "ai.request.started"
AI_REQUEST_COMPLETED = "ai.request.completed"
ERROR_OCCURRED = "error.occurred"
PROVIDER_STATUS = "provider.status"
# Published by the agent core and the context store.
AGENTS_CHANGED = "agents.changed"
AGENT_CREATED = "agent.created"
"""A new agent is stored: ``agent``."""
CONTEXT_ADDED = "context.added"
"""New contexts are stored: ``agent_id``, ``session_id``, ``context_type``, ``context_ids``."""
CONTEXTS_CHANGED = "contexts.changed"
CONTEXTS_RETRIEVED = "contexts.retrieved"
"""A reply's contexts are chosen: ``request_id``, ``conversation_id``, ``message_id``,
``agent_id``, ``model``, ``context_ids`` and ``retrieval_ms`` (None when nothing was searched)."""
CONTEXTS_COMPRESSED = "contexts.compressed"
# Published by the agent network.
NETWORK_NODE = "network.node"
NETWORK_MESSAGE = "network.message"
NETWORK_LINK = "network.link"
# Published by the plugins' host.
PLUGIN_FAILED = "plugin.failed"
"""A plugin failed and is off until the app restarts: ``plugin`` (its name), ``error``."""


class EventBus:
    """Publish named events with a payload to whoever subscribed to the name (or to ``*``)."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(name, payload)`` for each event ``name``; returns an unsubscribe."""
        self._handlers[name].append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers[name]:
                self._handlers[name].remove(handler)

        return unsubscribe

    def publish(self, name: str, **payload: Any) -> None:
        for handler in (*self._handlers.get(name, ()), *self._handlers.get("*", ())):
            try:
                handler(name, payload)
            except Exception:
                log.exception("handler %r failed on %s", handler, name)
