"""The context store: what agents remember, on the same SQLite file as the chat history.

Writes go through the database's writer thread; reads and searches through its readers. Every
change is published on the bus as ``contexts.changed`` so that views can refresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlmodel import Session, col, delete, func, select, update

from .. import events
from ..events import EventBus
from ..store.database import Database
from ..store.models import Context, ContextType, Priority
from ..store.rows import update_row
from . import retrieval
from .embeddings import (
    MIN_SIMILARITY,
    SIMILARITY_MARGIN,
    VECTOR_HITS,
    VECTOR_POOL,
    Embedder,
    fuse,
    pack,
    unpack,
)
from .passages import (
    InvalidContext,
    clean_content,
    digest,
    split_passages,
    tags_json,
)
from .retrieval import RetrievedContext

log = logging.getLogger(__name__)

DEFAULT_CAP_PER_AGENT = 50_000
"""Live contexts an agent keeps before the least valuable LOW and MEDIUM ones are evicted."""

MAX_PINNED_IN_PROMPT = 5


@dataclass
class ContextFilter:
    """What the browser shows; every field narrows, ``None`` means any."""

    types: frozenset[str] | None = None
    priorities: frozenset[int] | None = None
    tag: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    """A session id, or :data:`AGENT_WIDE` for contexts that belong to no session."""
    text: str = ""
    ids: frozenset[int] | None = None
    include_archived: bool = True


AGENT_WIDE = "\0agent-wide"

SORT_COLUMNS = {
    "id": "c.id",
    "created_at": "c.id",
    "context_type": "c.context_type",
    "priority": "c.priority",
    "tags": "c.tags",
    "agent_id": "c.agent_id",
    "session_id": "c.session_id",
    "last_accessed": "c.last_accessed",
    "access_count": "c.access_count",
    "content": "c.content",
}


@dataclass
class SessionInfo:
    session_id: str
    agent_id: str
    contexts: int
    last_activity: float
    title: str | None = None


@dataclass
class ImportResult:
    added: int = 0
    skipped: int = 0
    agents_added: list[str] = field(default_factory=list)


class ContextStore:
    """Add, search, prioritise, evict, compress and move contexts.

    Args:
        database: the open database.
        bus: where ``contexts.changed`` is published.
        cap_per_agent: live contexts kept per agent before eviction.
    """

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        *,
        cap_per_agent: int = DEFAULT_CAP_PER_AGENT,
        embedder: Embedder | None = None,
    ) -> None:
        self.db = database
        self.bus = bus
        self.cap_per_agent = cap_per_agent
        self.embedder = embedder
        """Adds vector similarity to retrieval when set (see :mod:`.embeddings`)."""
        self._indexing: set[asyncio.Task[int]] = set()
        self._sources_of_deleted: dict[int, list[int]] = {}
        """Memory id → the sources it summarised, for an undo of the memory's deletion."""

    def notify_changed(self, **payload: Any) -> None:
        self.bus.publish(events.CONTEXTS_CHANGED, **payload)

    # -- adding --------------------------------------------------------------------------------

    async def add(
        self,
        agent_id: str,
        content: str,
        context_type: str = ContextType.KNOWLEDGE,
        *,
        session_id: str | None = None,
        priority: int = Priority.LOW,
        tags: str | Iterable[str] | None = None,
        expires_at: float | None = None,
    ) -> Context:
        """Store one context; the same text for the same agent and session is stored once
        (the existing context is returned). Raises :class:`InvalidContext`."""
        added = await self.add_many(
            agent_id,
            [clean_content(content)],
            context_type,
            session_id=session_id,
            priority=priority,
            tags=tags,
            expires_at=expires_at,
        )
        return added[0]

    async def add_text(
        self,
        agent_id: str,
        text_: str,
        context_type: str = ContextType.KNOWLEDGE,
        *,
        session_id: str | None = None,
        priority: int = Priority.MEDIUM,
        tags: str | Iterable[str] | None = None,
    ) -> list[Context]:
        """Split ``text_`` into passages and store each (pasted text, an imported file)."""
        passages = await asyncio.to_thread(split_passages, text_)
        if not passages:
            raise InvalidContext("There is no text to add.")
        return await self.add_many(
            agent_id, passages, context_type, session_id=session_id, priority=priority, tags=tags
        )

    async def add_many(
        self,
        agent_id: str,
        contents: Sequence[str],
        context_type: str = ContextType.KNOWLEDGE,
        *,
        session_id: str | None = None,
        priority: int = Priority.LOW,
        tags: str | Iterable[str] | None = None,
        expires_at: float | None = None,
    ) -> list[Context]:
        context_type = check_type(context_type)
        priority = check_priority(priority)
        tag_text = tags_json(tags)
        cleaned = [clean_content(c) for c in contents]

        def job(session: Session) -> tuple[list[Context], list[int], int]:
            now = time.time()
            added: list[Context] = []
            new_ids: list[int] = []
            for content in cleaned:
                candidate = Context(
                    agent_id=agent_id,
                    session_id=session_id,
                    content=content,
                    context_type=context_type,
                    priority=priority,
                    tags=tag_text,
                    created_at=now,
                    expires_at=expires_at,
                    digest=digest(context_type, content),
                )
                stored = insert_context(session, candidate)
                added.append(stored)
                if stored is candidate and stored.id is not None:
                    new_ids.append(stored.id)
            # The cap holds however contexts arrive (a big import included).
            return added, new_ids, evict_contexts(session, agent_id, cap)

        cap = self.cap_per_agent
        added, new_ids, evicted = await self.db.write(job)
        if new_ids:
            self.bus.publish(
                events.CONTEXT_ADDED,
                agent_id=agent_id,
                session_id=session_id,
                context_type=context_type,
                context_ids=new_ids,
            )
        self.notify_changed(added=[c.id for c in added], agent_id=agent_id, evicted=evicted)
        if self.embedder is not None:
            self.index_soon(ids=[c.id for c in added if c.id is not None])
        return added

    # -- reading -------------------------------------------------------------------------------

    async def get(self, context_id: int) -> Context | None:
        return await self.db.read(lambda s: s.get(Context, context_id))

    async def retrieve(
        self,
        query: str,
        agent_id: str,
        session_id: str | None,
        *,
        limit: int = 8,
        exclude_message_ids: Iterable[int] = (),
        touch: bool = True,
    ) -> list[RetrievedContext]:
        """The contexts most relevant to ``query`` for this agent in this session (and the
        agent's session-less knowledge), best first, pinned (CRITICAL) ones always included.

        Contexts made from ``exclude_message_ids`` (the turns already in the prompt) are left
        out. Their ``access_count`` and ``last_accessed`` are updated unless ``touch`` is false.
        """
        excluded = json.dumps(sorted(set(exclude_message_ids)))
        vector: tuple[str, np.ndarray] | None = None
        embedder = self.embedder
        if embedder is not None and query.strip():
            try:
                vector = (embedder.name, (await embedder.embed([query]))[0])
            except Exception as exc:  # the words alone still find what they find
                log.warning("embedding the query with %s failed: %s", embedder.name, exc)
        found = await self.db.read(
            lambda s: retrieve_contexts(s, query, agent_id, session_id, limit, excluded, vector)
        )
        if touch and found:
            ids = [r.context.id for r in found if r.context.id is not None]
            self.db.write_soon(lambda s: touch_contexts(s, ids, time.time()))
        return found

    async def summary(self, agent_id: str, session_id: str | None, per_type: int = 5) -> str:
        """The session's recent contexts grouped by type (``get_context_summary``)."""

        def job(session: Session) -> str:
            groups: list[str] = []
            for context_type in ContextType:
                conditions = [
                    Context.agent_id == agent_id,
                    Context.context_type == context_type.value,
                    col(Context.archived).is_(False),
                ]
                if session_id is not None:
                    conditions.append(
                        (Context.session_id == session_id) | (col(Context.session_id).is_(None))
                    )
                count = session.exec(
                    select(func.count()).select_from(Context).where(*conditions)
                ).one()
                if not count:
                    continue
                rows = session.exec(
                    select(Context)
                    .where(*conditions)
                    .order_by(col(Context.id).desc())
                    .limit(per_type)
                ).all()
                lines = [f"{context_type.value.replace('_', ' ').title()} ({count}):"]
                for row in rows:
                    preview = " ".join(row.content.split())
                    if len(preview) > 120:
                        preview = preview[:119] + "…"
                    lines.append(f"  • {preview}")
                groups.append("\n".join(lines))
            return "\n\n".join(groups) or "Nothing is remembered in this session yet."

        return await self.db.read(job)

    # -- changing ------------------------------------------------------------------------------

    async def update(
        self,
        context_id: int,
        *,
        content: str | None = None,
        tags: str | Iterable[str] | None = None,
        priority: int | None = None,
        context_type: str | None = None,
    ) -> Context:
        fields: dict[str, Any] = {}
        if content is not None:
            fields["content"] = clean_content(content)
        if tags is not None:
            fields["tags"] = tags_json(tags)
        if priority is not None:
            fields["priority"] = check_priority(priority)
        if context_type is not None:
            fields["context_type"] = check_type(context_type)

        def job(session: Session) -> Context:
            context = update_row(session, Context, context_id, **fields)
            context.digest = digest(context.context_type, context.content)
            session.flush()
            return context

        context = await self.db.write(job)
        self.notify_changed(updated=[context_id], agent_id=context.agent_id)
        return context

    async def set_priority(self, ids: Iterable[int], priority: int) -> int:
        priority = check_priority(priority)
        wanted = list(ids)

        def job(session: Session) -> int:
            result = session.exec(
                update(Context).where(col(Context.id).in_(wanted)).values(priority=priority)
            )
            return int(result.rowcount)

        changed = await self.db.write(job)
        self.notify_changed(updated=wanted)
        return changed

    async def delete(self, ids: Iterable[int]) -> list[Context]:
        """Delete contexts; returns them as they were, for :meth:`restore` (undo).

        The sources of a deleted memory become live contexts again (the summary that stood for
        them is gone); :meth:`restore` of the memory archives them under it once more.
        """
        wanted = list(ids)

        def job(session: Session) -> tuple[list[Context], dict[int, list[int]]]:
            rows = list(session.exec(select(Context).where(col(Context.id).in_(wanted))).all())
            kept = [Context.model_validate(r.model_dump()) for r in rows]
            orphans = session.exec(
                select(Context.id, Context.parent_id)
                .where(col(Context.parent_id).in_(wanted))
                .where(col(Context.id).not_in(wanted))
            ).all()
            sources: dict[int, list[int]] = {}
            for source_id, parent_id in orphans:
                if source_id is not None and parent_id is not None:
                    sources.setdefault(parent_id, []).append(source_id)
            if sources:
                session.exec(
                    update(Context)
                    .where(col(Context.id).in_([i for ids in sources.values() for i in ids]))
                    .values(archived=False, parent_id=None)
                )
            session.exec(delete(Context).where(col(Context.id).in_(wanted)))
            return kept, sources

        removed, sources = await self.db.write(job)
        self._sources_of_deleted.update(sources)
        self.notify_changed(removed=[c.id for c in removed])
        return removed

    async def restore(self, contexts: Sequence[Context]) -> int:
        """Put deleted contexts back with their ids (undo of :meth:`delete`)."""
        rows = [Context.model_validate(c.model_dump()) for c in contexts]
        ids = {row.id for row in rows}
        # A memory goes in before the sources that point at it.
        rows.sort(key=lambda row: row.parent_id is not None and row.parent_id in ids)
        relink = {i: self._sources_of_deleted.pop(i) for i in ids if i in self._sources_of_deleted}

        def job(session: Session) -> int:
            for row in rows:
                if session.get(Context, row.id) is None:
                    session.add(row)
                    session.flush()
            for memory_id, source_ids in relink.items():
                session.exec(
                    update(Context)
                    .where(col(Context.id).in_(source_ids))
                    .values(archived=True, parent_id=memory_id)
                )
            return len(rows)

        restored = await self.db.write(job)
        self.notify_changed(added=[c.id for c in rows])
        return restored

    async def delete_session(self, session_id: str) -> int:
        def job(session: Session) -> int:
            result = session.exec(delete(Context).where(col(Context.session_id) == session_id))
            return int(result.rowcount)

        removed = await self.db.write(job)
        self.notify_changed(session_id=session_id)
        return removed

    async def delete_for_messages(self, message_ids: Sequence[int]) -> int:
        """Forget the contexts made from messages that were deleted (regenerate, edit)."""
        wanted = list(message_ids)

        def job(session: Session) -> int:
            result = session.exec(delete(Context).where(col(Context.source_message_id).in_(wanted)))
            return int(result.rowcount)

        removed = await self.db.write(job)
        if removed:
            self.notify_changed(removed_for_messages=wanted)
        return removed

    # -- upkeep --------------------------------------------------------------------------------

    async def evict(self, agent_id: str) -> int:
        """Keep the agent at its cap by deleting the least valuable LOW and MEDIUM contexts:
        lowest priority, least used, longest untouched first. HIGH and CRITICAL are never
        evicted, even when the agent stays over the cap."""
        cap = self.cap_per_agent
        removed = await self.db.write(lambda s: evict_contexts(s, agent_id, cap))
        if removed:
            self.notify_changed(evicted=removed, agent_id=agent_id)
        return removed

    async def cleanup_expired(self, now: float | None = None) -> int:
        """Delete contexts whose expiry has passed."""
        moment = time.time() if now is None else now

        def job(session: Session) -> int:
            result = session.exec(
                delete(Context)
                .where(col(Context.expires_at).is_not(None))
                .where(col(Context.expires_at) <= moment)
            )
            return int(result.rowcount)

        removed = await self.db.write(job)
        if removed:
            self.notify_changed(expired=removed)
        return removed

    async def live_count(self, agent_id: str, session_id: str | None = None, **where: Any) -> int:
        def job(session: Session) -> int:
            query = (
                select(func.count())
                .select_from(Context)
                .where(Context.agent_id == agent_id)
                .where(col(Context.archived).is_(False))
            )
            if session_id is not None:
                query = query.where(Context.session_id == session_id)
            for name, value in where.items():
                query = query.where(getattr(Context, name) == value)
            return int(session.exec(query).one())

        return await self.db.read(job)

    async def sessions(self, agent_id: str | None = None) -> list[SessionInfo]:
        """Sessions that hold contexts, most recent first, with their chat's title if any."""

        def job(session: Session) -> list[SessionInfo]:
            sql = """
                SELECT c.session_id, c.agent_id, count(*), max(c.created_at), v.title
                FROM contexts AS c LEFT JOIN conversations AS v ON v.session_id = c.session_id
                WHERE c.session_id IS NOT NULL {where}
                GROUP BY c.session_id, c.agent_id
                ORDER BY max(c.created_at) DESC
            """
            params: dict[str, Any] = {}
            where = ""
            if agent_id is not None:
                where = "AND c.agent_id = :agent"
                params["agent"] = agent_id
            rows = session.connection().execute(text(sql.format(where=where)), params).all()
            return [SessionInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]

        return await self.db.read(job)

    # -- embeddings ------------------------------------------------------------------------------

    async def index_embeddings(
        self,
        *,
        ids: Sequence[int] | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: int = 5000,
        batch: int = 32,
    ) -> int:
        """Give live contexts an embedding from the current embedder (newest first): those in
        ``ids``, or of an agent (and session), or any; returns how many were embedded."""
        embedder = self.embedder
        if embedder is None:
            return 0
        header = embedding_header(embedder.name)
        done = 0
        while done < limit:
            size = min(batch, limit - done)
            todo = await self.db.read(
                lambda s, n=size: missing_embeddings(s, header, ids, agent_id, session_id, n)
            )
            if not todo:
                break
            vectors = await embedder.embed([content for _, content in todo])
            blobs = [(pack(embedder.name, v), i) for (i, _), v in zip(todo, vectors, strict=True)]
            await self.db.write(lambda s, rows=blobs: store_embeddings(s, rows))
            done += len(todo)
        return done

    def index_soon(self, **scope: Any) -> None:
        """Embed in the background (after a turn, an import)."""
        task = asyncio.ensure_future(self.index_embeddings(**scope))
        self._indexing.add(task)
        task.add_done_callback(self._indexed)

    def _indexed(self, task: asyncio.Task[int]) -> None:
        self._indexing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("embedding contexts failed: %s", task.exception())

    async def wait_indexing(self) -> None:
        while self._indexing:
            await asyncio.gather(*list(self._indexing), return_exceptions=True)

    async def stop_indexing(self) -> None:
        for task in list(self._indexing):
            task.cancel()
        await asyncio.gather(*self._indexing, return_exceptions=True)

    # -- browsing (the Context pane) -----------------------------------------------------------

    async def count(self, where: ContextFilter) -> int:
        return await self.db.read(lambda s: count_contexts(s, where))

    async def page(
        self,
        where: ContextFilter,
        *,
        sort: str = "id",
        descending: bool = True,
        offset: int = 0,
        limit: int = 200,
    ) -> list[Context]:
        return await self.db.read(
            lambda s: page_contexts(s, where, sort, descending, offset, limit)
        )


# -- jobs (run on the database's threads) ---------------------------------------------------


def check_type(context_type: str) -> str:
    try:
        return ContextType(context_type).value
    except ValueError:
        kinds = ", ".join(t.value for t in ContextType)
        raise InvalidContext(
            f"“{context_type}” is not a context type; use one of {kinds}."
        ) from None


def check_priority(priority: int) -> int:
    try:
        return int(Priority(int(priority)))
    except (ValueError, TypeError):
        raise InvalidContext(
            f"“{priority}” is not a priority; use 1 (low), 2 (medium), 3 (high) or 4 (critical)."
        ) from None


def insert_context(session: Session, context: Context) -> Context:
    """Add ``context`` unless the same agent and session already hold the same text; return
    the stored one."""
    existing = session.exec(
        select(Context)
        .where(Context.agent_id == context.agent_id)
        .where(Context.digest == context.digest)
        .where(
            (Context.session_id == context.session_id)
            if context.session_id is not None
            else col(Context.session_id).is_(None)
        )
    ).first()
    if existing is not None:
        return existing
    session.add(context)
    session.flush()
    return context


_TERM_HITS = "SELECT rowid FROM contexts_fts WHERE contexts_fts MATCH ? ORDER BY rowid DESC LIMIT ?"
_SCOPE_SIZE = "SELECT count(*) FROM contexts_fts WHERE contexts_fts MATCH ?"
_CANDIDATE_ROWS = """
    SELECT c.id, length(c.content) FROM contexts AS c
    WHERE c.id IN (SELECT value FROM json_each(?))
      AND (c.expires_at IS NULL OR c.expires_at > ?)
      AND (c.source_message_id IS NULL
           OR c.source_message_id NOT IN (SELECT value FROM json_each(?)))
"""

_PINNED = """
    SELECT id FROM contexts
    WHERE agent_id = ? AND priority = 4 AND archived = 0
      AND (session_id = ? OR session_id IS NULL)
      AND (expires_at IS NULL OR expires_at > ?)
    ORDER BY id DESC
    LIMIT ?
"""


def raw_connection(session: Session) -> sqlite3.Connection:
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def relevance_in_scope(
    connection: sqlite3.Connection, terms: list[str], scope: str
) -> dict[int, float]:
    """BM25-style relevance of the contexts in ``scope`` that hold any of ``terms``.

    Each word's weight (its inverse document frequency) is measured among the contexts in
    scope, not the whole store: FTS5's own ``bm25()`` counts every word over the entire index
    on every query, which for common words costs tens of milliseconds at a million contexts.
    Here each word is one index lookup intersected with the scope's token, so the cost
    follows the size of the session.
    """
    in_scope = f"scope : ({scope})"
    hits: dict[str, list[int]] = {}
    for term in terms:
        match = f"{in_scope} AND " + (retrieval.terms_expression([term]) or "")
        rows = connection.execute(_TERM_HITS, (match, retrieval.HITS_PER_TERM))
        found = [row[0] for row in rows]
        if found:
            hits[term] = found
    if not hits:
        return {}
    size = int(connection.execute(_SCOPE_SIZE, (in_scope,)).fetchone()[0])
    relevance: dict[int, float] = {}
    for ids in hits.values():
        weight = retrieval.term_weight(len(ids), max(size, len(ids)))
        for context_id in ids:
            relevance[context_id] = relevance.get(context_id, 0.0) + weight
    return relevance


def retrieve_contexts(
    session: Session,
    query: str,
    agent_id: str,
    session_id: str | None,
    limit: int,
    excluded: str = "[]",
    vector: tuple[str, np.ndarray] | None = None,
) -> list[RetrievedContext]:
    now = time.time()
    # The plain sqlite3 connection: these statements return thousands of ids, and going
    # through the ORM's result rows would cost more than the searching.
    connection = raw_connection(session)
    session_token, agent_wide = retrieval.scope_tokens(agent_id, session_id)
    scope = agent_wide if session_token == agent_wide else f"{session_token} OR {agent_wide}"
    pinned_ids = [
        row[0]
        for row in connection.execute(_PINNED, (agent_id, session_id, now, MAX_PINNED_IN_PROMPT))
    ]
    relevance = relevance_in_scope(connection, retrieval.query_terms(query), scope)
    best = sorted(relevance, key=lambda i: (relevance[i], i), reverse=True)
    best = best[: retrieval.CANDIDATES + len(json.loads(excluded))]
    allowed: set[int] = set()
    if best:
        lengths = dict(connection.execute(_CANDIDATE_ROWS, (json.dumps(best), now, excluded)))
        allowed = set(lengths)
        relevance = retrieval.normalise_length(relevance, lengths)
    fused: dict[int, float] | None = None
    if vector is not None:
        similar = most_similar(connection, vector, agent_id, session_id, allowed, now, excluded)
        lexical = sorted(allowed, key=lambda i: (relevance.get(i, 0.0), i), reverse=True)
        fused = fuse(lexical, similar)
        allowed |= set(similar)
    wanted = allowed | set(pinned_ids)
    if not wanted:
        return []
    loaded = session.exec(select(Context).where(col(Context.id).in_(wanted))).all()
    by_id = {row.id: row for row in loaded}
    pinned = [
        RetrievedContext(by_id[i], score=0.0, relevance=relevance.get(i, 0.0), pinned=True)
        for i in pinned_ids
        if i in by_id
    ]
    strength = fused if fused is not None else relevance
    ranked = sorted(
        (
            RetrievedContext(
                by_id[i], retrieval.score(strength[i], by_id[i], now), relevance.get(i, 0.0)
            )
            for i in allowed
            if i in by_id and i not in pinned_ids
        ),
        key=lambda r: (r.score, r.context.id or 0),
        reverse=True,
    )
    return pinned + ranked[: max(0, limit - len(pinned))]


_RECENT_IN_SCOPE = """
    SELECT id, embeddings FROM contexts
    WHERE agent_id = ? AND archived = 0 AND (session_id = ? OR session_id IS NULL)
      AND embeddings IS NOT NULL
      AND (expires_at IS NULL OR expires_at > ?)
      AND (source_message_id IS NULL
           OR source_message_id NOT IN (SELECT value FROM json_each(?)))
    ORDER BY id DESC
    LIMIT ?
"""
_EMBEDDINGS_OF = "SELECT id, embeddings FROM contexts WHERE id IN (SELECT value FROM json_each(?))"


def most_similar(
    connection: sqlite3.Connection,
    vector: tuple[str, np.ndarray],
    agent_id: str,
    session_id: str | None,
    candidates: set[int],
    now: float,
    excluded: str,
) -> list[int]:
    """Ids of the contexts most similar to the query, best first: among the word-matched
    candidates and the newest contexts in scope, those embedded by the same model."""
    model, query = vector
    rows = list(
        connection.execute(_RECENT_IN_SCOPE, (agent_id, session_id, now, excluded, VECTOR_POOL))
    )
    if candidates:
        rows += connection.execute(_EMBEDDINGS_OF, (json.dumps(sorted(candidates)),)).fetchall()
    ids: list[int] = []
    vectors: list[np.ndarray] = []
    for context_id, blob in rows:
        unpacked = unpack(blob, model)
        if unpacked is not None and unpacked.shape == query.shape and context_id not in ids:
            ids.append(context_id)
            vectors.append(unpacked)
    if not ids:
        return []
    similarity = np.stack(vectors) @ query
    order = np.argsort(-similarity)[:VECTOR_HITS]
    floor = max(MIN_SIMILARITY, float(similarity[order[0]]) - SIMILARITY_MARGIN)
    return [ids[i] for i in order if similarity[i] >= floor]


def embedding_header(model: str) -> bytes:
    return pack(model, np.zeros(0, dtype=np.float32))


def missing_embeddings(
    session: Session,
    header: bytes,
    ids: Sequence[int] | None,
    agent_id: str | None,
    session_id: str | None,
    limit: int,
) -> list[tuple[int, str]]:
    """Live contexts without an embedding from the model of ``header``, newest first."""
    clauses = ["archived = 0", "(embeddings IS NULL OR substr(embeddings, 1, ?) != ?)"]
    params: list[Any] = [len(header), header]
    if ids is not None:
        clauses.append("id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(list(ids)))
    if agent_id is not None:
        clauses.append("agent_id = ?")
        params.append(agent_id)
    if session_id is not None:
        clauses.append("session_id = ?")
        params.append(session_id)
    sql = f"SELECT id, content FROM contexts WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?"
    return list(raw_connection(session).execute(sql, (*params, limit)))


def store_embeddings(session: Session, rows: list[tuple[bytes, int]]) -> None:
    raw_connection(session).executemany("UPDATE contexts SET embeddings = ? WHERE id = ?", rows)


def touch_contexts(session: Session, ids: list[int], now: float) -> None:
    session.exec(
        update(Context)
        .where(col(Context.id).in_(ids))
        .values(access_count=Context.access_count + 1, last_accessed=now)
    )


def evict_contexts(session: Session, agent_id: str, cap: int) -> int:
    live = session.exec(
        select(func.count())
        .select_from(Context)
        .where(Context.agent_id == agent_id)
        .where(col(Context.archived).is_(False))
    ).one()
    excess = int(live) - cap
    if excess <= 0:
        return 0
    victims = session.exec(
        select(Context.id)
        .where(Context.agent_id == agent_id)
        .where(col(Context.archived).is_(False))
        .where(col(Context.priority).in_([Priority.LOW, Priority.MEDIUM]))
        .order_by(
            col(Context.priority),
            col(Context.access_count),
            func.coalesce(Context.last_accessed, Context.created_at),
            col(Context.id),
        )
        .limit(excess)
    ).all()
    if not victims:
        return 0
    chosen = list(victims)
    # An evicted memory takes its archived sources with it: they were only kept for it.
    session.exec(
        delete(Context)
        .where(col(Context.parent_id).in_(chosen))
        .where(col(Context.archived).is_(True))
    )
    session.exec(delete(Context).where(col(Context.id).in_(chosen)))
    return len(chosen)


def _filter_sql(where: ContextFilter) -> tuple[str, str, dict[str, Any]]:
    """FROM and WHERE clauses for a browser filter, and their parameters."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    source = "contexts AS c"
    match_parts: list[str] = []
    if where.text.strip():
        terms = retrieval.query_terms(where.text)
        words = _all_words_expression(terms)
        if words:
            match_parts.append(words)
    tag = where.tag.strip().lstrip("#").lower() if where.tag else ""
    if tag:
        # The index narrows the rows fast; the JSON test keeps whole tags only ("finance"
        # is not "personal-finance", whose words the tokenizer splits).
        words = retrieval.query_terms(tag)
        if words:
            match_parts.append(
                "tags : (" + " AND ".join('"' + w.replace('"', '""') + '"' for w in words) + ")"
            )
        clauses.append("EXISTS (SELECT 1 FROM json_each(c.tags) WHERE value = :tag)")
        params["tag"] = tag
    if match_parts:
        source = "contexts_fts JOIN contexts AS c ON c.id = contexts_fts.rowid"
        clauses.append("contexts_fts MATCH :match")
        params["match"] = " AND ".join(match_parts)
    if where.types:
        names = sorted(where.types)
        clauses.append("c.context_type IN (" + ", ".join(f":t{i}" for i in range(len(names))) + ")")
        params.update({f"t{i}": name for i, name in enumerate(names)})
    if where.priorities:
        levels = sorted(where.priorities)
        clauses.append("c.priority IN (" + ", ".join(str(int(p)) for p in levels) + ")")
    if where.agent_id is not None:
        clauses.append("c.agent_id = :agent")
        params["agent"] = where.agent_id
    if where.session_id == AGENT_WIDE:
        clauses.append("c.session_id IS NULL")
    elif where.session_id is not None:
        clauses.append("c.session_id = :session")
        params["session"] = where.session_id
    if where.ids is not None:
        clauses.append("c.id IN (SELECT value FROM json_each(:ids))")
        params["ids"] = json.dumps(sorted(where.ids))
    if not where.include_archived:
        clauses.append("c.archived = 0")
    return source, (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _all_words_expression(terms: list[str]) -> str | None:
    """Every term, the last one as a prefix (search as you type), in content or tags."""
    if not terms:
        return None
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
    if len(terms[-1]) >= 2:
        quoted[-1] += "*"
    return "{content tags} : (" + " AND ".join(quoted) + ")"


def count_contexts(session: Session, where: ContextFilter) -> int:
    source, clause, params = _filter_sql(where)
    row = session.connection().execute(text(f"SELECT count(*) FROM {source}{clause}"), params)
    return int(row.scalar_one())


def page_contexts(
    session: Session,
    where: ContextFilter,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> list[Context]:
    source, clause, params = _filter_sql(where)
    column = SORT_COLUMNS.get(sort, "c.id")
    direction = "DESC" if descending else "ASC"
    order = (
        f"{column} {direction}" if column == "c.id" else f"{column} {direction}, c.id {direction}"
    )
    sql = f"SELECT c.id FROM {source}{clause} ORDER BY {order} LIMIT :limit OFFSET :offset"
    ids = [
        row[0]
        for row in session.connection().execute(
            text(sql), {**params, "limit": limit, "offset": offset}
        )
    ]
    if not ids:
        return []
    rows = session.exec(select(Context).where(col(Context.id).in_(ids))).all()
    by_id = {row.id: row for row in rows}
    return [by_id[i] for i in ids if i in by_id]
