"""The audit log: security-relevant actions with their time, actor and outcome.

Recorded: API keys added, tested and removed; the A2A server started, stopped, or listening
beyond this computer; tasks from A2A clients on other computers, and requests refused for a
missing or wrong token; settings changed (which fields, never secret values); data exported and
imported. Entries go to the ``audit_log`` table of the app's database, through its one writer
thread, without making the caller wait.

The log is append-only: this module has no way to change an entry, and the table itself refuses
updates and refuses deleting entries younger than :data:`MIN_RETENTION_DAYS`; the only delete is
:meth:`AuditLog.prune`, which drops entries older than :data:`RETENTION_DAYS` (run at start-up)
so that the file does not grow forever.

Nothing secret goes in. No function here takes a key, and every text given is cleaned before it
is stored: the keys the key store has seen are redacted, as in the log file, and so is anything
shaped like a credential (``Bearer …``, ``api_key=…``, a password in a URL, well-known key
prefixes, long random-looking tokens).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import csv
import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy import func
from sqlmodel import Session, col, delete, select

from .providers.secrets import REDACTED, redact
from .store.models import AuditEntry

if TYPE_CHECKING:
    from sqlmodel.sql.expression import SelectOfScalar

    from .providers.secrets import KeyStore
    from .store import Database

log = logging.getLogger(__name__)

USER = "user"
"""The actor of what the person using the app did."""
APP = "app"
"""The actor of what the app did on its own (at start-up, as the settings say)."""

RETENTION_DAYS = 365
"""Entries older than this are pruned at start-up."""
MIN_RETENTION_DAYS = 30
"""The table refuses to delete younger entries (a trigger of its migration)."""
MAX_FIELD_CHARS = 200
MAX_DETAIL_CHARS = 1000
EXPORT_FORMAT = "mangaba-desktop.audit-log"
EXPORT_COLUMNS = ("id", "time", "actor", "action", "target", "outcome", "detail")


def a2a_caller(host: str) -> str:
    """The actor of a request from the A2A client at ``host``."""
    return f"a2a:{host}"


class Outcome(StrEnum):
    OK = "ok"
    REFUSED = "refused"
    FAILED = "failed"


class Action(StrEnum):
    """What the app records; other components name theirs the same way (``area.verb``)."""

    KEY_ADDED = "key.added"
    KEY_TESTED = "key.tested"
    KEY_REMOVED = "key.removed"
    A2A_STARTED = "a2a.started"
    A2A_STOPPED = "a2a.stopped"
    A2A_EXPOSED = "a2a.exposed"
    """The A2A server listens beyond this computer."""
    A2A_REQUEST = "a2a.request"
    """A task from an A2A client on another computer."""
    A2A_REFUSED = "a2a.refused"
    SETTINGS_CHANGED = "settings.changed"
    DATA_EXPORTED = "data.exported"
    DATA_IMPORTED = "data.imported"
    AUDIT_PRUNED = "audit.pruned"


class ExportKind(StrEnum):
    CSV = "csv"
    JSON = "json"


_ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

# Credentials by their shape, each replaced (keeping any name or scheme before it).
_CREDENTIALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        REDACTED,
    ),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@:]+:[^/\s@]+@"), rf"\1{REDACTED}@"),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|passwd"
            r"|authorization)([\"']?\s*[:=]\s*[\"']?)(?!\[redacted\]|(?:bearer|basic)\s)"
            r"[^\s\"',;&]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{12,}"), REDACTED),
    (re.compile(r"\bsk_(?:live|test)_[A-Za-z0-9]{10,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), REDACTED),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,})"), REDACTED),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]*"), REDACTED),
)
_SCHEME_VALUE = re.compile(r"(?i)\b(bearer|basic)(\s+)([^\s,;]+)")
_LONG_WORD = re.compile(r"[A-Za-z0-9_\-+=]{32,}")


def _scheme_value(match: re.Match[str]) -> str:
    value = match.group(3)
    # "a bearer token is required" is prose; anything else after the scheme is a credential.
    if value == REDACTED or (value.isalpha() and value.islower()):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def _random_looking(match: re.Match[str]) -> str:
    word = match.group(0)
    # Upper case, lower case and digits together in 32 characters or more: a generated token
    # (hex ids, which are lower case, stay readable).
    kinds = (str.isupper, str.islower, str.isdigit)
    if all(any(kind(c) for c in word) for kind in kinds):
        return REDACTED
    return word


def scrub(text: object, secrets: Iterable[str] = (), limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` as it may be stored: known ``secrets`` and credential-shaped text redacted,
    control characters and line breaks turned into spaces, cut to ``limit`` characters."""
    # The whole text is cleaned before it is cut: a secret cut in two would escape redaction.
    cleaned = redact(str(text), secrets)
    for pattern, replacement in _CREDENTIALS:
        cleaned = pattern.sub(replacement, cleaned)
    cleaned = _SCHEME_VALUE.sub(_scheme_value, cleaned)
    cleaned = _LONG_WORD.sub(_random_looking, cleaned)
    cleaned = " ".join(cleaned.split())[: limit * 2]
    cleaned = "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in cleaned
    )
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _insert(values: dict[str, Any], session: Session) -> AuditEntry:
    entry = AuditEntry(**values)
    session.add(entry)
    session.flush()
    return entry


def _report_failure(action: str, future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("The audit entry %s could not be written (%s)", action, future.exception())


class AuditLog:
    """Appends entries to the audit log and reads them back.

    Args:
        database: the app's open database.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._secret_sources: list[Callable[[], Iterable[str]]] = []

    # -- what must never be stored -------------------------------------------------------------

    def add_secrets(self, source: Callable[[], Iterable[str]]) -> None:
        """Redact whatever ``source()`` returns from every entry recorded from now on."""
        with self._lock:
            if source not in self._secret_sources:
                self._secret_sources.append(source)

    def use_keys(self, keys: KeyStore) -> None:
        """Record what ``keys`` does (keys added and removed), and redact every key it has seen."""
        keys.audit = self
        self.add_secrets(keys.secrets)

    def _secrets(self) -> list[str]:
        with self._lock:
            sources = list(self._secret_sources)
        found: list[str] = []
        for source in sources:
            found.extend(source())
        return found

    # -- writing -------------------------------------------------------------------------------

    def record(
        self,
        action: str,
        *,
        actor: str = APP,
        target: str = "",
        outcome: str = Outcome.OK,
        detail: str = "",
    ) -> concurrent.futures.Future[AuditEntry]:
        """Append an entry without waiting for it to be written; safe from any thread.

        Args:
            action: a short stable name, lower case with dots (``key.added``).
            actor: who did it: :data:`USER`, :data:`APP`, ``a2a:<address>``, ``plugin:<name>``.
            target: what it was done to (a provider id, an address, a file).
            outcome: ``ok``, ``refused`` or ``failed``.
            detail: one sentence about it. Never pass a secret: it is redacted when known or
                shaped like one, but the caller is the first guard.

        Returns:
            The entry as written (with its id), once the writer thread has written it.

        Raises:
            ValueError: ``action`` is not such a name, or ``outcome`` is none of the three.
        """
        if not _ACTION_NAME.match(action):
            raise ValueError(f"“{action}” is not an action name like “key.added”.")
        secrets = self._secrets()
        values = {
            "time": time.time(),
            "actor": scrub(actor, secrets, MAX_FIELD_CHARS) or APP,
            "action": action,
            "target": scrub(target, secrets, MAX_FIELD_CHARS),
            "outcome": Outcome(outcome).value,
            "detail": scrub(detail, secrets, MAX_DETAIL_CHARS),
        }
        future: concurrent.futures.Future[AuditEntry] = self.database.write_soon(
            partial(_insert, values)
        )
        future.add_done_callback(partial(_report_failure, action))
        return future

    async def append(
        self,
        action: str,
        *,
        actor: str = APP,
        target: str = "",
        outcome: str = Outcome.OK,
        detail: str = "",
    ) -> AuditEntry:
        """:meth:`record`, waiting until the entry is written; returns it with its id."""
        future = self.record(action, actor=actor, target=target, outcome=outcome, detail=detail)
        return await asyncio.wrap_future(future)

    async def flush(self) -> None:
        """Wait until every entry recorded so far is written."""
        await self.database.write(lambda _session: None)

    async def prune(self, older_than_days: float = RETENTION_DAYS, *, actor: str = APP) -> int:
        """Delete the entries older than ``older_than_days``; returns how many went.

        Raises:
            ValueError: fewer days than :data:`MIN_RETENTION_DAYS`.
        """
        if older_than_days < MIN_RETENTION_DAYS:
            raise ValueError(f"Audit entries are kept for at least {MIN_RETENTION_DAYS} days.")
        cutoff = time.time() - older_than_days * 86400.0

        def job(session: Session) -> int:
            result = session.exec(delete(AuditEntry).where(col(AuditEntry.time) < cutoff))
            return int(result.rowcount or 0)

        removed = await self.database.write(job)
        if removed:
            self.record(
                Action.AUDIT_PRUNED,
                actor=actor,
                target="audit log",
                detail=f"{removed} entries older than {older_than_days:g} days were deleted.",
            )
        return removed

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _query(
        action: str | None, outcome: str | None, actor: str | None
    ) -> SelectOfScalar[AuditEntry]:
        query = select(AuditEntry)
        if action:
            query = query.where(AuditEntry.action == action)
        if outcome:
            query = query.where(AuditEntry.outcome == outcome)
        if actor:
            query = query.where(AuditEntry.actor == actor)
        return query

    async def entries(
        self,
        *,
        action: str | None = None,
        outcome: str | None = None,
        actor: str | None = None,
        limit: int | None = 1000,
    ) -> list[AuditEntry]:
        """The entries, newest first, of one action, outcome or actor when given."""
        query = self._query(action, outcome, actor).order_by(col(AuditEntry.id).desc())
        if limit is not None:
            query = query.limit(limit)
        return await self.database.read(lambda session: list(session.exec(query)))

    async def count(
        self, *, action: str | None = None, outcome: str | None = None, actor: str | None = None
    ) -> int:
        query = self._query(action, outcome, actor).subquery()

        def job(session: Session) -> int:
            return int(session.exec(select(func.count()).select_from(query)).one())

        return await self.database.read(job)

    async def actions(self) -> list[str]:
        """Every action the log holds, sorted (for a filter)."""
        query = select(AuditEntry.action).distinct().order_by(col(AuditEntry.action))
        return await self.database.read(lambda session: list(session.exec(query)))

    # -- export --------------------------------------------------------------------------------

    async def export(
        self,
        path: Path,
        kind: str = ExportKind.CSV,
        *,
        action: str | None = None,
        outcome: str | None = None,
        actor: str = USER,
    ) -> int:
        """Write the entries (of one action or outcome when given), oldest first, to ``path``
        as CSV or JSON; returns how many. The export is itself recorded, by ``actor``.

        Raises:
            OSError: the file could not be written (recorded as failed, nothing left behind).
        """
        # Shielded: a caller that stops waiting must not leave a written file unrecorded.
        return await asyncio.shield(self._export(path, ExportKind(kind), action, outcome, actor))

    async def _export(
        self,
        path: Path,
        kind: ExportKind,
        action: str | None,
        outcome: str | None,
        actor: str,
    ) -> int:
        await self.flush()  # what was recorded before the export is in it
        query = self._query(action, outcome, None).order_by(col(AuditEntry.id))
        described = ", ".join(
            f"{name} {value}" for name, value in (("action", action), ("outcome", outcome)) if value
        )
        only = f" ({described})" if described else ""

        def job(session: Session) -> int:
            rows = session.exec(query.execution_options(yield_per=1000))
            partial_path = path.with_name(path.name + ".partial")
            try:
                newline = "" if kind == ExportKind.CSV else None
                with partial_path.open("w", encoding="utf-8", newline=newline) as out:
                    written = (_write_csv if kind == ExportKind.CSV else _write_json)(rows, out)
                partial_path.replace(path)
            finally:
                partial_path.unlink(missing_ok=True)
            return written

        # Waited for: whoever reads the log after the export finds the export in it.
        async with recorded(
            self,
            Action.DATA_EXPORTED,
            actor=actor,
            target="audit log",
            failure=write_failure(path),
            wait=True,
        ) as entry:
            written = await self.database.read(job)
            entry.detail = f"{written} entries{only} as {kind.value.upper()} to {path}."
        return written


Failure = Callable[[Exception], tuple[Outcome, str] | None]
"""The outcome and detail to record for an exception, or None to record nothing."""


@dataclass
class Recording:
    """The entry a :func:`recorded` block writes; the block sets :attr:`detail` once it
    succeeded."""

    detail: str = ""


@contextlib.asynccontextmanager
async def recorded(
    audit: AuditLog | None,
    action: str,
    *,
    actor: str,
    target: str,
    failure: Failure,
    wait: bool = False,
) -> AsyncIterator[Recording]:
    """Record ``action`` when the block ends: ``ok`` with the detail the block set, or what
    ``failure`` says of the exception that ended it (which goes on). Nothing is recorded without
    ``audit``. With ``wait``, the block ends once the entry is written."""
    entry = Recording()
    if audit is None:
        yield entry
        return

    async def write(outcome: Outcome, detail: str) -> None:
        future = audit.record(action, actor=actor, target=target, outcome=outcome, detail=detail)
        if wait:
            await asyncio.wrap_future(future)

    try:
        yield entry
    except Exception as exc:
        if (failed := failure(exc)) is not None:
            await write(*failed)
        raise
    await write(Outcome.OK, entry.detail)


def write_failure(path: Path) -> Failure:
    """The :data:`Failure` of an export to ``path``: failed, with the reason, when the file
    could not be written or what was to be exported is not there; other errors not recorded."""

    def failure(exc: Exception) -> tuple[Outcome, str] | None:
        if not isinstance(exc, OSError | LookupError):
            return None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return Outcome.FAILED, f"Writing {path} failed: {reason}."

    return failure


def iso_time(timestamp: float, timespec: str = "milliseconds") -> str:
    """``timestamp`` in ISO 8601, UTC, to the millisecond (or to ``timespec``)."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec=timespec)


def _record(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "time": iso_time(entry.time),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": entry.detail,
    }


def _spreadsheet_safe(value: Any) -> Any:
    # A cell starting with = + - @ is run as a formula by spreadsheets; details can hold what a
    # remote caller sent (a skill name), so such a cell is kept as text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _write_csv(rows: Iterable[AuditEntry], out: TextIO) -> int:
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    written = 0
    for entry in rows:
        record = _record(entry)
        writer.writerow([_spreadsheet_safe(record[name]) for name in EXPORT_COLUMNS])
        written += 1
    return written


def _write_json(rows: Iterable[AuditEntry], out: TextIO) -> int:
    head = {"format": EXPORT_FORMAT, "version": 1, "exported_at": iso_time(time.time())}
    out.write(json.dumps(head, ensure_ascii=False)[:-1] + ',\n"entries": [\n')
    written = 0
    for entry in rows:
        out.write(("" if not written else ",\n") + json.dumps(_record(entry), ensure_ascii=False))
        written += 1
    out.write("\n]}\n")
    return written


@dataclass
class _Pending:
    since: float
    """When the last entry for this actor was written (monotonic)."""
    count: int
    target: str
    reason: str


class RepeatedRefusals:
    """Records refused requests without letting a flood of them flood the log.

    The first refusal from an actor (a caller's address) is recorded at once. Later ones from
    the same actor are counted, and recorded as one entry ("N more refused") once ``window_s``
    has passed since its last entry (noticed at the next refusal from anyone) or at
    :meth:`flush` (the server stops). One caller thus adds at most about one entry per window
    however fast it retries. At most ``max_actors`` are followed at once; beyond that the
    oldest is flushed and forgotten. Use from one thread (the event loop).

    Args:
        audit: where entries go.
        action: the action of the entries.
        window_s: the shortest time between two entries for one actor.
        max_actors: how many actors are followed at once.
    """

    def __init__(
        self,
        audit: AuditLog,
        action: str = Action.A2A_REFUSED,
        *,
        window_s: float = 60.0,
        max_actors: int = 1024,
    ) -> None:
        self.audit = audit
        self.action = action
        self.window_s = window_s
        self.max_actors = max_actors
        self._pending: dict[str, _Pending] = {}

    def refused(self, actor: str, target: str, reason: str) -> None:
        """A request from ``actor`` to ``target`` was refused because of ``reason``."""
        now = time.monotonic()
        self._flush(lambda pending: now - pending.since >= self.window_s)
        pending = self._pending.get(actor)
        if pending is not None:
            pending.count += 1
            pending.target, pending.reason = target, reason
            return
        self.audit.record(
            self.action, actor=actor, target=target, outcome=Outcome.REFUSED, detail=reason
        )
        self._pending[actor] = _Pending(now, 0, target, reason)
        if len(self._pending) > self.max_actors:
            oldest = next(iter(self._pending))
            self._write(oldest, self._pending.pop(oldest), now)

    def flush(self) -> None:
        """Record every count not recorded yet, and forget every actor."""
        self._flush(lambda _pending: True)

    def _flush(self, due: Callable[[_Pending], bool]) -> None:
        now = time.monotonic()
        for actor, pending in list(self._pending.items()):
            if due(pending):
                del self._pending[actor]
                self._write(actor, pending, now)

    def _write(self, actor: str, pending: _Pending, now: float) -> None:
        if not pending.count:
            return
        seconds = max(1, round(now - pending.since))
        self.audit.record(
            self.action,
            actor=actor,
            target=pending.target,
            outcome=Outcome.REFUSED,
            detail=f"{pending.count} more refused in {seconds} s; the last: {pending.reason}",
        )
