"""Chat turns end to end: real store on a real file, real litellm (``mock_response``) or a
scripted slow stream standing in for a remote model."""

from __future__ import annotations

import asyncio
import time

import pytest

from mangaba_desktop.core import events
from mangaba_desktop.core.chat import SNAPSHOT_INTERVAL_S, ChatService
from mangaba_desktop.core.store import MessageStatus, Role
from mangaba_desktop.core.validation import InvalidMessage
from tests.helpers.db import query_file
from tests.helpers.events import EventLog
from tests.helpers.sources import ScriptedSource, words

pytestmark = pytest.mark.asyncio(loop_scope="session")

MOCK_MODEL = "openai/gpt-4o-mini"
REPLY = "Lisbon is the capital of Portugal, on the Tagus estuary."


@pytest.fixture
def mocked(store, completions, bus):
    """A ChatService on the real Completions whose replies litellm mocks with ``reply``."""

    def make(reply: str, **options) -> ChatService:
        return ChatService(store, completions, bus, params={"mock_response": reply}, **options)

    return make


def rows(db_path, conversation_id):
    return query_file(
        db_path,
        "SELECT role, content, status FROM messages WHERE conversation_id = ? ORDER BY id",
        (conversation_id,),
    )


# -- a normal turn ------------------------------------------------------------------------------


async def test_send_stores_the_question_then_the_streamed_reply(mocked, store, bus, db_path):
    chat = mocked(REPLY)
    conversation = await store.create()

    reply = await chat.send(conversation.id, "What is the capital of Portugal?", model=MOCK_MODEL)

    # Both rows are on disk before any piece of the reply arrives.
    assert (reply.status, reply.content) == (MessageStatus.STREAMING, "")
    assert rows(db_path, conversation.id) == [
        ("user", "What is the capital of Portugal?", "complete"),
        ("assistant", "", "streaming"),
    ]

    done = await chat.wait(conversation.id)

    assert (done.id, done.status, done.content, done.model) == (
        reply.id,
        MessageStatus.COMPLETE,
        REPLY,
        MOCK_MODEL,
    )
    assert rows(db_path, conversation.id)[1] == ("assistant", REPLY, "complete")
    assert done.latency_ms > 0
    assert done.time_to_first_token_ms is not None
    assert 0 < done.time_to_first_token_ms <= done.latency_ms
    assert done.prompt_tokens and done.completion_tokens
    assert not chat.is_streaming(conversation.id)


async def test_events_follow_the_turn_in_order(mocked, store, bus):
    chat = mocked(REPLY)
    conversation = await store.create()
    log = EventLog(bus)

    reply = await chat.send(conversation.id, "Capital of Portugal?", model=MOCK_MODEL)
    await chat.wait(conversation.id)

    names = log.names("message.")
    deltas = log.payloads(events.MESSAGE_DELTA)
    assert names == [
        events.MESSAGE_ADDED,
        events.MESSAGE_RECEIVED,
        events.MESSAGE_ADDED,
        *[events.MESSAGE_DELTA] * len(deltas),
        events.MESSAGE_FINISHED,
    ]
    assert len(deltas) > 1
    added = [p["message"] for p in log.payloads(events.MESSAGE_ADDED)]
    assert [(m.role, m.content) for m in added] == [
        (Role.USER, "Capital of Portugal?"),
        (Role.ASSISTANT, ""),
    ]
    assert {p["message_id"] for p in deltas} == {reply.id}
    assert "".join(p["delta"] for p in deltas) == REPLY
    [finished] = log.payloads(events.MESSAGE_FINISHED)
    assert finished["message"].content == REPLY
    all_names = log.names()
    assert all_names.index(events.AI_REQUEST_STARTED) < all_names.index(events.MESSAGE_DELTA)
    assert all_names[-1] == events.AI_REQUEST_COMPLETED
    assert log.payloads(events.AI_REQUEST_COMPLETED)[0]["status"] == MessageStatus.COMPLETE


async def test_the_model_sees_the_system_prompt_and_the_history_in_order(store, bus):
    source = ScriptedSource(["ok"])
    chat = ChatService(store, source, bus, system_prompt="Answer briefly.")
    conversation = await store.create()

    await chat.send(conversation.id, "first question")
    await chat.wait(conversation.id)
    await chat.send(conversation.id, "second question")
    await chat.wait(conversation.id)

    assert source.requests[-1]["model"] == source.default_model
    assert source.requests[-1]["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second question"},
    ]


async def test_invalid_text_is_refused_before_anything_is_stored(store, bus, db_path):
    chat = ChatService(store, ScriptedSource(["never"]), bus)
    conversation = await store.create()

    with pytest.raises(InvalidMessage):
        await chat.send(conversation.id, " \n ")
    with pytest.raises(InvalidMessage):
        await chat.send(conversation.id, "x" * 1_000_001)

    assert rows(db_path, conversation.id) == []


# -- stop, regenerate, edit --------------------------------------------------------------------


async def test_stop_mid_stream_keeps_the_partial_reply_as_interrupted(store, bus, db_path):
    source = ScriptedSource(words(300), interval=0.01)
    chat = ChatService(store, source, bus)
    conversation = await store.create()
    log = EventLog(bus)
    reply = await chat.send(conversation.id, "tell me a long story")
    await log.wait_for(events.MESSAGE_DELTA, count=5)

    assert chat.is_streaming(conversation.id)
    assert chat.stop(conversation.id) is True
    done = await chat.wait(conversation.id)

    received = "".join(p["delta"] for p in log.payloads(events.MESSAGE_DELTA))
    assert done.id == reply.id
    assert done.status == MessageStatus.INTERRUPTED
    assert done.content == received
    assert 5 <= len(log.payloads(events.MESSAGE_DELTA)) < 300
    assert source.closed and not source.finished  # the stream itself was closed
    assert not chat.is_streaming(conversation.id)
    assert chat.stop(conversation.id) is False
    assert rows(db_path, conversation.id)[1] == ("assistant", received, "interrupted")
    assert [m.content for m in await store.history(conversation.id)] == [
        "tell me a long story",
        received,
    ]


async def test_a_second_stop_during_the_final_write_still_ends_the_reply_and_says_so(
    store, bus, db_path
):
    source = ScriptedSource(words(300), interval=0.01)
    chat = ChatService(store, source, bus)
    conversation = await store.create()
    log = EventLog(bus)
    reply = await chat.send(conversation.id, "tell me a long story")
    await log.wait_for(events.MESSAGE_DELTA, count=5)
    task = chat._replies[conversation.id]

    # The disk is slow: the reply's last write waits behind another.
    store.db.write_soon(lambda _session: time.sleep(0.5))
    assert chat.stop(conversation.id) is True
    await asyncio.sleep(0.1)  # the stream has ended; the final write waits
    assert not task.done()
    task.cancel()  # a second Stop (or the app quitting) meanwhile
    await asyncio.gather(task, return_exceptions=True)

    assert task.cancelled()
    [finished] = log.payloads(events.MESSAGE_FINISHED)
    assert finished["message"].id == reply.id
    assert finished["message"].status == MessageStatus.INTERRUPTED
    [completed] = log.payloads(events.AI_REQUEST_COMPLETED)
    assert completed["status"] == MessageStatus.INTERRUPTED
    assert rows(db_path, conversation.id)[1][2] == "interrupted"


async def test_regenerate_replaces_the_last_reply(mocked, store):
    chat = mocked("first answer")
    conversation = await store.create()
    await chat.send(conversation.id, "question", model=MOCK_MODEL)
    first = await chat.wait(conversation.id)

    chat.params["mock_response"] = "second answer"
    await chat.regenerate(conversation.id, model=MOCK_MODEL)
    second = await chat.wait(conversation.id)

    # (SQLite may give the new reply the old one's id: ids are not AUTOINCREMENT.)
    assert (first.content, second.content) == ("first answer", "second answer")
    assert [(m.role, m.content, m.status) for m in await store.page(conversation.id)] == [
        ("user", "question", "complete"),
        ("assistant", "second answer", "complete"),
    ]


async def test_regenerate_needs_a_user_message(store, bus):
    chat = ChatService(store, ScriptedSource(["never"]), bus)
    conversation = await store.create()

    with pytest.raises(LookupError):
        await chat.regenerate(conversation.id)

    assert await store.count(conversation.id) == 0
    assert not chat.is_streaming(conversation.id)


async def test_edit_and_resend_replaces_the_message_and_everything_after_it(mocked, store, bus):
    chat = mocked("an answer")
    conversation = await store.create()
    await chat.send(conversation.id, "first question", model=MOCK_MODEL)
    await chat.wait(conversation.id)
    await chat.send(conversation.id, "second question", model=MOCK_MODEL)
    await chat.wait(conversation.id)
    before = await store.page(conversation.id)
    log = EventLog(bus)

    await chat.edit_and_resend(
        conversation.id, before[0].id, "first question, edited", model=MOCK_MODEL
    )
    await chat.wait(conversation.id)

    assert [(m.role, m.content) for m in await store.page(conversation.id)] == [
        ("user", "first question, edited"),
        ("assistant", "an answer"),
    ]
    [removed] = log.payloads(events.MESSAGES_REMOVED)
    assert removed["message_ids"] == [m.id for m in before]


async def test_a_second_turn_while_streaming_is_refused(store, bus):
    source = ScriptedSource(words(300), interval=0.01)
    chat = ChatService(store, source, bus)
    conversation = await store.create()
    log = EventLog(bus)
    await chat.send(conversation.id, "first")
    await log.wait_for(events.MESSAGE_DELTA)

    with pytest.raises(RuntimeError, match="still streaming"):
        await chat.send(conversation.id, "second")
    with pytest.raises(RuntimeError, match="still streaming"):
        await chat.regenerate(conversation.id)
    with pytest.raises(RuntimeError, match="still streaming"):
        await chat.edit_and_resend(conversation.id, 1, "edited")

    assert await store.count(conversation.id) == 2
    chat.stop(conversation.id)
    await chat.wait(conversation.id)


async def test_two_quick_sends_start_only_one_reply(store, bus):
    """A double Enter: both sends start before either reply exists."""
    source = ScriptedSource(words(3), interval=0.01)
    chat = ChatService(store, source, bus)
    conversation = await store.create()

    results = await asyncio.gather(
        chat.send(conversation.id, "once"),
        chat.send(conversation.id, "twice"),
        return_exceptions=True,
    )
    await chat.wait(conversation.id)

    assert sorted(type(r).__name__ for r in results) == ["Message", "RuntimeError"]
    assert [(m.role, m.content) for m in await store.page(conversation.id)] == [
        ("user", "once"),
        ("assistant", "w0 w1 w2"),
    ]
    assert len(source.requests) == 1


async def test_other_conversations_stream_independently(store, bus):
    source = ScriptedSource(words(300), interval=0.01)
    chat = ChatService(store, source, bus)
    first = await store.create()
    second = await store.create()
    log = EventLog(bus)

    await chat.send(first.id, "one")
    await chat.send(second.id, "two")
    await log.wait_for(events.MESSAGE_DELTA, count=4)
    assert chat.is_streaming(first.id) and chat.is_streaming(second.id)
    chat.stop(first.id)
    stopped = await chat.wait(first.id)

    assert stopped.status == MessageStatus.INTERRUPTED
    assert chat.is_streaming(second.id)
    await chat.shutdown()


async def test_shutdown_stores_every_streaming_reply_as_interrupted(store, bus, db_path):
    source = ScriptedSource(words(300), interval=0.01)
    chat = ChatService(store, source, bus)
    first = await store.create()
    second = await store.create()
    log = EventLog(bus)
    await chat.send(first.id, "one")
    await chat.send(second.id, "two")
    await log.wait_for(events.MESSAGE_DELTA, count=4)

    await chat.shutdown()

    for conversation in (first, second):
        role, content, status = rows(db_path, conversation.id)[1]
        assert (role, status) == ("assistant", "interrupted")
        assert content.startswith("w0 ")
        assert not chat.is_streaming(conversation.id)


# -- failures --------------------------------------------------------------------------------


async def test_provider_error_ends_the_reply_with_a_readable_error(mocked, store, bus, db_path):
    chat = mocked("litellm.RateLimitError")
    conversation = await store.create()
    log = EventLog(bus)

    await chat.send(conversation.id, "Hello?", model=MOCK_MODEL)
    done = await chat.wait(conversation.id)

    assert done.status == MessageStatus.ERROR
    assert done.content == ""
    assert "rate limit" in done.error.lower()
    assert "Traceback" not in done.error and "\n" not in done.error
    assert rows(db_path, conversation.id) == [
        ("user", "Hello?", "complete"),
        ("assistant", "", "error"),
    ]
    assert [p["message"] for p in log.payloads(events.ERROR_OCCURRED)] == [done.error]
    assert log.payloads(events.AI_REQUEST_COMPLETED)[0]["status"] == MessageStatus.ERROR

    # The conversation goes on; the failed reply is not shown to the model again.
    chat.params["mock_response"] = "Hello! Sorry for the wait."
    await chat.regenerate(conversation.id, model=MOCK_MODEL)
    retried = await chat.wait(conversation.id)
    assert retried.status == MessageStatus.COMPLETE
    assert [m.content for m in await store.history(conversation.id)] == [
        "Hello?",
        "Hello! Sorry for the wait.",
    ]


async def test_error_mid_stream_keeps_what_arrived(store, bus):
    reset = ConnectionError("connection reset by peer")
    source = ScriptedSource(["The answer ", "is "], error=reset)
    chat = ChatService(store, source, bus)
    conversation = await store.create()

    await chat.send(conversation.id, "question")
    done = await chat.wait(conversation.id)

    assert (done.status, done.content, done.error) == (
        MessageStatus.ERROR,
        "The answer is ",
        "connection reset by peer",
    )
    assert (await store.page(conversation.id))[0].content == "question"


# -- crash safety ------------------------------------------------------------------------------


async def test_a_growing_reply_is_on_disk_before_it_ends(store, bus, db_path):
    """The promise: a reply is saved at least once a second while it streams."""
    source = ScriptedSource(words(75), interval=0.04)  # about 3 s
    chat = ChatService(store, source, bus)
    conversation = await store.create()
    log = EventLog(bus)
    reply = await chat.send(conversation.id, "a long answer please")
    await log.wait_for(events.MESSAGE_DELTA)
    started = time.monotonic()

    # Read the file as a crash would leave it: a separate connection, nothing from this process.
    while True:
        [(content, status)] = query_file(
            db_path, "SELECT content, status FROM messages WHERE id = ?", (reply.id,)
        )
        if content:
            break
        # Promised: once a second; the bound leaves room for a loaded machine.
        assert time.monotonic() - started < 2.0, "nothing of the reply reached the disk"
        await asyncio.sleep(SNAPSHOT_INTERVAL_S / 10)

    assert status == "streaming"
    assert not source.finished
    assert source.full_text.startswith(content)
    assert 0 < len(content) < len(source.full_text)
    done = await chat.wait(conversation.id)
    assert (done.status, done.content) == (MessageStatus.COMPLETE, source.full_text.strip())
