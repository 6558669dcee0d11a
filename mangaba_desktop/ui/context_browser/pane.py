"""The Context pane: browse, search, filter, edit, pin and delete what agents remember, and see
which contexts fed a reply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QObject,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QKeyEvent, QKeySequence, QResizeEvent, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ...core import events
from ...core.context import (
    AGENT_WIDE,
    ContextFilter,
    ContextStore,
    InvalidContext,
    parse_tags,
)
from ...core.events import EventBus
from ...core.store import Agent, AgentStore, Context, ContextType, ConversationStore, Priority
from ..wording import plural
from .add_dialog import AddKnowledgeDialog
from .editor import ERROR_STYLE, ContextEditor
from .model import COLUMNS, PRIORITY_NAMES, Column, ContextRow, ContextTableModel, type_label

log = logging.getLogger(__name__)

REFRESH_INTERVAL_MS = 300
"""After the store changes, the rows in view are read again at most this often."""
SEARCH_DELAY_MS = 250
UNDO_SHOWN_MS = 30_000
NARROW_WIDTH = 760
"""Below this width the editor goes under the table."""
MAX_BULK = 10_000
"""Most contexts pinned or deleted at once (their ids are read first)."""

EMPTY_STORE = (
    "Nothing is remembered yet.\n\nContexts appear here as you chat with an agent, or when you "
    "add knowledge with “Add knowledge…”."
)
EMPTY_FILTER = "No context matches these filters."


class ContextEvents(QObject):
    """The store's change events as Qt signals, delivered on the GUI thread whoever publishes.

    Signals:
        contexts_changed(): contexts were added, changed or removed.
        names_changed(): an agent or a chat was added, renamed or removed.
    """

    contexts_changed = Signal()
    names_changed = Signal()

    def __init__(self, bus: EventBus, parent: QObject | None = None) -> None:
        super().__init__(parent)
        names = (
            events.AGENTS_CHANGED,
            events.CONVERSATION_CREATED,
            events.CONVERSATION_UPDATED,
            events.CONVERSATION_DELETED,
        )
        self._unsubscribe = [
            bus.subscribe(events.CONTEXTS_CHANGED, lambda _n, _p: self.contexts_changed.emit()),
            *(bus.subscribe(name, lambda _n, _p: self.names_changed.emit()) for name in names),
        ]

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()


class ContextTable(QTableView):
    """The contexts, one a row; Del deletes the selected ones, Ctrl+Z brings them back.

    Signals:
        delete_pressed(): Del (or Backspace) was pressed.
        undo_pressed(): Ctrl+Z was pressed.
    """

    delete_pressed = Signal()
    undo_pressed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("context-table")
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        rows = self.verticalHeader()
        rows.hide()
        # Fixed, uniform rows: the header then needs no per-row work at a million rows.
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 8)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionsMovable(True)
        header.setHighlightSections(False)

    def setSelectionModel(self, selection_model: QItemSelectionModel) -> None:
        super().setSelectionModel(selection_model)
        # For each section it paints, a header asks whether its whole column is selected: a
        # walk over every row (seconds with a million rows selected by Ctrl+A). These headers
        # highlight nothing, so they get a selection of their own that stays empty.
        self._header_selection = QItemSelectionModel(self.model(), self)
        self.horizontalHeader().setSelectionModel(self._header_selection)
        self.verticalHeader().setSelectionModel(self._header_selection)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        plain = event.modifiers() == Qt.KeyboardModifier.NoModifier
        if event.matches(QKeySequence.StandardKey.Delete) or (
            plain and event.key() == Qt.Key.Key_Backspace
        ):
            self.delete_pressed.emit()
            return
        if event.matches(QKeySequence.StandardKey.Undo):
            self.undo_pressed.emit()
            return
        super().keyPressEvent(event)


class ContextPane(QWidget):
    """What the agents remember: a filterable, sortable table of a million rows if need be, an
    editor for the selected context, pinning, deleting with undo, and adding knowledge.

    Args:
        contexts: the context store it shows and changes.
        agents: for agent names and the agent filter.
        conversations: for the chat titles of sessions.
        bus: the core's event bus; changes to contexts, agents and chats refresh the pane.
        spawn: schedules a coroutine on the event loop, keeping a reference to its task.

    Signals:
        status_message(str): a sentence for the status bar.
        current_changed(object): the Context now shown in the editor, or None.
    """

    status_message = Signal(str)
    current_changed = Signal(object)

    def __init__(
        self,
        contexts: ContextStore,
        agents: AgentStore,
        conversations: ConversationStore,
        bus: EventBus,
        spawn: Callable[[Any], Any],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("context-pane")
        self.contexts = contexts
        self.agents = agents
        self.conversations = conversations
        self.spawn = spawn
        self.started = False
        self.add_dialog: AddKnowledgeDialog | None = None
        self._agents: list[Agent] = []
        self._chat_sessions: list[tuple[str, str]] = []
        self._highlight_ids: list[int] = []
        self._undo_rows: list[Context] = []
        self._pinned_from: dict[int, int] = {}
        self._select_after_reload: list[int] = []
        self._shown_serial = 0
        self._sessions_serial = 0
        self.events = ContextEvents(bus, self)
        self._search_timer = self._timer(SEARCH_DELAY_MS, lambda: self.spawn(self.apply_filters()))
        self._refresh_timer = self._timer(REFRESH_INTERVAL_MS, lambda: self.spawn(self.reload()))
        self._names_timer = self._timer(REFRESH_INTERVAL_MS, lambda: self.spawn(self.load_names()))
        self._undo_timer = self._timer(UNDO_SHOWN_MS, self._forget_undo)
        self._build()
        self._connect()

    def _timer(self, interval: int, action: Callable[[], Any]) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(interval)
        timer.timeout.connect(action)
        return timer

    # -- construction --------------------------------------------------------------------------

    def _build(self) -> None:
        self.type_filter = QComboBox()
        self.type_filter.setToolTip("Show one type of context")
        self.type_filter.addItem("Any type", None)
        for kind in ContextType:
            self.type_filter.addItem(type_label(kind.value), kind.value)
        self.priority_filter = QComboBox()
        self.priority_filter.setToolTip("Show one priority (Critical: pinned)")
        self.priority_filter.addItem("Any priority", None)
        for level in Priority:
            self.priority_filter.addItem(PRIORITY_NAMES[level], int(level))
        self.tag_filter = QLineEdit()
        self.tag_filter.setObjectName("context-tag-filter")
        self.tag_filter.setPlaceholderText("Tag")
        self.tag_filter.setClearButtonEnabled(True)
        self.tag_filter.setMinimumWidth(60)
        self.agent_filter = QComboBox()
        self.agent_filter.setToolTip("Show what one agent remembers")
        self.agent_filter.addItem("Any agent", None)
        self.session_filter = QComboBox()
        self.session_filter.setToolTip(
            "Show one chat's contexts, or what the agent knows everywhere"
        )
        self._fill_sessions([])
        self.search_box = QLineEdit()
        self.search_box.setObjectName("context-search")
        self.search_box.setPlaceholderText("Search text and tags…")
        self.search_box.setClearButtonEnabled(True)
        # Two rows of shrinkable fields, so that the pane fits a narrow dock.
        combos = QHBoxLayout()
        combos.setContentsMargins(0, 0, 0, 0)
        for combo in (
            self.type_filter,
            self.priority_filter,
            self.agent_filter,
            self.session_filter,
        ):
            combo.setMinimumContentsLength(3)
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combos.addWidget(combo, 2 if combo is self.session_filter else 1)
        search = QHBoxLayout()
        search.setContentsMargins(0, 0, 0, 0)
        search.addWidget(self.search_box, 3)
        search.addWidget(self.tag_filter, 1)
        filters = QVBoxLayout()
        filters.setContentsMargins(0, 0, 0, 0)
        filters.setSpacing(4)
        filters.addLayout(search)
        filters.addLayout(combos)
        self.filter_bar = QWidget()
        self.filter_bar.setLayout(filters)
        self.filter_notice = QLabel("")
        self.filter_notice.setObjectName("context-filter-notice")
        self.filter_notice.setStyleSheet(ERROR_STYLE)
        self.filter_notice.setWordWrap(True)
        self.filter_notice.hide()

        self.highlight_label = QLabel("")
        self.show_only_button = QPushButton("Show only these")
        self.show_only_button.setCheckable(True)
        self.clear_highlight_button = QPushButton("Clear")
        self.highlight_bar = self._bar(
            "context-highlight-bar",
            "#fff4cc",
            self.highlight_label,
            self.show_only_button,
            self.clear_highlight_button,
        )
        self.undo_label = QLabel("")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Bring the deleted contexts back (Ctrl+Z)")
        self.dismiss_undo_button = QPushButton("Dismiss")
        self.undo_bar = self._bar(
            "context-undo-bar",
            "#e8eaed",
            self.undo_label,
            self.undo_button,
            self.dismiss_undo_button,
        )

        self.add_button = QPushButton("Add knowledge…")
        self.add_button.setToolTip("Paste text or import a .txt or .md file for an agent to know")
        self.pin_button = QPushButton("Pin")
        self.pin_button.setToolTip("Pinned (Critical) contexts are always given to the agent")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected contexts (Del); Ctrl+Z undoes")
        self.count_label = QLabel("")
        self.count_label.setObjectName("context-count")
        actions = QHBoxLayout()
        actions.setContentsMargins(0, 0, 0, 0)
        actions.addWidget(self.add_button)
        actions.addWidget(self.pin_button)
        actions.addWidget(self.delete_button)
        actions.addStretch(1)
        actions.addWidget(self.count_label)

        self.model = ContextTableModel(self.contexts, self.spawn, self)
        self.table = ContextTable()
        self.table.setModel(self.model)
        for column, spec in COLUMNS.items():
            self.table.setColumnWidth(column, spec.width)
        self.table.horizontalHeader().setSortIndicator(Column.CREATED, Qt.SortOrder.DescendingOrder)
        self.table.setSortingEnabled(True)
        self.empty_label = QLabel(EMPTY_STORE)
        self.empty_label.setObjectName("context-empty")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.table)
        self.stack.addWidget(self.empty_label)
        self.editor = ContextEditor()
        self.splitter = splitter = QSplitter()
        splitter.setObjectName("context-splitter")
        splitter.addWidget(self.stack)
        splitter.addWidget(self.editor)
        splitter.setStretchFactor(0, 1)
        splitter.setSizes([720, 320])

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.filter_bar)
        layout.addWidget(self.filter_notice)
        layout.addWidget(self.highlight_bar)
        layout.addWidget(self.undo_bar)
        layout.addLayout(actions)
        layout.addWidget(splitter, 1)
        self._update_actions()

    def resizeEvent(self, event: QResizeEvent) -> None:
        # The editor sits beside the table in a wide pane, under it in a narrow one.
        wide = event.size().width() >= NARROW_WIDTH
        orientation = Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical
        if self.splitter.orientation() != orientation:
            self.splitter.setOrientation(orientation)
            self.splitter.setSizes([700, 320] if wide else [600, 300])
        super().resizeEvent(event)

    def _bar(self, name: str, color: str, label: QLabel, *buttons: QPushButton) -> QFrame:
        bar = QFrame()
        bar.setObjectName(name)
        bar.setStyleSheet(f"QFrame#{name} {{ background: {color}; border-radius: 4px; }}")
        layout = QHBoxLayout(bar)
        layout.setContentsMargins(8, 2, 4, 2)
        layout.addWidget(label, 1)
        for button in buttons:
            layout.addWidget(button)
        bar.hide()
        return bar

    def _connect(self) -> None:
        for combo in (self.type_filter, self.priority_filter, self.session_filter):
            combo.currentIndexChanged.connect(self._on_filter_changed)
        self.agent_filter.currentIndexChanged.connect(
            lambda _index: self.spawn(self._on_agent_changed())
        )
        self.tag_filter.textChanged.connect(lambda _text: self._search_timer.start())
        self.search_box.textChanged.connect(lambda _text: self._search_timer.start())
        self.show_only_button.toggled.connect(self._on_show_only_toggled)
        self.clear_highlight_button.clicked.connect(lambda: self.highlight([]))
        self.undo_button.clicked.connect(lambda: self.spawn(self.undo_delete()))
        self.dismiss_undo_button.clicked.connect(self._forget_undo)
        self.add_button.clicked.connect(self.open_add_dialog)
        self.pin_button.clicked.connect(lambda: self.spawn(self.toggle_pin()))
        self.delete_button.clicked.connect(lambda: self.spawn(self.delete_selected()))
        self.table.delete_pressed.connect(lambda: self.spawn(self.delete_selected()))
        self.table.undo_pressed.connect(self._on_undo_key)
        undo = QShortcut(QKeySequence(QKeySequence.StandardKey.Undo), self)
        undo.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        undo.activated.connect(self._on_undo_key)
        selection = self.table.selectionModel()
        selection.selectionChanged.connect(lambda *_: self._update_actions())
        selection.currentRowChanged.connect(self._on_current_row_changed)
        self.model.counted.connect(self._on_counted)
        self.model.page_loaded.connect(self._on_page_loaded)
        self.model.failed.connect(self.status_message)
        self.model.sort_refused.connect(self._on_sort_refused)
        self.editor.save_requested.connect(
            lambda context_id, fields: self.spawn(self.save(context_id, fields))
        )
        self.events.contexts_changed.connect(self._on_contexts_changed)
        self.events.names_changed.connect(self._names_timer.start)

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the agents and chats for the filters, then count and show the contexts."""
        await self.load_names()
        self.started = True
        await self.apply_filters()

    async def flush(self) -> None:
        """Stop listening to the store (the app is stopping or the pane goes away)."""
        for timer in (self._search_timer, self._refresh_timer, self._names_timer):
            timer.stop()
        self.events.close()

    # -- filters -------------------------------------------------------------------------------

    def current_filter(self) -> ContextFilter:
        """What the filter bar asks for; raises :class:`InvalidContext` for a bad tag."""
        if self.show_only_button.isChecked() and self._highlight_ids:
            return ContextFilter(ids=frozenset(self._highlight_ids))
        kind = self.type_filter.currentData()
        level = self.priority_filter.currentData()
        tags = parse_tags(self.tag_filter.text())
        if len(tags) > 1:
            raise InvalidContext("Filter by one tag at a time.")
        return ContextFilter(
            types=frozenset({kind}) if kind else None,
            priorities=frozenset({int(level)}) if level else None,
            tag=tags[0] if tags else None,
            agent_id=self.agent_filter.currentData() or None,
            session_id=self.session_filter.currentData() or None,
            text=self.search_box.text(),
        )

    def filters_active(self) -> bool:
        where = self.model.where
        return bool(
            where.types
            or where.priorities
            or where.tag
            or where.agent_id
            or where.session_id
            or where.text.strip()
            or where.ids is not None
        )

    async def apply_filters(self) -> int | None:
        """Show the contexts the filter bar asks for; returns how many match (None when the
        filter is refused or a newer one overtook it)."""
        self._search_timer.stop()
        try:
            where = self.current_filter()
        except InvalidContext as exc:
            self.filter_notice.setText(str(exc))
            self.filter_notice.show()
            return None
        self.filter_notice.hide()
        self.model.set_filter(where)
        return await self.model.refresh()

    def _on_filter_changed(self, _index: int = 0) -> None:
        if self.started:
            self.spawn(self.apply_filters())

    async def _on_agent_changed(self) -> None:
        await self._load_sessions()
        if self.started:
            await self.apply_filters()

    # -- agents and sessions -------------------------------------------------------------------

    async def load_names(self) -> None:
        """Read the agents and chats: names in the table, choices in the filters."""
        agents, chats = await asyncio.gather(self.agents.list(), self.conversations.list())
        self._agents = agents
        titles = {c.session_id: c.title for c in chats if c.session_id}
        self._chat_sessions = [(c.session_id, c.title) for c in chats if c.session_id]
        self.model.set_names({a.id: a.name for a in agents}, titles)
        chosen = self.agent_filter.currentData()
        self.agent_filter.blockSignals(True)
        self.agent_filter.clear()
        self.agent_filter.addItem("Any agent", None)
        for agent in agents:
            self.agent_filter.addItem(agent.name, agent.id)
        index = self.agent_filter.findData(chosen) if chosen else 0
        self.agent_filter.setCurrentIndex(max(0, index))
        self.agent_filter.blockSignals(False)
        sessions_changed = await self._load_sessions()
        if self.started and ((chosen and index < 0) or sessions_changed):
            await self.apply_filters()

    async def _load_sessions(self) -> bool:
        """Fill the session filter for the chosen agent; True if the chosen session is gone."""
        self._sessions_serial += 1
        serial = self._sessions_serial
        agent_id = self.agent_filter.currentData()
        if agent_id:
            infos = await self.contexts.sessions(agent_id)
            if serial != self._sessions_serial:
                return False
            entries = [(i.session_id, i.title or f"Session {i.session_id[:8]}") for i in infos]
        else:
            entries = list(self._chat_sessions)
        return self._fill_sessions(entries)

    def _fill_sessions(self, entries: list[tuple[str, str]]) -> bool:
        chosen = self.session_filter.currentData()
        self.session_filter.blockSignals(True)
        self.session_filter.clear()
        self.session_filter.addItem("Any session", None)
        self.session_filter.addItem("Agent-wide (no chat)", AGENT_WIDE)
        for session_id, title in entries:
            self.session_filter.addItem(title, session_id)
            self.session_filter.setItemData(
                self.session_filter.count() - 1, session_id, Qt.ItemDataRole.ToolTipRole
            )
        index = self.session_filter.findData(chosen) if chosen else 0
        self.session_filter.setCurrentIndex(max(0, index))
        self.session_filter.blockSignals(False)
        return bool(chosen) and index < 0

    # -- refreshing ----------------------------------------------------------------------------

    def _on_contexts_changed(self) -> None:
        if self.started and not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _on_counted(self, count: int) -> None:
        self.count_label.setText(plural(count, "context"))
        if count:
            self.stack.setCurrentWidget(self.table)
        else:
            self.empty_label.setText(EMPTY_FILTER if self.filters_active() else EMPTY_STORE)
            self.stack.setCurrentWidget(self.empty_label)
        self._update_actions()

    def visible_rows(self) -> range:
        """The rows in view (the first page's worth when the table is not laid out)."""
        count = self.model.rowCount()
        top = max(0, self.table.rowAt(0))
        bottom = self.table.rowAt(self.table.viewport().height() - 1)
        if bottom < 0:
            bottom = min(count, top + self.model.page_size) - 1
        return range(top, max(top, bottom) + 1)

    async def reload(self) -> None:
        """Read the rows in view again after the store changed, keeping the selection, the
        current row and the scroll position where the contexts are still there."""
        if not self.started:
            return
        selected = {
            row.id
            for number in self._selected_row_numbers()
            if (row := self.model.context_at(number)) is not None
        }
        current = self._current_row()
        current_id = current.id if current is not None else None
        if self._select_after_reload:
            selected = set(self._select_after_reload)
            current_id = self._select_after_reload[0]
            self._select_after_reload = []
        scroll = self.table.verticalScrollBar().value()
        if await self.model.reload(self.visible_rows()) is None:
            return
        self._reselect(selected, current_id)
        self.table.verticalScrollBar().setValue(scroll)
        self._update_actions()
        shown = self.editor.context_id
        if shown is not None and not self.editor.dirty:
            await self.show_context(shown)

    def _reselect(self, ids: set[int], current_id: int | None) -> None:
        rows = self.model.rows_of(ids | ({current_id} if current_id else set()))
        last = len(COLUMNS) - 1
        selection = QItemSelection()
        for context_id, row in rows.items():
            if context_id in ids:
                selection.select(self.model.index(row, 0), self.model.index(row, last))
        model = self.table.selectionModel()
        flag = QItemSelectionModel.SelectionFlag
        if current_id is not None and current_id in rows:
            model.setCurrentIndex(self.model.index(rows[current_id], 0), flag.NoUpdate)
        model.select(selection, flag.ClearAndSelect | flag.Rows)

    def _on_sort_refused(self, reason: str) -> None:
        model = self.model
        column = next(c for c, spec in COLUMNS.items() if spec.sort_key == model.sort_key)
        order = Qt.SortOrder.DescendingOrder if model.descending else Qt.SortOrder.AscendingOrder
        header = self.table.horizontalHeader()
        header.blockSignals(True)
        header.setSortIndicator(column, order)
        header.blockSignals(False)
        self.status_message.emit(reason)

    # -- selection and the editor --------------------------------------------------------------

    def _current_row(self) -> ContextRow | None:
        index = self.table.currentIndex()
        return self.model.context_at(index.row()) if index.isValid() else None

    def selection_size(self) -> int:
        """How many rows are selected (without listing them: Ctrl+A selects a million)."""
        return sum(r.bottom() - r.top() + 1 for r in self.table.selectionModel().selection())

    def _selected_row_numbers(self, limit: int = MAX_BULK) -> list[int]:
        """The selected rows, the first ``limit`` of them (Ctrl+A selects a million)."""
        rows: set[int] = set()
        for selected in self.table.selectionModel().selection():
            room = limit - len(rows)
            if room <= 0:
                break
            rows.update(range(selected.top(), min(selected.bottom() + 1, selected.top() + room)))
        return sorted(rows)

    async def selected_contexts(self) -> list[ContextRow]:
        """The selected rows, read from the store where they were never shown."""
        size = self.selection_size()
        if size > MAX_BULK:
            self.status_message.emit(
                f"{size:,} contexts are selected; select at most {MAX_BULK:,} at a time."
            )
            return []
        return await self.model.rows_at(self._selected_row_numbers())

    def select_ids(self, ids: list[int]) -> None:
        """Select the loaded rows of these contexts, the first one current."""
        self._reselect(set(ids), ids[0] if ids else None)

    def _update_actions(self) -> None:
        size = self.selection_size()
        self.delete_button.setEnabled(size > 0)
        self.pin_button.setEnabled(size > 0)
        rows = [
            row
            for number in self._selected_row_numbers(limit=1000)
            if (row := self.model.context_at(number)) is not None
        ]
        pinned = bool(rows) and all(r.priority == Priority.CRITICAL for r in rows)
        self.pin_button.setText("Unpin" if pinned else "Pin")

    def _on_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        row = self.model.context_at(current.row()) if current.isValid() else None
        self.spawn(self.show_context(row.id if row is not None else None))

    def _on_page_loaded(self, _number: int) -> None:
        row = self._current_row()
        if row is not None and row.id != self.editor.context_id:
            self.spawn(self.show_context(row.id))

    async def show_context(self, context_id: int | None) -> None:
        """Show a context in the editor (None: clear it); unsaved edits to it are kept, and
        edits to the context shown before are saved first (refused ones stay on screen)."""
        self._shown_serial += 1
        serial = self._shown_serial
        if context_id is not None and context_id == self.editor.context_id and self.editor.dirty:
            return
        pending = self.editor.context_id
        if self.editor.dirty and pending is not None and pending != context_id:
            try:
                changes = self.editor.changes()
            except InvalidContext as exc:
                self.editor.show_error(f"Not saved: {exc} Fix it or press Revert.")
                return
            if changes and await self.save(pending, changes) is None:
                return
            if serial != self._shown_serial:
                return
        context = await self.contexts.get(context_id) if context_id is not None else None
        if serial != self._shown_serial:
            return
        if context is not None and context.id == self.editor.context_id and self.editor.dirty:
            return
        agent_names = self.model.agent_names
        self.editor.show_context(
            context,
            agent=agent_names.get(context.agent_id, context.agent_id) if context else "",
            session=self.model.session_label(context.session_id) if context else "",
        )
        self.current_changed.emit(context)

    async def save(self, context_id: int, fields: dict[str, Any]) -> Context | None:
        """Store the editor's changes; a refusal is shown in the editor."""
        try:
            context = await self.contexts.update(context_id, **fields)
        except InvalidContext as exc:
            self.editor.show_error(str(exc))
            return None
        except LookupError:
            self.editor.show_error("This context was deleted meanwhile; nothing was saved.")
            return None
        except Exception as exc:  # a locked or closed database: keep the edits, say why
            log.exception("saving context %d failed", context_id)
            self.editor.show_error(f"Saving failed: {exc}")
            return None
        if self.editor.context_id == context_id:
            self.editor.show_context(
                context,
                agent=self.model.agent_names.get(context.agent_id, context.agent_id),
                session=self.model.session_label(context.session_id),
            )
        self.status_message.emit(f"Context #{context_id} saved.")
        return context

    # -- pin and delete ------------------------------------------------------------------------

    async def toggle_pin(self) -> None:
        """Pin the selected contexts (priority Critical); if all are pinned, unpin them back to
        the priority they had (High when unknown)."""
        rows = await self.selected_contexts()
        if not rows:
            return
        try:
            if all(r.priority == Priority.CRITICAL for r in rows):
                groups: dict[int, list[int]] = {}
                for row in rows:
                    level = self._pinned_from.pop(row.id, int(Priority.HIGH))
                    groups.setdefault(level, []).append(row.id)
                for level, ids in groups.items():
                    await self.contexts.set_priority(ids, level)
                self.status_message.emit(f"Unpinned {plural(len(rows), 'context')}.")
                return
            todo = [r for r in rows if r.priority != Priority.CRITICAL]
            for row in todo:
                self._pinned_from[row.id] = row.priority
            await self.contexts.set_priority([r.id for r in todo], Priority.CRITICAL)
        except Exception as exc:  # a locked or closed database: say so
            self._failed("Pinning", exc)
            return
        self.status_message.emit(
            f"Pinned {plural(len(todo), 'context')}: pinned contexts are always given to the agent."
        )

    async def delete_selected(self) -> int:
        """Delete the selected contexts; the undo bar (and Ctrl+Z) can bring them back."""
        rows = await self.selected_contexts()
        if not rows:
            return 0
        try:
            removed = await self.contexts.delete([r.id for r in rows])
        except Exception as exc:
            self._failed("Deleting", exc)
            return 0
        if not removed:
            return 0
        self._undo_rows = removed
        self.undo_label.setText(f"Deleted {plural(len(removed), 'context')}")
        self.undo_bar.show()
        self._undo_timer.start()
        return len(removed)

    async def undo_delete(self) -> int:
        """Put back the contexts deleted last; returns how many."""
        rows, self._undo_rows = self._undo_rows, []
        self._forget_undo()
        if not rows:
            return 0
        self._select_after_reload = []
        try:
            # A memory goes back before the sources it summarises: they refer to it.
            restored = await self.contexts.restore(rows)
        except Exception as exc:
            self._undo_rows = rows  # still there to try again
            self.undo_bar.show()
            self._failed("Undoing the deletion", exc)
            return 0
        self.status_message.emit(f"Restored {plural(restored, 'context')}.")
        self._select_after_reload = [c.id for c in rows if c.id is not None]
        return restored

    def _failed(self, action: str, exc: Exception) -> None:
        log.exception("%s failed", action)
        self.status_message.emit(f"{action} failed: {exc}")

    def _on_undo_key(self) -> None:
        if self._undo_rows:
            self.spawn(self.undo_delete())

    def _forget_undo(self) -> None:
        self._undo_timer.stop()
        self._undo_rows = []
        self.undo_bar.hide()

    # -- the contexts of a reply ---------------------------------------------------------------

    def highlight(self, ids: list[int]) -> None:
        """Mark the contexts a chat reply used; an empty list clears the mark."""
        self._highlight_ids = list(dict.fromkeys(ids))
        self.model.set_highlighted(self._highlight_ids)
        count = len(self._highlight_ids)
        if not count:
            self.highlight_bar.hide()
            if self.show_only_button.isChecked():
                self.show_only_button.setChecked(False)  # refilters
            return
        self.highlight_label.setText(f"This reply used {plural(count, 'context')}.")
        self.highlight_bar.show()
        if self.show_only_button.isChecked():
            self.spawn(self.apply_filters())

    def _on_show_only_toggled(self, checked: bool) -> None:
        self.filter_bar.setEnabled(not checked)
        if self.started:
            self.spawn(self.apply_filters())

    # -- adding knowledge ----------------------------------------------------------------------

    def open_add_dialog(self) -> AddKnowledgeDialog:
        """Show the Add knowledge dialog, the agent filter's agent chosen."""
        if self.add_dialog is not None:
            self.add_dialog.deleteLater()
        dialog = AddKnowledgeDialog(
            self.contexts,
            self._agents,
            self.spawn,
            agent_id=self.agent_filter.currentData(),
            parent=self,
        )
        dialog.added.connect(
            lambda count, agent: self.status_message.emit(
                f"Added {plural(count, 'passage')} of knowledge for {agent}."
            )
        )
        self.add_dialog = dialog
        dialog.open()
        return dialog
