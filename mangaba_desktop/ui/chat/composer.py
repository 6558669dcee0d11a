"""Where the user writes: Enter sends, Shift+Enter breaks the line, oversized pastes are refused."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QKeyEvent, QStandardItem, QStandardItemModel, QTextCursor
from PySide6.QtWidgets import QCompleter, QPlainTextEdit, QWidget

from ...core import commands
from ...core.validation import MAX_MESSAGE_CHARS

_COMMAND_ROLE = Qt.ItemDataRole.UserRole + 1


class Composer(QPlainTextEdit):
    """The message editor.

    Signals:
        submitted(str): Enter was pressed; the text is passed as it is (the chat validates it).
        refused(str): a paste was refused; the sentence says why.
    """

    submitted = Signal(str)
    refused = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composer")
        self.setPlaceholderText("Message the assistant — Enter to send, Shift+Enter for a new line")
        self.setTabChangesFocus(True)
        self.document().setDocumentMargin(6)
        self.setMaximumBlockCount(0)
        self.setFixedHeight(96)
        self.more_commands: Callable[[], Mapping[str, commands.CommandSpec]] | None = None
        """The plugins' commands as they are now (read each time a command is begun)."""
        self._listed: tuple[str, ...] = ()
        self.command_completer = self._build_completer()
        self.textChanged.connect(self._offer_commands)

    def _build_completer(self) -> QCompleter:
        self._commands_model = QStandardItemModel(self)
        self._list_commands()
        completer = QCompleter(self._commands_model, self)
        completer.setWidget(self)
        completer.setCompletionRole(_COMMAND_ROLE)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        completer.activated[str].connect(self.complete_command)
        return completer

    def _list_commands(self) -> None:
        """The app's commands and the active plugins' (again only when those changed)."""
        specs = list(commands.COMMANDS.values())
        if self.more_commands is not None:
            specs += [s for s in self.more_commands().values() if s.name not in commands.COMMANDS]
        listed = tuple(spec.name for spec in specs)
        if listed == self._listed:
            return
        self._listed = listed
        self._commands_model.clear()
        for spec in specs:
            item = QStandardItem(f"{spec.usage} — {spec.summary}")
            item.setData(f"/{spec.name}", _COMMAND_ROLE)
            item.setEditable(False)
            self._commands_model.appendRow(item)

    def _offer_commands(self) -> None:
        """While the text is a lone ``/word``, list the commands it may become."""
        text = self.toPlainText()
        if text == "/":
            self._list_commands()
        completer = self.command_completer
        typing_a_command = (
            text.startswith("/")
            and not text.startswith("//")
            and not any(c.isspace() for c in text)
        )
        if not typing_a_command:
            completer.popup().hide()
            return
        completer.setCompletionPrefix(text)
        if completer.completionCount() == 0:
            completer.popup().hide()
            return
        rect = self.cursorRect()
        rect.setWidth(max(320, completer.popup().sizeHintForColumn(0) + 24))
        completer.complete(rect)

    def complete_command(self, command: str) -> None:
        """Put ``command`` and a space in place of what was typed."""
        self.setPlainText(f"{command} ")
        self.moveCursor(QTextCursor.MoveOperation.End)
        self.command_completer.popup().hide()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        popup = self.command_completer.popup()
        if popup.isVisible() and event.key() in (
            Qt.Key.Key_Return,
            Qt.Key.Key_Enter,
            Qt.Key.Key_Tab,
            Qt.Key.Key_Escape,
        ):
            event.ignore()  # the completer's popup takes it
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            modifiers = event.modifiers()
            if modifiers & Qt.KeyboardModifier.ShiftModifier:
                self.textCursor().insertText("\n")
                return
            if not modifiers & (
                Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
            ):
                self.submitted.emit(self.toPlainText())
                return
        super().keyPressEvent(event)

    def insertFromMimeData(self, source: QMimeData) -> None:
        if source.hasText():
            incoming = len(source.text())
            room = (
                MAX_MESSAGE_CHARS - len(self.toPlainText()) + len(self.textCursor().selectedText())
            )
            if incoming > room:
                self.refused.emit(
                    f"That paste has {incoming:,} characters; a message holds at most "
                    f"{MAX_MESSAGE_CHARS:,}. Nothing was pasted."
                )
                return
        super().insertFromMimeData(source)
