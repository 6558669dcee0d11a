"""Schema versions of the database, applied in order.

A table of applied migrations is simpler here than alembic: the app is the only writer of its
file, migrations run at start-up before anything else touches it, and each step is a short SQL
script that a test runs against a real file. Before any step runs on a file that already holds
data, the whole file is copied aside (see :func:`mangaba_desktop.core.store.database.backup`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


_CONVERSATIONS_AND_MESSAGES = """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            model TEXT,
            draft TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX ix_conversations_updated_at ON conversations(updated_at);

        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
            content TEXT NOT NULL,
            created_at REAL NOT NULL,
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'streaming', 'interrupted', 'queued', 'error')),
            model TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms REAL,
            time_to_first_token_ms REAL,
            error TEXT
        );
        CREATE INDEX ix_messages_conversation ON messages(conversation_id, id);
        CREATE INDEX ix_messages_status ON messages(status) WHERE status <> 'complete';
"""

# External-content FTS5: the text lives once, in messages; triggers keep the index in step,
# cascaded deletes of a conversation included.
_FULL_TEXT_SEARCH = """
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content,
            content='messages',
            content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END;
        INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "conversations and messages", _CONVERSATIONS_AND_MESSAGES),
    Migration(2, "full-text search over messages", _FULL_TEXT_SEARCH),
)
LATEST_VERSION = MIGRATIONS[-1].version


def ensure_migrations_table(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )


def current_version(db: sqlite3.Connection) -> int:
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return row[0] or 0


def migrate(db: sqlite3.Connection, target: int = LATEST_VERSION) -> list[Migration]:
    """Apply every migration above the file's version up to ``target``; return those applied.

    Each migration runs in its own transaction with its bookkeeping row, so a failure leaves the
    file at the last good version.
    """
    applied = []
    ensure_migrations_table(db)
    db.commit()
    version = current_version(db)
    for migration in MIGRATIONS:
        if migration.version <= version or migration.version > target:
            continue
        # One script per step: executescript() commits whatever is pending before it runs, so
        # the transaction must open and close inside the script itself.
        bookkeeping = (
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES "
            f"({migration.version}, '{migration.name}', {time.time()!r});"
        )
        try:
            db.executescript(f"BEGIN IMMEDIATE;\n{migration.sql}\n{bookkeeping}\nCOMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        applied.append(migration)
    return applied
