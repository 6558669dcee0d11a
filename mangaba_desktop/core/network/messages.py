"""Messages between agents: the seed's A2A semantics (type, priority, TTL, correlation)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class MessageType(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"
    BROADCAST = "broadcast"
    NOTIFICATION = "notification"
    ERROR = "error"


class MessagePriority(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    URGENT = 4


class MessageStatus(StrEnum):
    QUEUED = "queued"
    """Waiting in the receiver's queue."""
    DELIVERED = "delivered"
    """The receiver is working on it."""
    DONE = "done"
    """Handled (a request: answered)."""
    EXPIRED = "expired"
    """Its time to live ran out before the receiver took it."""
    FAILED = "failed"
    """The receiver could not handle it (a request: answered with an error)."""
    TIMED_OUT = "timed_out"
    """No answer in time: the sender stopped waiting, and the receiver stopped working on it."""
    CANCELLED = "cancelled"
    """The sender cancelled it; the receiver stopped working on it."""


@dataclass
class AgentMessage:
    """One message on the network. ``content`` is JSON-serialisable."""

    sender: str
    receiver: str
    type: MessageType
    content: dict[str, Any]
    action: str | None = None
    priority: int = MessagePriority.MEDIUM
    ttl_s: float | None = None
    """Seconds it may wait before being handled; None: no limit."""
    correlation_id: str | None = None
    """For a response or an error: the id of the request it answers."""
    tags: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: float = field(default_factory=time.time)
    status: MessageStatus = MessageStatus.QUEUED
    error: str | None = None

    def expired(self, now: float | None = None) -> bool:
        if self.ttl_s is None:
            return False
        return (time.time() if now is None else now) > self.timestamp + self.ttl_s

    @property
    def text(self) -> str:
        """The human part of the content (a reply's text, a question, an error)."""
        for key in ("text", "message", "error"):
            value = self.content.get(key)
            if isinstance(value, str):
                return value
        return json.dumps(self.content, ensure_ascii=False)

    def reply(self, content: dict[str, Any]) -> AgentMessage:
        return AgentMessage(
            sender=self.receiver,
            receiver=self.sender,
            type=MessageType.RESPONSE,
            content=content,
            action=self.action,
            priority=self.priority,
            correlation_id=self.id,
        )

    def failure(self, error: str, *, unreachable: bool = False) -> AgentMessage:
        """The error answering this request; ``unreachable`` when its receiver could not be
        reached (asking again later may work)."""
        content: dict[str, Any] = {"error": error}
        if unreachable:
            content["unreachable"] = True
        return AgentMessage(
            sender=self.receiver,
            receiver=self.sender,
            type=MessageType.ERROR,
            content=content,
            action=self.action,
            priority=self.priority,
            correlation_id=self.id,
            error=error,
        )
