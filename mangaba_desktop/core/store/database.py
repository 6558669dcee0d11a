"""One SQLite file: opening, checking, migrating, backing up, and the threads that use it.

Every write goes through one writer thread, in order, so that the GUI never waits on a lock and a
burst of stream updates cannot interleave with a delete. Reads run on a small pool of their own
threads; WAL lets them proceed while the writer works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from . import migrations

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKUP_DIR_NAME = "backups"
DAILY_BACKUPS_KEPT = 3


class OpenFailure(StrEnum):
    CORRUPT = "corrupt"
    READ_ONLY = "read-only"
    NEWER_SCHEMA = "newer-schema"
    MIGRATION_FAILED = "migration-failed"


class DatabaseOpenError(Exception):
    """The database file cannot be used; ``message`` is written for the user."""

    def __init__(self, kind: OpenFailure, path: Path, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path
        self.message = message


def _configure(dbapi_connection: sqlite3.Connection, _record: Any = None) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def backup_dir(path: Path) -> Path:
    return path.parent / BACKUP_DIR_NAME


def backup(path: Path, label: str) -> Path:
    """Copy the live database file, consistently, to the backups folder; return the copy."""
    target_dir = backup_dir(path)
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = target_dir / f"{path.stem}-{label}-{stamp}{path.suffix}"
    source = sqlite3.connect(path)
    try:
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    return target


def list_backups(path: Path) -> list[Path]:
    """Backups of ``path``, newest first."""
    folder = backup_dir(path)
    if not folder.is_dir():
        return []
    found = folder.glob(f"{path.stem}-*{path.suffix}")
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def restore_backup(path: Path, backup_file: Path) -> Path:
    """Put ``backup_file`` in place of ``path``; the file it replaces is kept beside it.

    Returns where the replaced file went.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.replaced-{stamp}")
    if path.exists():
        path.rename(aside)
    for suffix in ("-wal", "-shm"):
        stale = Path(f"{path}{suffix}")
        if stale.exists():
            stale.rename(Path(f"{aside}{suffix}"))
    shutil.copy2(backup_file, path)
    return aside


def _check_writable(path: Path) -> None:
    where = path if path.exists() else path.parent
    if not os.access(where, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise DatabaseOpenError(
            OpenFailure.READ_ONLY,
            path,
            f"The history file {path} cannot be written to. Check its permissions, or open "
            "another data folder.",
        )


def prepare(path: Path) -> list[migrations.Migration]:
    """Check the file, back it up if it needs migrating, migrate it; return the steps applied."""
    _check_writable(path)
    existed = path.exists() and path.stat().st_size > 0
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise DatabaseOpenError(
            OpenFailure.CORRUPT, path, f"{path} cannot be opened: {exc}."
        ) from exc
    try:
        try:
            _configure(db)
            db.execute("PRAGMA journal_mode = WAL")
            version = migrations.current_version(db)
        except sqlite3.DatabaseError as exc:
            raise DatabaseOpenError(
                OpenFailure.CORRUPT,
                path,
                f"The history file {path} is damaged or is not a Mangaba database ({exc}).",
            ) from exc
        if version > migrations.LATEST_VERSION:
            raise DatabaseOpenError(
                OpenFailure.NEWER_SCHEMA,
                path,
                f"The history file {path} was written by a newer version of Mangaba Desktop "
                f"(schema {version}, this version knows {migrations.LATEST_VERSION}). Update the "
                "app, or open another data folder.",
            )
        if existed and version < migrations.LATEST_VERSION:
            copy = backup(path, f"v{version}")
            log.info("backed up %s to %s before migrating", path, copy)
        try:
            return migrations.migrate(db)
        except sqlite3.DatabaseError as exc:
            raise DatabaseOpenError(
                OpenFailure.MIGRATION_FAILED,
                path,
                f"Updating the history file {path} failed ({exc}); it was left as it was and a "
                f"backup is in {backup_dir(path)}.",
            ) from exc
    finally:
        db.close()


class _Writer(threading.Thread):
    """The one thread that writes: runs jobs in the order they were submitted; a job submitted
    once it was stopped fails at once (it would never run)."""

    _STOP = object()

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="store-writer", daemon=True)
        self._engine = engine
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopping = threading.Lock()
        self._stopped = False

    def submit(self, job: Callable[[Session], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._stopping:
            if self._stopped:
                future.set_exception(RuntimeError("The database is closed."))
            else:
                self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        with self._stopping:
            self._stopped = True
            self._jobs.put(self._STOP)
        self.join()

    def run(self) -> None:
        with Session(self._engine, expire_on_commit=False) as session:
            while True:
                item = self._jobs.get()
                if item is self._STOP:
                    return
                job, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = job(session)
                    session.commit()
                except BaseException as exc:
                    session.rollback()
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                session.expunge_all()


class Database:
    """An open, migrated database with its writer thread and reader pool.

    Args:
        path: the SQLite file; created if missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.applied_migrations = prepare(path)
        self.engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
        event.listen(self.engine, "connect", _configure)
        self._writer = _Writer(self.engine)
        self._writer.start()
        self._readers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="store-read")
        self._closed = False

    # -- running work -------------------------------------------------------------------------

    async def write(self, job: Callable[[Session], T]) -> T:
        """Run ``job`` on the writer thread inside a transaction; return its result."""
        return await asyncio.wrap_future(self._writer.submit(job))

    def write_soon(self, job: Callable[[Session], Any]) -> concurrent.futures.Future[Any]:
        """Queue ``job`` without waiting for it (used for stream snapshots)."""
        return self._writer.submit(job)

    def write_sync(self, job: Callable[[Session], T]) -> T:
        return self._writer.submit(job).result()

    async def read(self, job: Callable[[Session], T]) -> T:
        """Run ``job`` on a reader thread; return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, job)

    def read_sync(self, job: Callable[[Session], T]) -> T:
        return self._read(job)

    def _read(self, job: Callable[[Session], T]) -> T:
        with Session(self.engine, expire_on_commit=False) as session:
            return job(session)

    # -- upkeep -------------------------------------------------------------------------------

    def daily_backup(self) -> Path | None:
        """Keep a recent copy of the file (at most one a day, the last few kept)."""
        recent = [p for p in list_backups(self.path) if "-daily-" in p.name]
        if recent and time.time() - recent[0].stat().st_mtime < 24 * 3600:
            return None
        copy = backup(self.path, "daily")
        for old in [copy, *recent][DAILY_BACKUPS_KEPT:]:
            old.unlink(missing_ok=True)
        return copy

    def close(self) -> None:
        """Finish queued writes, then release the file; writes after it fail at once."""
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        self._readers.shutdown(wait=True)
        self.engine.dispose()
