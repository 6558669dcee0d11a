"""The conversation list, most recently active first."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)

from ...core.store import Conversation

ConversationRole = Qt.ItemDataRole.UserRole + 1
Index = QModelIndex | QPersistentModelIndex


def when(timestamp: float) -> str:
    """'14:05' today, 'Mon 14:05' this week, '3 Mar' before."""
    age = time.time() - timestamp
    local = time.localtime(timestamp)
    if age < 20 * 3600 and local.tm_mday == time.localtime().tm_mday:
        return time.strftime("%H:%M", local)
    if age < 6 * 86400:
        return time.strftime("%a %H:%M", local)
    return time.strftime("%d %b %Y", local)


class ConversationListModel(QAbstractListModel):
    """Conversations sorted by last activity; titles are editable in place.

    Signals:
        rename_requested(int, str): the user edited a title in the list.
    """

    rename_requested = Signal(int, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: list[Conversation] = []

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        conversation = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{conversation.title}\n{when(conversation.updated_at)}"
        if role == Qt.ItemDataRole.EditRole:
            return conversation.title
        if role == Qt.ItemDataRole.ToolTipRole:
            return conversation.title
        if role == ConversationRole:
            return conversation
        return None

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid():
            return False
        conversation = self.rows[index.row()]
        title = str(value).strip()
        if not title or title == conversation.title or conversation.id is None:
            return False
        self.rename_requested.emit(conversation.id, title)
        return True

    def flags(self, index: Index) -> Qt.ItemFlag:
        return super().flags(index) | Qt.ItemFlag.ItemIsEditable

    def set_all(self, conversations: list[Conversation]) -> None:
        self.beginResetModel()
        self.rows = sorted(conversations, key=lambda c: c.updated_at, reverse=True)
        self.endResetModel()

    def row_of(self, conversation_id: int) -> int | None:
        return next((i for i, c in enumerate(self.rows) if c.id == conversation_id), None)

    def upsert(self, conversation: Conversation) -> None:
        """Add or refresh a conversation and move it to its place by last activity (a move,
        so that the selection follows it)."""
        row = self.row_of(conversation.id or -1)
        if row is None:
            target = self._place_for(conversation, self.rows)
            self.beginInsertRows(QModelIndex(), target, target)
            self.rows.insert(target, conversation)
            self.endInsertRows()
            return
        others = self.rows[:row] + self.rows[row + 1 :]
        target = self._place_for(conversation, others)
        if target != row:
            # Qt counts the destination before the move: one past the target when moving down.
            self.beginMoveRows(QModelIndex(), row, row, QModelIndex(), target + (target > row))
            self.rows = [*others[:target], conversation, *others[target:]]
            self.endMoveRows()
        else:
            self.rows[row] = conversation
        index = self.index(target)
        self.dataChanged.emit(index, index)

    @staticmethod
    def _place_for(conversation: Conversation, rows: list[Conversation]) -> int:
        return next(
            (i for i, c in enumerate(rows) if c.updated_at <= conversation.updated_at), len(rows)
        )

    def remove(self, conversation_id: int) -> None:
        row = self.row_of(conversation_id)
        if row is not None:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self.rows[row]
            self.endRemoveRows()
