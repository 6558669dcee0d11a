"""The detail editor: the selected context in full, its text, tags, priority and type editable."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.context import InvalidContext, parse_tags
from ...core.context.passages import clean_content
from ...core.store import Context, ContextType, Priority
from .model import PRIORITY_NAMES, type_label, when

ERROR_STYLE = "color: #b3261e;"


class ContextEditor(QWidget):
    """One context: content, tags, priority and type to edit, the rest shown read-only.

    Invalid input (a bad tag, empty text) is explained in place and nothing is saved.

    Signals:
        save_requested(int, dict): Save was pressed with valid input: the context's id and the
            changed fields, as keyword arguments of ``ContextStore.update``.
        edited(bool): whether the shown context has unsaved changes, when that changes.
    """

    save_requested = Signal(int, object)
    edited = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("context-editor")
        self.context: Context | None = None
        self._dirty = False
        self._build()
        self.show_context(None)

    def _build(self) -> None:
        self.title = QLabel("")
        self.title.setObjectName("context-editor-title")
        self.title.setStyleSheet("font-weight: 600;")
        self.placeholder = QLabel("Select a context to read and edit it.")
        self.placeholder.setWordWrap(True)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.content = QPlainTextEdit()
        self.content.setObjectName("context-content")
        self.tags = QLineEdit()
        self.tags.setObjectName("context-tags")
        self.tags.setPlaceholderText("tags, separated by commas or spaces")
        self.priority = QComboBox()
        for level in Priority:
            self.priority.addItem(PRIORITY_NAMES[level], int(level))
        self.context_type = QComboBox()
        for kind in ContextType:
            self.context_type.addItem(type_label(kind.value), kind.value)
        self.error = QLabel("")
        self.error.setObjectName("context-editor-error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.hide()
        self.agent_label = QLabel()
        self.session_label = QLabel()
        self.session_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.created_label = QLabel()
        self.accessed_label = QLabel()
        self.count_label = QLabel()
        self.parent_label = QLabel()
        self.parent_label.setWordWrap(True)
        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("Store the changes")
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Forget the changes and show the stored context")

        form = QFormLayout()
        form.addRow("Tags", self.tags)
        form.addRow("Priority", self.priority)
        form.addRow("Type", self.context_type)
        form.addRow("Agent", self.agent_label)
        form.addRow("Session", self.session_label)
        form.addRow("Created", self.created_label)
        form.addRow("Last accessed", self.accessed_label)
        form.addRow("Uses", self.count_label)
        form.addRow("Summary", self.parent_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)
        self.fields = QWidget()
        fields_layout = QVBoxLayout(self.fields)
        fields_layout.setContentsMargins(0, 0, 0, 0)
        fields_layout.addWidget(self.title)
        fields_layout.addWidget(self.content, 1)
        fields_layout.addLayout(form)
        fields_layout.addWidget(self.error)
        fields_layout.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 0, 0)
        layout.addWidget(self.placeholder)
        layout.addWidget(self.fields, 1)

        self.save_button.clicked.connect(self.request_save)
        self.revert_button.clicked.connect(self.revert)
        self.content.textChanged.connect(self._on_edited)
        self.tags.textChanged.connect(self._on_edited)
        self.priority.currentIndexChanged.connect(self._on_edited)
        self.context_type.currentIndexChanged.connect(self._on_edited)

    # -- showing -------------------------------------------------------------------------------

    @property
    def context_id(self) -> int | None:
        return self.context.id if self.context is not None else None

    def show_context(self, context: Context | None, *, agent: str = "", session: str = "") -> None:
        """Show ``context`` (None: nothing selected), forgetting unsaved changes."""
        self.context = context
        self.placeholder.setVisible(context is None)
        self.fields.setVisible(context is not None)
        self.hide_error()
        if context is None:
            self._set_dirty(False)
            return
        self.title.setText(f"Context #{context.id}" + ("  (archived)" if context.archived else ""))
        inputs = (self.content, self.tags, self.priority, self.context_type)
        for widget in inputs:
            widget.blockSignals(True)
        self.content.setPlainText(context.content)
        self.content.document().setModified(False)
        self.tags.setText(", ".join(context.tag_list))
        self.priority.setCurrentIndex(max(0, self.priority.findData(int(context.priority))))
        self.context_type.setCurrentIndex(max(0, self.context_type.findData(context.context_type)))
        for widget in inputs:
            widget.blockSignals(False)
        self.agent_label.setText(agent or context.agent_id)
        self.session_label.setText(session)
        self.session_label.setToolTip(context.session_id or "")
        self.created_label.setText(when(context.created_at))
        self.accessed_label.setText(when(context.last_accessed))
        self.count_label.setText(f"{context.access_count:,}")
        if context.parent_id is not None:
            self.parent_label.setText(f"summarised into memory #{context.parent_id}")
        elif context.archived:
            self.parent_label.setText("archived, kept for the record")
        else:
            self.parent_label.setText("—")
        self._set_dirty(False)

    def revert(self) -> None:
        """Show the context as stored, dropping the changes."""
        self.show_context(
            self.context, agent=self.agent_label.text(), session=self.session_label.text()
        )

    # -- editing -------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return self._dirty

    def _on_edited(self, *_args: Any) -> None:
        self.hide_error()
        context = self.context
        if context is None:
            return
        try:
            tags_changed = parse_tags(self.tags.text()) != context.tag_list
        except InvalidContext:
            tags_changed = True
        self._set_dirty(
            self.content.document().isModified()
            or tags_changed
            or self.priority.currentData() != context.priority
            or self.context_type.currentData() != context.context_type
        )

    def _set_dirty(self, dirty: bool) -> None:
        self.save_button.setEnabled(dirty)
        self.revert_button.setEnabled(dirty)
        if dirty != self._dirty:
            self._dirty = dirty
            self.edited.emit(dirty)

    def changes(self) -> dict[str, Any]:
        """The edited fields, checked; raises :class:`InvalidContext` with a readable reason."""
        context = self.context
        if context is None:
            return {}
        fields: dict[str, Any] = {}
        if self.content.document().isModified():
            text = clean_content(self.content.toPlainText())
            if text != context.content:
                fields["content"] = text
        tags = parse_tags(self.tags.text())
        if tags != context.tag_list:
            fields["tags"] = tags
        if self.priority.currentData() != context.priority:
            fields["priority"] = int(self.priority.currentData())
        if self.context_type.currentData() != context.context_type:
            fields["context_type"] = self.context_type.currentData()
        return fields

    def request_save(self) -> None:
        if self.context is None or self.context.id is None:
            return
        try:
            fields = self.changes()
        except InvalidContext as exc:
            self.show_error(str(exc))
            return
        if not fields:
            self._set_dirty(False)
            return
        self.save_requested.emit(self.context.id, fields)

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def hide_error(self) -> None:
        self.error.hide()
