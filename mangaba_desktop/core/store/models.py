"""Tables of the chat history.

The schema itself is created by the migrations in :mod:`.migrations`; these classes map it for
queries, and a test checks that both agree column for column.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import Field, SQLModel


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    STREAMING = "streaming"
    INTERRUPTED = "interrupted"
    QUEUED = "queued"
    ERROR = "error"


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"

    id: int | None = Field(default=None, primary_key=True)
    title: str
    created_at: float
    updated_at: float = Field(index=True)
    """Time of the last activity; the list is sorted by it."""
    model: str | None = None
    draft: str = ""
    """What the user typed and has not sent yet, so that a crash loses none of it."""


class Message(SQLModel, table=True):
    __tablename__ = "messages"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id", ondelete="CASCADE")
    role: str
    content: str
    created_at: float
    status: str = MessageStatus.COMPLETE
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    time_to_first_token_ms: float | None = None
    error: str | None = None

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed after the first token, when it was measured."""
        if not self.completion_tokens or self.latency_ms is None:
            return None
        generating_ms = self.latency_ms - (self.time_to_first_token_ms or 0.0)
        if generating_ms <= 0:
            return None
        return self.completion_tokens / (generating_ms / 1000.0)


class SearchHit(SQLModel):
    """One message found by full-text search."""

    message_id: int
    conversation_id: int
    conversation_title: str
    role: str
    snippet: str
    created_at: float
