"""Agents: a name, a persona, a model and tags, kept in the database."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable

from sqlmodel import Session, col, func, select

from .. import events
from ..events import EventBus
from ..validation import clean_text
from .database import Database
from .models import Agent
from .rows import update_row

MAX_NAME_CHARS = 80
MAX_PERSONA_CHARS = 20_000


class InvalidAgent(ValueError):
    """An agent that cannot be saved, with a sentence the user can read."""


def new_agent_id() -> str:
    return f"mangaba_{secrets.token_hex(4)}"


def _clean_name(name: str) -> str:
    name = " ".join(clean_text(name or "").split())
    if not name:
        raise InvalidAgent("An agent needs a name.")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidAgent(f"An agent's name takes at most {MAX_NAME_CHARS} characters.")
    return name


def _clean_persona(persona: str) -> str:
    persona = clean_text(persona or "").strip()
    if len(persona) > MAX_PERSONA_CHARS:
        raise InvalidAgent(
            f"The persona has {len(persona):,} characters; at most {MAX_PERSONA_CHARS:,} fit."
        )
    return persona


def _tags(tags: str | Iterable[str] | None) -> str:
    from ..context.passages import InvalidContext, tags_json

    try:
        return tags_json(tags)
    except InvalidContext as exc:
        raise InvalidAgent(str(exc)) from None


class AgentStore:
    """Create, edit, delete and look up agents; publishes ``agents.changed`` (and
    ``agent.created``)."""

    def __init__(self, database: Database, bus: EventBus) -> None:
        self.db = database
        self.bus = bus

    async def list(self) -> list[Agent]:
        """Every agent, oldest first (the first is the default)."""
        return await self.db.read(
            lambda s: list(s.exec(select(Agent).order_by(col(Agent.created_at))).all())
        )

    async def get(self, agent_id: str) -> Agent | None:
        return await self.db.read(lambda s: s.get(Agent, agent_id))

    async def default(self) -> Agent:
        agents = await self.list()
        if agents:
            return agents[0]
        return await self.create("Mangaba", "You are Mangaba, a helpful assistant.")

    async def resolve(self, agent_id: str | None) -> Agent:
        """The agent ``agent_id``, or the default one when it is unset or gone."""
        if agent_id:
            agent = await self.get(agent_id)
            if agent is not None:
                return agent
        return await self.default()

    async def create(
        self,
        name: str,
        persona: str = "",
        *,
        model: str | None = None,
        tags: str | Iterable[str] | None = None,
        agent_id: str | None = None,
    ) -> Agent:
        now = time.time()
        agent = Agent(
            id=agent_id or new_agent_id(),
            name=_clean_name(name),
            persona=_clean_persona(persona),
            model=model or None,
            tags=_tags(tags),
            created_at=now,
            updated_at=now,
        )

        def job(session: Session) -> Agent:
            existing = session.get(Agent, agent.id)
            if existing is not None:
                return existing
            session.add(agent)
            session.flush()
            return agent

        stored = await self.db.write(job)
        if stored is agent:  # not an agent that already had this id
            self.bus.publish(events.AGENT_CREATED, agent=stored)
        self.bus.publish(events.AGENTS_CHANGED, agent=stored)
        return stored

    async def update(
        self,
        agent_id: str,
        *,
        name: str | None = None,
        persona: str | None = None,
        model: str | None = None,
        tags: str | Iterable[str] | None = None,
    ) -> Agent:
        fields: dict[str, object] = {"updated_at": time.time()}
        if name is not None:
            fields["name"] = _clean_name(name)
        if persona is not None:
            fields["persona"] = _clean_persona(persona)
        if model is not None:
            fields["model"] = model or None
        if tags is not None:
            fields["tags"] = _tags(tags)

        agent = await self.db.write(lambda s: update_row(s, Agent, agent_id, **fields))
        self.bus.publish(events.AGENTS_CHANGED, agent=agent)
        return agent

    async def delete(self, agent_id: str) -> None:
        """Delete an agent and what it remembers; its chats stay, answered by the default
        agent. The last agent cannot be deleted."""

        def job(session: Session) -> None:
            count = session.exec(select(func.count()).select_from(Agent)).one()
            if count <= 1:
                raise InvalidAgent("The last agent cannot be deleted: create another first.")
            agent = session.get(Agent, agent_id)
            if agent is not None:
                session.delete(agent)

        await self.db.write(job)
        self.bus.publish(events.AGENTS_CHANGED, deleted=agent_id)
