"""Moving contexts between databases: export to JSON, import whole or not at all."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mangaba_desktop.core.context import ContextFilter, ContextStore
from mangaba_desktop.core.context.compression import compress_session
from mangaba_desktop.core.context.transfer import (
    FORMAT,
    InvalidImport,
    export_to_file,
    import_file,
    parse_import,
)
from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.store import AgentStore, ContextType, Database, Priority
from tests.helpers.db import query_file

pytestmark = pytest.mark.asyncio

SUMMARY = "Ana is a teacher in Porto who likes green tea."


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ContextStore]:
    """A second, empty database (as on another computer) and its context store."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    database = Database(folder / "history.sqlite3")
    yield ContextStore(database, EventBus())
    database.close()


@pytest_asyncio.fixture
async def filled(database, bus, contexts):
    """Two agents, two sessions, agent-wide knowledge and a compressed session."""
    agents = AgentStore(database, bus)
    ana = await agents.create("Ana", "You teach maths.", agent_id="agent_ana", tags="school")
    bruno = await agents.create("Bruno", "You do taxes.", agent_id="agent_bruno", model="x/y")
    for n, line in enumerate(
        [
            "User: my name is Ana\nAssistant: hello Ana",
            "User: I teach in Porto\nAssistant: nice",
            "User: I like green tea\nAssistant: noted",
            "User: what about coffee?\nAssistant: also fine",
        ]
    ):
        context = await contexts.add(ana.id, line, ContextType.CONVERSATION, session_id="s1")
        assert context.id is not None, n

    async def summarize(transcript: str) -> str:
        assert "my name is Ana" in transcript
        return SUMMARY

    memory = await compress_session(contexts, ana.id, "s1", summarize, threshold=2, keep_recent=1)
    assert memory is not None
    await contexts.add(
        ana.id,
        "Homework is due on Fridays.",
        ContextType.TASK,
        session_id="s1",
        priority=Priority.HIGH,
        tags="homework, deadlines",
        expires_at=time.time() + 30 * 24 * 3600,
    )
    await contexts.add(
        ana.id,
        "Always answer in Portuguese — sempre em português. 🇵🇹",
        priority=Priority.CRITICAL,
    )
    await contexts.add(ana.id, "Other session: the bus leaves at 8.", session_id="s2")
    await contexts.add_text(bruno.id, "Tax rules, part one.\n\n" + "Deductions. " * 150)
    await contexts.add(bruno.id, "User: a\nAssistant: b", ContextType.CONVERSATION, session_id="s3")
    # Some use, so that counters travel too.
    await contexts.retrieve("Ana green tea", ana.id, "s1")
    await database.write(lambda s: None)
    return {"ana": ana, "bruno": bruno, "memory": memory}


def _sort_key(row: tuple[Any, ...]) -> list[tuple[bool, Any]]:
    return [(value is None, "" if value is None else value) for value in row]


def snapshot(store: ContextStore, **where: Any) -> list[tuple[Any, ...]]:
    """What the contexts hold, independent of their ids (parents by their content)."""

    def job(session) -> list[tuple[Any, ...]]:
        rows = session.connection().exec_driver_sql(
            "SELECT c.agent_id, c.session_id, c.content, c.context_type, c.priority, c.tags,"
            " c.created_at, c.last_accessed, c.access_count, c.expires_at, c.archived,"
            " p.content"
            " FROM contexts AS c LEFT JOIN contexts AS p ON p.id = c.parent_id"
        )
        return sorted((tuple(row) for row in rows), key=_sort_key)

    rows = store.db.read_sync(job)
    if "session_id" in where:
        rows = [r for r in rows if r[1] == where["session_id"]]
    if "agent_id" in where:
        rows = [r for r in rows if r[0] == where["agent_id"]]
    return rows


def table_counts(path: Path) -> tuple[int, int, int]:
    [(contexts, agents, indexed)] = query_file(
        path,
        "SELECT (SELECT count(*) FROM contexts), (SELECT count(*) FROM agents),"
        " (SELECT count(*) FROM contexts_fts)",
    )
    return contexts, agents, indexed


# -- round trips --------------------------------------------------------------------------------


async def test_the_whole_store_round_trips_into_a_fresh_database(contexts, filled, fresh, tmp_path):
    path = tmp_path / "all.json"

    written = await export_to_file(contexts, path)
    result = await import_file(fresh, path)

    original = snapshot(contexts)
    assert written == len(original) == result.added
    assert result.skipped == 0
    # Every agent goes along, the source's own default agent included.
    source_agents = {a.id for a in await AgentStore(contexts.db, EventBus()).list()}
    assert set(result.agents_added) == source_agents
    assert snapshot(fresh) == original
    assert not path.with_name(path.name + ".partial").exists()
    agents = {a.id: a for a in await AgentStore(fresh.db, EventBus()).list()}
    assert (agents["agent_ana"].name, agents["agent_ana"].persona, agents["agent_ana"].tags) == (
        "Ana",
        "You teach maths.",
        '["school"]',
    )
    assert agents["agent_bruno"].model == "x/y"
    # The index was filled as the rows went in: the imported contexts are searchable.
    found = await fresh.retrieve("Homework Fridays", "agent_ana", "s1", touch=False)
    assert "Homework is due on Fridays." in [r.context.content for r in found]


async def test_one_session_round_trips(contexts, filled, fresh, tmp_path):
    path = tmp_path / "s1.json"

    written = await export_to_file(contexts, path, session_id="s1")
    await import_file(fresh, path)

    assert written == len(snapshot(contexts, session_id="s1")) == 6
    assert snapshot(fresh) == snapshot(contexts, session_id="s1")
    exported = json.loads(path.read_text(encoding="utf-8"))
    assert exported["format"] == FORMAT
    assert {c["session_id"] for c in exported["contexts"]} == {"s1"}


async def test_a_session_export_brings_only_its_own_agents(contexts, filled, fresh, tmp_path):
    path = tmp_path / "s2.json"
    await export_to_file(contexts, path, session_id="s2")

    result = await import_file(fresh, path)

    assert result.agents_added == ["agent_ana"]


async def test_one_agent_round_trips(contexts, filled, fresh, tmp_path):
    path = tmp_path / "bruno.json"

    await export_to_file(contexts, path, agent_id="agent_bruno")
    result = await import_file(fresh, path)

    assert result.agents_added == ["agent_bruno"]
    assert snapshot(fresh) == snapshot(contexts, agent_id="agent_bruno")


async def test_importing_twice_adds_no_duplicates(contexts, filled, fresh, tmp_path):
    path = tmp_path / "all.json"
    await export_to_file(contexts, path)
    first = await import_file(fresh, path)
    after_first = snapshot(fresh)
    counts = table_counts(fresh.db.path)

    again = await import_file(fresh, path)

    assert (again.added, again.skipped, again.agents_added) == (0, first.added, [])
    assert snapshot(fresh) == after_first
    assert table_counts(fresh.db.path) == counts
    # Into the database it came from: everything is already there.
    home = await import_file(contexts, path)
    assert (home.added, home.skipped) == (0, first.added)


async def test_compressed_memories_keep_their_sources(contexts, filled, fresh, tmp_path):
    path = tmp_path / "all.json"
    await export_to_file(contexts, path)

    await import_file(fresh, path)

    memories = await fresh.page(ContextFilter(types=frozenset({ContextType.MEMORY.value})))
    [memory] = memories
    assert memory.content.endswith(SUMMARY)
    sources = await fresh.page(
        ContextFilter(session_id="s1", types=frozenset({ContextType.CONVERSATION.value}))
    )
    archived = [s for s in sources if s.archived]
    assert len(archived) == 3
    assert {s.parent_id for s in archived} == {memory.id}
    assert [s.parent_id for s in sources if not s.archived] == [None]
    # Archived sources stay out of prompts after the move; the memory takes their place.
    found = await fresh.retrieve("my name is Ana", "agent_ana", "s1", touch=False)
    contents = [r.context.content for r in found]
    assert memory.content in contents
    assert not any(c.startswith("User: my name is Ana") for c in contents)


async def test_an_export_names_unknown_agents_after_their_ids(contexts, filled, fresh, tmp_path):
    path = tmp_path / "all.json"
    await export_to_file(contexts, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["agents"] = []
    path.write_text(json.dumps(data), encoding="utf-8")

    result = await import_file(fresh, path)

    assert sorted(result.agents_added) == ["agent_ana", "agent_bruno"]
    agent = await AgentStore(fresh.db, EventBus()).get("agent_bruno")
    assert agent.name == "agent_bruno"


# -- refused files ------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def export_text(contexts, filled, tmp_path) -> str:
    path = tmp_path / "good.json"
    await export_to_file(contexts, path)
    return path.read_text(encoding="utf-8")


async def refused(store: ContextStore, path: Path, content: bytes) -> str:
    """Import ``content`` from ``path``; check it was refused and changed nothing; return why."""
    await asyncio.to_thread(path.write_bytes, content)
    before = table_counts(store.db.path)
    rows_before = snapshot(store)

    with pytest.raises(InvalidImport) as refusal:
        await import_file(store, path)

    assert table_counts(store.db.path) == before
    assert snapshot(store) == rows_before
    return str(refusal.value)


async def test_a_json_syntax_error_is_refused_with_its_line(export_text, fresh, tmp_path):
    lines = export_text.splitlines(keepends=True)
    broken_line = next(n for n, line in enumerate(lines) if "Homework" in line)
    lines[broken_line] = lines[broken_line].replace('"content": ', '"content" ', 1)

    message = await refused(fresh, tmp_path / "bad.json", "".join(lines).encode())

    assert f"line {broken_line + 1}," in message
    assert "not valid JSON" in message


def mutate(text: str, change) -> bytes:
    data = json.loads(text)
    change(data)
    return json.dumps(data, ensure_ascii=False, indent=1).encode()


def set_field(index: int, name: str, value: Any):
    def change(data: dict[str, Any]) -> None:
        data["contexts"][index][name] = value

    return change


def drop_field(index: int, name: str):
    def change(data: dict[str, Any]) -> None:
        del data["contexts"][index][name]

    return change


def set_top(name: str, value: Any):
    def change(data: dict[str, Any]) -> None:
        data[name] = value

    return change


def set_agent(index: int, name: str, value: Any):
    def change(data: dict[str, Any]) -> None:
        data["agents"][index][name] = value

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (set_field(3, "priority", 9), ["contexts[3]", "“9” is not a priority"]),
        (set_field(3, "priority", "urgent"), ["contexts[3]", "“urgent” is not a priority"]),
        (set_field(3, "context_type", "note"), ["contexts[3]", "“note” is not a context type"]),
        (set_field(3, "created_at", "yesterday"), ["contexts[3].created_at must be a number"]),
        (set_field(3, "expires_at", True), ["contexts[3].expires_at must be a number"]),
        (set_field(3, "access_count", 1.5), ["contexts[3].access_count must be a whole number"]),
        (set_field(3, "id", "7"), ["contexts[3].id must be a whole number"]),
        (set_field(3, "parent_id", [1]), ["contexts[3].parent_id must be a whole number"]),
        (set_field(3, "session_id", 42), ["contexts[3].session_id must be text"]),
        (set_field(3, "agent_id", " "), ["contexts[3].agent_id must be text"]),
        (drop_field(3, "agent_id"), ["contexts[3].agent_id is missing"]),
        (set_field(3, "tags", "a,b"), ["contexts[3].tags must be a list"]),
        (set_field(3, "tags", ["bad tag!"]), ["contexts[3].tags", "“bad tag!”"]),
        (set_field(3, "content", ""), ["contexts[3]", "needs some text"]),
        (set_field(3, "content", 5), ["contexts[3]", "must be text"]),
        (set_field(3, "content", "x" * 16_001), ["contexts[3]", "16,001 characters"]),
        (set_agent(0, "name", ""), ["agents[0].name must be text"]),
        (set_agent(1, "persona", ["list"]), ["agents[1].persona must be text"]),
        (set_top("format", "something-else"), ['not a contexts export (no "format"']),
        (set_top("version", 2), ["version 2", "reads version 1"]),
        (set_top("contexts", {"0": {}}), ["“contexts” must be a list"]),
        (set_top("agents", "everyone"), ["“agents” must be a list"]),
    ],
)
async def test_a_bad_field_is_refused_whole_and_named(
    export_text, fresh, contexts, tmp_path, change, expected
):
    bad = mutate(export_text, change)

    # Refused by a fresh database and by one that holds the good records already.
    for store in (fresh, contexts):
        message = await refused(store, tmp_path / "bad.json", bad)
        for part in expected:
            assert part in message


async def test_a_record_that_is_not_an_object_is_named(export_text, fresh, tmp_path):
    def change(data: dict[str, Any]) -> None:
        data["contexts"][3] = "oops"

    message = await refused(fresh, tmp_path / "bad.json", mutate(export_text, change))

    assert message == "contexts[3] must be an object."


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not UTF-8 text (byte 0)"),
        ('{"format": "mangaba-contexts"}'.encode("utf-16"), "not UTF-8 text"),
        (b'{"format": "mangaba-contexts", "x": "caf\xe9"}', "not UTF-8 text (byte 40)"),
        (b"", "not valid JSON: line 1, column 1"),
        (b"\x00" * 64, "not valid JSON: line 1, column 1"),
        (b"[1, 2, 3]", "not a contexts export"),
    ],
)
async def test_binary_and_foreign_files_are_refused(fresh, tmp_path, content, expected):
    message = await refused(fresh, tmp_path / "file.json", content)

    assert expected in message


async def test_a_missing_file_is_refused(fresh, tmp_path):
    with pytest.raises(InvalidImport, match="cannot be read"):
        await import_file(fresh, tmp_path / "nowhere.json")


async def test_parse_import_reads_what_export_writes():
    raw = json.dumps(
        {
            "format": FORMAT,
            "version": 1,
            "contexts": [
                {"agent_id": "a", "content": "  hello  ", "context_type": "knowledge"},
                {
                    "id": 5,
                    "parent_id": 9,
                    "agent_id": "a",
                    "content": "x",
                    "context_type": "memory",
                    "priority": 4,
                    "tags": ["#One", "one", "two"],
                    "archived": True,
                },
            ],
        }
    ).encode()

    parsed = parse_import(raw)

    assert parsed.agents == []
    (old_a, parent_a, first), (old_b, parent_b, second) = parsed.contexts
    assert (old_a, parent_a, first.content, first.priority) == (None, None, "hello", 1)
    assert (old_b, parent_b, second.priority, second.tags, second.archived) == (
        5,
        9,
        4,
        '["one", "two"]',
        True,
    )
