"""The context table: a paged model over the context store that stays fast at a million rows.

Only the number of matching rows and a few pages of them are ever in memory. The row count comes
from one ``count`` query; a row that the view asks for and that is not cached puts its page on a
short wish list, which is read from the store in the background (most recent wish first, at most
two reads at a time, so that dragging the scroll bar across a million rows never queues up reads
nobody will look at). Meanwhile the row shows a placeholder. Every change of filter or order
starts a new generation: pages that arrive for an older one are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPalette

from ...core.context import ContextFilter, ContextStore
from ...core.store import Context, Priority

log = logging.getLogger(__name__)

PAGE_SIZE = 200
MAX_PAGES = 40
"""Pages kept (8,000 rows of a few hundred bytes each); the least recently shown go first."""
MAX_READS = 2
"""Pages read at once: the database has two reader threads."""
MAX_WISHES = 6
"""Pages waiting to be read; older wishes are forgotten (a repaint asks again if still shown)."""
UNINDEXED_SORTS = frozenset({"content"})
"""Orders the store has no index for and that cost a sort of every match for each page."""
MAX_UNINDEXED_SORT_ROWS = 100_000
PREVIEW_CHARS = 120
PLACEHOLDER = "…"

ContextIdRole = Qt.ItemDataRole.UserRole + 1
"""The context's id (int), or None while its row is loading."""
ContextRowRole = Qt.ItemDataRole.UserRole + 2
"""The row's :class:`ContextRow`, or None while it is loading."""

PRIORITY_NAMES = {
    Priority.LOW: "Low",
    Priority.MEDIUM: "Medium",
    Priority.HIGH: "High",
    Priority.CRITICAL: "Critical",
}
HIGHLIGHT = QColor(255, 196, 0, 90)

Index = QModelIndex | QPersistentModelIndex


def type_label(context_type: str) -> str:
    return context_type.replace("_", " ").capitalize()


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def preview(content: str) -> str:
    """The first words of ``content`` on one line."""
    line = " ".join(content[: PREVIEW_CHARS * 4].split())
    if len(line) > PREVIEW_CHARS or len(content) > PREVIEW_CHARS * 4:
        line = line[: PREVIEW_CHARS - 1].rstrip() + "…"
    return line


class Column(IntEnum):
    TYPE = 0
    PRIORITY = 1
    TAGS = 2
    AGENT = 3
    SESSION = 4
    CREATED = 5
    LAST_ACCESSED = 6
    ACCESS_COUNT = 7
    CONTENT = 8


class ColumnSpec(NamedTuple):
    header: str
    sort_key: str
    """The store's name for ordering by this column (see ``SORT_COLUMNS``)."""
    width: int


COLUMNS: dict[Column, ColumnSpec] = {
    Column.TYPE: ColumnSpec("Type", "context_type", 96),
    Column.PRIORITY: ColumnSpec("Priority", "priority", 72),
    Column.TAGS: ColumnSpec("Tags", "tags", 120),
    Column.AGENT: ColumnSpec("Agent", "agent_id", 110),
    Column.SESSION: ColumnSpec("Session", "session_id", 140),
    Column.CREATED: ColumnSpec("Created", "created_at", 124),
    Column.LAST_ACCESSED: ColumnSpec("Last accessed", "last_accessed", 124),
    Column.ACCESS_COUNT: ColumnSpec("Uses", "access_count", 52),
    Column.CONTENT: ColumnSpec("Content", "content", 400),
}


_AGENT = int(Column.AGENT)
_SESSION = int(Column.SESSION)
_CONTENT = int(Column.CONTENT)
_ACCESS_COUNT = int(Column.ACCESS_COUNT)
_LOADING_TEXT = {int(Column.TYPE): PLACEHOLDER, _CONTENT: PLACEHOLDER}

_DISPLAY = Qt.ItemDataRole.DisplayRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_BACKGROUND = Qt.ItemDataRole.BackgroundRole
_FOREGROUND = Qt.ItemDataRole.ForegroundRole
_FONT = Qt.ItemDataRole.FontRole
_ALIGNMENT = Qt.ItemDataRole.TextAlignmentRole
_SERVED = frozenset(
    {_DISPLAY, _TOOLTIP, _BACKGROUND, _FOREGROUND, _FONT, _ALIGNMENT, ContextIdRole, ContextRowRole}
)
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


@dataclass(frozen=True, slots=True)
class ContextRow:
    """What the table shows of a context: its fields, the text made short, the cells' text
    (but for the agent's name and the session's title, which can change)."""

    id: int
    agent_id: str
    session_id: str | None
    context_type: str
    priority: int
    tags: tuple[str, ...]
    access_count: int
    archived: bool
    parent_id: int | None
    preview: str
    cells: tuple[str, ...]

    @classmethod
    def of(cls, context: Context) -> ContextRow:
        tags = tuple(context.tag_list)
        text = preview(context.content)
        return cls(
            id=context.id or 0,
            agent_id=context.agent_id,
            session_id=context.session_id,
            context_type=context.context_type,
            priority=context.priority,
            tags=tags,
            access_count=context.access_count,
            archived=bool(context.archived),
            parent_id=context.parent_id,
            preview=text,
            cells=(
                type_label(context.context_type),
                PRIORITY_NAMES[Priority(context.priority)],
                ", ".join(tags),
                "",
                "",
                when(context.created_at),
                when(context.last_accessed),
                str(context.access_count),
                text,
            ),
        )

    @property
    def archive_note(self) -> str:
        if self.parent_id is not None:
            return f"archived: summarised into memory #{self.parent_id}"
        return "archived: kept for the record, never given to a prompt"


def rows_of(contexts: list[Context]) -> list[ContextRow]:
    return [ContextRow.of(c) for c in contexts]


class ContextTableModel(QAbstractTableModel):
    """The contexts that match a filter, in a chosen order, read page by page.

    Args:
        contexts: the store to read.
        spawn: schedules a coroutine on the event loop (keeping a reference to its task).

    Signals:
        counted(int): the number of matching contexts is known (after each refresh).
        sort_refused(str): an order was refused as too slow for this many rows; the reason.
        page_loaded(int): a page of rows arrived (its number).
        failed(str): reading from the store failed; a sentence for the user.
    """

    counted = Signal(int)
    sort_refused = Signal(str)
    page_loaded = Signal(int)
    failed = Signal(str)

    def __init__(
        self,
        contexts: ContextStore,
        spawn: Callable[[Any], Any],
        parent: QObject | None = None,
        *,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
    ) -> None:
        super().__init__(parent)
        self.contexts = contexts
        self.spawn = spawn
        self.page_size = page_size
        self.max_pages = max(1, max_pages)
        self.where = ContextFilter()
        self.sort_key = "created_at"
        self.descending = True
        self.agent_names: dict[str, str] = {}
        self.session_titles: dict[str, str] = {}
        self.highlighted: frozenset[int] = frozenset()
        self.live = False
        """Set by the first refresh; before it, :meth:`sort` only records the order."""
        self._count = 0
        self._pages: OrderedDict[int, list[ContextRow]] = OrderedDict()
        self._wishes: OrderedDict[int, None] = OrderedDict()
        self._reading: set[int] = set()
        self._generation = 0
        self._archived_color = QGuiApplication.palette().color(
            QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text
        )
        self._archived_font = QFont()
        self._archived_font.setItalic(True)

    # -- Qt model API --------------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self._count

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[Column(section)].header
        if orientation == Qt.Orientation.Vertical and role == Qt.ItemDataRole.DisplayRole:
            return section + 1
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # Called for every cell and role on each paint: kept to a few lookups.
        if role not in _SERVED or not index.isValid():
            return None
        number, offset = divmod(index.row(), self.page_size)
        page = self._pages.get(number)
        if page is None:
            if role == _DISPLAY:
                self._wish(number)
                return _LOADING_TEXT.get(index.column())
            return None
        if offset >= len(page):
            return None
        row = page[offset]
        column = index.column()
        if role == _DISPLAY:
            self._pages.move_to_end(number)
            if column == _AGENT:
                return self.agent_names.get(row.agent_id, row.agent_id)
            if column == _SESSION:
                return self.session_label(row.session_id)
            return row.cells[column]
        if role == _BACKGROUND:
            return HIGHLIGHT if row.id in self.highlighted else None
        if role == _FOREGROUND:
            return self._archived_color if row.archived else None
        if role == _FONT:
            return self._archived_font if row.archived else None
        if role == _ALIGNMENT:
            return _RIGHT if column == _ACCESS_COUNT else None
        if role == ContextIdRole:
            return row.id
        if role == ContextRowRole:
            return row
        if row.archived:  # the tooltip
            return row.archive_note
        if column == _SESSION:
            return row.session_id or "Known to the agent in every session"
        if column == _CONTENT:
            return row.preview
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        key = COLUMNS[Column(column)].sort_key
        descending = order == Qt.SortOrder.DescendingOrder
        if (key, descending) == (self.sort_key, self.descending):
            return
        if key in UNINDEXED_SORTS and self._count > MAX_UNINDEXED_SORT_ROWS:
            self.sort_refused.emit(
                f"Sorting {self._count:,} contexts by {COLUMNS[Column(column)].header.lower()} "
                f"would take seconds for every page; filter them to "
                f"{MAX_UNINDEXED_SORT_ROWS:,} or fewer first."
            )
            return
        self.sort_key, self.descending = key, descending
        if self.live:
            self.spawn(self.refresh())

    # -- what is shown -------------------------------------------------------------------------

    def session_label(self, session_id: str | None) -> str:
        """The chat's title for a session of a conversation, else a short id."""
        if session_id is None:
            return "agent-wide"
        return self.session_titles.get(session_id) or session_id[:8]

    def set_names(self, agent_names: dict[str, str], session_titles: dict[str, str]) -> None:
        self.agent_names = agent_names
        self.session_titles = session_titles
        self._changed_all()

    def set_highlighted(self, ids: Iterable[int]) -> None:
        self.highlighted = frozenset(ids)
        self._changed_all()

    def _changed_all(self) -> None:
        if self._count:
            last = self.index(self._count - 1, len(COLUMNS) - 1)
            self.dataChanged.emit(self.index(0, 0), last)

    # -- rows ----------------------------------------------------------------------------------

    def context_at(self, row: int) -> ContextRow | None:
        """The row if it is loaded; never starts a read."""
        number, offset = divmod(row, self.page_size)
        page = self._pages.get(number)
        return page[offset] if page is not None and offset < len(page) else None

    def row_of(self, context_id: int) -> int | None:
        """The row of a loaded context."""
        return self.rows_of({context_id}).get(context_id)

    def rows_of(self, context_ids: set[int]) -> dict[int, int]:
        """The rows of those of ``context_ids`` that are loaded, by id."""
        found: dict[int, int] = {}
        if not context_ids:
            return found
        for number, page in self._pages.items():
            for offset, row in enumerate(page):
                if row.id in context_ids:
                    found[row.id] = number * self.page_size + offset
        return found

    @property
    def cached_pages(self) -> list[int]:
        return list(self._pages)

    async def rows_at(self, rows: Iterable[int]) -> list[ContextRow]:
        """The rows asked for, reading the pages that are not loaded (selections that run past
        what was shown)."""
        wanted = sorted(set(rows))
        generation = self._generation
        for number in sorted({r // self.page_size for r in wanted} - set(self._pages)):
            found = await self._read(number)
            if generation != self._generation:
                return []
            self._keep(number, found)
        return [row for r in wanted if (row := self.context_at(r)) is not None]

    def _wish(self, number: int) -> None:
        if number in self._reading or not self.live:
            return
        self._wishes[number] = None
        self._wishes.move_to_end(number)
        while len(self._wishes) > MAX_WISHES:
            self._wishes.popitem(last=False)
        self._pump()

    def _pump(self) -> None:
        while self._wishes and len(self._reading) < MAX_READS:
            number, _ = self._wishes.popitem(last=True)
            self._reading.add(number)
            self.spawn(self._load(number, self._generation))

    async def _read(self, number: int, count: int | None = None) -> list[ContextRow]:
        """Page ``number`` of a table of ``count`` rows (the current count by default).

        A page past the middle is read from the other end, in the opposite order: the store's
        OFFSET walks every row it skips, so the last page of a million costs what the first
        does instead of a scan of the whole table.
        """
        count = self._count if count is None else count
        first = number * self.page_size
        stop = min(first + self.page_size, count)
        if first > count // 2 and stop > first:
            found = await self.contexts.page(
                self.where,
                sort=self.sort_key,
                descending=not self.descending,
                offset=count - stop,
                limit=stop - first,
            )
            found.reverse()
        else:
            found = await self.contexts.page(
                self.where,
                sort=self.sort_key,
                descending=self.descending,
                offset=first,
                limit=self.page_size,
            )
        # Made into rows off the GUI thread: some 20 ms a page of Python that would hold a paint.
        return await asyncio.to_thread(rows_of, found)

    async def _load(self, number: int, generation: int) -> None:
        try:
            rows = await self._read(number)
        except Exception as exc:  # a locked or closed database: say so, keep the table
            log.exception("reading page %d of contexts failed", number)
            if generation == self._generation:
                self._reading.discard(number)
                self.failed.emit(f"The contexts could not be read: {exc}")
            return
        if generation != self._generation:
            return
        self._reading.discard(number)
        self._keep(number, rows)
        first = number * self.page_size
        last = min(first + self.page_size, self._count) - 1
        if last >= first:
            self.dataChanged.emit(self.index(first, 0), self.index(last, len(COLUMNS) - 1))
        self.page_loaded.emit(number)
        self._pump()

    def _keep(self, number: int, rows: list[ContextRow]) -> None:
        self._pages[number] = rows
        self._pages.move_to_end(number)
        while len(self._pages) > self.max_pages:
            self._pages.popitem(last=False)

    def _new_generation(self) -> int:
        self._generation += 1
        self._wishes.clear()
        self._reading.clear()
        return self._generation

    # -- refreshing ----------------------------------------------------------------------------

    def set_filter(self, where: ContextFilter) -> None:
        """Use ``where`` from the next :meth:`refresh` on."""
        self.where = where

    async def refresh(self) -> int | None:
        """Count the matching contexts and show them from the top (new filter or order).

        Returns the count, or None when a newer refresh overtook this one.
        """
        generation = self._new_generation()
        self.live = True
        try:
            count, first = await asyncio.gather(self.contexts.count(self.where), self._read(0))
        except Exception as exc:
            log.exception("counting contexts failed")
            if generation == self._generation:
                self.failed.emit(f"The contexts could not be read: {exc}")
            return None
        if generation != self._generation:
            return None
        self.beginResetModel()
        self._count = count
        self._pages.clear()
        if first:
            self._pages[0] = first
        self.endResetModel()
        self.counted.emit(count)
        return count

    async def reload(self, rows: range) -> int | None:
        """Read the count and the rows in view again after the store changed, in place: the
        view keeps its scroll position and selection (rows past a new end go).

        Returns the count, or None when a newer refresh overtook this one.
        """
        generation = self._new_generation()
        self.live = True
        try:
            count = await self.contexts.count(self.where)
            last_row = min(max(rows.stop - 1, rows.start), count - 1)
            numbers = range(rows.start // self.page_size, last_row // self.page_size + 1)
            pages = {number: await self._read(number, count) for number in numbers}
        except Exception as exc:
            log.exception("reloading contexts failed")
            if generation == self._generation:
                self.failed.emit(f"The contexts could not be read: {exc}")
            return None
        if generation != self._generation:
            return None
        old = self._count
        fresh: OrderedDict[int, list[ContextRow]] = OrderedDict(
            (number, found) for number, found in pages.items() if found
        )
        if count < old:
            self.beginRemoveRows(QModelIndex(), count, old - 1)
            self._count, self._pages = count, fresh
            self.endRemoveRows()
        elif count > old:
            self.beginInsertRows(QModelIndex(), old, count - 1)
            self._count, self._pages = count, fresh
            self.endInsertRows()
        else:
            self._pages = fresh
        self._changed_all()
        self.counted.emit(count)
        return count
