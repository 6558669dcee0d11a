"""Where the user writes: Enter sends, Shift+Enter breaks the line, oversized pastes are refused."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from ...core.validation import MAX_MESSAGE_CHARS


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

    def keyPressEvent(self, event: QKeyEvent) -> None:
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
