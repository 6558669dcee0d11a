"""The agent network: messages between agents, in this app and (through A2A) beyond it."""

from .hub import (
    AgentHub,
    AgentOffline,
    NetworkError,
    Node,
    NodeKind,
    NodeStatus,
    RequestFailed,
    RequestTimedOut,
    UnknownAgent,
)
from .messages import AgentMessage, MessagePriority, MessageStatus, MessageType

__all__ = [
    "AgentHub",
    "AgentMessage",
    "AgentOffline",
    "MessagePriority",
    "MessageStatus",
    "MessageType",
    "NetworkError",
    "Node",
    "NodeKind",
    "NodeStatus",
    "RequestFailed",
    "RequestTimedOut",
    "UnknownAgent",
]
