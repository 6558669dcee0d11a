"""Chat turns: the request pipeline every agent call goes through.

validate → rate limit → retrieve context → build the prompt (persona, contexts, recent history
within the model's window) → stream from the provider → post-process → store the turn → the
reply with its metadata (request id, latency, tokens, contexts used).

The user's message is on disk before any model is asked. The reply is a row from its first
moment (status ``streaming``), saved at least once a second while it grows, and closed as
``complete``, ``interrupted`` (Stop, or a crash noticed at the next start) or ``error``; the
closing write, the turn's context and the contexts' use counts go in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from . import commands, events, prompts
from .context.compression import KEEP_RECENT, compress_session
from .context.passages import MAX_CONTEXT_CHARS, digest, split_passages
from .context.retrieval import RetrievedContext
from .context.store import ContextStore, insert_context, touch_contexts
from .events import EventBus
from .network.hub import AgentHub
from .network.remote_chat import PREFIX as REMOTE_AGENT
from .network.remote_chat import ask_remote_agent, is_remote_agent, provider_of_model
from .plugins import PluginManager, Request, Response, may_leave_this_computer
from .plugins.hooks import AFTER_RESPONSE, BEFORE_REQUEST
from .providers.completions import without_credentials
from .ratelimit import RateLimiter
from .settings import Settings, SettingsStore
from .store import Agent, AgentStore, ConversationStore, Message, MessageStatus, Role
from .store.conversations import update_message_row
from .store.models import Context, ContextType, Conversation
from .validation import validate_message

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 0.5
"""How often a growing reply is written to disk (the promise to the user is once a second)."""

UPKEEP_DELAY_S = 0.5
"""How long after a turn its memory upkeep runs (turns meanwhile share one)."""


class StreamPieceLike(Protocol):
    text: str
    usage: dict[str, int]


class CompletionSource(Protocol):
    default_model: str

    def stream(self, model: str, messages: list[dict[str, str]], **params: Any) -> Any: ...


@dataclass
class TurnPlan:
    """What a reply is made from: the prompt and where its parts came from."""

    request_id: str
    agent: Agent | None
    session_id: str | None
    messages: list[dict[str, str]]
    contexts: list[RetrievedContext]
    question: Message
    context_type: str = ContextType.CONVERSATION.value
    params: dict[str, Any] = field(default_factory=dict)
    own_params: dict[str, Any] = field(default_factory=dict)
    """What the caller asked for this turn beyond the settings (kept for a queued resend)."""
    resend: bool = False
    """A queued reply sent again: if it stops before its first word, it stays queued."""
    retrieval_ms: float | None = None
    """How long the context search took; None when nothing was searched."""


class ChatService:
    """Runs chat turns for conversations, one reply at a time per conversation.

    Events (on the bus): ``message.added``, ``message.received`` (a user's message is
    stored), ``message.delta`` (``message_id``,
    ``conversation_id``, ``delta``: the new piece of text), ``message.finished`` (the final
    ``message``), ``contexts.retrieved``, ``ai.request.started``, ``ai.request.completed`` and
    ``error.occurred``.

    Args:
        store: the chat history.
        completions: the models.
        bus: the event bus.
        agents: the agents (persona, model); without it replies have no persona.
        contexts: the context store; without it nothing is remembered or retrieved.
        rate_limiter: requests per agent; a generous default.
        settings: the user's settings (model parameters, system prompt, agent rate limit).
        plugins: the plugins, which see prompts and replies and answer their own commands.
        network: the agent network, through which a chat whose model is a remote agent
            (``a2a:<address>``) asks that agent.
    """

    def __init__(
        self,
        store: ConversationStore,
        completions: CompletionSource,
        bus: EventBus,
        *,
        agents: AgentStore | None = None,
        contexts: ContextStore | None = None,
        rate_limiter: RateLimiter | None = None,
        system_prompt: str | None = None,
        params: dict[str, Any] | None = None,
        settings: SettingsStore | None = None,
        plugins: PluginManager | None = None,
        network: AgentHub | None = None,
    ) -> None:
        self.store = store
        self.network = network
        self.plugins = plugins
        self.completions = completions
        self.bus = bus
        self.agents = agents
        self.contexts = contexts
        self.rate_limiter = rate_limiter or RateLimiter()
        self.system_prompt = system_prompt
        self.params = params or {}
        self.settings = settings
        """Per-model parameters, the system prompt and the agent rate limit, when given."""
        if settings is not None:
            self._apply_settings(settings.settings)
            settings.subscribe(self._apply_settings)
        self.model: str | None = None
        """The model new replies use when the agent names none; the local model when unset."""
        self.compress_after: int | None = None
        """Conversation contexts in a session before older ones are summarised; the default
        when unset, never when 0."""
        self._replies: dict[int, asyncio.Task[Message]] = {}
        self._starting: set[int] = set()
        """Conversations whose turn is being set up (stored, not streaming yet)."""
        self._upkeep: set[asyncio.Task[Any]] = set()
        self._upkeep_due: set[tuple[str, str | None]] = set()
        self._hurry = asyncio.Event()
        self._resending: set[int] = set()
        """Conversations whose streaming reply is a queued one sent again."""
        self._queued_params: dict[int, dict[str, Any]] = {}
        """The call's own parameters (a key given to an agent) of each queued reply, in memory
        only, so that sending it again asks the same way; lost on quit, never written."""

    # -- queries -------------------------------------------------------------------------------

    def is_streaming(self, conversation_id: int) -> bool:
        if conversation_id in self._starting:
            return True
        task = self._replies.get(conversation_id)
        return task is not None and not task.done()

    # -- turns ---------------------------------------------------------------------------------

    async def send(
        self,
        conversation_id: int,
        text: str,
        model: str | None = None,
        *,
        use_context: bool = True,
        params: dict[str, Any] | None = None,
    ) -> Message:
        """Store the user's message and start the reply; returns the reply's row at once.

        Raises :class:`~mangaba_desktop.core.validation.InvalidMessage` for text that cannot be
        sent (an unknown or incomplete command included),
        :class:`~mangaba_desktop.core.ratelimit.RateLimited` when the agent gets too many
        requests, and ``RuntimeError`` while this conversation already has a reply streaming:
        nothing is stored then. Once the message is stored, a failure to prepare the reply
        (the store, the context search) is kept as a reply with status ``error``.
        """
        text = validate_message(text)
        command = self._parse(text)
        async with self._user_turn(conversation_id) as (conversation, agent):
            self._limit(agent)
            question = await self.store.add_message(conversation_id, Role.USER, text)
            self._received(question, agent)
            return await self._reply(
                conversation, agent, command, model, use_context=use_context, params=params
            )

    async def regenerate(self, conversation_id: int, model: str | None = None) -> Message:
        """Replace the replies after the last user message with a new one."""
        async with self._user_turn(conversation_id) as (conversation, agent):
            history = await self.store.history(conversation_id)
            last_user = next((m for m in reversed(history) if m.role == Role.USER), None)
            if last_user is None or last_user.id is None:
                raise LookupError("There is no message to answer in this conversation.")
            self._limit(agent)
            await self.store.delete_messages_from(conversation_id, last_user.id + 1)
            command = self._parse(last_user.content)
            return await self._reply(conversation, agent, command, model)

    async def edit_and_resend(
        self, conversation_id: int, message_id: int, text: str, model: str | None = None
    ) -> Message:
        """Replace a user message and everything after it with ``text`` and a new reply."""
        text = validate_message(text)
        command = self._parse(text)
        async with self._user_turn(conversation_id) as (conversation, agent):
            self._limit(agent)
            await self.store.delete_messages_from(conversation_id, message_id)
            question = await self.store.add_message(conversation_id, Role.USER, text)
            self._received(question, agent)
            return await self._reply(conversation, agent, command, model)

    def stop(self, conversation_id: int) -> bool:
        """Stop the reply streaming in this conversation; what arrived so far is kept."""
        task = self._replies.get(conversation_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def wait(self, conversation_id: int) -> Message | None:
        """Wait for this conversation's reply to end; returns it as stored."""
        task = self._replies.get(conversation_id)
        if task is None:
            return None
        return await asyncio.shield(task)

    async def wait_upkeep(self) -> None:
        """Run the upkeep (eviction, compression) due after past turns now, and wait for it."""
        self._hurry.set()
        try:
            while self._upkeep:
                await asyncio.gather(*list(self._upkeep), return_exceptions=True)
        finally:
            self._hurry.clear()

    async def shutdown(self) -> None:
        """Stop every reply and wait until each is stored as interrupted."""
        tasks = [t for t in self._replies.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(self._upkeep):
            task.cancel()
        await asyncio.gather(*self._upkeep, return_exceptions=True)
        if self.contexts is not None:
            await self.contexts.stop_indexing()

    # -- internals -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _user_turn(
        self, conversation_id: int
    ) -> AsyncIterator[tuple[Conversation, Agent | None]]:
        """A turn the user starts: a queued reply being resent there makes way, and the
        conversation is held (see :meth:`_turn`) with its agent."""
        await self._make_way(conversation_id)
        with self._turn(conversation_id):
            conversation = await self._conversation(conversation_id)
            yield conversation, await self._agent(conversation)

    @contextlib.contextmanager
    def _turn(self, conversation_id: int) -> Iterator[None]:
        """Hold the conversation from the first await of a turn until its reply task exists,
        so that a second send (a double Enter) cannot start a second, unstoppable reply."""
        if self.is_streaming(conversation_id):
            raise RuntimeError("A reply is still streaming here: stop it first.")
        self._starting.add(conversation_id)
        try:
            yield
        finally:
            self._starting.discard(conversation_id)

    async def _conversation(self, conversation_id: int) -> Conversation:
        conversation = await self.store.get(conversation_id)
        if conversation is None:
            raise LookupError("This conversation was deleted.")
        return conversation

    async def _agent(self, conversation: Conversation) -> Agent | None:
        if self.agents is None:
            return None
        return await self.agents.resolve(conversation.agent_id)

    def _apply_settings(self, settings: Settings) -> None:
        self.rate_limiter.rate = settings.agent_requests_per_minute / 60.0
        self.rate_limiter.burst = settings.agent_burst

    def _received(self, question: Message, agent: Agent | None) -> None:
        self.bus.publish(
            events.MESSAGE_RECEIVED,
            conversation_id=question.conversation_id,
            message_id=question.id,
            agent_id=agent.id if agent else None,
        )

    def _limit(self, agent: Agent | None) -> None:
        if agent is not None:
            self.rate_limiter.acquire(agent.id, f"The agent “{agent.name}”")

    async def _reply(
        self,
        conversation: Conversation,
        agent: Agent | None,
        command: commands.Command | None,
        model: str | None,
        **options: Any,
    ) -> Message:
        """Answer the stored question; a failure before the stream starts becomes an error
        reply, so that the question is never left unanswered without a word."""
        try:
            if command is not None and command.local:
                return await self._answer_locally(conversation, agent, command)
            return await self._start_reply(conversation, agent, model, **options)
        except Exception as exc:
            log.warning("could not start a reply in %s: %s", conversation.id, exc)
            assert conversation.id is not None
            try:
                reply = await self.store.add_message(
                    conversation.id, Role.ASSISTANT, "", status=MessageStatus.ERROR, model=model
                )
                failed = await self.store.update_message(
                    reply.id or 0, error=f"The reply could not start: {_describe(exc)}"
                )
            except LookupError:
                raise exc from None  # the conversation itself is gone
            self.bus.publish(events.MESSAGE_FINISHED, message=failed)
            self.bus.publish(events.ERROR_OCCURRED, source="chat", message=failed.error)
            return failed

    async def _answer_locally(
        self, conversation: Conversation, agent: Agent | None, command: commands.Command
    ) -> Message:
        """/help, /context and the plugins' commands: the app answers, no model is asked."""
        if command.spec.plugin is not None and self.plugins is not None:
            text = await self.plugins.run_command(command.name, command.body)
        elif command.name == "context":
            if self.contexts is None or agent is None:
                text = "No context store is open."
            else:
                summary = await self.contexts.summary(agent.id, conversation.session_id)
                text = f"What {agent.name} remembers here:\n\n{summary}"
        else:
            text = commands.help_text(
                self.plugins.command_specs(active_only=True) if self.plugins else None
            )
        assert conversation.id is not None
        reply = await self.store.add_message(
            conversation.id, Role.ASSISTANT, text, model=prompts.COMMAND_MODEL
        )
        self.bus.publish(events.MESSAGE_FINISHED, message=reply)
        return reply

    async def plan(
        self,
        conversation: Conversation,
        agent: Agent | None,
        model: str,
        *,
        use_context: bool = True,
        before_id: int | None = None,
    ) -> TurnPlan:
        """Retrieve the contexts and build the prompt for the conversation's last message
        (the last one before ``before_id``: a queued reply answers the message before it)."""
        assert conversation.id is not None
        history = self._without_plugin_commands(
            await self.store.history(conversation.id, before_id)
        )
        question = next((m for m in reversed(history) if m.role == Role.USER), None)
        if question is None:
            raise LookupError("There is no message to answer in this conversation.")
        command = self._parse(question.content)
        system_prompt = self.system_prompt
        if system_prompt is None and self.settings is not None:
            system_prompt = self.settings.settings.system_prompt
        persona = "\n\n".join(
            part for part in (system_prompt, agent.persona if agent else None) if part
        )
        budget = prompts.Budget.for_window(prompts.context_window(model), len(persona))
        window = prompts.history_window(history, budget.history_chars)
        found: list[RetrievedContext] = []
        retrieval_ms: float | None = None
        # A remote agent answers from its own memory: only the question goes to it.
        use_context = use_context and not is_remote_agent(model)
        if use_context and self.contexts is not None and agent is not None:
            query = command.retrieval_text() if command else commands.unescape(question.content)
            searching_since = time.perf_counter()
            found = await self.contexts.retrieve(
                query,
                agent.id,
                conversation.session_id,
                # Turns still in the recent history are in the prompt already.
                exclude_message_ids=[m.id for m in window if m.id is not None],
                touch=False,
            )
            retrieval_ms = (time.perf_counter() - searching_since) * 1000
        messages, used = prompts.build(persona, found, window, budget)
        return TurnPlan(
            request_id=uuid.uuid4().hex,
            agent=agent,
            session_id=conversation.session_id,
            messages=messages,
            contexts=used,
            question=question,
            context_type=command.context_type if command else ContextType.CONVERSATION.value,
            retrieval_ms=retrieval_ms,
        )

    def choose_model(
        self, conversation: Conversation, agent: Agent | None, model: str | None = None
    ) -> str:
        """The model a reply uses: the one asked for, the conversation's, the agent's, the
        app's, the default."""
        return (
            model
            or conversation.model
            or (agent.model if agent else None)
            or self.model
            or self.completions.default_model
        )

    def memory_model(self, agent: Agent | None) -> str:
        """The model that summarises an agent's memory: the agent's, the app's, the default,
        passing over a remote agent chosen as one."""
        for model in (agent.model if agent else None, self.model):
            if model and not is_remote_agent(model):
                return model
        return self.completions.default_model

    def params_for(self, model: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        if self.settings is not None:
            chosen.update(self.settings.settings.params_for(model).as_params())
        return {**chosen, **self.params, **(params or {})}

    async def _start_reply(
        self,
        conversation: Conversation,
        agent: Agent | None,
        model: str | None,
        *,
        use_context: bool = True,
        params: dict[str, Any] | None = None,
    ) -> Message:
        assert conversation.id is not None
        model = self.choose_model(conversation, agent, model)
        plan = await self.plan(conversation, agent, model, use_context=use_context)
        plan.params = self.params_for(model, params)
        plan.own_params = dict(params or {})
        reply = await self.store.add_message(
            conversation.id,
            Role.ASSISTANT,
            "",
            status=MessageStatus.STREAMING,
            model=model,
            request_id=plan.request_id,
            context_ids=[c.context.id for c in plan.contexts if c.context.id is not None],
        )
        return self._launch(conversation, reply, model, plan)

    def _launch(
        self, conversation: Conversation, reply: Message, model: str, plan: TurnPlan
    ) -> Message:
        assert conversation.id is not None
        self.bus.publish(
            events.CONTEXTS_RETRIEVED,
            request_id=plan.request_id,
            conversation_id=conversation.id,
            message_id=reply.id,
            agent_id=plan.agent.id if plan.agent else None,
            model=model,
            context_ids=reply.used_context_ids,
            retrieval_ms=plan.retrieval_ms,
        )
        task = asyncio.ensure_future(self._stream_reply(reply, model, plan))
        self._replies[conversation.id] = task
        if plan.resend:
            self._resending.add(conversation.id)
        conversation_id = conversation.id
        task.add_done_callback(lambda t: self._forget(conversation_id, t))
        return reply

    async def resume(self, reply_id: int, model: str | None = None) -> Message:
        """Send a queued reply's question again (to ``model`` if given); returns the reply
        as it starts streaming. Raises ``LookupError`` when it is no longer queued."""
        reply = await self.store.get_message(reply_id)
        if reply is None or reply.status != MessageStatus.QUEUED:
            raise LookupError("This message is no longer waiting to be sent.")
        with self._turn(reply.conversation_id):
            conversation = await self._conversation(reply.conversation_id)
            agent = await self._agent(conversation)
            own = self._queued_params.get(reply_id, {})
            if model is not None and model != reply.model:
                own = without_credentials(own)  # a key for one model never goes to another
            model = model or reply.model or self.choose_model(conversation, agent)
            plan = await self.plan(conversation, agent, model, before_id=reply_id)
            plan.params = {**self.params_for(model), **own}
            plan.own_params = own
            fields = {
                "status": MessageStatus.STREAMING,
                "model": model,
                "notice": None,
                "request_id": plan.request_id,
                "context_ids": json.dumps(
                    [c.context.id for c in plan.contexts if c.context.id is not None]
                ),
            }
            # Only if it is still queued (it may have been cancelled meanwhile). Its waiting
            # note stays until the first word, so a crash mid-resend leaves it queued.
            started = await self.store.db.write(lambda s: _start_queued(s, reply_id, fields))
            self._queued_params.pop(reply_id, None)
            plan.resend = True
            self.bus.publish(events.MESSAGE_UPDATED, message=started)
            return self._launch(conversation, started, model, plan)

    async def cancel_queued(self, reply_id: int) -> Message:
        """Give up on a queued reply; its question stays, and can be sent again. Raises
        ``LookupError`` when it is no longer queued (it started, or was cancelled)."""
        fields = {"status": MessageStatus.INTERRUPTED, "error": "Cancelled before it was sent."}
        # Checked and written in one transaction, so a resend starting meanwhile either
        # wins (and this refuses) or loses whole.
        cancelled = await self.store.db.write(lambda s: _start_queued(s, reply_id, fields))
        self._queued_params.pop(reply_id, None)
        self.bus.publish(events.MESSAGE_FINISHED, message=cancelled)
        return cancelled

    def _forget(self, conversation_id: int, task: asyncio.Task[Message]) -> None:
        if self._replies.get(conversation_id) is task:
            del self._replies[conversation_id]
            self._resending.discard(conversation_id)

    async def _make_way(self, conversation_id: int) -> None:
        """A queued reply being sent again does not hold its conversation: the user's new
        message stops it (it stays queued, for the outbox to try later)."""
        task = self._replies.get(conversation_id)
        if conversation_id in self._resending and task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _stream_reply(self, reply: Message, model: str, plan: TurnPlan) -> Message:
        assert reply.id is not None
        started = time.monotonic()
        first_token_at: float | None = None
        last_snapshot = started
        parts: list[str] = []
        usage: dict[str, int] = {}
        status = MessageStatus.COMPLETE
        error: str | None = None
        answered: dict[str, Any] = {}
        self.bus.publish(
            events.AI_REQUEST_STARTED,
            conversation_id=reply.conversation_id,
            message_id=reply.id,
            request_id=plan.request_id,
            agent_id=plan.agent.id if plan.agent else None,
            model=model,
        )
        try:
            messages = await self._before_request(
                plan.messages,
                model,
                plan.request_id,
                conversation_id=reply.conversation_id,
                agent_id=plan.agent.id if plan.agent else None,
            )
            async for piece in self._pieces(model, messages, plan):
                if piece.usage:
                    usage = piece.usage
                for name in ("model", "provider", "cost", "notice"):
                    value = getattr(piece, name, None)
                    if value is not None:
                        answered[name] = value
                if not piece.text:
                    continue
                now = time.monotonic()
                if first_token_at is None:
                    first_token_at = now
                parts.append(piece.text)
                self.bus.publish(
                    events.MESSAGE_DELTA,
                    conversation_id=reply.conversation_id,
                    message_id=reply.id,
                    delta=piece.text,
                )
                if now - last_snapshot >= SNAPSHOT_INTERVAL_S:
                    last_snapshot = now
                    self.store.snapshot_message(reply.id, "".join(parts))
        except asyncio.CancelledError:
            status = MessageStatus.INTERRUPTED
            if plan.resend and not parts:
                # Quit, Stop or a new message while it was being resent: it waits again.
                status = MessageStatus.QUEUED
                error = reply.error or "Not sent yet."
        except Exception as exc:
            log.warning("reply %s failed: %s", reply.id, exc)
            status = MessageStatus.ERROR
            error = _describe(exc)
            if getattr(exc, "unreachable", False) and not parts:
                status = MessageStatus.QUEUED
                error = f"{error} It will be sent when it can be reached."
        finished = time.monotonic()
        content = "".join(parts)
        if status == MessageStatus.COMPLETE:
            content = post_process(content)
            # Stop after the last word: the reply is whole, kept as the model wrote it.
            with contextlib.suppress(asyncio.CancelledError):
                content = await self._after_response(
                    content,
                    model,
                    plan.request_id,
                    conversation_id=reply.conversation_id,
                    message_id=reply.id,
                    agent_id=plan.agent.id if plan.agent else None,
                )
        fields: dict[str, Any] = {
            "content": content,
            "status": status,
            "error": error,
            "latency_ms": (finished - started) * 1000,
            "time_to_first_token_ms": (
                (first_token_at - started) * 1000 if first_token_at is not None else None
            ),
            "prompt_tokens": usage.get("prompt_tokens"),
            # Without a count from the model, its pieces are its tokens (one each); a remote
            # agent's pieces are of any length, so its replies stay uncounted.
            "completion_tokens": usage.get("completion_tokens")
            or (None if is_remote_agent(model) else len(parts) or None),
            "model": answered.get("model", model),
            "provider": answered.get("provider", provider_of_model(model)),
            "cost_usd": answered.get("cost"),
            "notice": answered.get("notice"),
        }
        if "cost" not in answered and hasattr(self.completions, "cost"):
            # A failed or cut reply still costs what it used (nothing on this computer).
            fields["cost_usd"] = self.completions.cost(model, usage)
        if status == MessageStatus.QUEUED:
            fields.update(model=model, latency_ms=None, time_to_first_token_ms=None)
            fields["cost_usd"] = None
            self._queued_params[reply.id] = plan.own_params
        remember = status == MessageStatus.COMPLETE and bool(content) and plan.agent is not None
        # The final write must happen even when this task was cancelled (Stop, shutdown),
        # and so must the events that say the reply ended, even if cancelled again meanwhile.
        writing = asyncio.ensure_future(
            self.store.db.write(
                lambda s: self._store_turn(s, reply.id or 0, fields, plan, remember)
            )
        )
        cancelled_again = False
        try:
            while True:
                try:
                    stored, remembered_ids = await asyncio.shield(writing)
                    break
                except asyncio.CancelledError:
                    if writing.done() and writing.cancelled():
                        raise
                    cancelled_again = True
        except LookupError:
            # The conversation was deleted while the reply streamed: nothing left to keep.
            stored, remembered_ids = reply.model_copy(update=fields), []
            remember = False
        self.bus.publish(events.MESSAGE_FINISHED, message=stored)
        self.bus.publish(
            events.AI_REQUEST_COMPLETED,
            conversation_id=stored.conversation_id,
            message_id=stored.id,
            request_id=plan.request_id,
            agent_id=plan.agent.id if plan.agent else None,
            # The model that answered (a fallback, maybe), and the one that was asked.
            model=stored.model or model,
            requested_model=model,
            status=status,
            latency_ms=stored.latency_ms,
            time_to_first_token_ms=stored.time_to_first_token_ms,
            prompt_tokens=stored.prompt_tokens,
            completion_tokens=stored.completion_tokens,
            tokens_per_second=stored.tokens_per_second,
            context_ids=stored.used_context_ids,
            provider=stored.provider,
            cost_usd=stored.cost_usd,
        )
        if status == MessageStatus.QUEUED:
            self.bus.publish(events.MESSAGE_QUEUED, message=stored)
        elif error:
            self.bus.publish(events.ERROR_OCCURRED, source="chat", message=error)
        if remember and self.contexts is not None and plan.agent is not None:
            self.contexts.notify_changed(
                added=remembered_ids, agent_id=plan.agent.id, session_id=plan.session_id
            )
            # Summaries of the agent's memory are written by a model, never a remote agent.
            upkeep_model = self.memory_model(plan.agent) if is_remote_agent(model) else model
            params = plan.params if upkeep_model == model else self.params_for(upkeep_model)
            self._spawn_upkeep(plan.agent.id, plan.session_id, upkeep_model, params)
        if cancelled_again:
            raise asyncio.CancelledError
        return stored

    def _pieces(
        self, model: str, messages: list[dict[str, str]], plan: TurnPlan
    ) -> AsyncIterator[Any]:
        """The reply as it is written: by the model, or by the remote agent the chat asks."""
        if not is_remote_agent(model):
            return self.completions.stream(model, messages, **plan.params)
        # The question as the plugins left it (masked, for one), without the persona.
        question = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        configured = self.settings.settings.remote_agents if self.settings is not None else []
        return ask_remote_agent(
            self.network,
            model,
            sender=plan.agent.id if plan.agent else None,
            # One thread on the remote agent per chat.
            thread=plan.session_id,
            text=question,
            configured=model.removeprefix(REMOTE_AGENT) in configured,
        )

    def _store_turn(
        self,
        session: Session,
        reply_id: int,
        fields: dict[str, Any],
        plan: TurnPlan,
        remember: bool,
    ) -> tuple[Message, list[int]]:
        """One transaction: the reply's final state, the turn as a context, the contexts'
        use counts; returns the reply and the ids of the contexts the turn was stored as.
        The reply's write never depends on the rest: the memory part runs in a savepoint, and
        if it fails (the agent was deleted meanwhile) only it is rolled back."""
        stored = update_message_row(session, reply_id, **fields)
        if not (remember and plan.agent is not None):
            return stored, []
        agent_id = plan.agent.id
        try:
            with session.begin_nested():
                now = time.time()
                question = commands.unescape(plan.question.content)
                turn = f"User: {question}\nAssistant: {fields['content']}"
                pieces = [turn] if len(turn) <= MAX_CONTEXT_CHARS else split_passages(turn)
                remembered: list[int] = []
                for piece in pieces:
                    context = insert_context(
                        session,
                        Context(
                            agent_id=agent_id,
                            session_id=plan.session_id,
                            content=piece,
                            context_type=plan.context_type,
                            created_at=now,
                            source_message_id=reply_id,
                            digest=digest(plan.context_type, piece),
                        ),
                    )
                    if context.id is not None:
                        remembered.append(context.id)
                used = [c.context.id for c in plan.contexts if c.context.id is not None]
                if used:
                    touch_contexts(session, used, now)
        except SQLAlchemyError as exc:
            log.warning("the turn of reply %s was not remembered: %s", reply_id, exc)
            return stored, []
        return stored, remembered

    def _spawn_upkeep(
        self, agent_id: str, session_id: str | None, model: str, params: dict[str, Any]
    ) -> None:
        """Evict, index and compress a little after the turn, once for a burst of turns: a
        busy agent (asked over the network many times a second) does its upkeep between
        bursts, not between every question and the next."""
        key = (agent_id, session_id)
        if key in self._upkeep_due:
            return
        self._upkeep_due.add(key)

        async def later() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), UPKEEP_DELAY_S)
            self._upkeep_due.discard(key)
            await self._upkeep_after_turn(agent_id, session_id, model, params)

        task = asyncio.ensure_future(later())
        self._upkeep.add(task)
        task.add_done_callback(self._upkeep.discard)

    async def _upkeep_after_turn(
        self, agent_id: str, session_id: str | None, model: str, params: dict[str, Any]
    ) -> None:
        assert self.contexts is not None
        try:
            await self.contexts.evict(agent_id)
            if self.contexts.embedder is not None:
                await self.contexts.index_embeddings(
                    agent_id=agent_id, session_id=session_id, limit=50
                )
            threshold = self.compress_after
            if session_id is not None and threshold != 0:
                memory = await compress_session(
                    self.contexts,
                    agent_id,
                    session_id,
                    lambda transcript: self.complete(model, summary_request(transcript), params),
                    **(
                        {"threshold": threshold, "keep_recent": min(KEEP_RECENT, threshold // 2)}
                        if threshold
                        else {}
                    ),
                )
                if memory is not None:
                    self.bus.publish(
                        events.CONTEXTS_COMPRESSED,
                        agent_id=agent_id,
                        session_id=session_id,
                        memory_id=memory.id,
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("context upkeep for %s failed: %s", agent_id, exc)

    async def complete(
        self, model: str, messages: list[dict[str, str]], params: dict[str, Any] | None = None
    ) -> str:
        """A whole reply at once, for the app's own requests (summaries)."""
        chosen = self.params if params is None else params
        request_id = uuid.uuid4().hex
        messages = await self._before_request(messages, model, request_id, purpose="summary")
        parts = [p.text async for p in self.completions.stream(model, messages, **chosen)]
        text = post_process("".join(parts))
        return await self._after_response(text, model, request_id, purpose="summary")

    # -- plugins -------------------------------------------------------------------------------

    def _parse(self, text: str) -> commands.Command | None:
        return commands.parse(text, self.plugins.command_specs() if self.plugins else None)

    def _without_plugin_commands(self, history: list[Message]) -> list[Message]:
        """The history without the questions plugins answered: like /help, they are no part
        of the conversation a model reads (their answers are left out as the app's)."""
        specs = self.plugins.command_specs() if self.plugins is not None else None
        if not specs:
            return history

        def answered_by_a_plugin(message: Message) -> bool:
            if message.role != Role.USER or not message.content.startswith("/"):
                return False
            try:
                command = commands.parse(message.content, specs)
            except ValueError:
                return False
            return command is not None and command.spec.plugin is not None

        return [m for m in history if not answered_by_a_plugin(m)]

    def _remote(self, model: str) -> bool:
        return may_leave_this_computer(
            model, self.settings.settings if self.settings is not None else None
        )

    async def _before_request(
        self, messages: list[dict[str, str]], model: str, request_id: str, **about: Any
    ) -> list[dict[str, str]]:
        """The messages as the plugins leave them (``about``: the :class:`Request`'s rest)."""
        if self.plugins is None or not self.plugins.wants(BEFORE_REQUEST):
            return messages
        return await self.plugins.before_request(
            Request(messages, model, self._remote(model), request_id, **about)
        )

    async def _after_response(self, text: str, model: str, request_id: str, **about: Any) -> str:
        """The reply as the plugins leave it (``about``: the :class:`Response`'s rest)."""
        if self.plugins is None or not self.plugins.wants(AFTER_RESPONSE):
            return text
        return await self.plugins.after_response(Response(text, model, request_id, **about))


def _start_queued(session: Session, reply_id: int, fields: dict[str, Any]) -> Message:
    """Change a queued reply, only if it is still queued."""
    message = session.get(Message, reply_id)
    if message is None or message.status != MessageStatus.QUEUED:
        raise LookupError("This message is no longer waiting to be sent.")
    return update_message_row(session, reply_id, **fields)


def summary_request(transcript: str) -> list[dict[str, str]]:
    from .context.compression import SUMMARY_INSTRUCTION

    return [
        {"role": "system", "content": SUMMARY_INSTRUCTION},
        {"role": "user", "content": transcript},
    ]


def post_process(text: str) -> str:
    """The reply as stored: without the blank lines and the role label some models add."""
    text = text.strip()
    for label in ("Assistant:", "assistant:"):
        if text.startswith(label):
            text = text[len(label) :].lstrip()
    return text


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    # litellm prefixes its own class path; the user needs the sentence.
    for prefix in ("litellm.", "APIConnectionError:", "InternalServerError:"):
        if text.startswith(prefix):
            text = text.split(" - ", 1)[-1] if " - " in text else text
    return text[:2000]
