"""Chat turns: store what the user wrote, stream the reply, keep it safe as it grows.

The user's message is on disk before any model is asked. The reply is a row from its first
moment (status ``streaming``), saved at least once a second while it grows, and closed as
``complete``, ``interrupted`` (Stop, or a crash noticed at the next start) or ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

from . import events
from .events import EventBus
from .store import ConversationStore, Message, MessageStatus, Role
from .store.conversations import messages_as_prompt
from .validation import validate_message

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 0.5
"""How often a growing reply is written to disk (the promise to the user is once a second)."""


class StreamPieceLike(Protocol):
    text: str
    usage: dict[str, int]


class CompletionSource(Protocol):
    default_model: str

    def stream(self, model: str, messages: list[dict[str, str]], **params: Any) -> Any: ...


class ChatService:
    """Runs chat turns for conversations, one reply at a time per conversation.

    Events (on the bus): ``message.added``, ``message.delta`` (``message_id``,
    ``conversation_id``, ``delta``: the new piece of text), ``message.finished`` (the final
    ``message``), ``ai.request.started``, ``ai.request.completed`` and ``error.occurred``.
    """

    def __init__(
        self,
        store: ConversationStore,
        completions: CompletionSource,
        bus: EventBus,
        *,
        system_prompt: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.completions = completions
        self.bus = bus
        self.system_prompt = system_prompt
        self.params = params or {}
        self.model: str | None = None
        """The model new replies use; the local model when unset."""
        self._replies: dict[int, asyncio.Task[Message]] = {}
        self._starting: set[int] = set()
        """Conversations whose turn is being set up (stored, not streaming yet)."""

    # -- queries -------------------------------------------------------------------------------

    def is_streaming(self, conversation_id: int) -> bool:
        if conversation_id in self._starting:
            return True
        task = self._replies.get(conversation_id)
        return task is not None and not task.done()

    # -- turns ---------------------------------------------------------------------------------

    async def send(self, conversation_id: int, text: str, model: str | None = None) -> Message:
        """Store the user's message and start the reply; returns the reply's row at once.

        Raises :class:`~mangaba_desktop.core.validation.InvalidMessage` for text that cannot be
        sent, and ``RuntimeError`` while this conversation already has a reply streaming.
        """
        text = validate_message(text)
        with self._turn(conversation_id):
            await self.store.add_message(conversation_id, Role.USER, text)
            return await self._start_reply(conversation_id, model)

    async def regenerate(self, conversation_id: int, model: str | None = None) -> Message:
        """Replace the replies after the last user message with a new one."""
        with self._turn(conversation_id):
            history = await self.store.history(conversation_id)
            last_user = next((m for m in reversed(history) if m.role == Role.USER), None)
            if last_user is None or last_user.id is None:
                raise LookupError("There is no message to answer in this conversation.")
            await self.store.delete_messages_from(conversation_id, last_user.id + 1)
            return await self._start_reply(conversation_id, model)

    async def edit_and_resend(
        self, conversation_id: int, message_id: int, text: str, model: str | None = None
    ) -> Message:
        """Replace a user message and everything after it with ``text`` and a new reply."""
        text = validate_message(text)
        with self._turn(conversation_id):
            await self.store.delete_messages_from(conversation_id, message_id)
            await self.store.add_message(conversation_id, Role.USER, text)
            return await self._start_reply(conversation_id, model)

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

    async def shutdown(self) -> None:
        """Stop every reply and wait until each is stored as interrupted."""
        tasks = [t for t in self._replies.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- internals -----------------------------------------------------------------------------

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

    async def _start_reply(self, conversation_id: int, model: str | None) -> Message:
        model = model or self.model or self.completions.default_model
        history = await self.store.history(conversation_id)
        prompt = messages_as_prompt(history)
        if self.system_prompt:
            prompt.insert(0, {"role": "system", "content": self.system_prompt})
        reply = await self.store.add_message(
            conversation_id, Role.ASSISTANT, "", status=MessageStatus.STREAMING, model=model
        )
        task = asyncio.ensure_future(self._stream_reply(reply, model, prompt))
        self._replies[conversation_id] = task
        task.add_done_callback(lambda t: self._forget(conversation_id, t))
        return reply

    def _forget(self, conversation_id: int, task: asyncio.Task[Message]) -> None:
        if self._replies.get(conversation_id) is task:
            del self._replies[conversation_id]

    async def _stream_reply(
        self, reply: Message, model: str, prompt: list[dict[str, str]]
    ) -> Message:
        assert reply.id is not None
        started = time.monotonic()
        first_token_at: float | None = None
        last_snapshot = started
        parts: list[str] = []
        usage: dict[str, int] = {}
        status = MessageStatus.COMPLETE
        error: str | None = None
        self.bus.publish(
            events.AI_REQUEST_STARTED,
            conversation_id=reply.conversation_id,
            message_id=reply.id,
            model=model,
        )
        try:
            async for piece in self.completions.stream(model, prompt, **self.params):
                if piece.usage:
                    usage = piece.usage
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
        except Exception as exc:
            log.warning("reply %s failed: %s", reply.id, exc)
            status = MessageStatus.ERROR
            error = _describe(exc)
        finished = time.monotonic()
        fields: dict[str, Any] = {
            "content": "".join(parts),
            "status": status,
            "error": error,
            "latency_ms": (finished - started) * 1000,
            "time_to_first_token_ms": (
                (first_token_at - started) * 1000 if first_token_at is not None else None
            ),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens") or (len(parts) or None),
        }
        # The final write must happen even when this task was cancelled (Stop, shutdown).
        stored = await asyncio.shield(self.store.update_message(reply.id, **fields))
        self.bus.publish(events.MESSAGE_FINISHED, message=stored)
        self.bus.publish(
            events.AI_REQUEST_COMPLETED,
            conversation_id=stored.conversation_id,
            message_id=stored.id,
            model=model,
            status=status,
            latency_ms=stored.latency_ms,
            tokens_per_second=stored.tokens_per_second,
        )
        if error:
            self.bus.publish(events.ERROR_OCCURRED, source="chat", message=error)
        return stored


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    # litellm prefixes its own class path; the user needs the sentence.
    for prefix in ("litellm.", "APIConnectionError:", "InternalServerError:"):
        if text.startswith(prefix):
            text = text.split(" - ", 1)[-1] if " - " in text else text
    return text[:2000]
