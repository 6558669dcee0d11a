"""The timeline: every message the pane has seen, newest last, with its current status."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor

from ...core.network import AgentMessage, MessageStatus

MAX_ROWS = 5_000
"""The timeline keeps this many messages; older ones stay in the database (and in replay)."""
TRIM_ROWS = 500
"""Rows dropped at once when the cap is passed: one removal now and then, not one per message."""
TEXT_CHARS = 300

Index = QModelIndex | QPersistentModelIndex


class Column(IntEnum):
    TIME = 0
    TYPE = 1
    FROM = 2
    TO = 3
    ACTION = 4
    STATUS = 5
    TEXT = 6


HEADERS = {
    Column.TIME: "Time",
    Column.TYPE: "Type",
    Column.FROM: "From",
    Column.TO: "To",
    Column.ACTION: "Action",
    Column.STATUS: "Status",
    Column.TEXT: "Text",
}
WIDTHS = {
    Column.TIME: 90,
    Column.TYPE: 90,
    Column.FROM: 110,
    Column.TO: 110,
    Column.ACTION: 90,
    Column.STATUS: 90,
}
STATUS_COLOURS = {
    MessageStatus.FAILED: QColor("#c62828"),
    MessageStatus.EXPIRED: QColor("#ef6c00"),
    MessageStatus.TIMED_OUT: QColor("#ef6c00"),
}


@dataclass
class MessageRow:
    id: str
    timestamp: float
    type: str
    sender: str
    receiver: str
    action: str
    status: str
    text: str
    correlation_id: str | None

    @classmethod
    def of(cls, message: AgentMessage) -> MessageRow:
        row = cls(
            message.id,
            message.timestamp,
            str(message.type),
            message.sender,
            message.receiver,
            message.action or "",
            "",
            "",
            message.correlation_id,
        )
        row.take(message)
        return row

    def take(self, message: AgentMessage) -> None:
        self.status = str(message.status)
        text = message.error or message.text
        self.text = " ".join(text.split())[:TEXT_CHARS]

    def involves(self, agent_id: str) -> bool:
        return agent_id in (self.sender, self.receiver)


class TimelineModel(QAbstractTableModel):
    """Messages as rows, appended in batches; a status change updates its row in place.

    Args:
        names: agent names by id, kept up to date by the pane (ids are shown for unknown ones).
    """

    def __init__(self, names: dict[str, str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.names = names
        self.rows: list[MessageRow] = []
        self._first = 0
        """The serial number of ``rows[0]``: rows keep their number when older ones go."""
        self._serials: dict[str, int] = {}

    # -- the model -----------------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(Column)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[Column(section)]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == Column.TIME:
                return time.strftime("%H:%M:%S", time.localtime(row.timestamp))
            if column == Column.TYPE:
                return row.type
            if column == Column.FROM:
                return self.names.get(row.sender, row.sender)
            if column == Column.TO:
                return self.names.get(row.receiver, row.receiver)
            if column == Column.ACTION:
                return row.action
            if column == Column.STATUS:
                return row.status.replace("_", " ")
            return row.text
        if role == Qt.ItemDataRole.ForegroundRole and column == Column.STATUS:
            return STATUS_COLOURS.get(MessageStatus(row.status))
        if role == Qt.ItemDataRole.ToolTipRole and column == Column.TEXT:
            return row.text
        return None

    # -- feeding -------------------------------------------------------------------------------

    def add(self, messages: list[AgentMessage]) -> None:
        """Append the new messages in one insertion and update the ones already shown."""
        fresh: dict[str, MessageRow] = {}
        changed: list[int] = []
        for message in messages:
            serial = self._serials.get(message.id)
            if serial is not None:
                self.rows[serial - self._first].take(message)
                changed.append(serial - self._first)
            elif message.id in fresh:
                fresh[message.id].take(message)
            else:
                fresh[message.id] = MessageRow.of(message)
        if changed:
            self.dataChanged.emit(
                self.index(min(changed), 0), self.index(max(changed), len(Column) - 1)
            )
        if fresh:
            start = len(self.rows)
            self.beginInsertRows(QModelIndex(), start, start + len(fresh) - 1)
            for offset, row in enumerate(fresh.values()):
                self._serials[row.id] = self._first + start + offset
                self.rows.append(row)
            self.endInsertRows()
        if len(self.rows) > MAX_ROWS:
            self._trim(len(self.rows) - MAX_ROWS + TRIM_ROWS)

    def _trim(self, count: int) -> None:
        self.beginRemoveRows(QModelIndex(), 0, count - 1)
        for row in self.rows[:count]:
            self._serials.pop(row.id, None)
        del self.rows[:count]
        self._first += count
        self.endRemoveRows()

    def row(self, number: int) -> MessageRow:
        return self.rows[number]

    def row_of(self, message_id: str) -> int | None:
        serial = self._serials.get(message_id)
        return None if serial is None else serial - self._first

    def recent(self, first: str, second: str | None = None, limit: int = 12) -> list[MessageRow]:
        """The last messages of one agent (or between two), newest first."""
        found = []
        for row in reversed(self.rows):
            if second is None:
                if not row.involves(first):
                    continue
            elif {row.sender, row.receiver} != {first, second}:
                continue
            found.append(row)
            if len(found) >= limit:
                break
        return found


class TimelineFilter(QSortFilterProxyModel):
    """Narrows the timeline by type, agent (as sender or receiver) and text."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.message_type: str | None = None
        self.agent_id: str | None = None
        self.text = ""

    def set_filter(self, message_type: str | None, agent_id: str | None, text: str) -> None:
        self.beginFilterChange()
        self.message_type = message_type or None
        self.agent_id = agent_id or None
        self.text = text.strip().casefold()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, _source_parent: Index) -> bool:
        model = self.sourceModel()
        assert isinstance(model, TimelineModel)
        row = model.rows[source_row]
        if self.message_type and row.type != self.message_type:
            return False
        if self.agent_id and not row.involves(self.agent_id):
            return False
        if self.text:
            names = model.names
            haystack = " ".join(
                (
                    row.text,
                    row.action,
                    names.get(row.sender, row.sender),
                    names.get(row.receiver, row.receiver),
                )
            ).casefold()
            if self.text not in haystack:
                return False
        return True
