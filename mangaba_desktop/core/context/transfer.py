"""Export contexts to JSON and import them back, whole or not at all, without duplicates."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from ..audit import USER, Action, AuditLog, Outcome, recorded, write_failure
from ..store.models import Agent, Context
from .passages import InvalidContext, clean_content, digest, parse_tags
from .store import ContextStore, ImportResult, check_priority, check_type, insert_context

FORMAT = "mangaba-contexts"
VERSION = 1
MAX_IMPORT_BYTES = 2_000_000_000

_CONTEXT_FIELDS = (
    "id",
    "agent_id",
    "session_id",
    "content",
    "context_type",
    "priority",
    "tags",
    "created_at",
    "last_accessed",
    "access_count",
    "expires_at",
    "parent_id",
    "archived",
)


class InvalidImport(ValueError):
    """An import file that was refused whole; the message says where it is wrong."""


def _context_record(context: Context) -> dict[str, Any]:
    record = {name: getattr(context, name) for name in _CONTEXT_FIELDS}
    record["tags"] = context.tag_list
    record["archived"] = bool(context.archived)
    return record


def _agent_record(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "persona": agent.persona,
        "model": agent.model,
        "tags": agent.tag_list,
    }


def _export_lines(
    session: Session, agent_id: str | None, session_id: str | None, written: list[int]
) -> Iterator[str]:
    query = select(Context).order_by(col(Context.id))
    agents = select(Agent).order_by(col(Agent.created_at))
    if agent_id is not None:
        query = query.where(Context.agent_id == agent_id)
        agents = agents.where(Agent.id == agent_id)
    if session_id is not None:
        query = query.where(Context.session_id == session_id)
        # A session's export carries the agents of its contexts, not every agent.
        present = select(Context.agent_id).where(Context.session_id == session_id).distinct()
        agents = agents.where(col(Agent.id).in_(present))
    head = {"format": FORMAT, "version": VERSION, "exported_at": time.time()}
    yield json.dumps(head, ensure_ascii=False)[:-1] + ',\n"agents": [\n'
    agent_rows = session.exec(agents).all()
    yield ",\n".join(json.dumps(_agent_record(a), ensure_ascii=False) for a in agent_rows)
    yield '\n],\n"contexts": [\n'
    first = True
    for context in session.exec(query.execution_options(yield_per=2000)):
        yield ("" if first else ",\n") + json.dumps(_context_record(context), ensure_ascii=False)
        first = False
        written[0] += 1
    yield "\n]}\n"


def _scope(agent_id: str | None, session_id: str | None) -> str:
    if session_id is not None:
        return f"contexts of session {session_id}"
    if agent_id is not None:
        return f"contexts of agent {agent_id}"
    return "contexts"


async def export_to_file(
    store: ContextStore,
    path: Path,
    *,
    agent_id: str | None = None,
    session_id: str | None = None,
    audit: AuditLog | None = None,
    actor: str = USER,
) -> int:
    """Write the contexts (of one agent, of one session, or all) and their agents to ``path``,
    one context per line; returns how many contexts were written. The export is recorded in
    ``audit`` when given, by ``actor``.

    Raises:
        OSError: the file could not be written.
    """

    def job(session: Session) -> int:
        written = [0]
        partial = path.with_name(path.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8") as out:
                for chunk in _export_lines(session, agent_id, session_id, written):
                    out.write(chunk)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return written[0]

    async with recorded(
        audit,
        Action.DATA_EXPORTED,
        actor=actor,
        target=_scope(agent_id, session_id),
        failure=write_failure(path),
    ) as entry:
        written = await store.db.read(job)
        entry.detail = f"{written} contexts to {path}."
    return written


@dataclass
class _Parsed:
    agents: list[Agent]
    contexts: list[tuple[int | None, int | None, Context]]
    """(old id, old parent id, the context to store)."""


def parse_import(raw: bytes) -> _Parsed:
    """Check a whole export file; raises :class:`InvalidImport` naming the line or the field."""
    if len(raw) > MAX_IMPORT_BYTES:
        raise InvalidImport("The file is larger than 2 GB; export fewer contexts at a time.")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidImport(
            f"The file is not UTF-8 text (byte {exc.start}): is it really a contexts export?"
        ) from None
    try:
        data = json.loads(decoded)
    except json.JSONDecodeError as exc:
        raise InvalidImport(
            f"The file is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}."
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidImport(f'This is not a contexts export (no "format": "{FORMAT}").')
    if data.get("version") != VERSION:
        raise InvalidImport(
            f"This export is version {data.get('version')!r}; this app reads version {VERSION}."
        )
    agents_raw = data.get("agents", [])
    contexts_raw = data.get("contexts")
    if not isinstance(agents_raw, list):
        raise InvalidImport("“agents” must be a list.")
    if not isinstance(contexts_raw, list):
        raise InvalidImport("“contexts” must be a list.")
    now = time.time()
    agents: list[Agent] = []
    for index, record in enumerate(agents_raw):
        where = f"agents[{index}]"
        if not isinstance(record, dict):
            raise InvalidImport(f"{where} must be an object.")
        agent_id = _text(record, "id", where, required=True)
        agents.append(
            Agent(
                id=agent_id,
                name=_text(record, "name", where, required=True),
                persona=_text(record, "persona", where) or "",
                model=_text(record, "model", where),
                tags=json.dumps(_tags(record, where), ensure_ascii=False),
                created_at=now,
                updated_at=now,
            )
        )
    contexts: list[tuple[int | None, int | None, Context]] = []
    for index, record in enumerate(contexts_raw):
        where = f"contexts[{index}]"
        if not isinstance(record, dict):
            raise InvalidImport(f"{where} must be an object.")
        agent_id = _text(record, "agent_id", where, required=True)
        content = _checked(clean_content, record.get("content"), f"{where}.content")
        context_type = _checked(check_type, record.get("context_type", ""), f"{where}.context_type")
        priority = _checked(check_priority, record.get("priority", 1), f"{where}.priority")
        created = _number(record, "created_at", where) or now
        contexts.append(
            (
                _integer(record, "id", where),
                _integer(record, "parent_id", where),
                Context(
                    agent_id=agent_id,
                    session_id=_text(record, "session_id", where),
                    content=content,
                    context_type=context_type,
                    priority=priority,
                    tags=json.dumps(_tags(record, where), ensure_ascii=False),
                    created_at=created,
                    last_accessed=_number(record, "last_accessed", where),
                    access_count=_integer(record, "access_count", where) or 0,
                    expires_at=_number(record, "expires_at", where),
                    archived=_flag(record, "archived", where),
                    digest=digest(context_type, content),
                ),
            )
        )
    return _Parsed(agents, contexts)


async def import_file(
    store: ContextStore, path: Path, *, audit: AuditLog | None = None, actor: str = USER
) -> ImportResult:
    """Import an export file in one transaction: all of it, or (on any error) none of it.

    Contexts already present (same agent, session and text) are skipped; agents not present
    are created, with a placeholder name if the file does not describe them. The import, or
    why it was refused, is recorded in ``audit`` when given, by ``actor``.

    Raises:
        InvalidImport: the file was refused; nothing was imported.
    """

    def failure(exc: Exception) -> tuple[Outcome, str]:
        if isinstance(exc, InvalidImport):
            return Outcome.REFUSED, f"{path}: {exc}"
        return Outcome.FAILED, f"{path}: {type(exc).__name__}."

    async with recorded(
        audit, Action.DATA_IMPORTED, actor=actor, target="contexts", failure=failure
    ) as entry:
        result = await _import_file(store, path)
        agents = f", {len(result.agents_added)} agents added" if result.agents_added else ""
        entry.detail = (
            f"{result.added} contexts added, {result.skipped} already there{agents}, from {path}."
        )
    return result


async def _import_file(store: ContextStore, path: Path) -> ImportResult:
    try:
        raw = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise InvalidImport(f"The file cannot be read: {exc.strerror or exc}.") from None
    parsed = await asyncio.to_thread(parse_import, raw)

    def job(session: Session) -> ImportResult:
        result = ImportResult()
        now = time.time()
        described = {a.id: a for a in parsed.agents}
        needed = {c.agent_id for _, _, c in parsed.contexts} | set(described)
        for agent_id in sorted(needed):
            if session.get(Agent, agent_id) is None:
                agent = described.get(agent_id) or Agent(
                    id=agent_id, name=agent_id, created_at=now, updated_at=now
                )
                session.add(agent)
                result.agents_added.append(agent_id)
        session.flush()
        new_ids: dict[int, int] = {}
        for old_id, _parent, context in parsed.contexts:
            stored = insert_context(session, context)
            if stored is context:
                result.added += 1
            else:
                result.skipped += 1
            if old_id is not None and stored.id is not None:
                new_ids[old_id] = stored.id
        for _old_id, old_parent, context in parsed.contexts:
            if old_parent is not None and old_parent in new_ids and context.id is not None:
                context.parent_id = new_ids[old_parent]
                session.add(context)
        session.flush()
        return result

    result = await store.db.write(job)
    store.notify_changed(imported=result.added)
    return result


def _checked(check: Any, value: Any, where: str) -> Any:
    try:
        return check(value)
    except InvalidContext as exc:
        raise InvalidImport(f"{where}: {exc}") from None


def _flag(record: dict[str, Any], name: str, where: str) -> bool:
    value = record.get(name, False)
    if not isinstance(value, bool):
        raise InvalidImport(f"{where}.{name} must be true or false, not {json.dumps(value)[:40]}.")
    return value


def _text(record: dict[str, Any], name: str, where: str, required: bool = False) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise InvalidImport(f"{where}.{name} is missing.")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidImport(f"{where}.{name} must be text.")
    if len(value) > 100_000:
        raise InvalidImport(f"{where}.{name} is too long.")
    return value


def _number(record: dict[str, Any], name: str, where: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidImport(f"{where}.{name} must be a number, not {json.dumps(value)[:40]}.")
    return float(value)


def _integer(record: dict[str, Any], name: str, where: str) -> int | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidImport(f"{where}.{name} must be a whole number, not {json.dumps(value)[:40]}.")
    return value


def _tags(record: dict[str, Any], where: str) -> list[str]:
    value = record.get("tags", [])
    if not isinstance(value, list):
        raise InvalidImport(f"{where}.tags must be a list of tags.")
    try:
        return parse_tags(value)
    except InvalidContext as exc:
        raise InvalidImport(f"{where}.tags: {exc}") from None
