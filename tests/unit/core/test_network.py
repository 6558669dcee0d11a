"""The agent network inside the app: requests and their one answer, broadcasts that really
filter, TTL, timeouts, priorities, and every message kept in the database."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import pytest_asyncio

from mangaba_desktop.core import events
from mangaba_desktop.core.agent import MangabaAgent, Runtime
from mangaba_desktop.core.network import (
    AgentHub,
    AgentOffline,
    MessagePriority,
    MessageStatus,
    MessageType,
    NetworkError,
    Node,
    NodeKind,
    NodeStatus,
    RequestFailed,
    RequestTimedOut,
    UnknownAgent,
)
from mangaba_desktop.core.network.hub import REMOTE_PARALLEL
from tests.helpers.events import EventLog
from tests.helpers.sources import ScriptedSource

pytestmark = pytest.mark.asyncio


def rows(db_path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest_asyncio.fixture
async def hub(database, bus):
    network = AgentHub(bus, database)
    yield network
    await network.close()


def echo(name: str, seen: list | None = None, delay: float = 0.0):
    async def handle(message):
        if seen is not None:
            seen.append((name, message.type, message.action, message.text))
        if delay:
            await asyncio.sleep(delay)
        return {"text": f"{name} did {message.action}: {message.text}"}

    return handle


def join(hub: AgentHub, node_id: str, handler=None, **fields) -> Node:
    return hub.register(Node(id=node_id, name=node_id.title(), **fields), handler or echo(node_id))


async def test_a_request_gets_exactly_one_answer_delivered_to_the_caller(hub, db_path):
    join(hub, "ana")
    join(hub, "bruno")

    response = await hub.request("ana", "bruno", "translate", {"text": "Bom dia"})

    assert response.type == MessageType.RESPONSE
    assert response.text == "bruno did translate: Bom dia"
    assert (response.sender, response.receiver) == ("bruno", "ana")
    stored = rows(
        db_path, "SELECT type, sender, receiver, status, correlation_id FROM agent_messages"
    )
    request_id = rows(db_path, "SELECT id FROM agent_messages WHERE type = 'request'")[0][0]
    assert sorted(stored) == sorted(
        [
            ("request", "ana", "bruno", "done", None),
            ("response", "bruno", "ana", "done", request_id),
        ]
    )
    assert hub.nodes["bruno"].handled == 1


async def test_unknown_and_offline_agents_are_errors_at_once(hub, db_path):
    join(hub, "ana")
    join(hub, "bruno").status = NodeStatus.OFFLINE

    with pytest.raises(UnknownAgent, match="no agent “carla”"):
        await hub.request("ana", "carla", "chat", {"message": "hi"})
    with pytest.raises(AgentOffline, match="Bruno is offline"):
        await hub.request("ana", "bruno", "chat", {"message": "hi"})
    with pytest.raises(UnknownAgent):
        await hub.request("nobody", "ana", "chat", {"message": "hi"})
    assert rows(db_path, "SELECT count(*) FROM agent_messages") == [(0,)]


async def test_a_failing_handler_answers_the_caller_with_its_error(hub):
    async def broken(message):
        raise ValueError("the ledger is locked")

    join(hub, "ana")
    join(hub, "bruno", broken)

    with pytest.raises(RequestFailed, match="the ledger is locked") as raised:
        await hub.request("ana", "bruno", "analyze", {"text": "x"})
    assert raised.value.message.type == MessageType.ERROR
    assert hub.nodes["bruno"].failed == 1
    assert hub.nodes["bruno"].status == NodeStatus.IDLE


async def test_a_broadcast_reaches_only_linked_agents_with_a_matching_tag(hub):
    seen: list = []
    join(hub, "boss", echo("boss", seen))
    join(hub, "fin", echo("fin", seen), tags=["finance"])
    join(hub, "law", echo("law", seen), tags=["legal"])
    join(hub, "both", echo("both", seen), tags=["Finance", "legal"])
    join(hub, "stranger", echo("stranger", seen), tags=["finance"])  # not linked
    for other in ("fin", "law", "both"):
        await hub.connect("boss", other)

    finance = await hub.broadcast("boss", {"message": "Quarter closes Friday"}, ["finance"])
    everyone = await hub.broadcast("boss", {"message": "Hello all"})
    await asyncio.sleep(0.05)

    assert sorted(finance) == ["both", "fin"]
    assert sorted(everyone) == ["both", "fin", "law"]
    got = sorted((name, text) for name, kind, _a, text in seen if kind == MessageType.BROADCAST)
    assert got == [
        ("both", "Hello all"),
        ("both", "Quarter closes Friday"),
        ("fin", "Hello all"),
        ("fin", "Quarter closes Friday"),
        ("law", "Hello all"),
    ]


async def test_a_message_past_its_ttl_expires_and_the_caller_is_told(hub, db_path):
    join(hub, "ana")
    join(hub, "bruno", echo("bruno", delay=0.3))
    busy = asyncio.ensure_future(hub.request("ana", "bruno", "chat", {"message": "first"}))
    await asyncio.sleep(0.02)

    with pytest.raises(RequestFailed, match=r"Expired after 0\.05 s"):
        await hub.request("ana", "bruno", "chat", {"message": "second"}, ttl_s=0.05)
    await busy
    statuses = rows(
        db_path,
        "SELECT json_extract(content, '$.message'), status FROM agent_messages "
        "WHERE type = 'request' ORDER BY created_at",
    )
    assert statuses == [("first", "done"), ("second", "expired")]


async def test_a_request_without_an_answer_in_time_times_out_and_the_work_stops(hub, db_path):
    join(hub, "ana")
    join(hub, "bruno", echo("bruno", delay=0.5))

    with pytest.raises(RequestTimedOut, match=r"did not answer within 0\.1 s"):
        await hub.request("ana", "bruno", "chat", {"message": "hurry"}, timeout_s=0.1)
    await asyncio.sleep(0.6)
    # The receiver stopped working on it: no late answer, the agent free for the next one.
    assert rows(db_path, "SELECT type, status FROM agent_messages ORDER BY created_at") == [
        ("request", "timed_out"),
    ]
    assert hub.nodes["bruno"].status == NodeStatus.IDLE
    answer = await hub.request("ana", "bruno", "chat", {"message": "again"}, timeout_s=2)
    assert answer.text == "bruno did chat: again"


async def test_urgent_messages_are_handled_before_earlier_low_ones(hub):
    seen: list = []
    join(hub, "ana")
    join(hub, "bruno", echo("bruno", seen, delay=0.05))
    first = asyncio.ensure_future(hub.request("ana", "bruno", "chat", {"message": "busy"}))
    await asyncio.sleep(0.01)
    low = asyncio.ensure_future(
        hub.request("ana", "bruno", "chat", {"message": "low"}, priority=MessagePriority.LOW)
    )
    urgent = asyncio.ensure_future(
        hub.request("ana", "bruno", "chat", {"message": "urgent"}, priority=MessagePriority.URGENT)
    )
    await asyncio.gather(first, low, urgent)
    assert [text for *_rest, text in seen] == ["busy", "urgent", "low"]


async def test_an_agent_leaving_fails_what_waits_in_its_queue(hub):
    join(hub, "ana")
    join(hub, "bruno", echo("bruno", delay=0.3))
    busy = asyncio.ensure_future(hub.request("ana", "bruno", "chat", {"message": "first"}))
    waiting = asyncio.ensure_future(hub.request("ana", "bruno", "chat", {"message": "second"}))
    await asyncio.sleep(0.05)

    await hub.unregister("bruno")

    for request in (busy, waiting):
        with pytest.raises(RequestFailed):
            await request
    assert "bruno" not in hub.nodes


async def test_links_are_kept_for_the_next_start(database, bus):
    first = AgentHub(bus, database)
    join(first, "ana")
    join(first, "bruno")
    await first.connect("ana", "bruno")
    with pytest.raises(NetworkError, match="itself"):
        await first.connect("ana", "ana")
    await first.close()

    again = AgentHub(bus, database)
    await again.load_links()
    assert again.links == {("ana", "bruno"), ("bruno", "ana")}
    await again.close()


async def test_old_messages_are_pruned_but_unfinished_ones_stay(hub, db_path):
    join(hub, "ana")
    join(hub, "bruno")
    for i in range(5):
        await hub.request("ana", "bruno", "chat", {"message": f"m{i}"})
    month_ago = time.time() - 40 * 86400
    with sqlite3.connect(db_path) as db:
        # Two exchanges from long ago, one of them never finished (the app stopped).
        db.execute(
            "UPDATE agent_messages SET created_at = ? WHERE rowid IN "
            "(SELECT rowid FROM agent_messages ORDER BY created_at LIMIT 4)",
            (month_ago,),
        )
        db.execute(
            "UPDATE agent_messages SET status = 'queued' WHERE rowid = "
            "(SELECT rowid FROM agent_messages ORDER BY created_at LIMIT 1)"
        )

    assert await hub.prune() == 3
    left = rows(db_path, "SELECT status FROM agent_messages")
    assert len(left) == 7 and ("queued",) in left

    # Beyond the size cap, the oldest finished go first.
    assert await hub.prune(keep_at_most=4) == 2
    assert len(rows(db_path, "SELECT id FROM agent_messages")) == 5


async def test_what_a_closed_run_left_queued_is_failed_at_the_next_start(database, bus, db_path):
    first = AgentHub(bus, database)
    release = asyncio.Event()

    async def busy(message):
        await release.wait()

    join(first, "ana")
    join(first, "bruno", busy)
    for i in range(3):
        await first.notify("ana", "bruno", {"text": f"n{i}"})
    await asyncio.sleep(0.05)  # the first is in hand, two wait in the queue
    await first.close()
    await first.flush()
    assert "queued" in {status for (status,) in rows(db_path, "SELECT status FROM agent_messages")}

    again = AgentHub(bus, database)
    assert await again.close_unfinished() == 2
    left = rows(db_path, "SELECT status, error FROM agent_messages")
    assert {status for status, _error in left} == {"failed"}
    assert ("failed", "The app closed before it was handled.") in left
    # And so they can be pruned like any finished message.
    assert await again.prune(older_than_days=0) == 3
    await again.close()


async def test_a_deleted_agent_loses_its_links_but_its_messages_stay(tmp_path):
    runtime = await Runtime.open(tmp_path, completions=ScriptedSource(["ok"]))
    try:
        ana = MangabaAgent(agent_name="Ana", runtime=runtime)
        bruno = MangabaAgent(agent_name="Bruno", runtime=runtime)
        await ana.connect_to(bruno)
        await ana.send_agent_request(bruno, "chat", {"message": "olá"})
        bruno_id = bruno.agent_id

        await runtime.agents.delete(bruno_id)
        async with asyncio.timeout(10):
            while bruno_id in runtime.network.nodes:
                await asyncio.sleep(0.01)

        assert runtime.network.links == set()
        db_path = tmp_path / "mangaba.sqlite3"
        assert rows(db_path, "SELECT * FROM agent_links") == []
        assert len(rows(db_path, "SELECT id FROM agent_messages")) == 2
    finally:
        await runtime.close()


async def test_events_tell_the_network_pane_what_happens(hub, bus):
    log = EventLog(bus)
    join(hub, "ana")
    join(hub, "bruno")
    await hub.request("ana", "bruno", "chat", {"message": "hi"})
    names = [name for name, _payload in log.events]
    assert events.NETWORK_NODE in names
    statuses = [p["message"].status for n, p in log.events if n == events.NETWORK_MESSAGE]
    assert MessageStatus.DELIVERED in statuses and MessageStatus.DONE in statuses


async def test_a_broadcast_with_a_bad_tag_or_too_much_text_is_refused_before_sending(hub, db_path):
    seen: list = []
    join(hub, "boss")
    join(hub, "fin", echo("fin", seen), tags=["finance"])
    await hub.connect("boss", "fin")

    with pytest.raises(NetworkError, match="finance!"):
        await hub.broadcast("boss", {"message": "x"}, ["finance!"])
    with pytest.raises(NetworkError, match="16,000 characters"):
        await hub.broadcast("boss", {"message": "x" * 20_000}, ["finance"])
    await asyncio.sleep(0.05)
    assert seen == []
    assert rows(db_path, "SELECT count(*) FROM agent_messages") == [(0,)]


async def test_a_request_expires_when_its_time_to_live_ends_not_when_its_turn_comes(hub):
    join(hub, "ana")
    join(hub, "bruno", echo("bruno", delay=1.0))
    busy = asyncio.ensure_future(hub.request("ana", "bruno", "chat", {"message": "long"}))
    await asyncio.sleep(0.02)
    started = asyncio.get_running_loop().time()

    with pytest.raises(RequestFailed, match="Expired"):
        await hub.request("ana", "bruno", "chat", {"message": "quick"}, ttl_s=0.1)

    assert asyncio.get_running_loop().time() - started < 0.5  # not after the 1 s handler
    await busy


async def test_an_internal_failure_is_told_in_a_plain_sentence(hub):
    async def broken(message):
        raise OSError("disk I/O error at /home/alice/.local/share/mangaba/db")

    join(hub, "ana")
    join(hub, "bruno", broken)
    with pytest.raises(RequestFailed) as raised:
        await hub.request("ana", "bruno", "chat", {"message": "hi"})
    assert "internal error" in str(raised.value)
    assert "/home/alice" not in str(raised.value)


# -- the app's agents through the chat pipeline ---------------------------------------------------


async def test_two_agents_translate_for_each_other_and_the_exchange_is_kept(tmp_path):
    source = ScriptedSource(["Good ", "morning"])
    runtime = await Runtime.open(tmp_path, completions=source)
    try:
        ana = MangabaAgent(agent_name="Ana", runtime=runtime)
        bruno = MangabaAgent(agent_name="Bruno", tags=["legal"], runtime=runtime)

        answer = await ana.send_agent_request(
            bruno, "translate", {"text": "Bom dia", "target_language": "english"}
        )

        assert answer == "Good morning"
        asked = source.requests[-1]["messages"][-1]["content"]
        assert "Bom dia" in asked and "english" in asked.lower()
        titles = [c.title for c in await runtime.conversations.list()]
        assert "Ana asks Bruno" in titles
        history = await runtime.network.history(agent_id=ana.agent_id)
        assert [(m.type, m.action) for m in history] == [
            (MessageType.REQUEST, "translate"),
            (MessageType.RESPONSE, "translate"),
        ]
        # A second request goes to the same conversation.
        await ana.send_agent_request(bruno.agent_id, "chat", {"message": "/not a command"})
        titles = [c.title for c in await runtime.conversations.list()]
        assert titles.count("Ana asks Bruno") == 1
        assert source.requests[-1]["messages"][-1]["content"] == "/not a command"

        with pytest.raises(RequestFailed, match="does not know how to “dance”"):
            await ana.send_agent_request(bruno, "dance", {})
        with pytest.raises(RequestFailed, match="no text to work on"):
            await ana.send_agent_request(bruno, "summarize", {})
    finally:
        await runtime.close()


async def test_a_broadcast_with_tags_is_remembered_only_by_the_tagged_agents(tmp_path):
    runtime = await Runtime.open(tmp_path, completions=ScriptedSource(["ok"]))
    try:
        boss = MangabaAgent(agent_name="Boss", runtime=runtime)
        finance = MangabaAgent(agent_name="Fin", tags=["finance"], runtime=runtime)
        legal = MangabaAgent(agent_name="Law", tags=["legal"], runtime=runtime)
        await boss.connect_to(finance)
        await boss.connect_to(legal)

        reached = await boss.broadcast_message("Quarter closes Friday", tags=["finance"])

        assert reached == [finance.agent_id]
        await asyncio.sleep(0.1)
        assert "Broadcast from Boss: Quarter closes Friday" in await runtime.contexts.summary(
            finance.agent_id, None
        )
        assert "Quarter closes" not in await runtime.contexts.summary(legal.agent_id, None)
        quiet = MangabaAgent(agent_name="Quiet", use_a2a=False, runtime=runtime)
        with pytest.raises(NetworkError, match="does not take part"):
            await quiet.broadcast_message("hello")
    finally:
        await runtime.close()


# -- remote agents: several at once, lost on the way ----------------------------------------------


async def test_a_remote_agent_found_unreachable_stays_offline_and_what_waits_is_not_sent(hub, bus):
    statuses: list[str] = []
    bus.subscribe(
        events.NETWORK_NODE,
        lambda _n, p: p["node"].id == "far" and statuses.append(str(p["node"].status)),
    )
    hub.register(Node(id="me", name="Me"), echo("Me"))
    sent: list[str] = []

    async def lost(message):
        sent.append(message.text)
        await asyncio.sleep(0.05)
        hub.set_status("far", NodeStatus.OFFLINE)
        raise AgentOffline("Far could not be reached.")

    hub.register(Node(id="far", name="Far", kind=NodeKind.REMOTE), lost)
    asked = [
        asyncio.ensure_future(hub.request("me", "far", "chat", {"text": str(i)}, timeout_s=30))
        for i in range(8)
    ]

    failures = await asyncio.gather(*asked, return_exceptions=True)

    assert all(isinstance(f, RequestFailed) and f.unreachable for f in failures), failures
    # Only the first REMOTE_PARALLEL went out; the rest failed in the queue, unsent.
    assert len(sent) == REMOTE_PARALLEL
    # Never drawn working again once offline (that would read as reached).
    assert statuses[statuses.index("offline") :] == ["offline"]


@pytest.mark.parametrize("turns", range(1, 9))
async def test_a_node_removed_as_its_request_is_taken_answers_it_at_once(bus, turns):
    # Removed 1..8 turns of the loop after it was asked: before, while and after its worker
    # takes it.
    hub = AgentHub(bus)
    hub.register(Node(id="me", name="Me"), echo("Me"))
    hub.register(Node(id="far", name="Far", kind=NodeKind.REMOTE), echo("Far", delay=0.2))
    try:
        asked = asyncio.ensure_future(hub.request("me", "far", "chat", {"text": "a"}, timeout_s=30))
        for _ in range(turns):
            await asyncio.sleep(0)

        await hub.unregister("far")

        with pytest.raises(RequestFailed, match="Far left the network"):
            await asyncio.wait_for(asked, 2)
        # Added again under the same id: it goes idle after its work, as before.
        hub.register(Node(id="far", name="Far", kind=NodeKind.REMOTE), echo("Far"))
        await hub.request("me", "far", "chat", {"text": "b"}, timeout_s=5)
        assert hub.nodes["far"].status == NodeStatus.IDLE
    finally:
        await hub.close()


async def test_an_agent_goes_idle_when_its_last_queued_request_was_given_up(hub):
    hub.register(Node(id="me", name="Me"), echo("Me"))
    hub.register(Node(id="slow", name="Slow"), echo("Slow", delay=0.3))
    kept = asyncio.ensure_future(hub.request("me", "slow", "chat", {"text": "a"}, timeout_s=5))
    await asyncio.sleep(0.05)
    given_up = asyncio.ensure_future(
        hub.request("me", "slow", "chat", {"text": "b"}, timeout_s=0.1)
    )

    await asyncio.gather(kept, given_up, return_exceptions=True)
    await asyncio.sleep(0.1)

    assert hub.nodes["slow"].status == NodeStatus.IDLE
