"""Tables of the chat history.

The schema itself is created by the migrations in :mod:`.migrations`; these classes map it for
queries, and a test checks that both agree column for column.
"""

from __future__ import annotations

import json
from enum import IntEnum, StrEnum

from sqlmodel import Field, SQLModel

COMMAND_MODEL = "mangaba/commands"
"""The ``model`` of replies the app wrote itself (/help, /context): no model was asked."""


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
    agent_id: str | None = Field(default=None, foreign_key="agents.id", ondelete="SET NULL")
    """The agent that answers here; the default agent when unset."""
    session_id: str | None = Field(default=None, unique=True)
    """The context store's session for this conversation."""


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
    request_id: str | None = None
    context_ids: str | None = None
    """JSON list of the ids of the contexts the reply was given (why it said what it said)."""
    provider: str | None = None
    """The provider that answered (its id; ``mangaba-local`` for this computer)."""
    cost_usd: float | None = None
    """What the reply cost in US dollars; 0 on this computer; None when not priced."""
    notice: str | None = None
    """Something to know about the reply that is not an error (a fallback model answered)."""

    @property
    def used_context_ids(self) -> list[int]:
        return list(json.loads(self.context_ids)) if self.context_ids else []

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed after the first token, when it was measured."""
        if not self.completion_tokens or self.latency_ms is None:
            return None
        generating_ms = self.latency_ms - (self.time_to_first_token_ms or 0.0)
        if generating_ms <= 0:
            return None
        return self.completion_tokens / (generating_ms / 1000.0)


class Usage(SQLModel):
    """Tokens and cost of the replies of one provider and model."""

    provider: str
    model: str
    replies: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    """None when some replies had no known price (and nothing was priced)."""
    unpriced: int
    """Replies whose price is not known."""


class SearchHit(SQLModel):
    """One message found by full-text search."""

    message_id: int
    conversation_id: int
    conversation_title: str
    role: str
    snippet: str
    created_at: float


class Agent(SQLModel, table=True):
    """An agent the user talks to: a persona (system prompt) on a model, with tags."""

    __tablename__ = "agents"

    id: str = Field(primary_key=True)
    name: str
    persona: str = ""
    model: str | None = None
    """The model it answers with; the app's current model when unset."""
    tags: str = "[]"
    created_at: float
    updated_at: float

    @property
    def tag_list(self) -> list[str]:
        return list(json.loads(self.tags or "[]"))


class ContextType(StrEnum):
    CONVERSATION = "conversation"
    TASK = "task"
    KNOWLEDGE = "knowledge"
    MEMORY = "memory"
    SYSTEM = "system"
    USER_PROFILE = "user_profile"


class Priority(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class Context(SQLModel, table=True):
    """Something an agent remembers (the seed's ``contexts`` table)."""

    __tablename__ = "contexts"

    id: int | None = Field(default=None, primary_key=True)
    agent_id: str = Field(foreign_key="agents.id", ondelete="CASCADE")
    session_id: str | None = None
    """The session it belongs to; ``None`` for what the agent knows in every session."""
    content: str
    context_type: str
    priority: int = Priority.LOW
    tags: str = "[]"
    created_at: float
    last_accessed: float | None = None
    access_count: int = 0
    embeddings: bytes | None = None
    expires_at: float | None = None
    parent_id: int | None = Field(default=None, foreign_key="contexts.id", ondelete="SET NULL")
    """For a compressed source: the memory that summarises it."""
    archived: bool = False
    """Kept for the record (a compressed source), never put into a prompt."""
    source_message_id: int | None = None
    """The chat message this context was made from, if any."""
    digest: str
    """Hash of type and content, which keeps the same context from being stored twice."""

    @property
    def tag_list(self) -> list[str]:
        return list(json.loads(self.tags or "[]"))


class AgentMessageRow(SQLModel, table=True):
    """A message between two agents, as kept for the timeline and replay."""

    __tablename__ = "agent_messages"

    id: str = Field(primary_key=True)
    type: str
    sender: str
    receiver: str
    action: str | None = None
    content: str
    """JSON."""
    created_at: float
    priority: int = 2
    ttl_s: float | None = None
    correlation_id: str | None = None
    tags: str = "[]"
    status: str
    error: str | None = None
    finished_at: float | None = None


class AgentLink(SQLModel, table=True):
    """Two agents connected (one way; ``connect`` makes both), and the conversation in which
    ``source`` asks ``target``."""

    __tablename__ = "agent_links"

    source: str = Field(primary_key=True)
    target: str = Field(primary_key=True)
    created_at: float
    conversation_id: int | None = Field(
        default=None, foreign_key="conversations.id", ondelete="SET NULL"
    )


class AgentThread(SQLModel, table=True):
    """The conversation of one thread (an A2A context id) in which ``source`` asks
    ``target``."""

    __tablename__ = "agent_threads"

    source: str = Field(primary_key=True)
    target: str = Field(primary_key=True)
    thread: str = Field(primary_key=True)
    conversation_id: int = Field(foreign_key="conversations.id", ondelete="CASCADE")
    created_at: float


class MetricMinute(SQLModel, table=True):
    """One minute of one metric for one set of labels (``''`` for a label the metric lacks)."""

    __tablename__ = "metric_minutes"

    minute: int = Field(primary_key=True)
    """Unix time of the minute's first second."""
    metric: str = Field(primary_key=True)
    agent: str = Field(default="", primary_key=True)
    provider: str = Field(default="", primary_key=True)
    model: str = Field(default="", primary_key=True)
    count: int
    sum: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float
    histogram: str
    """The values in log-spaced buckets (JSON), so that minutes and labels can be merged."""


class AuditEntry(SQLModel, table=True):
    """A security-relevant action: who did what to what, when, and how it ended.

    Written only by :class:`mangaba_desktop.core.audit.AuditLog`, which keeps secrets out.
    """

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    time: float = Field(index=True)
    """Unix time of the action."""
    actor: str
    """Who: ``user``, ``app``, ``a2a:<caller address>``, ``plugin:<name>``."""
    action: str
    """A short stable name, such as ``key.added``."""
    target: str = ""
    """What it was done to: a provider id, an address and port, a file."""
    outcome: str
    """``ok``, ``refused`` or ``failed``."""
    detail: str = ""
    """One sentence for the person reading the log."""
