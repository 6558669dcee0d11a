"""Look at a history file the way a second process would: a separate sqlite3 connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def query_file(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run on a fresh connection to ``path`` (closed before returning)."""
    connection = sqlite3.connect(path, timeout=5)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def schema_version(path: Path) -> int:
    return query_file(path, "SELECT MAX(version) FROM schema_migrations")[0][0]


def execute_file(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Run one statement on ``path`` in its own committed transaction."""
    connection = sqlite3.connect(path, timeout=5)
    try:
        with connection:
            connection.execute(sql, params)
    finally:
        connection.close()
