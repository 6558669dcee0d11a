"""Fixtures shared by the whole suite. Qt-free: the UI tests have their own conftest
(tests/unit/ui/conftest.py) for the QApplication and the qasync loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mangaba_desktop.core.context import ContextStore
from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.paths import DATABASE_NAME
from mangaba_desktop.core.store import AgentStore, ConversationStore, Database
from tests.helpers.secret_service import (  # noqa: F401 (fixtures for any test)
    default_keyring,
    secret_service,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the history file of a test lives (a real SQLite file under tmp_path)."""
    return tmp_path / DATABASE_NAME


@pytest.fixture
def database(db_path: Path) -> Iterator[Database]:
    db = Database(db_path)
    yield db
    db.close()


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def store(database: Database, bus: EventBus) -> ConversationStore:
    return ConversationStore(database, bus)


@pytest.fixture
def agents(database: Database, bus: EventBus) -> AgentStore:
    return AgentStore(database, bus)


@pytest.fixture
def contexts(database: Database, bus: EventBus) -> ContextStore:
    return ContextStore(database, bus)


@pytest.fixture
def reopen(
    database: Database, db_path: Path, bus: EventBus
) -> Iterator[Callable[[], ConversationStore]]:
    """Close the test's database and open its file again, as the next start of the app would."""
    opened: list[Database] = []

    def _reopen() -> ConversationStore:
        database.close()
        for db in opened:
            db.close()
        db = Database(db_path)
        opened.append(db)
        return ConversationStore(db, bus)

    yield _reopen
    for db in opened:
        db.close()
