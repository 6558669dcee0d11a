"""The chat history on a real SQLite file: what the conversation list and the chat pane rely on."""

from __future__ import annotations

import sqlite3
import unicodedata

import pytest
import pytest_asyncio
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlmodel import SQLModel

from mangaba_desktop.core import events
from mangaba_desktop.core.store import MessageStatus, Role
from mangaba_desktop.core.store.conversations import DEFAULT_TITLE, PAGE_SIZE, TITLE_LENGTH
from mangaba_desktop.core.validation import validate_message
from tests.helpers.db import query_file
from tests.helpers.events import EventLog

# -- conversations ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_conversation_round_trips_through_the_file(store, reopen):
    created = await store.create(title="Trip to Lisbon", model="openai/gpt-4o-mini")

    reopened = await reopen().get(created.id)

    assert reopened is not None
    assert (reopened.title, reopened.model, reopened.draft) == (
        "Trip to Lisbon",
        "openai/gpt-4o-mini",
        "",
    )
    assert reopened.created_at == created.created_at


@pytest.mark.asyncio
async def test_list_puts_the_most_recently_active_conversation_first(store):
    first = await store.create(title="first")
    second = await store.create(title="second")
    third = await store.create(title="third")
    assert [c.id for c in await store.list()] == [third.id, second.id, first.id]

    await store.add_message(first.id, Role.USER, "back to this one")

    assert [c.id for c in await store.list()] == [first.id, third.id, second.id]


@pytest.mark.asyncio
async def test_rename_tidies_the_title_and_keeps_it(store, reopen, bus):
    log = EventLog(bus)
    conversation = await store.create()

    renamed = await store.rename(conversation.id, "  Budget\n 2025 \t plans ")
    blank = await store.create()
    await store.rename(blank.id, " \n\t ")

    assert renamed.title == "Budget 2025 plans"
    assert log.payloads(events.CONVERSATION_UPDATED)[-1]["conversation"].title == DEFAULT_TITLE
    again = reopen()
    assert (await again.get(conversation.id)).title == "Budget 2025 plans"
    assert (await again.get(blank.id)).title == DEFAULT_TITLE


@pytest.mark.asyncio
async def test_rename_of_a_missing_conversation_raises(store):
    with pytest.raises(LookupError):
        await store.rename(12345, "nothing here")


@pytest.mark.asyncio
async def test_delete_removes_the_conversation_its_messages_and_their_search_entries(
    store, db_path, bus
):
    log = EventLog(bus)
    doomed = await store.create(title="doomed")
    kept = await store.create(title="kept")
    await store.add_message(doomed.id, Role.USER, "the capybara report")
    await store.add_message(doomed.id, Role.ASSISTANT, "capybaras are large rodents")
    await store.add_message(kept.id, Role.USER, "a capybara in another chat")

    await store.delete(doomed.id)

    assert await store.get(doomed.id) is None
    assert [c.id for c in await store.list()] == [kept.id]
    assert query_file(
        db_path, "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (doomed.id,)
    ) == [(0,)]
    # The index itself, not only the join: a stale FTS row would still count here.
    assert query_file(
        db_path, "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'capybara*'"
    ) == [(1,)]
    assert [h.conversation_id for h in await store.search("capybara")] == [kept.id]
    assert log.payloads(events.CONVERSATION_DELETED) == [{"conversation_id": doomed.id}]


@pytest.mark.asyncio
async def test_draft_survives_a_restart_and_is_not_activity(store, reopen):
    older = await store.create(title="older")
    newer = await store.create(title="newer")

    await store.save_draft(older.id, "half-typed thought\nsecond line")

    again = reopen()
    assert (await again.get(older.id)).draft == "half-typed thought\nsecond line"
    assert (await again.get(older.id)).updated_at == older.updated_at
    assert [c.id for c in await again.list()] == [newer.id, older.id]


@pytest.mark.asyncio
async def test_draft_with_a_lone_surrogate_is_saved_not_lost(store):
    conversation = await store.create()

    await store.save_draft(conversation.id, "pasted \udc00 text")

    assert (await store.get(conversation.id)).draft == "pasted \ufffd text"


@pytest.mark.asyncio
async def test_message_for_a_missing_conversation_is_refused_and_nothing_is_stored(store, db_path):
    with pytest.raises(LookupError):
        await store.add_message(999, Role.USER, "orphan")

    assert query_file(db_path, "SELECT COUNT(*) FROM messages") == [(0,)]


# -- titles ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_first_user_message_names_the_conversation(store):
    conversation = await store.create()
    await store.add_message(conversation.id, Role.USER, "  Plan the\ttrip\x00to\nLisbon  ")
    await store.add_message(conversation.id, Role.USER, "a later message changes nothing")

    title = (await store.get(conversation.id)).title
    assert title == "Plan the trip to Lisbon"


@pytest.mark.asyncio
async def test_long_first_message_gives_a_short_title_cut_at_a_word(store):
    conversation = await store.create()
    text = "Explain " + " ".join(f"topic{i}" for i in range(40))
    await store.add_message(conversation.id, Role.USER, text)

    title = (await store.get(conversation.id)).title

    assert len(title) <= TITLE_LENGTH
    assert title.endswith("…")
    assert text.startswith(title[:-1])
    assert text[len(title) - 1] == " "


@pytest.mark.asyncio
async def test_title_comes_only_from_a_user_message_of_an_untitled_conversation(store):
    named = await store.create(title="My own title")
    await store.add_message(named.id, Role.USER, "hello")
    greeted = await store.create()
    await store.add_message(greeted.id, Role.ASSISTANT, "Hi! How can I help?")

    assert (await store.get(named.id)).title == "My own title"
    assert (await store.get(greeted.id)).title == DEFAULT_TITLE

    await store.add_message(greeted.id, Role.USER, "Tell me a joke")
    assert (await store.get(greeted.id)).title == "Tell me a joke"


# -- paging ---------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def long_conversation(store):
    """120 messages m0..m119, interleaved with 30 of another conversation; returns (id, ids)."""
    main = await store.create(title="long")
    other = await store.create(title="other")
    ids = []
    for i in range(120):
        ids.append((await store.add_message(main.id, Role.USER, f"m{i}")).id)
        if i % 4 == 0:
            await store.add_message(other.id, Role.USER, f"other {i}")
    return main.id, ids, other.id


def contents(messages):
    return [m.content for m in messages]


@pytest.mark.asyncio
async def test_newest_page_then_older_pages_in_order(store, long_conversation):
    conversation_id, ids, _ = long_conversation

    newest = await store.page(conversation_id)
    older = await store.page(conversation_id, before_id=newest[0].id)
    oldest = await store.page(conversation_id, before_id=older[0].id)

    assert len(newest) == PAGE_SIZE
    assert contents(newest) == [f"m{i}" for i in range(70, 120)]
    assert contents(older) == [f"m{i}" for i in range(20, 70)]
    assert contents(oldest) == [f"m{i}" for i in range(20)]
    assert await store.page(conversation_id, before_id=ids[0]) == []


@pytest.mark.asyncio
async def test_page_after_a_message_continues_forward(store, long_conversation):
    conversation_id, ids, _ = long_conversation

    assert contents(await store.page(conversation_id, after_id=ids[9], limit=5)) == [
        "m10",
        "m11",
        "m12",
        "m13",
        "m14",
    ]
    assert contents(await store.page(conversation_id, after_id=ids[117])) == ["m118", "m119"]
    assert await store.page(conversation_id, after_id=ids[-1]) == []


@pytest.mark.asyncio
async def test_around_centres_a_full_page_on_the_message(store, long_conversation):
    conversation_id, ids, _ = long_conversation

    page = await store.around(conversation_id, ids[60], limit=11)
    default = await store.around(conversation_id, ids[60])
    at_start = await store.around(conversation_id, ids[1], limit=11)

    assert contents(page) == [f"m{i}" for i in range(55, 66)]
    assert len(default) == PAGE_SIZE
    assert "m60" in contents(default)
    assert contents(at_start)[:3] == ["m0", "m1", "m2"]


@pytest.mark.asyncio
async def test_count_is_per_conversation(store, long_conversation):
    conversation_id, _, other_id = long_conversation

    assert await store.count(conversation_id) == 120
    assert await store.count(other_id) == 30


@pytest.mark.asyncio
async def test_deleting_from_a_message_removes_it_and_later_ones_only(store, bus):
    log = EventLog(bus)
    conversation = await store.create()
    other = await store.create()
    ids = [(await store.add_message(conversation.id, Role.USER, f"m{i}")).id for i in range(5)]
    later_elsewhere = await store.add_message(other.id, Role.USER, "elsewhere")

    removed = await store.delete_messages_from(conversation.id, ids[2])

    assert removed == ids[2:]
    assert contents(await store.page(conversation.id)) == ["m0", "m1"]
    assert await store.get_message(later_elsewhere.id) is not None
    assert log.payloads(events.MESSAGES_REMOVED) == [
        {"conversation_id": conversation.id, "message_ids": ids[2:]}
    ]


@pytest.mark.asyncio
async def test_export_returns_every_message_in_order(store):
    conversation = await store.create(title="to export")
    for i in range(3):
        await store.add_message(conversation.id, Role.USER, f"q{i}")
        await store.add_message(conversation.id, Role.ASSISTANT, f"a{i}")

    exported, messages = await store.export(conversation.id)

    assert exported.title == "to export"
    assert [(m.role, m.content) for m in messages] == [
        (role, f"{letter}{i}")
        for i in range(3)
        for role, letter in (("user", "q"), ("assistant", "a"))
    ]


# -- text that must come back exactly ---------------------------------------------------------

UNICODE_CASES = [
    pytest.param("before\x00after zebra", "before\x00after zebra", "zebra", id="nul-byte"),
    pytest.param(
        "broken \ud83d tail quokka", "broken \ufffd tail quokka", "quokka", id="lone-surrogate"
    ),
    pytest.param(
        "\ud83d\ude00 split pair wombat",
        "😀 split pair wombat",
        "wombat",
        id="split-surrogate-pair",
    ),
    pytest.param(
        "\u202bשלום עולם\u202c ו-123", "\u202bשלום עולם\u202c ו-123", "עולם", id="hebrew-rtl"
    ),
    pytest.param(
        "\u200fمرحبا بالعالم\u200f", "\u200fمرحبا بالعالم\u200f", "بالعالم", id="arabic-rtl"
    ),
    pytest.param(
        "family 👨‍👩‍👧 flag 🇵🇹 thumb 👍🏽",
        "family 👨‍👩‍👧 flag 🇵🇹 thumb 👍🏽",
        "👨‍👩‍👧",
        id="emoji-zwj",
    ),
    pytest.param(
        "e\u0301 decomposed café", "e\u0301 decomposed café", "decomposed", id="combining-marks"
    ),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("typed", "stored", "query"), UNICODE_CASES)
async def test_text_round_trips_through_the_file_and_search(
    store, reopen, db_path, typed, stored, query
):
    conversation = await store.create()
    message = await store.add_message(conversation.id, Role.USER, validate_message(typed))

    again = reopen()

    assert (await again.get_message(message.id)).content == stored
    on_disk = query_file(
        db_path,
        "SELECT content, length(CAST(content AS BLOB)) FROM messages WHERE id = ?",
        (message.id,),
    )
    assert on_disk == [(stored, len(stored.encode("utf-8")))]
    assert [hit.message_id for hit in await again.search(query)] == [message.id]
    title = (await again.get(conversation.id)).title
    assert not any(unicodedata.category(ch) == "Cc" for ch in title)


@pytest.mark.asyncio
async def test_search_with_the_same_broken_paste_finds_the_stored_message(store):
    conversation = await store.create()
    message = await store.add_message(conversation.id, Role.USER, validate_message("x \ud800 y"))

    hits = await store.search("\ud800")

    assert [hit.message_id for hit in hits] == [message.id]


# -- after a crash --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_recover_interrupted_marks_streaming_replies_and_keeps_their_text(store, reopen):
    conversation = await store.create()
    question = await store.add_message(conversation.id, Role.USER, "tell me a story")
    partial = await store.add_message(
        conversation.id, Role.ASSISTANT, "", status=MessageStatus.STREAMING
    )
    await store.update_message(partial.id, content="Once upon a")
    done = await store.add_message(conversation.id, Role.ASSISTANT, "finished reply")

    again = reopen()
    assert await again.recover_interrupted() == 1
    assert await again.recover_interrupted() == 0

    recovered = await again.get_message(partial.id)
    assert (recovered.status, recovered.content) == (MessageStatus.INTERRUPTED, "Once upon a")
    assert (await again.get_message(done.id)).status == MessageStatus.COMPLETE
    assert (await again.get_message(question.id)).status == MessageStatus.COMPLETE
    history = await again.history(conversation.id)
    assert [m.content for m in history] == ["tell me a story", "Once upon a", "finished reply"]


# -- schema ---------------------------------------------------------------------------------


def affinity(declared_type: str) -> str:
    """SQLite's column affinity for a declared type (https://sqlite.org/datatype3.html)."""
    declared_type = declared_type.upper()
    if "INT" in declared_type:
        return "INTEGER"
    if any(word in declared_type for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if any(word in declared_type for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC" if declared_type else "BLOB"


@pytest.mark.parametrize("table", ["conversations", "messages", "metric_minutes", "audit_log"])
def test_table_classes_match_the_migrated_schema(database, db_path, table):
    """The ORM classes and the migrations describe the same columns: same names, types,
    NOT NULL, primary key and foreign keys."""
    declared = SQLModel.metadata.tables[table]
    connection = sqlite3.connect(db_path)
    try:
        info = connection.execute(f"PRAGMA table_info({table})").fetchall()
        foreign = connection.execute(f"PRAGMA foreign_key_list({table})").fetchall()
    finally:
        connection.close()

    in_file = {
        name: (affinity(type_), bool(pk) or bool(notnull), bool(pk))
        for _cid, name, type_, notnull, _default, pk in info
    }
    in_model = {
        column.name: (
            affinity(column.type.compile(dialect=sqlite_dialect())),
            column.primary_key or not column.nullable,
            column.primary_key,
        )
        for column in declared.columns
    }
    assert in_model == in_file

    file_keys = {(row[3], row[2], row[4], row[6]) for row in foreign}
    model_keys = {
        (fk.parent.name, fk.column.table.name, fk.column.name, (fk.ondelete or "NO ACTION"))
        for fk in declared.foreign_keys
    }
    assert model_keys == file_keys
