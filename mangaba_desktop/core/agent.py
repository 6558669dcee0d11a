"""The Mangaba agent API, on the app's own core: every call goes through the one request
pipeline (:class:`~mangaba_desktop.core.chat.ChatService`) and is kept in the history.

    agent = MangabaAgent(agent_name="Ana")
    print(await agent.chat("Meu nome é João"))
    async for piece in agent.translate("Bom dia", "english"):
        print(piece, end="")
    reply = await agent.chat("Qual é o meu nome?")
    reply.context_ids  # the contexts it was given

An agent talks in one session (a conversation in the app) until :meth:`MangabaAgent.new_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import commands, events
from .audit import AuditLog
from .chat import ChatService
from .context.store import ContextStore
from .events import EventBus
from .metrics import MetricsCollector
from .network import AgentHub, NetworkError, NodeKind, NodeStatus
from .network.hub import DEFAULT_TIMEOUT_S
from .network.local import LocalAgents
from .outbox import Outbox
from .plugins import PluginManager
from .providers.completions import Completions
from .providers.secrets import KeyStore
from .settings import Settings, SettingsStore
from .store import AgentStore, ConversationStore, Database, Message, MessageStatus
from .store.agents import new_agent_id
from .store.models import Agent


class Runtime:
    """The core services on one data folder: database, stores, models and the pipeline.

    It owns the :class:`~mangaba_desktop.core.audit.AuditLog` (:attr:`audit`) and hands it to
    the settings store, the models and their key store when they have none yet, so that keys,
    key tests and settings changes are recorded; the A2A server finds it here.

    Args:
        database: the open database.
        completions: the models (started lazily on first use).
        bus: the event bus; a new one by default.
        settings: the user's settings (model parameters, limits); the defaults when None.
    """

    _shared: ClassVar[Runtime | None] = None
    _opening: ClassVar[asyncio.Future[Runtime] | None] = None

    def __init__(
        self,
        database: Database,
        completions: Any,
        bus: EventBus | None = None,
        *,
        settings: SettingsStore | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.bus = bus or EventBus()
        self.completions = completions
        self.metrics = MetricsCollector(self.bus, database)
        self.audit = AuditLog(database)
        if settings is not None and settings.audit is None:
            settings.audit = self.audit
        if isinstance(completions, Completions):
            if completions.audit is None:
                completions.audit = self.audit
            if isinstance(completions.keys, KeyStore) and completions.keys.audit is None:
                self.audit.use_keys(completions.keys)
        self.conversations = ConversationStore(database, self.bus)
        self.agents = AgentStore(database, self.bus)
        self.contexts = ContextStore(database, self.bus)
        self.plugins = PluginManager(self.bus, settings=settings, contexts=self.contexts)
        """Loaded by :meth:`start` (or :meth:`PluginManager.load_installed`)."""
        self.network = AgentHub(self.bus, database)
        self.chat = ChatService(
            self.conversations,
            completions,
            self.bus,
            agents=self.agents,
            contexts=self.contexts,
            settings=settings,
            plugins=self.plugins,
            network=self.network,
        )
        if settings is not None:
            self.contexts.cap_per_agent = settings.settings.context_cap
            settings.subscribe(self._on_settings)
        self.outbox = Outbox(self.chat, self.bus)
        # A remote agent that is back takes the messages that waited for it at once.
        self._reachable_remotes: set[str] = set()
        self.bus.subscribe(events.NETWORK_NODE, self._on_node)
        self.local_agents = LocalAgents(
            self.network, self.agents, self.conversations, self.chat, self.contexts, self.bus
        )

    async def start(self) -> None:
        """Start the background services: the metrics, the plugins, the outbox and the agents
        on the network; prune audit entries past their retention."""
        await self.metrics.start()
        await self.plugins.load_installed()
        await self.outbox.start()
        await self.local_agents.start()
        await self.audit.prune()

    def _on_node(self, _name: str, payload: dict[str, Any]) -> None:
        node = payload.get("node")
        if node is None or node.kind != NodeKind.REMOTE:
            return
        if payload.get("removed") or node.status == NodeStatus.OFFLINE:
            self._reachable_remotes.discard(node.id)
        elif node.id not in self._reachable_remotes:
            # Reached (first, or again): what waited for it goes now, not at the next try.
            self._reachable_remotes.add(node.id)
            if self.outbox.waiting:
                self.outbox.nudge()

    def _on_settings(self, settings: Settings) -> None:
        self.contexts.cap_per_agent = settings.context_cap

    @classmethod
    async def open(cls, directory: Path | None = None, completions: Any = None) -> Runtime:
        """Open (creating and migrating if needed) the database in ``directory`` (the user's
        data folder by default)."""
        from .paths import data_dir, database_path

        folder = data_dir(directory)
        database = await asyncio.to_thread(Database, database_path(folder))
        settings = await asyncio.to_thread(SettingsStore, folder)
        completions = completions or Completions(settings=settings, keys=KeyStore())
        runtime = cls(database, completions, settings=settings)
        try:
            await runtime.start()
        except BaseException:
            await runtime.close()  # nothing left running, the file released
            raise
        return runtime

    @classmethod
    async def shared(cls) -> Runtime:
        """The runtime agents created without one use: the user's data folder, opened once
        however many agents start at the same moment."""
        if cls._opening is None:
            cls._opening = asyncio.ensure_future(cls.open())
        try:
            runtime = await asyncio.shield(cls._opening)
        except BaseException:
            if cls._opening.done():
                cls._opening = None  # a failed open may be retried
            raise
        cls._shared = runtime
        return runtime

    async def close(self) -> None:
        await self.local_agents.stop()
        await self.network.close()
        await self.outbox.stop()
        await self.chat.shutdown()
        await self.plugins.close()
        closer = getattr(self.completions, "close", None)
        if closer is not None:
            await closer()
        await self.metrics.close()
        await asyncio.to_thread(self.database.close)
        if Runtime._shared is self:
            Runtime._shared = None
            Runtime._opening = None


class ReplyFailed(RuntimeError):
    """The model could not answer; ``message`` is the stored reply with its error."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.error or "The reply failed.")
        self.message = message


@dataclass
class Reply:
    """A finished reply and where it came from; ``str(reply)`` is its text."""

    text: str
    request_id: str | None
    message_id: int
    conversation_id: int
    agent_id: str
    model: str | None
    latency_ms: float | None
    time_to_first_token_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    context_ids: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text

    @classmethod
    def of(cls, message: Message, agent_id: str) -> Reply:
        assert message.id is not None
        return cls(
            text=message.content,
            request_id=message.request_id,
            message_id=message.id,
            conversation_id=message.conversation_id,
            agent_id=agent_id,
            model=message.model,
            latency_ms=message.latency_ms,
            time_to_first_token_ms=message.time_to_first_token_ms,
            prompt_tokens=message.prompt_tokens,
            completion_tokens=message.completion_tokens,
            context_ids=message.used_context_ids,
        )


_END = object()


class ReplyStream:
    """A reply being written: ``async for`` its text as it streams, or ``await`` it for the
    whole :class:`Reply`. It starts at once; awaiting it after iterating returns the same reply.
    """

    def __init__(self, run: Callable[[ReplyStream], Awaitable[Reply]]) -> None:
        self._pieces: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.ensure_future(run(self))
        self._task.add_done_callback(lambda _t: self._pieces.put_nowait(_END))

    def _piece(self, text: str) -> None:
        self._pieces.put_nowait(text)

    def __await__(self) -> Generator[Any, None, Reply]:
        return self._task.__await__()

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            piece = await self._pieces.get()
            if piece is _END:
                break
            yield piece
        await self._task  # raise what the reply raised

    def cancel(self) -> None:
        """Stop the reply; what was written so far is kept in the history."""
        self._task.cancel()


class MangabaAgent:
    """An agent with a persona, a model, tags and a memory (the context store).

    Args:
        api_key: a key for the model's provider, used for this agent's requests only.
        model: the model it answers with (a litellm name); the local model by default.
        agent_id: ``mangaba_<8 hex>`` by default; an existing id reopens that agent.
        agent_name: its name; the id by default.
        use_mcp: give replies the relevant contexts (the seed's "MCP").
        use_a2a: take part in the agent network (requests, broadcasts, links).
        persona: its system prompt.
        tags: labels, used to address agents in groups.
        runtime: the core to run on; the user's data folder by default.
    """

    def __init__(
        self,
        api_key: str | None = None,
        model: str | None = None,
        agent_id: str | None = None,
        agent_name: str | None = None,
        use_mcp: bool = True,
        use_a2a: bool = True,
        *,
        persona: str | None = None,
        tags: list[str] | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.agent_id = agent_id or new_agent_id()
        self.agent_name = agent_name or self.agent_id
        self.model = model
        self.use_mcp = use_mcp
        self.use_a2a = use_a2a
        self.persona = persona
        self.tags = list(tags or [])
        self._params: dict[str, Any] = {"api_key": api_key} if api_key else {}
        self._runtime = runtime
        self._record: Agent | None = None
        self._conversation_id: int | None = None
        self._lock: asyncio.Lock | None = None

    # -- set-up --------------------------------------------------------------------------------

    async def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = await Runtime.shared()
        return self._runtime

    async def record(self) -> Agent:
        """The agent as stored (created on first use)."""
        if self._record is None:
            runtime = await self.runtime()
            existing = await runtime.agents.get(self.agent_id)
            if existing is None:
                existing = await runtime.agents.create(
                    self.agent_name,
                    self.persona or "",
                    model=self.model,
                    tags=self.tags,
                    agent_id=self.agent_id,
                )
            self._record = existing
            self.agent_name = existing.name
        return self._record

    async def session_id(self) -> str:
        """The session this agent is talking in (a conversation in the app)."""
        conversation = await self._conversation()
        assert conversation.session_id is not None
        return conversation.session_id

    async def new_session(self) -> str:
        """Start a new session: later calls do not see this one's conversation contexts."""
        self._conversation_id = None
        return await self.session_id()

    async def _conversation(self) -> Any:
        runtime = await self.runtime()
        await self.record()
        if self._conversation_id is not None:
            conversation = await runtime.conversations.get(self._conversation_id)
            if conversation is not None:
                return conversation
        conversation = await runtime.conversations.create(
            f"{self.agent_name} session", agent_id=self.agent_id
        )
        self._conversation_id = conversation.id
        return conversation

    # -- the network -------------------------------------------------------------------------

    async def _on_network(self, *others: str) -> Runtime:
        if not self.use_a2a:
            raise NetworkError(f"{self.agent_name} does not take part in the agent network.")
        runtime = await self.runtime()
        await self.record()
        if any(i not in runtime.network.nodes for i in (self.agent_id, *others)):
            await runtime.local_agents.sync()
        return runtime

    async def send_agent_request(
        self,
        target_agent_id: str | MangabaAgent,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> str:
        """Ask another agent to ``chat``, ``analyze``, ``translate``, ``summarize`` or
        ``get_context``; returns its answer. Raises :class:`NetworkError` (an unknown or
        offline agent, an error in its answer, no answer in time)."""
        if isinstance(target_agent_id, MangabaAgent):
            await target_agent_id.record()
            target_agent_id = target_agent_id.agent_id
        runtime = await self._on_network(target_agent_id)
        response = await runtime.network.request(
            self.agent_id, target_agent_id, action, params, timeout_s=timeout_s
        )
        return response.text

    async def broadcast_message(self, message: str, tags: list[str] | None = None) -> list[str]:
        """Send ``message`` to every connected agent (with one of ``tags``, when given);
        returns the ids of the agents it went to."""
        runtime = await self._on_network()
        return await runtime.network.broadcast(self.agent_id, {"message": message}, tags)

    async def connect_to(self, other: MangabaAgent | str) -> None:
        """Link this agent and ``other`` both ways."""
        other_id = other.agent_id if isinstance(other, MangabaAgent) else other
        if isinstance(other, MangabaAgent):
            await other.record()
        runtime = await self._on_network(other_id)
        await runtime.network.connect(self.agent_id, other_id)

    # -- the capabilities ----------------------------------------------------------------------

    def chat(self, message: str, use_context: bool = True) -> ReplyStream:
        """Answer ``message`` with what the agent remembers of this session and its knowledge."""
        return self._ask(message, use_context=use_context and self.use_mcp)

    def analyze_text(self, text: str, instruction: str = commands.DEFAULT_ANALYSIS) -> ReplyStream:
        return self._ask(commands.as_typed("analyze", text, instruction=instruction))

    def translate(self, text: str, target_language: str = "português") -> ReplyStream:
        return self._ask(commands.as_typed("translate", text, language=target_language))

    def summarize(self, text: str, max_sentences: int = commands.DEFAULT_SENTENCES) -> ReplyStream:
        return self._ask(commands.as_typed("summarize", text, sentences=str(int(max_sentences))))

    def code_review(self, code: str, language: str = "python") -> ReplyStream:
        return self._ask(commands.as_typed("review", code, language=language))

    def explain_code(self, code: str, language: str = "python") -> ReplyStream:
        return self._ask(commands.as_typed("explain", code, language=language))

    async def get_context_summary(self) -> str:
        """The session's recent contexts grouped by type."""
        runtime = await self.runtime()
        return await runtime.contexts.summary(self.agent_id, await self.session_id())

    async def remember(
        self, content: str, context_type: str = "knowledge", *, in_session: bool = False, **kw: Any
    ) -> list[int]:
        """Add knowledge (split into passages), a memory or a user profile to this agent."""
        runtime = await self.runtime()
        await self.record()
        session = await self.session_id() if in_session else None
        added = await runtime.contexts.add_text(
            self.agent_id, content, context_type, session_id=session, **kw
        )
        return [c.id for c in added if c.id is not None]

    # -- internals -----------------------------------------------------------------------------

    def _ask(self, text: str, *, use_context: bool | None = None) -> ReplyStream:
        use = self.use_mcp if use_context is None else use_context

        async def run(stream: ReplyStream) -> Reply:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                return await self._run(stream, text, use)

        return ReplyStream(run)

    async def _run(self, stream: ReplyStream, text: str, use_context: bool) -> Reply:
        runtime = await self.runtime()
        conversation = await self._conversation()
        conversation_id = conversation.id

        def on_delta(_name: str, payload: dict[str, Any]) -> None:
            if payload["conversation_id"] == conversation_id:
                stream._piece(payload["delta"])

        unsubscribe = runtime.bus.subscribe(events.MESSAGE_DELTA, on_delta)
        try:
            reply = await runtime.chat.send(
                conversation_id,
                text,
                self.model,
                use_context=use_context,
                params=self._params,
            )
            if reply.status == MessageStatus.STREAMING:
                try:
                    finished = await runtime.chat.wait(conversation_id)
                except asyncio.CancelledError:
                    runtime.chat.stop(conversation_id)
                    with contextlib.suppress(asyncio.CancelledError, LookupError):
                        await runtime.chat.wait(conversation_id)
                    raise
                assert finished is not None
                reply = finished
            else:
                stream._piece(reply.content)
        finally:
            unsubscribe()
        if reply.status == MessageStatus.ERROR:
            raise ReplyFailed(reply)
        return Reply.of(reply, self.agent_id)
