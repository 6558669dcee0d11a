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

# The triggers that keep the message index in step with the table.
_MESSAGE_FTS_TRIGGERS = """
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
"""

# External-content FTS5: the text lives once, in messages; triggers keep the index in step,
# cascaded deletes of a conversation included.
_FULL_TEXT_SEARCH = (
    """
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content,
            content='messages',
            content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        );
"""
    + _MESSAGE_FTS_TRIGGERS
    + """
        INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"""
)


# Agents, and the context store (the seed's "Context Storage Schema", plus expiry, a parent link
# for compressed memories, an archive flag for their sources and a digest that stops duplicates).
#
# The full-text index reads its text through a view that adds a ``scope`` column of tokens: one for
# the agent (``a<hex>``) and one for where the context applies: this agent in this session
# (``s<hex>``) or this agent everywhere (``g<hex>``). A retrieval scoped to an agent and a session
# is then answered inside the index instead of ranking every match in the store. Archived
# contexts get their tokens prefixed with ``x``: kept and browsable, never retrieved for a prompt.
def _scope(row: str) -> str:
    archived = f"(CASE WHEN {row}.archived THEN 'x' ELSE '' END)"
    return (
        f"{archived} || 'a' || lower(hex({row}.agent_id)) || ' ' || {archived} || "
        f"(CASE WHEN {row}.session_id IS NULL THEN 'g' || lower(hex({row}.agent_id)) "
        f"ELSE 's' || lower(hex({row}.agent_id || '/' || {row}.session_id)) END)"
    )


_AGENTS_AND_CONTEXTS = """
        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            persona TEXT NOT NULL DEFAULT '',
            model TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        INSERT INTO agents (id, name, persona, created_at, updated_at)
            VALUES ('mangaba_' || lower(hex(randomblob(4))), 'Mangaba',
                    'You are Mangaba, a helpful assistant. Answer clearly and briefly.',
                    (julianday('now') - 2440587.5) * 86400.0,
                    (julianday('now') - 2440587.5) * 86400.0);

        ALTER TABLE conversations ADD COLUMN agent_id TEXT
            REFERENCES agents(id) ON DELETE SET NULL;
        ALTER TABLE conversations ADD COLUMN session_id TEXT;
        UPDATE conversations SET agent_id = (SELECT id FROM agents LIMIT 1),
                                 session_id = lower(hex(randomblob(16)));
        CREATE UNIQUE INDEX ix_conversations_session ON conversations(session_id);
        CREATE INDEX ix_conversations_agent ON conversations(agent_id);

        ALTER TABLE messages ADD COLUMN request_id TEXT;
        ALTER TABLE messages ADD COLUMN context_ids TEXT;

        CREATE TABLE contexts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            session_id TEXT,
            content TEXT NOT NULL,
            context_type TEXT NOT NULL CHECK (context_type IN
                ('conversation', 'task', 'knowledge', 'memory', 'system', 'user_profile')),
            priority INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 1 AND 4),
            tags TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL,
            last_accessed REAL,
            access_count INTEGER NOT NULL DEFAULT 0,
            embeddings BLOB,
            expires_at REAL,
            parent_id INTEGER REFERENCES contexts(id) ON DELETE SET NULL,
            archived INTEGER NOT NULL DEFAULT 0,
            source_message_id INTEGER,
            digest TEXT NOT NULL
        );
        CREATE INDEX idx_agent_session ON contexts(agent_id, session_id);
        CREATE INDEX idx_priority ON contexts(priority DESC);
        CREATE INDEX idx_type ON contexts(context_type);
        CREATE INDEX ix_contexts_last_accessed ON contexts(last_accessed);
        CREATE INDEX ix_contexts_access_count ON contexts(access_count);
        CREATE INDEX ix_contexts_digest ON contexts(agent_id, digest);
        CREATE INDEX ix_contexts_expires ON contexts(expires_at) WHERE expires_at IS NOT NULL;
        CREATE INDEX ix_contexts_parent ON contexts(parent_id) WHERE parent_id IS NOT NULL;
        CREATE INDEX ix_contexts_source ON contexts(source_message_id)
            WHERE source_message_id IS NOT NULL;

        CREATE VIEW contexts_indexed AS
            SELECT id, content, tags, {scope_contexts} AS scope FROM contexts;
        CREATE VIRTUAL TABLE contexts_fts USING fts5(
            content, tags, scope,
            content='contexts_indexed',
            content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER contexts_fts_insert AFTER INSERT ON contexts BEGIN
            INSERT INTO contexts_fts(rowid, content, tags, scope)
                VALUES (new.id, new.content, new.tags, {scope_new});
        END;
        CREATE TRIGGER contexts_fts_delete AFTER DELETE ON contexts BEGIN
            INSERT INTO contexts_fts(contexts_fts, rowid, content, tags, scope)
                VALUES ('delete', old.id, old.content, old.tags, {scope_old});
        END;
        CREATE TRIGGER contexts_fts_update
            AFTER UPDATE OF content, tags, agent_id, session_id, archived ON contexts BEGIN
            INSERT INTO contexts_fts(contexts_fts, rowid, content, tags, scope)
                VALUES ('delete', old.id, old.content, old.tags, {scope_old});
            INSERT INTO contexts_fts(rowid, content, tags, scope)
                VALUES (new.id, new.content, new.tags, {scope_new});
        END;
""".format(scope_contexts=_scope("contexts"), scope_new=_scope("new"), scope_old=_scope("old"))


# Prefix indexes for two- and three-letter prefixes: search as you type matches the last word as
# a prefix, and a short prefix of a big history used to walk most of the term index.
_SEARCH_PREFIXES = """
        DROP TABLE messages_fts;
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content,
            content='messages',
            content_rowid='id',
            tokenize='unicode61 remove_diacritics 2',
            prefix='2 3'
        );
        INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"""


# Message ids are never reused: without AUTOINCREMENT a regenerated reply could take the id of
# the one it replaced, and a search hit or a reply's contexts could point at another message.
# The table is rebuilt with the same ids; the index triggers are dropped first, so the copy does
# not touch the full-text index, whose rowids stay right.
_MESSAGE_IDS_NEVER_REUSED = (
    """
        DROP TRIGGER messages_fts_insert;
        DROP TRIGGER messages_fts_delete;
        DROP TRIGGER messages_fts_update;
        CREATE TABLE messages_rebuilt (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
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
            error TEXT,
            request_id TEXT,
            context_ids TEXT
        );
        INSERT INTO messages_rebuilt SELECT
            id, conversation_id, role, content, created_at, status, model, prompt_tokens,
            completion_tokens, latency_ms, time_to_first_token_ms, error, request_id, context_ids
            FROM messages;
        DROP TABLE messages;
        ALTER TABLE messages_rebuilt RENAME TO messages;
        CREATE INDEX ix_messages_conversation ON messages(conversation_id, id);
        CREATE INDEX ix_messages_status ON messages(status) WHERE status <> 'complete';
"""
    + _MESSAGE_FTS_TRIGGERS
)


# What each reply cost and who answered it: the provider (after a fallback, not always the one
# asked), its price from litellm's table, and a notice for the user (a fallback was used).
_REPLY_ACCOUNTING = """
        ALTER TABLE messages ADD COLUMN provider TEXT;
        ALTER TABLE messages ADD COLUMN cost_usd REAL;
        ALTER TABLE messages ADD COLUMN notice TEXT;
"""


# The agent network: every message between agents (for the timeline and replay) and the links
# between agents, each with the conversation where one asks the other. Senders and receivers may
# be remote A2A agents, so they are plain ids, not references to ``agents``.
_AGENT_NETWORK = """
        CREATE TABLE agent_messages (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL
                CHECK (type IN ('request', 'response', 'broadcast', 'notification', 'error')),
            sender TEXT NOT NULL,
            receiver TEXT NOT NULL,
            action TEXT,
            content TEXT NOT NULL,
            created_at REAL NOT NULL,
            priority INTEGER NOT NULL DEFAULT 2,
            ttl_s REAL,
            correlation_id TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL,
            error TEXT,
            finished_at REAL
        );
        CREATE INDEX ix_agent_messages_time ON agent_messages(created_at);
        CREATE INDEX ix_agent_messages_correlation ON agent_messages(correlation_id)
            WHERE correlation_id IS NOT NULL;
        CREATE TABLE agent_links (
            source TEXT NOT NULL,
            target TEXT NOT NULL,
            created_at REAL NOT NULL,
            conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
            PRIMARY KEY (source, target)
        );
"""

# A caller that keeps several threads with one agent (an A2A context id each) gets a
# conversation per thread.
_AGENT_THREADS = """
        CREATE TABLE agent_threads (
            source TEXT NOT NULL,
            target TEXT NOT NULL,
            thread TEXT NOT NULL,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            PRIMARY KEY (source, target, thread)
        );
        CREATE INDEX ix_agent_threads_conversation ON agent_threads(conversation_id);
"""


# The Performance pane's history: one row a minute per metric and labels (agent, provider, model;
# '' when a metric has none), kept for a week. The percentiles are exact for the row; the
# histogram (JSON, log-spaced buckets) lets rows be merged into longer steps or across labels.
_METRIC_MINUTES = """
        CREATE TABLE metric_minutes (
            minute INTEGER NOT NULL,
            metric TEXT NOT NULL,
            agent TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            count INTEGER NOT NULL,
            sum REAL NOT NULL,
            min REAL NOT NULL,
            max REAL NOT NULL,
            p50 REAL NOT NULL,
            p95 REAL NOT NULL,
            p99 REAL NOT NULL,
            histogram TEXT NOT NULL,
            PRIMARY KEY (minute, metric, agent, provider, model)
        ) WITHOUT ROWID;
        CREATE INDEX ix_metric_minutes_metric ON metric_minutes(metric, minute);
"""


# Security-relevant actions, appended and never changed: an update is refused, and a delete only
# goes through for entries older than 30 days (pruning by age), whatever the code asks.
_AUDIT_LOG = """
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX ix_audit_log_time ON audit_log(time);
        CREATE INDEX ix_audit_log_action ON audit_log(action, id);
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only');
        END;
        CREATE TRIGGER audit_log_pruned_by_age_only BEFORE DELETE ON audit_log
            WHEN old.time > (julianday('now') - 2440587.5) * 86400.0 - 30 * 86400.0 BEGIN
            SELECT RAISE(ABORT, 'audit entries are kept for at least 30 days');
        END;
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "conversations and messages", _CONVERSATIONS_AND_MESSAGES),
    Migration(2, "full-text search over messages", _FULL_TEXT_SEARCH),
    Migration(3, "agents and the context store", _AGENTS_AND_CONTEXTS),
    Migration(4, "prefix indexes for message search", _SEARCH_PREFIXES),
    Migration(5, "message ids never reused", _MESSAGE_IDS_NEVER_REUSED),
    Migration(6, "tokens, cost and provider per reply", _REPLY_ACCOUNTING),
    Migration(7, "the agent network: messages and links", _AGENT_NETWORK),
    Migration(8, "a conversation per caller thread", _AGENT_THREADS),
    Migration(9, "metrics at one-minute resolution", _METRIC_MINUTES),
    Migration(10, "audit log", _AUDIT_LOG),
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
