"""Search every conversation (Ctrl+K) and jump to a hit."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QPainter, QTextDocument
from PySide6.QtWidgets import (
    QDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from ...core.store import ConversationStore, SearchHit
from ...core.store.search import HIT_END, HIT_START

HitRole = Qt.ItemDataRole.UserRole + 1
Index = QModelIndex | QPersistentModelIndex


def hit_html(hit: SearchHit) -> str:
    snippet = html.escape(hit.snippet.replace("\x00", " ")).replace("\n", " ")
    snippet = snippet.replace(HIT_START, "<b>").replace(HIT_END, "</b>")
    stamp = time.strftime("%d %b %Y %H:%M", time.localtime(hit.created_at))
    who = "You" if hit.role == "user" else "Assistant"
    return (
        f"<div><span style='font-weight:600'>{html.escape(hit.conversation_title)}</span>"
        f" <span style='color:gray'>· {who} · {stamp}</span></div><div>{snippet}</div>"
    )


class _HtmlDelegate(QStyledItemDelegate):
    def _document(self, option: QStyleOptionViewItem, index: Index) -> QTextDocument:
        document = QTextDocument()
        document.setDocumentMargin(6)
        document.setHtml(index.data(Qt.ItemDataRole.DisplayRole) or "")
        document.setTextWidth(option.rect.width() or 500)  # type: ignore[attr-defined]
        return document

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        painter.save()
        if option.state & QStyle.StateFlag.State_Selected:  # type: ignore[attr-defined]
            painter.fillRect(option.rect, option.palette.highlight())  # type: ignore[attr-defined]
        painter.translate(option.rect.topLeft())  # type: ignore[attr-defined]
        self._document(option, index).drawContents(painter)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        document = self._document(option, index)
        return QSize(int(document.idealWidth()), int(document.size().height()))


class SearchDialog(QDialog):
    """Type to search; Enter or a double click opens the hit.

    Signals:
        chosen(SearchHit): the user picked a hit.
    """

    chosen = Signal(object)

    def __init__(
        self, store: ConversationStore, spawn: Callable[[Any], Any], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.spawn = spawn
        self.setWindowTitle("Search all chats")
        self.resize(640, 480)
        self.query = QLineEdit()
        self.query.setPlaceholderText("Search every conversation…")
        self.query.setClearButtonEnabled(True)
        self.results = QListWidget()
        self.results.setItemDelegate(_HtmlDelegate(self.results))
        self.results.setWordWrap(True)
        self.summary = QLabel(" ")
        layout = QVBoxLayout(self)
        layout.addWidget(self.query)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.summary)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(120)
        self._debounce.timeout.connect(lambda: self.spawn(self.run_search()))
        self.query.textChanged.connect(lambda _text: self._debounce.start())
        self.query.returnPressed.connect(self._choose_current)
        self.results.itemActivated.connect(lambda _item: self._choose_current())
        self._searching: asyncio.Future[Any] | None = None
        self._serial = 0

    async def run_search(self) -> list[SearchHit]:
        self._serial += 1
        serial = self._serial
        text = self.query.text()
        started = time.perf_counter()
        try:
            hits = await self.store.search(text)
        except Exception as exc:  # a malformed file, a locked database: say so, keep the dialog
            self.summary.setText(f"Search failed: {exc}")
            return []
        if serial != self._serial:
            return hits
        self.results.clear()
        for hit in hits:
            item = QListWidgetItem(hit_html(hit))
            item.setData(HitRole, hit)
            self.results.addItem(item)
        if hits:
            self.results.setCurrentRow(0)
        elapsed = (time.perf_counter() - started) * 1000
        if not text.strip():
            self.summary.setText(" ")
        elif hits:
            self.summary.setText(f"{len(hits)} result(s) in {elapsed:.0f} ms, newest first")
        else:
            self.summary.setText("No message matches.")
        return hits

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up) and self.query.hasFocus():
            row = self.results.currentRow() + (1 if event.key() == Qt.Key.Key_Down else -1)
            if 0 <= row < self.results.count():
                self.results.setCurrentRow(row)
            return
        super().keyPressEvent(event)

    def _choose_current(self) -> None:
        item = self.results.currentItem()
        if item is None:
            return
        self.chosen.emit(item.data(HitRole))
        self.accept()
