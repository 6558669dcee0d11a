"""The app's data on one SQLite file (sqlmodel), with migrations and full-text search."""

from .agents import AgentStore, InvalidAgent
from .conversations import ConversationStore
from .database import Database, DatabaseOpenError, OpenFailure, list_backups, restore_backup
from .models import (
    Agent,
    Context,
    ContextType,
    Conversation,
    Message,
    MessageStatus,
    Priority,
    Role,
    SearchHit,
    Usage,
)

__all__ = [
    "Agent",
    "AgentStore",
    "Context",
    "ContextType",
    "Conversation",
    "ConversationStore",
    "Database",
    "DatabaseOpenError",
    "InvalidAgent",
    "Message",
    "MessageStatus",
    "OpenFailure",
    "Priority",
    "Role",
    "SearchHit",
    "Usage",
    "list_backups",
    "restore_backup",
]
