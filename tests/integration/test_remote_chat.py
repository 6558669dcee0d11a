"""A chat answered by a remote agent: the Chat pane's model is ``a2a:<address>``, and each turn
goes over A2A (a real server on 127.0.0.1, another runtime behind it) from the chat's agent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from mangaba_desktop.core.agent import Runtime
from mangaba_desktop.core.network import NodeStatus, a2a_client
from mangaba_desktop.core.network.a2a_client import add_remote_agent
from mangaba_desktop.core.network.a2a_server import A2AServer
from mangaba_desktop.core.network.remote_chat import label, model_for
from mangaba_desktop.core.store import MessageStatus
from tests.helpers.a2a_echo import echo_server
from tests.helpers.sources import ScriptedSource, words

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


@pytest_asyncio.fixture
async def far_source() -> ScriptedSource:
    return ScriptedSource(["Olá ", "de ", "longe!"])


@pytest_asyncio.fixture
async def near_source() -> ScriptedSource:
    return ScriptedSource(["from this computer"])


@pytest_asyncio.fixture
async def far(tmp_path, far_source) -> AsyncIterator[Runtime]:
    """The other computer: a runtime whose agent answers over A2A."""
    opened = await Runtime.open(tmp_path / "far", completions=far_source)
    default = await opened.agents.default()
    await opened.agents.update(default.id, name="Ana", persona="You are Ana, far away.")
    yield opened
    await opened.close()


@pytest_asyncio.fixture
async def server(far) -> AsyncIterator[A2AServer]:
    running = A2AServer(far)
    await running.start()
    yield running
    await running.stop()


@pytest_asyncio.fixture
async def near(tmp_path, near_source) -> AsyncIterator[Runtime]:
    """This computer: where the user chats."""
    opened = await Runtime.open(tmp_path / "near", completions=near_source)
    default = await opened.agents.default()
    await opened.agents.update(default.id, persona="You are the local assistant. SECRET-PERSONA")
    await opened.local_agents.sync()
    yield opened
    await opened.close()


async def chat_with_remote(near: Runtime, server: A2AServer) -> tuple[int, str]:
    await add_remote_agent(near, server.url)
    model = model_for(server.url)
    conversation = await near.conversations.create("With Ana", model=model)
    assert conversation.id is not None
    return conversation.id, model


async def answered(near: Runtime, conversation_id: int, text: str):
    await near.chat.send(conversation_id, text)
    reply = await near.chat.wait(conversation_id)
    assert reply is not None
    return reply


async def test_the_remote_agent_answers_in_the_chat_as_it_writes(near, server, far_source):
    conversation_id, model = await chat_with_remote(near, server)
    pieces: list[str] = []
    near.bus.subscribe("message.delta", lambda _n, p: pieces.append(p["delta"]))

    reply = await answered(near, conversation_id, "Bom dia, Ana?")

    assert reply.status == MessageStatus.COMPLETE
    assert reply.content == "Olá de longe!"
    assert "".join(pieces) == "Olá de longe!" and len(pieces) == 3
    assert reply.model == model and reply.provider == "a2a"
    assert label(model) == f"{urlsplit(server.url).netloc} · A2A"
    # The remote agent got the user's words, not this computer's persona or memories.
    [asked] = far_source.requests
    assert asked["messages"][-1] == {"role": "user", "content": "Bom dia, Ana?"}
    assert not any("SECRET-PERSONA" in m["content"] for m in asked["messages"])
    # Over the agent network, from the chat's agent: the network pane draws it.
    default = await near.agents.default()
    history = await near.network.history(agent_id=default.id)
    assert [m.type for m in history] == ["request", "response"]
    assert history[0].receiver.startswith("a2a:")


async def test_each_chat_is_its_own_conversation_on_the_remote_agent(near, server, far):
    first, _model = await chat_with_remote(near, server)
    second = await near.conversations.create("Ana again", model=model_for(server.url))

    await answered(near, first, "Primeira pergunta")
    await answered(near, second.id, "Outra conversa")
    await answered(near, first, "Segunda pergunta")

    asked = []
    for conversation in await far.conversations.list():
        if conversation.title.startswith("A2A client"):
            history = await far.conversations.history(conversation.id)
            asked.append([m.content for m in history if m.role == "user"])
    assert sorted(asked) == [["Outra conversa"], ["Primeira pergunta", "Segunda pergunta"]]


async def test_the_local_model_is_not_asked_and_the_turn_is_remembered_here(
    near, server, near_source
):
    conversation_id, _model = await chat_with_remote(near, server)

    await answered(near, conversation_id, "Lembra disto")
    await near.chat.wait_upkeep()

    assert near_source.requests == []
    default = await near.agents.default()
    conversation = await near.conversations.get(conversation_id)
    remembered = await near.contexts.summary(default.id, conversation.session_id)
    assert "Lembra disto" in remembered and "Olá de longe!" in remembered


async def test_stop_ends_the_remote_task_and_keeps_what_was_written(near, server, far_source):
    far_source.pieces, far_source.interval = words(200), 0.05
    conversation_id, _model = await chat_with_remote(near, server)
    await near.chat.send(conversation_id, "Conta uma história longa")
    for _ in range(200):
        history = await near.conversations.history(conversation_id)
        if far_source.requests and len(history) == 2:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # a few words arrive

    near.chat.stop(conversation_id)
    reply = await near.chat.wait(conversation_id)

    assert reply is not None and reply.status == MessageStatus.INTERRUPTED
    assert reply.content and len(reply.content.split()) < 200
    for _ in range(100):
        if far_source.closed:
            break
        await asyncio.sleep(0.02)
    assert far_source.closed and not far_source.finished


async def test_a_message_to_an_offline_remote_agent_waits_and_goes_when_it_is_back(near, server):
    conversation_id, _model = await chat_with_remote(near, server)
    node = next(n for n in near.network.nodes.values() if n.location == server.url)
    near.network.set_status(node.id, NodeStatus.OFFLINE)
    await near.outbox.start()
    # The outbox's own back-off is minutes long at most: only the agent's return sends it
    # within this test's time.
    near.outbox.delays = (3600.0,)

    waiting = await answered(near, conversation_id, "Está aí?")

    assert waiting.status == MessageStatus.QUEUED
    assert "Ana cannot be reached now" in (waiting.error or "")
    assert "sent when it can be reached" in (waiting.error or "")
    # Back online: the outbox sends it again at once, into the same reply.
    near.network.set_status(node.id, NodeStatus.IDLE)
    reply = await until_finished(near, waiting.id)
    assert (reply.status, reply.content) == (MessageStatus.COMPLETE, "Olá de longe!")
    history = await near.conversations.history(conversation_id)
    assert [m.content for m in history] == ["Está aí?", "Olá de longe!"]


async def test_a_removed_remote_agent_says_how_to_get_it_back(near, server):
    conversation_id, _model = await chat_with_remote(near, server)
    node = next(n for n in near.network.nodes.values() if n.location == server.url)
    await near.network.unregister(node.id)

    reply = await answered(near, conversation_id, "Ainda aí?")

    assert reply.status == MessageStatus.ERROR
    assert "not in the agent network" in (reply.error or "")
    assert "Settings ▸ Agent network" in (reply.error or "")


async def test_what_leaves_for_a_remote_agent_is_masked_like_any_remote_prompt(
    near, server, far_source
):
    await near.plugins.load_installed()
    conversation_id, _model = await chat_with_remote(near, server)

    reply = await answered(near, conversation_id, "Escreva para ana.souza@example.com hoje")

    assert reply.status == MessageStatus.COMPLETE
    sent = far_source.requests[-1]["messages"][-1]["content"]
    assert "ana.souza@example.com" not in sent
    assert sent.startswith("Escreva para ") and sent.endswith(" hoje")


async def test_after_a_restart_a_message_waits_for_a_remote_agent_not_reached_yet(near, server):
    # At start the outbox sends what waited before the remote agents are reached again.
    url = server.url
    settings = near.settings.settings.model_copy(update={"remote_agents": [url]})
    near.settings.update(settings)
    conversation = await near.conversations.create("With Ana", model=model_for(url))
    await near.outbox.start()
    near.outbox.delays = (3600.0,)

    waiting = await answered(near, conversation.id, "Ainda lembra de mim?")

    assert waiting.status == MessageStatus.QUEUED
    assert "not reached yet" in (waiting.error or "")
    # Reached: what waited goes at once.
    await add_remote_agent(near, url)
    reply = await until_finished(near, waiting.id)
    assert (reply.status, reply.content) == (MessageStatus.COMPLETE, "Olá de longe!")


async def test_an_agent_lost_mid_session_is_offline_and_its_messages_wait_for_its_return(
    near, far, server, monkeypatch
):
    monkeypatch.setattr(a2a_client, "RECONNECT_DELAYS_S", (0.2,))
    conversation_id, _model = await chat_with_remote(near, server)
    assert (await answered(near, conversation_id, "Oi")).status == MessageStatus.COMPLETE
    port = urlsplit(server.url).port
    await server.stop()

    waiting = await answered(near, conversation_id, "Caiu?")

    assert waiting.status == MessageStatus.QUEUED, waiting.error
    assert "Ana cannot be reached now" in (waiting.error or "")
    node = next(n for n in near.network.nodes.values() if n.location == server.url)
    assert node.status == NodeStatus.OFFLINE
    await near.outbox.start()
    near.outbox.delays = (3600.0,)
    # Back on the same address: found again, and what waited goes.
    back = A2AServer(far, port=port)
    await back.start()
    try:
        reply = await until_finished(near, waiting.id)
        assert (reply.status, reply.content) == (MessageStatus.COMPLETE, "Olá de longe!")
        assert node.status != NodeStatus.OFFLINE
    finally:
        await back.stop()


async def test_an_agent_removed_while_it_answers_says_so_and_keeps_what_it_wrote(
    near, server, far_source
):
    far_source.pieces, far_source.interval = words(200), 0.05
    conversation_id, _model = await chat_with_remote(near, server)
    await near.chat.send(conversation_id, "Conta uma história longa")
    for _ in range(200):
        if far_source.requests:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    node = next(n for n in near.network.nodes.values() if n.location == server.url)

    await near.network.unregister(node.id)
    reply = await near.chat.wait(conversation_id)

    assert reply is not None and reply.status == MessageStatus.ERROR
    assert "Ana left the network while handling this" in (reply.error or "")
    assert "closing" not in (reply.error or "")
    assert reply.content


async def until_finished(near: Runtime, reply_id: int):
    for _ in range(300):
        reply = await near.conversations.get_message(reply_id)
        if reply.status not in (MessageStatus.QUEUED, MessageStatus.STREAMING):
            return reply
        await asyncio.sleep(0.02)
    return reply


async def test_two_chats_with_one_remote_agent_are_answered_side_by_side(near):
    # A third-party agent (a bare a2a-sdk server) that takes requests in parallel and writes
    # one word every 0.1 s.
    async with echo_server(interval=0.1) as url:
        await add_remote_agent(near, url)
        first = await near.conversations.create("One", model=model_for(url))
        second = await near.conversations.create("Two", model=model_for(url))
        loop = asyncio.get_running_loop()
        began = loop.time()
        first_word: dict[int, float] = {}
        near.bus.subscribe(
            "message.delta",
            lambda _n, p: first_word.setdefault(p["conversation_id"], loop.time() - began),
        )
        question = " ".join(f"palavra{n}" for n in range(20))  # about 2 s

        await near.chat.send(first.id, question)
        await near.chat.send(second.id, question)
        replies = [await near.chat.wait(first.id), await near.chat.wait(second.id)]

    assert [(r.status, r.content) for r in replies] == [(MessageStatus.COMPLETE, question)] * 2
    # The second chat's first word did not wait for the first chat's answer to end.
    assert first_word[second.id] < 1.0, first_word


async def test_a_returning_agent_whose_card_now_points_elsewhere_gets_no_token(
    near, far, monkeypatch
):
    monkeypatch.setattr(a2a_client, "RECONNECT_DELAYS_S", (0.1,))
    token = "remote-token-0123456789"
    first = A2AServer(far, token=token)
    await first.start()
    port = urlsplit(first.url).port
    node = await add_remote_agent(near, first.url, token=token)
    conversation = await near.conversations.create("With Ana", model=model_for(first.url))
    assert (await answered(near, conversation.id, "Oi")).status == MessageStatus.COMPLETE
    await first.stop()
    assert (await answered(near, conversation.id, "Caiu?")).status == MessageStatus.QUEUED
    # Back on the same address, but its card now sends requests to another server.
    moved = A2AServer(far, port=port, token=token, public_url=f"http://127.0.0.2:{port}/")
    await moved.start()
    try:
        await asyncio.sleep(0.8)  # several reads of the card
        assert node.status == NodeStatus.OFFLINE
        assert far.network.nodes  # the far side is up: only the token check keeps it off
    finally:
        await moved.stop()


async def _failure_of(url: str) -> BaseException:
    """What a real request to ``url`` raises, as the A2A client sees it."""
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            await http.get(url)
        except httpx.HTTPError as exc:
            return exc
    raise AssertionError(f"{url} answered")


async def test_only_a_missing_connection_counts_as_an_agent_lost(server):
    # Refused: nobody listens there (the agent's server is down). Lost.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    assert a2a_client._connection_failed(await _failure_of(f"http://127.0.0.1:{closed_port}/"))
    # TLS to a server that speaks plain HTTP: it answers, wrongly; waiting will not mend it.
    tls = await _failure_of(server.url.replace("http://", "https://"))
    assert not a2a_client._connection_failed(tls)
