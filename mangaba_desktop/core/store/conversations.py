"""Conversations and their messages: what the chat pane and the chat core read and write."""

from __future__ import annotations

import json
import time
import unicodedata
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_
from sqlmodel import Session, col, delete, select, update

from .. import events
from ..events import EventBus
from ..validation import clean_text
from .database import Database
from .models import (
    COMMAND_MODEL,
    Agent,
    Context,
    Conversation,
    Message,
    MessageStatus,
    Role,
    SearchHit,
    Usage,
)
from .rows import update_row
from .search import search_messages

DEFAULT_TITLE = "New chat"
TITLE_LENGTH = 60
PAGE_SIZE = 50
_ANSWERED = (MessageStatus.COMPLETE, MessageStatus.INTERRUPTED, MessageStatus.ERROR)


def title_from(text: str) -> str:
    """A conversation title made from the first words of a message."""
    visible = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text[:1000])
    line = " ".join(visible.split())
    if len(line) <= TITLE_LENGTH:
        return line or DEFAULT_TITLE
    return line[: TITLE_LENGTH - 1].rsplit(" ", 1)[0] + "…"


class ConversationStore:
    """Async access to the chat history; every write goes through the database's writer."""

    def __init__(self, database: Database, bus: EventBus) -> None:
        self.db = database
        self.bus = bus

    # -- conversations -----------------------------------------------------------------------

    async def create(
        self,
        title: str = DEFAULT_TITLE,
        model: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        draft: str = "",
    ) -> Conversation:
        """A new conversation (its own context session) answered by ``agent_id``, or by the
        default agent."""

        def job(session: Session) -> Conversation:
            now = time.time()
            agent = (
                agent_id
                or session.exec(select(Agent.id).order_by(col(Agent.created_at)).limit(1)).first()
            )
            conversation = Conversation(
                title=title,
                created_at=now,
                updated_at=now,
                model=model,
                agent_id=agent,
                session_id=session_id or uuid.uuid4().hex,
                draft=clean_text(draft),
            )
            session.add(conversation)
            session.flush()
            return conversation

        conversation = await self.db.write(job)
        self.bus.publish(events.CONVERSATION_CREATED, conversation=conversation)
        return conversation

    async def get(self, conversation_id: int) -> Conversation | None:
        return await self.db.read(lambda s: s.get(Conversation, conversation_id))

    async def set_agent(self, conversation_id: int, agent_id: str) -> Conversation:
        """Hand the conversation to another agent; it answers from the next message on."""
        conversation = await self.db.write(
            lambda s: _update_conversation(s, conversation_id, agent_id=agent_id)
        )
        self.bus.publish(events.CONVERSATION_UPDATED, conversation=conversation)
        return conversation

    async def set_model(self, conversation_id: int, model: str | None) -> Conversation:
        """Answer in this conversation with ``model`` from the next message on (None: the
        agent's or the app's model)."""
        conversation = await self.db.write(
            lambda s: _update_conversation(s, conversation_id, model=model)
        )
        self.bus.publish(events.CONVERSATION_UPDATED, conversation=conversation)
        return conversation

    async def list(self) -> list[Conversation]:
        """Every conversation, most recently active first."""

        def job(session: Session) -> list[Conversation]:
            query = select(Conversation).order_by(col(Conversation.updated_at).desc())
            return list(session.exec(query).all())

        return await self.db.read(job)

    async def rename(self, conversation_id: int, title: str) -> Conversation:
        title = " ".join(clean_text(title).split())[:200] or DEFAULT_TITLE
        conversation = await self.db.write(
            lambda s: _update_conversation(s, conversation_id, title=title)
        )
        self.bus.publish(events.CONVERSATION_UPDATED, conversation=conversation)
        return conversation

    async def save_draft(self, conversation_id: int, draft: str) -> None:
        """Keep unsent text; it does not count as activity."""
        draft = clean_text(draft)
        await self.db.write(lambda s: _update_conversation(s, conversation_id, draft=draft))

    async def delete(self, conversation_id: int) -> None:
        """Delete the conversation, its messages and what its session remembered."""

        def job(session: Session) -> None:
            conversation = session.get(Conversation, conversation_id)
            if conversation is not None and conversation.session_id:
                session.exec(
                    delete(Context).where(col(Context.session_id) == conversation.session_id)
                )
            session.exec(delete(Conversation).where(col(Conversation.id) == conversation_id))

        await self.db.write(job)
        self.bus.publish(events.CONVERSATION_DELETED, conversation_id=conversation_id)

    # -- messages ------------------------------------------------------------------------------

    async def add_message(
        self,
        conversation_id: int,
        role: Role,
        content: str,
        *,
        status: MessageStatus = MessageStatus.COMPLETE,
        model: str | None = None,
        request_id: str | None = None,
        context_ids: list[int] | None = None,
    ) -> Message:
        """Store a message and mark the conversation active; the first user message names a
        conversation that still has the default title."""

        def job(session: Session) -> tuple[Message, Conversation]:
            now = time.time()
            # Looked up before the message is added: the lookup would flush it first.
            conversation = session.get(Conversation, conversation_id)
            if conversation is None:
                raise LookupError(f"conversation {conversation_id} does not exist")
            message = Message(
                conversation_id=conversation_id,
                role=role,
                content=content,
                created_at=now,
                status=status,
                model=model,
                request_id=request_id,
                context_ids=json.dumps(context_ids) if context_ids is not None else None,
            )
            session.add(message)
            changes: dict[str, Any] = {"updated_at": now}
            if role == Role.USER and conversation.title == DEFAULT_TITLE:
                changes["title"] = title_from(content)
            if model:
                changes["model"] = model
            conversation = _update_conversation(session, conversation_id, **changes)
            session.flush()
            return message, conversation

        message, conversation = await self.db.write(job)
        self.bus.publish(events.MESSAGE_ADDED, message=message)
        self.bus.publish(events.CONVERSATION_UPDATED, conversation=conversation)
        return message

    async def update_message(self, message_id: int, **fields: Any) -> Message:
        return await self.db.write(lambda s: update_message_row(s, message_id, **fields))

    def snapshot_message(self, message_id: int, content: str) -> None:
        """Queue a save of a growing reply without waiting for it."""
        self.db.write_soon(lambda s: update_message_row(s, message_id, content=content))

    async def get_message(self, message_id: int) -> Message | None:
        return await self.db.read(lambda s: s.get(Message, message_id))

    async def delete_messages_from(self, conversation_id: int, first_id: int) -> list[int]:
        """Delete a message and every later one of its conversation; return their ids."""

        def job(session: Session) -> list[int]:
            ids = list(
                session.exec(
                    select(Message.id)
                    .where(Message.conversation_id == conversation_id)
                    .where(col(Message.id) >= first_id)
                ).all()
            )
            session.exec(delete(Message).where(col(Message.id).in_(ids)))
            # What these turns left in the context store goes with them.
            session.exec(delete(Context).where(col(Context.source_message_id).in_(ids)))
            return [i for i in ids if i is not None]

        removed = await self.db.write(job)
        if removed:
            self.bus.publish(
                events.MESSAGES_REMOVED, conversation_id=conversation_id, message_ids=removed
            )
        return removed

    async def count(self, conversation_id: int) -> int:
        return await self.db.read(lambda s: count_messages(s, conversation_id))

    async def page(
        self,
        conversation_id: int,
        *,
        before_id: int | None = None,
        after_id: int | None = None,
        limit: int = PAGE_SIZE,
    ) -> list[Message]:
        """Up to ``limit`` messages in order: the newest ones, those just before ``before_id``,
        or those just after ``after_id``."""
        return await self.db.read(
            lambda s: page_messages(s, conversation_id, before_id, after_id, limit)
        )

    async def around(
        self, conversation_id: int, message_id: int, limit: int = PAGE_SIZE
    ) -> list[Message]:
        """A page of messages with ``message_id`` in its middle (to jump to a search hit)."""

        def job(session: Session) -> list[Message]:
            half = limit // 2
            # ``older`` ends with the message itself: half before it, the rest after it.
            older = page_messages(session, conversation_id, message_id + 1, None, half + 1)
            newer = page_messages(session, conversation_id, None, message_id, limit - half - 1)
            return older + newer

        return await self.db.read(job)

    async def history(self, conversation_id: int, before_id: int | None = None) -> list[Message]:
        """The messages a model should see: complete ones (and partial replies kept after an
        interruption), oldest first, before ``before_id`` if given. The provider trims to fit."""

        def job(session: Session) -> list[Message]:
            query = (
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .where(col(Message.status).in_([MessageStatus.COMPLETE, MessageStatus.INTERRUPTED]))
                .where(Message.content != "")
                .order_by(col(Message.id).desc())
                .limit(200)
            )
            if before_id is not None:
                query = query.where(col(Message.id) < before_id)
            return list(reversed(session.exec(query).all()))

        return await self.db.read(job)

    async def recent_models(self, limit: int = 1000) -> list[tuple[str, str, str | None]]:
        """Which agent asked which model (and provider) in the last ``limit`` replies, most
        recent first, each pair once."""

        def job(session: Session) -> list[tuple[str, str, str | None]]:
            latest = (
                select(Message.id, Message.conversation_id, Message.model, Message.provider)
                .where(Message.role == Role.ASSISTANT)
                .where(col(Message.model).is_not(None))
                .where(col(Message.provider).is_not(None))
                .where(Message.model != COMMAND_MODEL)  # the app's own answers (/help)
                .order_by(col(Message.id).desc())
                .limit(limit)
                .subquery()
            )
            rows = session.exec(
                select(Conversation.agent_id, latest.c.model, latest.c.provider)
                .join(Conversation, col(Conversation.id) == latest.c.conversation_id)
                .order_by(latest.c.id.desc())
            ).all()
            seen: dict[tuple[str, str], str | None] = {}
            for agent_id, model, provider in rows:
                if agent_id and model and (agent_id, model) not in seen:
                    seen[(agent_id, model)] = provider
            return [(agent, model, provider) for (agent, model), provider in seen.items()]

        return await self.db.read(job)

    async def queued(self) -> list[Message]:
        """Replies waiting for their model to be reachable, oldest first."""

        def job(session: Session) -> list[Message]:
            query = (
                select(Message)
                .where(Message.status == MessageStatus.QUEUED)
                .order_by(col(Message.id))
            )
            return list(session.exec(query).all())

        return await self.db.read(job)

    async def usage(self, conversation_id: int | None = None) -> list[Usage]:
        """Tokens and cost per provider and model, in one conversation or in all of them."""

        def job(session: Session) -> list[Usage]:
            priced = func.count(Message.cost_usd)
            query = (
                select(
                    func.coalesce(Message.provider, "unknown"),
                    func.coalesce(Message.model, "unknown"),
                    func.count(),
                    func.coalesce(func.sum(Message.prompt_tokens), 0),
                    func.coalesce(func.sum(Message.completion_tokens), 0),
                    func.sum(Message.cost_usd),
                    func.count() - priced,
                )
                .where(Message.role == Role.ASSISTANT)
                .where(col(Message.status).in_(_ANSWERED))
                .where(col(Message.model).is_not(None))
                .where(Message.model != COMMAND_MODEL)
                # a reply that failed before a word and a token counts for nothing
                .where(or_(Message.content != "", col(Message.prompt_tokens).is_not(None)))
                .group_by(Message.provider, Message.model)
                .order_by(func.coalesce(func.sum(Message.cost_usd), 0).desc())
            )
            if conversation_id is not None:
                query = query.where(Message.conversation_id == conversation_id)
            rows = session.exec(query).all()  # type: ignore[call-overload]
            return [Usage(**dict(zip(Usage.model_fields, row, strict=True))) for row in rows]

        return await self.db.read(job)

    async def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        return await self.db.read(lambda s: search_messages(s, query, limit))

    async def recover_interrupted(self) -> int:
        """Mark replies that were still streaming when the app last stopped as interrupted;
        a queued reply that was being sent again, and had not started, is queued again."""

        def job(session: Session) -> int:
            streaming = col(Message.status) == MessageStatus.STREAMING
            session.exec(
                update(Message)
                .where(streaming, Message.content == "", col(Message.error).is_not(None))
                .values(status=MessageStatus.QUEUED)
            )
            result = session.exec(
                update(Message).where(streaming).values(status=MessageStatus.INTERRUPTED)
            )
            return result.rowcount

        return await self.db.write(job)

    async def export(self, conversation_id: int) -> tuple[Conversation, list[Message]]:
        def job(session: Session) -> tuple[Conversation, list[Message]]:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None:
                raise LookupError(f"conversation {conversation_id} does not exist")
            query = (
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(col(Message.id))
            )
            return conversation, list(session.exec(query).all())

        return await self.db.read(job)


def count_messages(session: Session, conversation_id: int) -> int:
    query = (
        select(func.count()).select_from(Message).where(Message.conversation_id == conversation_id)
    )
    return session.exec(query).one()


def page_messages(
    session: Session,
    conversation_id: int,
    before_id: int | None,
    after_id: int | None,
    limit: int,
) -> list[Message]:
    query = select(Message).where(Message.conversation_id == conversation_id)
    if after_id is not None:
        query = query.where(col(Message.id) > after_id).order_by(col(Message.id)).limit(limit)
        return list(session.exec(query).all())
    if before_id is not None:
        query = query.where(col(Message.id) < before_id)
    query = query.order_by(col(Message.id).desc()).limit(limit)
    return list(reversed(session.exec(query).all()))


def _update_conversation(session: Session, conversation_id: int, **fields: Any) -> Conversation:
    return update_row(session, Conversation, conversation_id, **fields)


def update_message_row(session: Session, message_id: int, **fields: Any) -> Message:
    """Change a message inside the caller's transaction (a writer job)."""
    return update_row(session, Message, message_id, **fields)


def messages_as_prompt(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]
