"""The chat history on one SQLite file (sqlmodel), with migrations and full-text search."""

from .conversations import ConversationStore
from .database import Database, DatabaseOpenError, OpenFailure, list_backups, restore_backup
from .models import Conversation, Message, MessageStatus, Role, SearchHit

__all__ = [
    "Conversation",
    "ConversationStore",
    "Database",
    "DatabaseOpenError",
    "Message",
    "MessageStatus",
    "OpenFailure",
    "Role",
    "SearchHit",
    "list_backups",
    "restore_backup",
]
