"""Compressing a long session: older conversation contexts become one memory.

The model writes the summary; the originals are archived (kept, browsable, never put into a
prompt again) with ``parent_id`` pointing at the memory that replaced them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from sqlmodel import Session, col, func, select, update

from ..store.models import Context, ContextType, Priority
from .passages import MAX_CONTEXT_CHARS, digest
from .store import ContextStore, insert_context

COMPRESS_AFTER = 24
"""Live conversation contexts in a session that trigger a compression."""
KEEP_RECENT = 8
"""The newest conversation contexts stay as they are."""
SOURCE_CHARS = 24_000
"""Most text handed to the model in one summary (older turns beyond it wait for the next)."""

Summarize = Callable[[str], Awaitable[str]]

SUMMARY_INSTRUCTION = (
    "Summarise the conversation below in a few sentences. Keep names, facts about the user, "
    "decisions and open questions; leave out greetings and filler."
)


async def compress_session(
    store: ContextStore,
    agent_id: str,
    session_id: str,
    summarize: Summarize,
    *,
    threshold: int = COMPRESS_AFTER,
    keep_recent: int = KEEP_RECENT,
) -> Context | None:
    """Summarise the session's older conversation contexts into one memory context if there
    are more than ``threshold``; returns the memory, or ``None`` when nothing was done."""

    def pick(session: Session) -> list[Context]:
        live = (
            select(Context)
            .where(Context.agent_id == agent_id)
            .where(Context.session_id == session_id)
            .where(Context.context_type == ContextType.CONVERSATION.value)
            .where(col(Context.archived).is_(False))
        )
        # Counted first: this runs after every turn, and most turns have nothing to compress.
        count = session.exec(select(func.count()).select_from(live.subquery())).one()
        if count <= threshold:
            return []
        older = list(session.exec(live.order_by(col(Context.id)).limit(count - keep_recent)).all())
        chosen: list[Context] = []
        size = 0
        for row in older:
            if chosen and size + len(row.content) > SOURCE_CHARS:
                break
            chosen.append(row)
            size += len(row.content)
        return chosen

    sources = await store.db.read(pick)
    if not sources:
        return None
    transcript = "\n\n".join(s.content[:SOURCE_CHARS] for s in sources)
    summary = (await summarize(transcript)).strip()
    if not summary:
        return None
    content = f"Summary of an earlier part of this conversation: {summary}"[:MAX_CONTEXT_CHARS]
    source_ids = [s.id for s in sources if s.id is not None]

    def store_memory(session: Session) -> Context:
        memory = insert_context(
            session,
            Context(
                agent_id=agent_id,
                session_id=session_id,
                content=content,
                context_type=ContextType.MEMORY.value,
                priority=Priority.MEDIUM,
                created_at=time.time(),
                digest=digest(ContextType.MEMORY.value, content),
            ),
        )
        # Only sources still live and unchanged are archived: a turn deleted meanwhile stays
        # deleted.
        session.exec(
            update(Context)
            .where(col(Context.id).in_(source_ids))
            .where(col(Context.archived).is_(False))
            .values(archived=True, parent_id=memory.id)
        )
        return memory

    memory = await store.db.write(store_memory)
    store.notify_changed(added=[memory.id], archived=source_ids, agent_id=agent_id)
    return memory
