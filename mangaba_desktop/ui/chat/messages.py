"""The message list: a paged model over the history and a delegate that draws Markdown.

Only a window of a conversation is in memory: the newest page when it opens, older pages as the
user scrolls up, the page around a search hit when jumping. Each visible message is laid out
once per width by Qt's own text engine and cached, so long histories stay fast.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QPainter,
    QPalette,
    QTextBlockFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from ...core.network.remote_chat import is_remote_agent
from ...core.network.remote_chat import label as remote_label
from ...core.store import ConversationStore, Message

MessageRole = Qt.ItemDataRole.UserRole + 1

PAGE_SIZE = 50
MARKDOWN_LIMIT = 100_000
"""Longer messages are drawn as plain text, and past VIEW_LIMIT only in part (Copy and Export
still give the whole text): laying out megabytes of Markdown would freeze the window."""
VIEW_LIMIT = 20_000

ROLE_NAMES = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_NOTES = {
    "streaming": "writing…",
    "interrupted": "interrupted",
    "queued": "queued",
    "error": "failed",
}

Index = QModelIndex | QPersistentModelIndex


class MessageListModel(QAbstractListModel):
    """A window of one conversation's messages, loaded page by page from the store.

    Signals:
        loading_changed(bool): a page is being read.
    """

    loading_changed = Signal(bool)

    def __init__(self, store: ConversationStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.conversation_id: int | None = None
        self.rows: list[Message] = []
        self.has_older = False
        self.has_newer = False
        self._loading = False
        self._generation = 0

    # -- Qt model API --------------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        message = self.rows[index.row()]
        if role == MessageRole:
            return message
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return message.content if role == Qt.ItemDataRole.DisplayRole else None
        return None

    # -- loading -------------------------------------------------------------------------------

    @property
    def loading(self) -> bool:
        return self._loading

    def _set_loading(self, loading: bool) -> None:
        if loading != self._loading:
            self._loading = loading
            self.loading_changed.emit(loading)

    async def open(self, conversation_id: int | None, around: int | None = None) -> int | None:
        """Show a conversation: its newest page, or the page around message ``around``.

        Returns the row of ``around`` when given.
        """
        self._generation += 1
        generation = self._generation
        if conversation_id is None:
            self._reset(None, [], older=False, newer=False)
            return None
        self._set_loading(True)
        try:
            if around is None:
                rows = await self.store.page(conversation_id, limit=PAGE_SIZE + 1)
                older, newer = len(rows) > PAGE_SIZE, False
                rows = rows[-PAGE_SIZE:]
            else:
                rows = await self.store.around(conversation_id, around, PAGE_SIZE)
                older = newer = True  # cheap to ask again; an empty page clears the flag
        finally:
            if generation == self._generation:
                self._set_loading(False)
        if generation != self._generation:
            return None
        self._reset(conversation_id, rows, older=older, newer=newer)
        if around is not None:
            return next((i for i, m in enumerate(rows) if m.id == around), None)
        return None

    def _reset(
        self, conversation_id: int | None, rows: list[Message], *, older: bool, newer: bool
    ) -> None:
        self.beginResetModel()
        self.conversation_id = conversation_id
        self.rows = rows
        self.has_older = older
        self.has_newer = newer
        self.endResetModel()

    async def load_older(self) -> int:
        """Prepend the page before the first loaded message; returns how many rows came."""
        if self._loading or not self.has_older or not self.rows or self.conversation_id is None:
            return 0
        generation = self._generation
        self._set_loading(True)
        try:
            rows = await self.store.page(
                self.conversation_id, before_id=self.rows[0].id, limit=PAGE_SIZE + 1
            )
        finally:
            self._set_loading(False)
        if generation != self._generation:
            return 0
        self.has_older = len(rows) > PAGE_SIZE
        rows = rows[-PAGE_SIZE:]
        if rows:
            self.beginInsertRows(QModelIndex(), 0, len(rows) - 1)
            self.rows[0:0] = rows
            self.endInsertRows()
        return len(rows)

    async def load_newer(self) -> int:
        """Append the page after the last loaded message (after a jump to an older hit)."""
        if self._loading or not self.has_newer or not self.rows or self.conversation_id is None:
            return 0
        generation = self._generation
        self._set_loading(True)
        try:
            rows = await self.store.page(
                self.conversation_id, after_id=self.rows[-1].id, limit=PAGE_SIZE + 1
            )
        finally:
            self._set_loading(False)
        if generation != self._generation:
            return 0
        self.has_newer = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        if rows:
            first = len(self.rows)
            self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
            self.rows.extend(rows)
            self.endInsertRows()
        return len(rows)

    # -- live changes --------------------------------------------------------------------------

    def row_of(self, message_id: int) -> int | None:
        for row in range(len(self.rows) - 1, -1, -1):
            if self.rows[row].id == message_id:
                return row
        return None

    def add(self, message: Message) -> bool:
        """Append a new message of the shown conversation; False if the newest page is not
        the one shown (the caller reopens it)."""
        if message.conversation_id != self.conversation_id:
            return True
        if self.has_newer:
            return False
        if self.row_of(message.id or -1) is not None:
            return True
        row = len(self.rows)
        self.beginInsertRows(QModelIndex(), row, row)
        self.rows.append(message)
        self.endInsertRows()
        return True

    def grow(self, message_id: int, text: str) -> QModelIndex | None:
        row = self.row_of(message_id)
        if row is None:
            return None
        message = self.rows[row]
        self.rows[row] = message.model_copy(update={"content": message.content + text})
        index = self.index(row)
        self.dataChanged.emit(index, index, [MessageRole])
        return index

    def replace(self, message: Message) -> QModelIndex | None:
        row = self.row_of(message.id or -1)
        if row is None:
            return None
        self.rows[row] = message
        index = self.index(row)
        self.dataChanged.emit(index, index, [MessageRole])
        return index

    def remove(self, message_ids: list[int]) -> None:
        doomed = set(message_ids)
        for row in range(len(self.rows) - 1, -1, -1):
            if self.rows[row].id in doomed:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self.rows[row]
                self.endRemoveRows()

    def message_at(self, row: int) -> Message | None:
        return self.rows[row] if 0 <= row < len(self.rows) else None


class MessageDelegate(QStyledItemDelegate):
    """Draws a message: a small header line, then its Markdown."""

    PADDING = 12
    GAP = 4

    def __init__(self, view: QListView) -> None:
        super().__init__(view)
        self.view = view
        self._documents: OrderedDict[tuple[Any, ...], QTextDocument] = OrderedDict()
        self._cache_size = 400
        base = view.font()
        self.header_font = QFont(base)
        self.header_font.setPointSizeF(max(7.0, base.pointSizeF() * 0.85))
        self.header_metrics = QFontMetrics(self.header_font)

    def text_width(self) -> int:
        return max(120, self.view.viewport().width() - 2 * self.PADDING - 16)

    def document(self, message: Message, width: int) -> QTextDocument:
        key = (message.id, len(message.content), hash(message.content), width)
        document = self._documents.get(key)
        if document is not None:
            self._documents.move_to_end(key)
            return document
        document = QTextDocument()
        document.setDefaultFont(self.view.font())
        document.setDocumentMargin(0)
        content = message.content
        if len(content) > MARKDOWN_LIMIT:
            shown = content[:VIEW_LIMIT]
            document.setPlainText(
                f"{shown}\n\n[… {len(content) - len(shown):,} more characters not shown here; "
                "use Copy or Export for the whole message.]"
            )
        elif message.role == "user":
            document.setPlainText(content)
        else:
            document.setMarkdown(content)
            _shade_code_blocks(document, self.view.palette())
        document.setTextWidth(width)
        self._documents[key] = document
        while len(self._documents) > self._cache_size:
            self._documents.popitem(last=False)
        return document

    def header(self, message: Message) -> str:
        """Who, when, and for a reply: the model, its state, tokens, cost and speed (the most
        telling first, as a narrow pane cuts the end)."""
        parts = [ROLE_NAMES.get(message.role, message.role.title())]
        parts.append(time.strftime("%d %b %H:%M", time.localtime(message.created_at)))
        note = STATUS_NOTES.get(message.status)
        if message.role == "assistant":
            if message.model and is_remote_agent(message.model):
                parts.append(remote_label(message.model))
            elif message.model:
                parts.append(message.model.split("/", 1)[-1])
            if note:
                parts.append(note)
                note = None
            if message.prompt_tokens is not None and message.completion_tokens is not None:
                total = message.prompt_tokens + message.completion_tokens
                parts.append(f"{total:,} tokens")
            if message.cost_usd is not None and message.status != "queued":
                parts.append(format_cost(message.cost_usd))
            speed = message.tokens_per_second
            if speed and message.status == "complete":
                parts.append(f"{speed:.1f} tok/s")
        if note:
            parts.append(note)
        return "  ·  ".join(parts)

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        message: Message | None = index.data(MessageRole)
        if message is None:
            return QSize(0, 0)
        width = self.text_width()
        height = self.header_metrics.height() + self.GAP + self._body_height(message, width)
        return QSize(width + 2 * self.PADDING, int(height) + 2 * self.PADDING)

    def _footnote_height(self, text: str, width: int) -> int:
        wrapped = self.header_metrics.boundingRect(
            QRect(0, 0, width, 100_000), int(Qt.TextFlag.TextWordWrap), text
        )
        return wrapped.height() + self.GAP

    def _body_height(self, message: Message, width: int) -> float:
        notes = sum(self._footnote_height(text, width) for _c, text in self.footnotes(message))
        if not message.content:
            return max(self.header_metrics.height(), notes)
        return self.document(message, width).size().height() + notes

    @staticmethod
    def footnotes(message: Message) -> list[tuple[str, str]]:
        """The lines under a message: (colour, text) for its error and its notice."""
        lines = []
        if message.notice:
            lines.append(("#5f6368", f"Note: {message.notice}"))
        if message.error:
            if message.status == "queued":
                lines.append(("#9a6700", f"Waiting: {message.error}"))
            else:
                lines.append(("#b3261e", f"Error: {message.error}"))
        return lines

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        message: Message | None = index.data(MessageRole)
        if message is None:
            return
        palette = option.palette  # type: ignore[attr-defined]
        rect: QRect = option.rect  # type: ignore[attr-defined]
        painter.save()
        card = rect.adjusted(4, 3, -4, -3)
        if message.role == "user":
            painter.fillRect(card, palette.color(QPalette.ColorRole.AlternateBase))
        if option.state & QStyle.StateFlag.State_Selected:  # type: ignore[attr-defined]
            highlight = QColor(palette.color(QPalette.ColorRole.Highlight))
            highlight.setAlpha(50)
            painter.fillRect(card, highlight)
        x = rect.left() + self.PADDING
        y = rect.top() + self.PADDING
        painter.setFont(self.header_font)
        header_color = palette.color(QPalette.ColorRole.PlaceholderText)
        if message.status in ("error", "interrupted"):
            header_color = QColor("#b3261e") if message.status == "error" else QColor("#9a6700")
        painter.setPen(header_color)
        painter.drawText(
            QRect(x, y, self.text_width(), self.header_metrics.height()),
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            self.header(message),
        )
        y += self.header_metrics.height() + self.GAP
        if message.content:
            document = self.document(message, self.text_width())
            painter.translate(x, y)
            document.drawContents(painter)
            painter.translate(-x, -y)
            y += int(document.size().height())
        elif message.status == "streaming":
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(QRect(x, y, self.text_width(), self.header_metrics.height()), 0, "…")
        painter.setFont(self.header_font)
        width = self.text_width()
        for colour, text in self.footnotes(message):
            painter.setPen(QColor(colour))
            height = self._footnote_height(text, width)
            painter.drawText(
                QRect(x, y + self.GAP, width, height),
                int(Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap),
                text,
            )
            y += height
        painter.restore()

    def forget(self) -> None:
        self._documents.clear()


def format_cost(usd: float) -> str:
    """A price as people read it: $0 on this computer, cents with enough digits to matter."""
    if usd == 0:
        return "$0"
    if usd < 0.01:
        return f"${usd:.4f}"
    return f"${usd:,.2f}"


def _shade_code_blocks(document: QTextDocument, palette: QPalette) -> None:
    """Give fenced code blocks a background, as readers of chat replies expect."""
    shade = QColor(palette.color(QPalette.ColorRole.AlternateBase)).darker(106)
    block = document.begin()
    while block.isValid():
        block_format = block.blockFormat()
        if block_format.hasProperty(
            QTextFormat.Property.BlockCodeFence
        ) or block_format.hasProperty(QTextFormat.Property.BlockCodeLanguage):
            cursor = QTextCursor(block)
            updated = QTextBlockFormat(block_format)
            updated.setBackground(shade)
            cursor.setBlockFormat(updated)
        block = block.next()


class MessageView(QListView):
    """The list of messages; keeps to the bottom while a reply grows, loads pages on scroll.

    Signals:
        near_top(): scrolled close to the first loaded message.
        near_bottom(): scrolled close to the last loaded message.
    """

    near_top = Signal()
    near_bottom = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("message-view")
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setUniformItemSizes(False)
        self.setWordWrap(True)
        self.setMouseTracking(False)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.setFrameShape(QListView.Shape.NoFrame)
        self.verticalScrollBar().setSingleStep(24)
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        self.delegate = MessageDelegate(self)
        self.setItemDelegate(self.delegate)
        self._stick_to_bottom = True

    def at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 4

    def keep_bottom_if(self, was_at_bottom: bool) -> None:
        if was_at_bottom:
            self.scrollToBottom()

    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        if bar.maximum() > 0 and value <= bar.singleStep():
            self.near_top.emit()
        elif value >= bar.maximum() - bar.singleStep():
            self.near_bottom.emit()

    def relayout(self, index: QModelIndex) -> None:
        """Tell the view that one message's height may have changed."""
        self.delegate.sizeHintChanged.emit(index)

    def resizeEvent(self, event: Any) -> None:
        was_at_bottom = self.at_bottom()
        super().resizeEvent(event)
        self.keep_bottom_if(was_at_bottom)


async def preserve_position(view: MessageView, load: Callable[[], Any]) -> int:
    """Run ``load`` (which prepends rows) and keep the visible messages where they were."""
    bar = view.verticalScrollBar()
    from_bottom = bar.maximum() - bar.value()
    added = await load()
    if added:
        view.doItemsLayout()
        bar.setValue(bar.maximum() - from_bottom)
    return added


__all__ = ["MessageDelegate", "MessageListModel", "MessageRole", "MessageView"]
