"""The offline outbox end to end: the real ChatService and ConversationStore on a real SQLite
file, the app's Completions pointed at a port where nothing listens yet, and the test server
started on that same port later, as when a model on the network comes back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from mangaba_desktop.core import events
from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.outbox import Outbox
from mangaba_desktop.core.providers.completions import Completions
from mangaba_desktop.core.store import Message, MessageStatus, Role
from tests.helpers.db import query_file
from tests.helpers.events import EventLog
from tests.helpers.openai_server import OpenAIServer, free_port
from tests.helpers.providers import ask, completions_for, local_provider, url_at

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL = "test/echo"
"""On the server that is not up yet."""
OTHER_MODEL = "other/echo"
"""On a server that is up all along."""
QUICK = (0.2, 0.4)


class Finished:
    """The replies the chat finishes (as stored), awaited by id and status."""

    def __init__(self, bus: EventBus) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()
        self.unsubscribe = bus.subscribe(events.MESSAGE_FINISHED, self._on_finished)

    def _on_finished(self, _name: str, payload: dict[str, object]) -> None:
        message = payload["message"]
        assert isinstance(message, Message)
        self.messages.append(message)
        self._changed.set()

    async def wait(
        self, message_id: int, *statuses: MessageStatus, within: float = 10.0
    ) -> Message:
        """The reply once it is finished with one of ``statuses``."""
        async with asyncio.timeout(within):
            while True:
                for message in self.messages:
                    if message.id == message_id and message.status in statuses:
                        return message
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def port() -> int:
    """Where the model will be: nothing listens there until ``come_back`` is called."""
    return free_port()


@pytest.fixture
def come_back(port: int) -> Iterator[Callable[..., OpenAIServer]]:
    """Start the test server on ``port`` (with ``OpenAIServer``'s ``options``)."""
    started: list[OpenAIServer] = []

    def start(**options: Any) -> OpenAIServer:
        server = OpenAIServer(reply="Back online, here is the answer.", **options).start(port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def other_server() -> Iterator[OpenAIServer]:
    with OpenAIServer(reply="Another model answers.") as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def completions(port: int, other_server: OpenAIServer) -> AsyncIterator[Completions]:
    """No fallback (so that an unreachable model's reply waits) and no retries."""
    source = completions_for(
        local_provider(url_at(port), "echo", timeout_s=2.0),
        local_provider(
            other_server.base_url, "echo", id="other", name="Other server", timeout_s=2.0
        ),
        retries=0,
    )
    yield source
    await source.close()


@pytest_asyncio.fixture(loop_scope="session")
async def services(
    completions: Completions, bus: EventBus
) -> AsyncIterator[Callable[..., tuple[ChatService, Outbox]]]:
    """A chat (on the test's store, or another) and its outbox; stopped after the test."""
    made: list[tuple[ChatService, Outbox]] = []

    def make(store, delays=QUICK) -> tuple[ChatService, Outbox]:
        chat = ChatService(store, completions, bus)
        outbox = Outbox(chat, bus, delays=delays)
        made.append((chat, outbox))
        return chat, outbox

    yield make
    for chat, outbox in reversed(made):
        await outbox.stop()
        await chat.shutdown()


@pytest.fixture
def finished(bus: EventBus) -> Finished:
    return Finished(bus)


def rows(db_path, conversation_id):
    return query_file(
        db_path,
        "SELECT role, content, status FROM messages WHERE conversation_id = ? ORDER BY id",
        (conversation_id,),
    )


async def forgotten(outbox: Outbox, message_id: int, within: float = 2.0) -> None:
    """Return once the outbox no longer holds ``message_id`` (it lets go once the reply it
    resent is stored, a few loop turns after the reply is finished)."""
    async with asyncio.timeout(within):
        while message_id in outbox.waiting:
            await asyncio.sleep(0.01)


async def resending(
    chat: ChatService, server: OpenAIServer, conversation_id: int, within: float = 2.0
) -> None:
    """Return once a queued reply of ``conversation_id`` is being sent again: the chat streams
    it and ``server`` (whose gate holds it) has the request."""
    async with asyncio.timeout(within):
        while not (server.requests and chat.is_streaming(conversation_id)):
            await asyncio.sleep(0.01)


def stored(db_path, message_id):
    """The status, text and note of a message as a second process reads them."""
    [row] = query_file(
        db_path, "SELECT status, content, error FROM messages WHERE id = ?", (message_id,)
    )
    return row


async def queue(chat: ChatService, conversation_id: int, text: str, **params: object) -> Message:
    """Send ``text`` while the model is unreachable; returns the reply, stored as queued."""
    return await ask(chat, conversation_id, text, MODEL, MessageStatus.QUEUED, **params)


# -- waiting, then answered --------------------------------------------------------------------


async def test_a_reply_waits_offline_then_streams_into_the_same_row(
    store, bus, services, come_back, finished, db_path
):
    chat, outbox = services(store)
    conversation = await store.create()
    log = EventLog(bus)

    queued = await queue(chat, conversation.id, "Are you there?")

    assert "It will be sent when it can be reached" in (queued.error or "")
    assert "Test server cannot be reached" in (queued.error or "")
    assert (queued.content, queued.model) == ("", MODEL)
    assert rows(db_path, conversation.id) == [
        ("user", "Are you there?", "complete"),
        ("assistant", "", "queued"),
    ]
    assert [p["message"].id for p in log.payloads(events.MESSAGE_QUEUED)] == [queued.id]

    # Started while the model is still away: it tries, fails, and keeps the reply waiting.
    assert await outbox.start() == 1
    await log.wait_for(events.MESSAGE_QUEUED, count=2)
    assert queued.id in outbox.waiting
    server = come_back()

    done = await finished.wait(queued.id, MessageStatus.COMPLETE)

    assert done.content == server.reply
    assert (done.model, done.provider, done.cost_usd, done.error) == (MODEL, "test", 0.0, None)
    assert done.completion_tokens == len(server.reply.split())
    deltas = [p for p in log.payloads(events.MESSAGE_DELTA) if p["message_id"] == queued.id]
    assert len(deltas) > 1
    assert "".join(p["delta"] for p in deltas) == server.reply
    assert rows(db_path, conversation.id) == [
        ("user", "Are you there?", "complete"),
        ("assistant", server.reply, "complete"),
    ]
    assert len(log.payloads(events.MESSAGE_ADDED)) == 2  # nothing added by the retries
    assert server.counts["echo"] == 1
    assert server.requests[0].body["messages"] == [{"role": "user", "content": "Are you there?"}]
    await forgotten(outbox, queued.id)


async def test_nudge_retries_at_once(store, bus, services, come_back, finished):
    chat, outbox = services(store, delays=(60.0,))
    conversation = await store.create()
    log = EventLog(bus)
    queued = await queue(chat, conversation.id, "Still offline?")
    assert await outbox.start() == 1
    await log.wait_for(events.MESSAGE_QUEUED, count=2)  # the first try failed
    assert outbox.next_retry_in(queued.id) > 30.0
    server = come_back()

    outbox.nudge()

    done = await finished.wait(queued.id, MessageStatus.COMPLETE, within=5.0)
    assert done.content == server.reply


async def test_cancel_gives_up_and_the_outbox_forgets_it(
    store, bus, services, come_back, finished, db_path
):
    chat, outbox = services(store)
    conversation = await store.create()
    queued = await queue(chat, conversation.id, "Never mind.")
    assert queued.id in outbox.waiting

    cancelled = await outbox.cancel(queued.id)

    assert cancelled.status == MessageStatus.INTERRUPTED
    assert cancelled.error == "Cancelled before it was sent."
    assert queued.id not in outbox.waiting
    assert rows(db_path, conversation.id) == [
        ("user", "Never mind.", "complete"),
        ("assistant", "", "interrupted"),
    ]
    server = come_back()
    assert await outbox.start() == 0
    with pytest.raises(LookupError):
        await chat.resume(queued.id)
    assert server.requests == []


async def test_send_with_another_model_answers_at_once(
    store, services, other_server, finished, db_path
):
    chat, outbox = services(store)
    conversation = await store.create()
    queued = await queue(chat, conversation.id, "Anyone?")

    started = await outbox.send_with(queued.id, OTHER_MODEL)

    assert (started.id, started.status) == (queued.id, MessageStatus.STREAMING)
    assert queued.id not in outbox.waiting
    done = await finished.wait(queued.id, MessageStatus.COMPLETE, within=5.0)
    assert done.content == other_server.reply
    assert (done.model, done.provider, done.error) == (OTHER_MODEL, "other", None)
    assert other_server.requests[0].body["messages"] == [{"role": "user", "content": "Anyone?"}]
    assert rows(db_path, conversation.id)[-1] == ("assistant", other_server.reply, "complete")


# -- across a restart and in order ------------------------------------------------------------


async def test_a_reply_queued_before_a_restart_is_sent_after_it(
    store, services, reopen, come_back, finished, db_path
):
    chat, _ = services(store, delays=(60.0,))
    conversation = await store.create()
    queued = await queue(chat, conversation.id, "Will you remember me?")
    await chat.shutdown()

    # The next start: a new store, chat and outbox on the same file.
    chat_again, outbox_again = services(reopen())
    server = come_back()
    assert await outbox_again.start() == 1

    done = await finished.wait(queued.id, MessageStatus.COMPLETE)
    assert done.content == server.reply
    assert rows(db_path, conversation.id) == [
        ("user", "Will you remember me?", "complete"),
        ("assistant", server.reply, "complete"),
    ]
    assert server.counts["echo"] == 1
    assert chat_again.store is not store


async def test_two_queued_replies_are_answered_in_order_each_with_its_history(
    store, services, come_back, finished, db_path
):
    chat, outbox = services(store)
    conversation = await store.create()
    first = await queue(chat, conversation.id, "First question")
    second = await queue(chat, conversation.id, "Second question")
    server = come_back()

    assert await outbox.start() == 2
    await finished.wait(second.id, MessageStatus.COMPLETE)

    answered = await finished.wait(first.id, MessageStatus.COMPLETE, within=0.1)
    await forgotten(outbox, second.id)
    assert outbox.waiting == {}
    assert answered.content == server.reply
    asked = [r.body["messages"] for r in server.requests]
    assert asked == [
        [{"role": "user", "content": "First question"}],
        [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": server.reply},
            {"role": "user", "content": "Second question"},
        ],
    ]
    assert rows(db_path, conversation.id) == [
        ("user", "First question", "complete"),
        ("assistant", server.reply, "complete"),
        ("user", "Second question", "complete"),
        ("assistant", server.reply, "complete"),
    ]


async def test_a_key_given_for_the_call_is_sent_again_with_the_queued_reply(
    store, services, port, finished
):
    agent_key = "sk-agent-own-key-5e0d"
    chat, outbox = services(store)
    conversation = await store.create()
    queued = await queue(chat, conversation.id, "Hi", api_key=agent_key)
    server = OpenAIServer(api_key=agent_key).start(port)
    try:
        assert await outbox.start() == 1
        done = await finished.wait(queued.id, MessageStatus.COMPLETE, MessageStatus.ERROR)
    finally:
        server.stop()
    assert (done.status, done.error) == (MessageStatus.COMPLETE, None)
    assert done.content == server.reply


# -- while a queued reply is being sent again ---------------------------------------------------


async def test_send_now_while_another_reply_streams_keeps_the_reply_waiting(
    store, bus, services, come_back, other_server, finished
):
    chat, outbox = services(store, delays=(60.0,))
    conversation = await store.create()
    log = EventLog(bus)
    queued = await queue(chat, conversation.id, "First question")
    assert await outbox.start() == 1
    await log.wait_for(events.MESSAGE_QUEUED, count=2)  # tried once more; next in a minute
    server = come_back()
    other_server.gate = threading.Event()
    busy = await chat.send(conversation.id, "Second question", model=OTHER_MODEL)

    with pytest.raises(RuntimeError, match="still streaming"):
        await outbox.send_with(queued.id, MODEL)

    assert queued.id in outbox.waiting
    assert (await store.get_message(queued.id)).status == MessageStatus.QUEUED
    other_server.gate.set()
    assert (await chat.wait(conversation.id)).id == busy.id
    outbox.nudge()
    done = await finished.wait(queued.id, MessageStatus.COMPLETE)
    assert done.content == server.reply


async def test_quitting_while_a_queued_reply_is_resent_keeps_it_queued_for_the_next_start(
    store, services, come_back, reopen, finished, db_path
):
    chat, outbox = services(store, delays=(60.0,))
    conversation = await store.create()
    queued = await queue(chat, conversation.id, "Will you wait for me?")
    server = come_back(gate=threading.Event())
    assert await outbox.start() == 1
    await resending(chat, server, conversation.id)
    # Until its first word it keeps its waiting note (what a crash now would leave behind).
    status, content, note = stored(db_path, queued.id)
    assert (status, content) == ("streaming", "")
    assert "It will be sent when it can be reached" in note

    await outbox.stop()
    await chat.shutdown()

    status, content, note = stored(db_path, queued.id)
    assert (status, content) == ("queued", "")
    assert "It will be sent when it can be reached" in note
    again = reopen()
    assert [m.id for m in await again.queued()] == [queued.id]
    _, outbox_again = services(again)
    server.gate.set()
    assert await outbox_again.start() == 1
    done = await finished.wait(queued.id, MessageStatus.COMPLETE)
    assert done.content == server.reply


async def test_a_new_message_stops_the_resend_and_the_queued_reply_waits_again(
    store, bus, services, come_back, other_server, finished, db_path
):
    chat, outbox = services(store, delays=(60.0,))
    conversation = await store.create()
    queued = await queue(chat, conversation.id, "First question")
    server = come_back(gate=threading.Event())
    log = EventLog(bus)
    assert await outbox.start() == 1
    await resending(chat, server, conversation.id)

    reply = await chat.send(conversation.id, "Second question", model=OTHER_MODEL)

    assert stored(db_path, queued.id)[:2] == ("queued", "")
    assert [p["message"].id for p in log.payloads(events.MESSAGE_QUEUED)] == [queued.id]
    assert queued.id in outbox.waiting
    done = await finished.wait(reply.id, MessageStatus.COMPLETE)
    assert done.content == other_server.reply
    assert rows(db_path, conversation.id) == [
        ("user", "First question", "complete"),
        ("assistant", "", "queued"),
        ("user", "Second question", "complete"),
        ("assistant", other_server.reply, "complete"),
    ]


async def test_after_a_crash_a_reply_that_was_being_resent_is_queued_again(store, reopen, db_path):
    conversation = await store.create()
    await store.add_message(conversation.id, Role.USER, "First question")
    resent = await store.add_message(
        conversation.id, Role.ASSISTANT, "", status=MessageStatus.STREAMING
    )
    note = "Test server cannot be reached. It will be sent when it can be reached."
    await store.update_message(resent.id, error=note)
    await store.add_message(conversation.id, Role.USER, "Second question")
    ordinary = await store.add_message(
        conversation.id, Role.ASSISTANT, "", status=MessageStatus.STREAMING
    )

    again = reopen()
    await again.recover_interrupted()

    assert stored(db_path, resent.id) == ("queued", "", note)
    assert stored(db_path, ordinary.id) == ("interrupted", "", None)
    assert [m.id for m in await again.queued()] == [resent.id]


async def waiting_reply(store, text: str) -> Message:
    """A new conversation asking ``text`` whose reply is queued for ``MODEL`` (stored as a
    failed first try leaves it)."""
    conversation = await store.create()
    await store.add_message(conversation.id, Role.USER, text)
    reply = await store.add_message(
        conversation.id, Role.ASSISTANT, "", status=MessageStatus.QUEUED, model=MODEL
    )
    note = "Test server cannot be reached. It will be sent when it can be reached."
    return await store.update_message(reply.id, error=note)


def settle(outcome: Any) -> Any:
    """What a call gathered with ``return_exceptions`` gave: its result or a LookupError."""
    if isinstance(outcome, BaseException) and not isinstance(outcome, LookupError):
        raise outcome
    return outcome


async def test_a_reply_reported_cancelled_is_never_sent(store, services, come_back, db_path):
    chat, _ = services(store)  # the outbox is not started: the test is the only sender
    server = come_back()
    outcomes: list[tuple[Message, Any, Any]] = []
    for n in range(20):
        reply = await waiting_reply(store, f"Question {n}")
        cancel, resume = chat.cancel_queued(reply.id), chat.resume(reply.id)
        calls = (cancel, resume) if n % 2 == 0 else (resume, cancel)
        gathered = await asyncio.gather(*calls, return_exceptions=True)
        cancelled, resumed = gathered if n % 2 == 0 else gathered[::-1]
        outcomes.append((reply, settle(cancelled), settle(resumed)))
        await chat.wait(reply.conversation_id)

    asked = {r.body["messages"][-1]["content"] for r in server.requests}
    for n, (reply, cancelled, resumed) in enumerate(outcomes):
        if isinstance(cancelled, Message):
            assert isinstance(resumed, LookupError), n
            assert stored(db_path, reply.id) == ("interrupted", "", "Cancelled before it was sent.")
            assert f"Question {n}" not in asked
        else:
            assert isinstance(resumed, Message), n
            assert stored(db_path, reply.id) == ("complete", server.reply, None)
            assert f"Question {n}" in asked
