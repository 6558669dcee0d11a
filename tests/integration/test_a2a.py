"""The app's agents over the public A2A protocol (1.0): the server driven by the a2a-sdk client
over 127.0.0.1, bad input it survives, the bearer token, and remote agents added by URL."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers import get_artifact_text, get_message_text
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.constants import VERSION_HEADER

from mangaba_desktop import __version__
from mangaba_desktop.core.agent import MangabaAgent, Runtime
from mangaba_desktop.core.network import MessageStatus, NetworkError, NodeKind, RequestFailed
from mangaba_desktop.core.network.a2a_client import add_remote_agent, resolve_card
from mangaba_desktop.core.network.a2a_server import A2AServer
from mangaba_desktop.core.network.local import ACTIONS
from tests.helpers.sources import ScriptedSource, words

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

TOKEN = "test-token-0123456789"
V1 = {VERSION_HEADER: "1.0"}


@pytest_asyncio.fixture
async def source() -> ScriptedSource:
    return ScriptedSource(["Bom ", "dia!"])


@pytest_asyncio.fixture
async def runtime(tmp_path, source) -> AsyncIterator[Runtime]:
    opened = await Runtime.open(tmp_path, completions=source)
    default = await opened.agents.default()
    await opened.agents.update(
        default.id, persona="You are Mangaba, a helpful assistant.\nBe brief.", tags=["helper"]
    )
    yield opened
    await opened.close()


@pytest_asyncio.fixture
async def server(runtime) -> AsyncIterator[A2AServer]:
    running = A2AServer(runtime)
    await running.start()
    yield running
    await running.stop()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
        yield client


def user_message(text: str, **metadata) -> SendMessageRequest:
    message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)])
    if metadata:
        message.metadata.update(metadata)
    return SendMessageRequest(message=message)


async def client_for(http: httpx.AsyncClient, url: str, *, streaming: bool):
    card = await A2ACardResolver(http, url.rstrip("/")).get_agent_card()
    return ClientFactory(ClientConfig(streaming=streaming, httpx_client=http)).create(card)


async def rpc(http, url, method, params, *, headers=V1, **kw) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return await http.post(url, json=body, headers=headers, **kw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the card and the methods ---------------------------------------------------------------------


async def test_the_card_names_the_agent_its_skills_and_protocol_1_0(server, http):
    card = await A2ACardResolver(http, server.url.rstrip("/")).get_agent_card()

    assert card.name == "Mangaba"
    assert card.description == "You are Mangaba, a helpful assistant."
    assert card.version == __version__
    assert [s.id for s in card.skills] == list(ACTIONS)
    assert all(list(s.tags) == ["helper"] for s in card.skills)
    assert card.capabilities.streaming
    [interface] = card.supported_interfaces
    assert (interface.protocol_binding, interface.protocol_version) == ("JSONRPC", "1.0")
    assert interface.url == server.url
    assert not card.security_requirements
    # Each agent also has its own address.
    agent_id = server.primary
    own = await A2ACardResolver(http, server.agent_url(agent_id)).get_agent_card()
    assert own.supported_interfaces[0].url == server.agent_url(agent_id)


async def test_send_message_answers_with_an_artifact_and_completes(server, http, runtime):
    client = await client_for(http, server.url, streaming=False)

    events = [event async for event in client.send_message(user_message("Bom dia?"))]

    [event] = events
    task = event.task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [get_artifact_text(a) for a in task.artifacts] == ["Bom dia!"]
    # The caller is a node of the network, and the exchange is kept.
    caller = runtime.network.nodes["a2a-caller:127.0.0.1"]
    assert (caller.kind, caller.name) == (NodeKind.REMOTE, "A2A client 127.0.0.1")
    history = await runtime.network.history(agent_id=caller.id)
    assert [m.type for m in history] == ["request", "response"]
    # GetTask returns the same task.
    again = await client.get_task(GetTaskRequest(id=task.id))
    assert again.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_artifact_text(again.artifacts[0]) == "Bom dia!"


async def test_each_a2a_context_of_a_caller_is_its_own_conversation(server, http, runtime):
    client = await client_for(http, server.url, streaming=False)

    async def ask(text: str, context_id: str | None = None) -> str:
        request = user_message(text)
        if context_id:
            request.message.context_id = context_id
        async for event in client.send_message(request):
            assert event.task.status.state == TaskState.TASK_STATE_COMPLETED
            return event.task.context_id
        raise AssertionError("no answer")

    async def asked(title: str) -> list[str]:
        titles = {c.title: c for c in await runtime.conversations.list()}
        history = await runtime.conversations.history(titles[title].id)
        return [m.content for m in history if m.role == "user"]

    shared = "A2A client 127.0.0.1 asks Mangaba"
    # Without a context of its own, a caller has one conversation with the agent, and the
    # context the server named for it continues that same conversation.
    first = await ask("a question, no context")
    await ask("another question, no context")
    await ask("a follow-up in the context the server named", first)
    assert await asked(shared) == [
        "a question, no context",
        "another question, no context",
        "a follow-up in the context the server named",
    ]
    # A context the caller names is a thread of its own.
    await ask("in thread B", "thread-b")
    await ask("thread B again", "thread-b")
    assert await asked(f"{shared} · thread-b") == ["in thread B", "thread B again"]
    assert len(await runtime.conversations.list()) == 2

    # A deleted thread's conversation starts again, not into the void.
    [gone] = [c for c in await runtime.conversations.list() if c.title.endswith("thread-b")]
    await runtime.conversations.delete(gone.id)
    await ask("after deleting B", "thread-b")
    assert await asked(f"{shared} · thread-b") == ["after deleting B"]


async def test_a_skill_named_in_the_metadata_is_what_the_agent_does(server, http, source):
    client = await client_for(http, server.url, streaming=False)

    request = user_message("Good morning", skill="translate", target_language="português")
    [event] = [e async for e in client.send_message(request)]

    assert event.task.status.state == TaskState.TASK_STATE_COMPLETED
    asked = source.requests[-1]["messages"][-1]["content"]
    assert "Good morning" in asked and "português" in asked
    unknown = user_message("x", skill="dance")
    [event] = [e async for e in client.send_message(unknown)]
    assert event.task.status.state == TaskState.TASK_STATE_REJECTED
    assert "no skill “dance”" in get_message_text(event.task.status.message)


async def test_a_failed_answer_is_a_failed_task_with_a_clear_text(server, http, source):
    source.error = RuntimeError("the model went away")
    client = await client_for(http, server.url, streaming=False)

    [event] = [e async for e in client.send_message(user_message("hello"))]

    assert event.task.status.state == TaskState.TASK_STATE_FAILED
    text = get_message_text(event.task.status.message)
    assert "Mangaba could not answer" in text and "Traceback" not in text


async def test_streaming_sends_the_task_first_then_the_answer_as_it_is_written(server, http):
    client = await client_for(http, server.url, streaming=True)

    events = [e async for e in client.send_message(user_message("Bom dia?"))]

    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[:2] == ["task", "status_update"] and kinds[-1] == "status_update"
    assert set(kinds[2:-1]) == {"artifact_update"}
    assert events[1].status_update.status.state == TaskState.TASK_STATE_WORKING
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    updates = [e.artifact_update for e in events[2:-1]]
    # The pieces as the agent wrote them, appended to one artifact, then the answer as kept.
    assert len(updates) == 3
    assert len({u.artifact.artifact_id for u in updates}) == 1
    assert [u.append for u in updates] == [False, True, False]
    assert "".join(get_artifact_text(u.artifact) for u in updates[:2]) == "Bom dia!"
    assert updates[-1].last_chunk and get_artifact_text(updates[-1].artifact) == "Bom dia!"


async def test_an_answer_ready_at_once_goes_from_submitted_to_completed(server, http):
    client = await client_for(http, server.url, streaming=True)

    # get_context answers from memory, without a model: no "working" to report.
    request = user_message("What do you remember?", skill="get_context")
    events = [e async for e in client.send_message(request)]

    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds == ["task", "artifact_update", "status_update"]
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_artifact_text(events[1].artifact_update.artifact)


async def test_cancel_stops_a_slow_task_and_its_hub_request(server, http, runtime, source):
    source.pieces, source.interval = words(200), 0.05
    client = await client_for(http, server.url, streaming=True)
    stream = client.send_message(user_message("Tell me a long story"))
    first = await anext(stream)
    task_id = first.task.id
    while not source.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # a few words in

    canceled = await client.cancel_task(CancelTaskRequest(id=task_id))

    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    rest = [e async for e in stream]
    assert rest[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
    for _ in range(100):  # the agent stops writing and its hub request ends
        if source.closed:
            break
        await asyncio.sleep(0.02)
    assert source.closed and not source.finished
    await asyncio.sleep(0.1)
    [request] = [m for m in await runtime.network.history() if m.type == "request"]
    assert request.status == MessageStatus.CANCELLED
    got = await client.get_task(GetTaskRequest(id=task_id))
    assert got.status.state == TaskState.TASK_STATE_CANCELED
    # The agent is free for the next request.
    source.pieces, source.interval = ["ok"], 0.0
    [event] = [
        e
        async for e in (await client_for(http, server.url, streaming=False)).send_message(
            user_message("still there?")
        )
    ]
    assert event.task.status.state == TaskState.TASK_STATE_COMPLETED


async def test_the_0_3_message_send_still_works(server, http):
    params = {
        "message": {
            "kind": "message",
            "role": "user",
            "messageId": uuid.uuid4().hex,
            "parts": [{"kind": "text", "text": "Bom dia?"}],
        }
    }
    response = await rpc(http, server.url, "message/send", params, headers={})

    result = response.json()["result"]
    assert result["kind"] == "task"
    assert result["status"]["state"] == "completed"
    assert result["artifacts"][0]["parts"][0]["text"] == "Bom dia!"


# -- bad input ------------------------------------------------------------------------------------


async def test_bad_requests_get_the_protocols_errors_and_the_server_keeps_serving(server, http):
    url = server.url
    headers = {"content-type": "application/json", **V1}
    malformed = await http.post(url, content=b'{"jsonrpc": "2.0", "id": 1, "meth', headers=headers)
    assert malformed.json()["error"]["code"] == -32700

    unknown = await rpc(http, url, "DanceNow", {})
    assert unknown.json()["error"]["code"] == -32601

    plain = await http.post(url, content=b"hello", headers={"content-type": "text/plain", **V1})
    assert plain.status_code == 415
    assert "JSON" in plain.json()["error"]["message"]

    big = {"text": "x" * (1 << 20)}
    too_big = await rpc(http, url, "SendMessage", big)
    assert too_big.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"x":"'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}}'

    chunked = await http.post(url, content=chunks(), headers=headers)
    assert chunked.status_code == 413 or chunked.json()["error"]["code"] == -32600

    client = await client_for(http, url, streaming=False)
    [event] = [e async for e in client.send_message(user_message("still there?"))]
    assert event.task.status.state == TaskState.TASK_STATE_COMPLETED


# -- the token ------------------------------------------------------------------------------------


async def test_listening_beyond_this_computer_needs_a_token(runtime):
    with pytest.raises(ValueError, match="token is required"):
        A2AServer(runtime, host="0.0.0.0")
    A2AServer(runtime, host="::1")  # loopback needs none
    A2AServer(runtime, host="0.0.0.0", token=TOKEN)


async def test_with_a_token_requests_without_it_get_401(runtime, http):
    server = A2AServer(runtime, token=TOKEN)
    await server.start()
    try:
        card = await A2ACardResolver(http, server.url.rstrip("/")).get_agent_card()  # public
        assert "bearer" in card.security_schemes and card.security_requirements
        params = {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "hi"}]}}
        refused = await rpc(http, server.url, "SendMessage", params)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = await rpc(
            http,
            server.url,
            "SendMessage",
            params,
            headers={**V1, "Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401

        answered = await rpc(
            http,
            server.url,
            "SendMessage",
            params,
            headers={**V1, "Authorization": f"Bearer {TOKEN}"},
        )
        assert answered.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        # The app's client with the token.
        node = await add_remote_agent(runtime, server.url, token=TOKEN)
        agent = await runtime.agents.default()
        reply = await runtime.network.request(agent.id, node.id, "chat", {"message": "hi"})
        assert reply.text == "Bom dia!"
    finally:
        await server.stop()


# -- remote agents --------------------------------------------------------------------------------


async def test_a_remote_agent_added_by_url_answers_a_local_agent(server, runtime):
    card_url = f"{server.url}.well-known/agent-card.json"
    _card, info = await resolve_card(card_url)
    assert (info.name, info.protocol_version, info.needs_auth) == ("Mangaba", "1.0", False)
    assert info.skills == list(ACTIONS) and info.tags == ["helper"]

    node = await add_remote_agent(runtime, server.url)

    assert node.kind == NodeKind.REMOTE and node.name == "Mangaba"
    assert node.skills == list(ACTIONS) and node.location == server.url
    ana = MangabaAgent(agent_name="Ana", runtime=runtime)
    answer = await ana.send_agent_request(node.id, "chat", {"message": "Bom dia?"})
    assert answer == "Bom dia!"
    with pytest.raises(RequestFailed, match="refused the request: There is no skill"):
        await ana.send_agent_request(node.id, "dance", {"message": "x"})

    # The remote agent keeps one conversation with each asker, across requests.
    await ana.send_agent_request(node.id, "chat", {"message": "E agora?"})
    bruno = MangabaAgent(agent_name="Bruno", runtime=runtime)
    await bruno.send_agent_request(node.id, "chat", {"message": "Olá"})
    threads = [c for c in await runtime.conversations.list() if c.title.startswith("A2A client")]
    asked = []
    for conversation in threads:
        history = await runtime.conversations.history(conversation.id)
        asked.append([m.content for m in history if m.role == "user"])
    assert sorted(asked) == [["Bom dia?", "E agora?"], ["Olá"]]


async def test_cancelling_the_hub_request_cancels_the_remote_task(server, runtime, source):
    node = await add_remote_agent(runtime, server.url)
    ana = MangabaAgent(agent_name="Ana", runtime=runtime)
    await ana.record()
    await runtime.local_agents.sync()
    source.pieces, source.interval = words(200), 0.05
    asking = asyncio.ensure_future(
        runtime.network.request(ana.agent_id, node.id, "chat", {"message": "long story"})
    )
    while not source.requests:
        await asyncio.sleep(0.01)

    asking.cancel()

    for _ in range(100):
        if source.closed:
            break
        await asyncio.sleep(0.02)
    assert source.closed and not source.finished
    executor_tasks = [t for t in asyncio.all_tasks() if "HubExecutor" in repr(t.get_coro())]
    assert not executor_tasks


async def test_bad_card_addresses_are_clear_errors(runtime):
    html = await _serve_forever(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n"
        b"content-length: 27\r\n\r\n<html><body>hi</body></html>"
    )
    silent = await _serve_forever(None)
    try:
        html_url = f"http://127.0.0.1:{html.sockets[0].getsockname()[1]}"
        with pytest.raises(NetworkError, match="answers an HTML page") as err:
            await add_remote_agent(runtime, f"{html_url}/.well-known/agent-card.json")
        assert html_url in str(err.value)

        dead = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(NetworkError, match="nothing answers there") as err:
            await add_remote_agent(runtime, dead)
        assert dead in str(err.value)

        quiet = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
        with pytest.raises(NetworkError, match="did not answer in time"):
            await add_remote_agent(runtime, quiet, timeout_s=1.0)

        with pytest.raises(NetworkError, match="not an http"):
            await add_remote_agent(runtime, "ftp://example.org")
    finally:
        for running in (html, silent):
            running.close()
            await running.wait_closed()


async def test_a_card_url_answering_404_is_a_clear_error(server, runtime):
    with pytest.raises(NetworkError, match="HTTP 404"):
        await add_remote_agent(runtime, f"{server.url}agents/nobody")
    assert not [n for n in runtime.network.nodes.values() if n.kind == NodeKind.REMOTE]


async def _serve_forever(answer: bytes | None) -> asyncio.Server:
    """A TCP server that answers every request with ``answer``, or never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is None:
            await reader.read()  # until the client gives up
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_the_card_json_is_the_1_0_shape(server, http):
    # The wire form, for anyone reading the card by hand.
    card = (await http.get(f"{server.url}.well-known/agent-card.json")).json()

    assert card["supportedInterfaces"][0]["protocolVersion"] == "1.0"
    assert card["capabilities"]["streaming"] is True
    assert card["skills"][0]["id"] == "chat"


# -- what the review found ----------------------------------------------------------------------


async def test_a_page_that_rebinds_its_name_to_this_computer_is_refused(server, http):
    params = {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "hi"}]}}
    refused = await rpc(
        http,
        server.url,
        "SendMessage",
        params,
        headers={**V1, "Host": "attacker.example", "Origin": "http://attacker.example"},
    )
    assert refused.status_code == 421
    answered = await rpc(http, server.url, "SendMessage", params)
    assert answered.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_an_internal_failure_reaches_a_remote_caller_as_a_plain_sentence(
    server, http, runtime, monkeypatch
):
    async def broken(*_args, **_kwargs):
        raise OSError("disk I/O error in /home/alice/.local/share/mangaba/history.db")

    monkeypatch.setattr(runtime.contexts, "summary", broken)
    client = await client_for(http, server.url, streaming=False)
    [event] = [e async for e in client.send_message(user_message("x", skill="get_context"))]
    status = event.task.status
    assert status.state == TaskState.TASK_STATE_FAILED
    text = status.message.parts[0].text
    assert "internal error" in text
    assert "/home/alice" not in text and "disk I/O" not in text


async def test_a_server_for_one_agent_serves_only_that_agent(runtime, http):
    chosen = await runtime.agents.default()
    other = await runtime.agents.create("Secret", "You keep secrets.")
    server = A2AServer(runtime, primary=chosen.id, only=[chosen.id])
    await server.start()
    try:
        mine = await http.get(f"{server.agent_url(chosen.id)}/.well-known/agent-card.json")
        theirs = await http.get(f"{server.agent_url(other.id)}/.well-known/agent-card.json")
        assert mine.status_code == 200 and mine.json()["name"] == chosen.name
        assert theirs.status_code == 404
    finally:
        await server.stop()


async def test_a_server_on_every_interface_advertises_an_address_clients_can_reach(runtime):
    server = A2AServer(runtime, host="0.0.0.0", token=TOKEN)
    await server.start()
    try:
        assert "0.0.0.0" not in server.url
        card = next(iter(server.cards.values()))
        assert all("0.0.0.0" not in i.url for i in card.supported_interfaces)
    finally:
        await server.stop()
    named = A2AServer(runtime, host="0.0.0.0", token=TOKEN, public_url="https://agents.lan:9000")
    await named.start()
    try:
        assert named.url == "https://agents.lan:9000/"
    finally:
        await named.stop()


async def test_a_remote_answer_streams_to_a_caller_that_follows_it(server, runtime):
    node = await add_remote_agent(runtime, server.url)
    agent = await runtime.agents.default()
    pieces: list[str] = []

    reply = await runtime.network.request(
        agent.id, node.id, "chat", {"message": "Bom dia?"}, on_progress=pieces.append
    )

    assert reply.text == "Bom dia!"
    assert "".join(pieces) == "Bom dia!" and len(pieces) == 2
