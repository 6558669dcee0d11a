"""Opening history files of every age and state: fresh, old, from the future, damaged, locked."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.store import (
    ConversationStore,
    Database,
    DatabaseOpenError,
    OpenFailure,
    Role,
    list_backups,
    migrations,
    restore_backup,
)
from mangaba_desktop.core.store.database import DAILY_BACKUPS_KEPT, backup_dir
from tests.helpers.db import execute_file, query_file, schema_version

OLD_MESSAGES = [
    ("user", "Where is the aquarium in Lisbon?"),
    ("assistant", "The Oceanário is in Parque das Nações."),
]


def make_v1_file(path: Path) -> None:
    """A history file as version 1 of the app left it, with one conversation in it."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert [m.version for m in migrations.migrate(db, target=1)] == [1]
        db.execute(
            "INSERT INTO conversations (id, title, created_at, updated_at) "
            "VALUES (1, 'Old trip', 1.0, 2.0)"
        )
        db.executemany(
            "INSERT INTO messages (conversation_id, role, content, created_at) "
            "VALUES (1, ?, ?, 1.0)",
            OLD_MESSAGES,
        )
    finally:
        db.close()


def open_store(path: Path) -> tuple[Database, ConversationStore]:
    db = Database(path)
    return db, ConversationStore(db, EventBus())


# -- versions -----------------------------------------------------------------------------------


def test_fresh_file_is_created_at_the_latest_version_without_a_backup(db_path):
    db = Database(db_path)
    db.close()
    again = Database(db_path)
    again.close()

    assert [m.version for m in db.applied_migrations] == [m.version for m in migrations.MIGRATIONS]
    assert again.applied_migrations == []
    assert schema_version(db_path) == migrations.LATEST_VERSION
    assert list_backups(db_path) == []


@pytest.mark.asyncio
async def test_version_1_file_is_migrated_after_a_backup_and_its_messages_are_searchable(db_path):
    make_v1_file(db_path)

    db, store = open_store(db_path)
    try:
        assert [m.version for m in db.applied_migrations] == list(
            range(2, migrations.LATEST_VERSION + 1)
        )
        assert schema_version(db_path) == migrations.LATEST_VERSION
        hits = await store.search("oceanario")  # diacritics folded: Oceanário
        conversations = await store.list()
    finally:
        db.close()

    assert [(h.conversation_title, h.role) for h in hits] == [("Old trip", "assistant")]
    assert [c.title for c in conversations] == ["Old trip"]
    # The old conversation is answered by the default agent, in a session of its own.
    assert conversations[0].agent_id == query_file(db_path, "SELECT id FROM agents")[0][0]
    assert len(conversations[0].session_id or "") == 32
    backups = list_backups(db_path)
    assert len(backups) == 1
    assert backups[0].parent == backup_dir(db_path)
    assert schema_version(backups[0]) == 1
    assert query_file(backups[0], "SELECT role, content FROM messages ORDER BY id") == OLD_MESSAGES


@pytest.mark.asyncio
async def test_a_deleted_messages_id_is_never_given_to_another(db_path):
    make_v1_file(db_path)  # migrated: the rebuilt table keeps the old ids and stops reusing them
    db, store = open_store(db_path)
    try:
        old_ids = [m.id for m in await store.page(1)]
        last = await store.add_message(1, Role.ASSISTANT, "A reply to regenerate")
        await store.delete_messages_from(1, last.id)
        again = await store.add_message(1, Role.ASSISTANT, "The regenerated reply")
        hits = await store.search("regenerate")
    finally:
        db.close()

    assert [m[0] for m in query_file(db_path, "SELECT id FROM messages ORDER BY id")][
        :-1
    ] == old_ids
    assert again.id > last.id
    assert [h.message_id for h in hits] == [again.id]


@pytest.mark.asyncio
async def test_migrated_file_keeps_search_in_step_with_new_messages(db_path):
    make_v1_file(db_path)
    db, store = open_store(db_path)
    try:
        await store.add_message(1, Role.USER, "And the aquarium opening hours?")
        hits = await store.search("aquarium")
    finally:
        db.close()

    assert len(hits) == 2
    assert hits[0].snippet.startswith("And the")


def test_failed_migration_leaves_the_file_at_its_last_good_version(db_path):
    make_v1_file(db_path)
    # Something in the file that makes step 2 fail half-way.
    execute_file(db_path, "CREATE TABLE messages_fts (x)")

    with pytest.raises(DatabaseOpenError) as failure:
        Database(db_path)

    assert failure.value.kind is OpenFailure.MIGRATION_FAILED
    assert str(backup_dir(db_path)) in failure.value.message
    assert schema_version(db_path) == 1
    assert query_file(db_path, "SELECT role, content FROM messages ORDER BY id") == OLD_MESSAGES
    assert query_file(db_path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []
    assert len(list_backups(db_path)) == 1


def test_file_from_a_newer_app_is_refused_untouched(db_path):
    Database(db_path).close()
    future = migrations.LATEST_VERSION + 1
    execute_file(
        db_path,
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)",
        (future,),
    )

    with pytest.raises(DatabaseOpenError) as failure:
        Database(db_path)

    assert failure.value.kind is OpenFailure.NEWER_SCHEMA
    assert failure.value.path == db_path
    assert "newer version" in failure.value.message
    assert schema_version(db_path) == future
    assert list_backups(db_path) == []


def test_garbage_file_is_reported_corrupt_and_left_as_it_was(db_path):
    garbage = b"These are not the bytes of a SQLite database.\n" * 200
    db_path.write_bytes(garbage)

    with pytest.raises(DatabaseOpenError) as failure:
        Database(db_path)

    assert failure.value.kind is OpenFailure.CORRUPT
    assert str(db_path) in failure.value.message
    assert "damaged or is not a Mangaba database" in failure.value.message
    assert db_path.read_bytes() == garbage


# -- read-only files ------------------------------------------------------------------------------


@pytest.fixture
def make_read_only():
    """Make a file or folder unwritable in a way that holds for the user running the tests.

    Permission bits stop a normal user, but not root (CAP_DAC_OVERRIDE): as root, SQLite really
    can write a chmod 444 file, so that is no read-only condition at all. The immutable attribute
    (``chattr +i``) stops root too, and os.access() reports it, so it is used when running as root.
    """
    undo: list[tuple[str, Path, int]] = []

    def lock(path: Path) -> None:
        if os.geteuid() != 0:
            mode = path.stat().st_mode
            path.chmod(0o555 if path.is_dir() else 0o444)
            undo.append(("chmod", path, mode))
            return
        chattr = shutil.which("chattr")
        if chattr is None:
            pytest.skip("running as root, where permissions do not stop writes, without chattr")
        done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"running as root and this filesystem refuses chattr +i: {done.stderr}")
        undo.append(("chattr", path, 0))

    yield lock
    for how, path, mode in reversed(undo):
        if how == "chmod":
            path.chmod(mode)
        else:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def test_unwritable_data_folder_is_reported_read_only(tmp_path, make_read_only):
    folder = tmp_path / "data"
    folder.mkdir()
    make_read_only(folder)
    with pytest.raises(PermissionError):
        (folder / "probe").write_text("x")  # the condition is real for this user

    with pytest.raises(DatabaseOpenError) as failure:
        Database(folder / "mangaba.sqlite3")

    assert failure.value.kind is OpenFailure.READ_ONLY
    assert "cannot be written to" in failure.value.message
    assert not (folder / "mangaba.sqlite3").exists()


@pytest.mark.asyncio
async def test_unwritable_history_file_is_reported_read_only(db_path, make_read_only):
    db, store = open_store(db_path)
    try:
        conversation = await store.create(title="precious")
    finally:
        db.close()
    before = db_path.read_bytes()
    make_read_only(db_path)
    with pytest.raises(PermissionError):
        db_path.open("ab").close()

    with pytest.raises(DatabaseOpenError) as failure:
        Database(db_path)

    assert failure.value.kind is OpenFailure.READ_ONLY
    assert str(db_path) in failure.value.message
    assert db_path.read_bytes() == before
    assert query_file(
        db_path, "SELECT title FROM conversations WHERE id = ?", (conversation.id,)
    ) == [("precious",)]


# -- backups --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_restoring_a_backup_puts_it_in_place_and_keeps_the_replaced_file(db_path):
    db, store = open_store(db_path)
    try:
        conversation = await store.create()
        await store.add_message(conversation.id, Role.USER, "kept in the backup")
        copy = db.daily_backup()
        await store.add_message(conversation.id, Role.USER, "written after the backup")
    finally:
        db.close()
    assert copy is not None

    aside = restore_backup(db_path, copy)

    assert aside != db_path
    assert aside.exists()
    assert query_file(aside, "SELECT content FROM messages ORDER BY id") == [
        ("kept in the backup",),
        ("written after the backup",),
    ]
    db, store = open_store(db_path)
    try:
        assert [m.content for m in await store.page(conversation.id)] == ["kept in the backup"]
    finally:
        db.close()


def _pretend_made_days_ago(copy: Path, days: int, db_path: Path) -> Path:
    """Give a fresh daily backup the name and age it would have if made ``days`` ago."""
    when = time.time() - days * 24 * 3600
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    older = copy.with_name(f"{db_path.stem}-daily-{stamp}{db_path.suffix}")
    copy.rename(older)
    os.utime(older, (when, when))
    return older


@pytest.mark.asyncio
async def test_daily_backup_is_made_once_a_day_and_only_the_last_three_are_kept(db_path):
    db, store = open_store(db_path)
    try:
        conversation = await store.create()
        await store.add_message(conversation.id, Role.USER, "worth keeping")
        made = {}
        for days in (4, 3, 2, 1):
            copy = db.daily_backup()
            assert copy is not None
            made[days] = _pretend_made_days_ago(copy, days, db_path)
        today = db.daily_backup()
        assert db.daily_backup() is None  # already one today
    finally:
        db.close()

    daily = [p for p in list_backups(db_path) if "-daily-" in p.name]
    assert len(daily) == DAILY_BACKUPS_KEPT == 3
    assert daily == [today, made[1], made[2]]
    assert query_file(daily[0], "SELECT content FROM messages") == [("worth keeping",)]
