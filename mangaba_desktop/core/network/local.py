"""The app's own agents on the network: their requests answered through the chat pipeline.

An agent asked to chat, analyze, translate or summarize answers in a conversation of its own
with the asker ("Ana asks Bruno"), so every exchange is stored, searchable and shown in the
chat like any other; ``get_context`` answers from its memory without a model. A broadcast or a
notification it receives is remembered (a context of its memory) and needs no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

from sqlmodel import Session

from .. import commands, events
from ..chat import ChatService
from ..context.store import ContextStore
from ..events import EventBus
from ..store import Agent, AgentStore, ConversationStore, MessageStatus
from ..store.models import AgentLink, AgentThread, ContextType, Priority
from .hub import AgentHub, NetworkError, Node
from .messages import AgentMessage, MessageType

log = logging.getLogger(__name__)

REMEMBERED_THREADS = 10_000
"""Conversations of askers' threads kept in memory (a caller may open any number)."""

ACTIONS: dict[str, str] = {
    "chat": "Answer a message in conversation (params: message).",
    "analyze": "Analyse a text (params: text, instruction).",
    "translate": "Translate a text (params: text, target_language).",
    "summarize": "Summarise a text (params: text, max_sentences).",
    "get_context": "Say what it remembers (params: none).",
    "remember": "Keep a message in its memory (params: message).",
}
"""What every local agent can be asked to do."""


class LocalAgents:
    """Keeps the app's agents registered on the hub and serves what they are asked.

    Args:
        hub: the network.
        agents: the agents of this app.
        conversations: where the exchanges are kept.
        chat: the request pipeline that answers.
        contexts: the agents' memory.
        bus: the event bus (agents created, edited or deleted).
    """

    def __init__(
        self,
        hub: AgentHub,
        agents: AgentStore,
        conversations: ConversationStore,
        chat: ChatService,
        contexts: ContextStore,
        bus: EventBus,
    ) -> None:
        self.hub = hub
        self.agents = agents
        self.conversations = conversations
        self.chat = chat
        self.contexts = contexts
        self.bus = bus
        self._unsubscribe: list[Any] = []
        self._syncs: set[asyncio.Task[None]] = set()
        self._sync_lock = asyncio.Lock()
        self._agents: dict[str, Agent] = {}
        """The app's agents as last read (kept current by ``agents.changed``)."""
        self._conversations: OrderedDict[tuple[str, str, str | None], int] = OrderedDict()
        """The conversation of each asker, agent and thread, once known (the most recently
        used :data:`REMEMBERED_THREADS`; older ones are read again when asked)."""

    async def start(self) -> None:
        # Listening first: an agent created while this starts is registered by the sync its
        # event asks for, after the first one (syncs run one at a time).
        self._unsubscribe = [
            self.bus.subscribe(events.AGENTS_CHANGED, self._on_agents_changed),
            self.bus.subscribe(events.CONVERSATION_DELETED, self._on_conversation_deleted),
        ]
        await self.hub.close_unfinished()
        pruned = await self.hub.prune()
        if pruned:
            log.info("pruned %d old network messages", pruned)
        await self.hub.load_links()
        await self.sync()

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        for task in list(self._syncs):
            task.cancel()
        await asyncio.gather(*self._syncs, return_exceptions=True)

    def _on_agents_changed(self, _name: str, _payload: dict[str, Any]) -> None:
        self._agents.clear()  # read again when next asked, not as they were
        task = asyncio.ensure_future(self.sync())
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)

    def _on_conversation_deleted(self, _name: str, payload: dict[str, Any]) -> None:
        gone = payload.get("conversation_id")
        for key, conversation_id in list(self._conversations.items()):
            if conversation_id == gone:
                del self._conversations[key]

    async def sync(self) -> None:
        """Register every agent of the app (again, with its current name and tags) and
        remove the ones that were deleted."""
        # One at a time: two syncs side by side could each read the agents, and the one
        # whose read finished last with the older list would take a new agent off again.
        async with self._sync_lock:
            await self._sync_now()

    async def _sync_now(self) -> None:
        agents = await self.agents.list()
        self._agents = {agent.id: agent for agent in agents}
        for agent in agents:
            self.hub.register(node_of(agent), self._handler(agent.id))
        present = {agent.id for agent in agents}
        for node in list(self.hub.nodes.values()):
            if node.location == "this app" and node.id not in present:
                await self.hub.unregister(node.id)
                await self.hub.forget(node.id)

    def _handler(self, agent_id: str) -> Any:
        async def handle(message: AgentMessage) -> dict[str, Any] | None:
            return await self.serve(agent_id, message)

        return handle

    async def serve(self, agent_id: str, message: AgentMessage) -> dict[str, Any] | None:
        agent = self._agents.get(agent_id) or await self.agents.get(agent_id)
        if agent is None:
            raise NetworkError("This agent was deleted.")
        if message.type in (MessageType.BROADCAST, MessageType.NOTIFICATION):
            await self._remember(agent, message)
            return None
        action = message.action or "chat"
        if action == "remember":
            await self._remember(agent, message)
            return {"text": "Remembered."}
        if action == "get_context":
            return {"text": await self.contexts.summary(agent.id, None)}
        text = request_text(action, message.content, agent)
        thread = message.content.get("thread")
        thread = str(thread)[:200] if thread else None
        return await self._answer(agent, message.sender, text, message.id, thread)

    async def _remember(self, agent: Agent, message: AgentMessage) -> None:
        sender = self.hub.nodes.get(message.sender)
        name = sender.name if sender else message.sender
        kind = "Broadcast" if message.type == MessageType.BROADCAST else "Message"
        await self.contexts.add(
            agent.id,
            f"{kind} from {name}: {message.text}",
            context_type=ContextType.MEMORY,
            priority=Priority.MEDIUM,
            tags=["network", *message.tags],
        )

    async def _answer(
        self, agent: Agent, sender_id: str, text: str, request_id: str, thread: str | None
    ) -> dict[str, Any]:
        conversation_id = await self._conversation_with(sender_id, agent, thread)

        def on_delta(_name: str, payload: dict[str, Any]) -> None:
            if payload.get("conversation_id") == conversation_id:
                self.hub.progress(request_id, payload.get("delta", ""))

        unsubscribe = self.bus.subscribe(events.MESSAGE_DELTA, on_delta)
        try:
            return await self._reply(agent, conversation_id, text)
        finally:
            unsubscribe()

    async def _reply(self, agent: Agent, conversation_id: int, text: str) -> dict[str, Any]:
        try:
            await self.chat.send(conversation_id, text)
        except RuntimeError as exc:
            raise NetworkError(f"{agent.name} is busy: {exc}") from None
        try:
            reply = await self.chat.wait(conversation_id)
        except asyncio.CancelledError:
            self.chat.stop(conversation_id)  # the asker gave up: stop writing the answer
            raise
        if reply is None or reply.status != MessageStatus.COMPLETE:
            error = (reply.error if reply else None) or "the reply did not finish"
            raise NetworkError(f"{agent.name} could not answer: {error}")
        return {
            "text": reply.content,
            "conversation_id": conversation_id,
            "message_id": reply.id,
            "model": reply.model,
        }

    async def _conversation_with(self, sender_id: str, agent: Agent, thread: str | None) -> int:
        """The conversation in which ``sender`` asks ``agent`` (made on first use): one per
        thread when the asker names threads (an A2A context id), else one in all."""
        key = (sender_id, agent.id, thread)
        known = self._conversations.get(key)  # forgotten when the conversation is deleted
        if known is not None:
            self._conversations.move_to_end(key)
            return known
        known = await self.conversations.db.read(lambda s: _stored_conversation(s, *key))
        if known is None or await self.conversations.get(known) is None:
            known = await self._start_conversation(sender_id, agent, thread)
        self._conversations[key] = known
        while len(self._conversations) > REMEMBERED_THREADS:
            self._conversations.popitem(last=False)
        return known

    async def _start_conversation(self, sender_id: str, agent: Agent, thread: str | None) -> int:
        sender = self.hub.nodes.get(sender_id)
        title = f"{sender.name if sender else sender_id} asks {agent.name}"
        if thread:
            title += f" · {thread[:8]}"
        conversation = await self.conversations.create(title, agent_id=agent.id)
        assert conversation.id is not None
        conversation_id = conversation.id

        def job(session: Session) -> None:
            now = time.time()
            if thread:
                session.merge(
                    AgentThread(
                        source=sender_id,
                        target=agent.id,
                        thread=thread,
                        conversation_id=conversation_id,
                        created_at=now,
                    )
                )
                return
            row = session.get(AgentLink, (sender_id, agent.id))
            if row is None:
                row = AgentLink(source=sender_id, target=agent.id, created_at=now)
            row.conversation_id = conversation_id
            session.add(row)

        await self.conversations.db.write(job)
        return conversation_id


def _stored_conversation(
    session: Session, sender_id: str, agent_id: str, thread: str | None
) -> int | None:
    if thread:
        row = session.get(AgentThread, (sender_id, agent_id, thread))
        return row.conversation_id if row is not None else None
    link = session.get(AgentLink, (sender_id, agent_id))
    return link.conversation_id if link is not None else None


def node_of(agent: Agent) -> Node:
    return Node(
        id=agent.id,
        name=agent.name,
        skills=list(ACTIONS),
        tags=agent.tag_list,
    )


def request_text(action: str, params: dict[str, Any], agent: Agent) -> str:
    """What the asked agent is sent, as if typed: the chat message or the slash command."""

    def text_param(*names: str) -> str:
        for name in names:
            value = params.get(name)
            if isinstance(value, str) and value.strip():
                return value
        raise NetworkError(f"The request to {agent.name} has no {names[0]} to work on.")

    if action == "chat":
        return commands.escape(text_param("message", "text"))
    if action == "analyze":
        instruction = str(params.get("instruction") or commands.DEFAULT_ANALYSIS)
        return commands.as_typed("analyze", text_param("text", "message"), instruction=instruction)
    if action == "translate":
        language = str(params.get("target_language") or params.get("language") or "english")
        return commands.as_typed("translate", text_param("text", "message"), language=language)
    if action == "summarize":
        sentences = params.get("max_sentences", commands.DEFAULT_SENTENCES)
        with contextlib.suppress(TypeError, ValueError):
            sentences = int(sentences)
        return commands.as_typed(
            "summarize", text_param("text", "message"), sentences=str(sentences)
        )
    known = ", ".join(ACTIONS)
    raise NetworkError(f"{agent.name} does not know how to “{action}”; it can: {known}.")
