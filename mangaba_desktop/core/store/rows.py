"""Changing one row inside a writer job."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlmodel import Session, SQLModel

Row = TypeVar("Row", bound=SQLModel)


def update_row(session: Session, table: type[Row], key: Any, **fields: Any) -> Row:
    """Set ``fields`` on the row ``key`` of ``table`` in the caller's transaction; raises
    ``LookupError`` when there is no such row."""
    row = session.get(table, key)
    if row is None:
        raise LookupError(f"{table.__tablename__.removesuffix('s')} {key} does not exist")
    for name, value in fields.items():
        setattr(row, name, value)
    session.add(row)
    session.flush()
    return row
