"""Add knowledge: pasted text or a .txt/.md file, split into passages an agent can retrieve."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.context import ContextStore, InvalidContext, parse_tags, split_passages
from ...core.context.passages import MAX_IMPORT_CHARS
from ...core.store import Agent, ContextType, Priority
from .editor import ERROR_STYLE
from .model import PRIORITY_NAMES

log = logging.getLogger(__name__)

SHOW_LIMIT = 200_000
"""Imported text longer than this is added as it is, not laid out in the text box."""
MAX_FILE_BYTES = 4 * MAX_IMPORT_CHARS
"""UTF-8 takes at most four bytes a character: a larger file cannot be added at once."""
SNIFF_BYTES = 8192


class UnreadableFile(Exception):
    """A file that cannot be added as text, with a sentence the user can read."""


def read_text_file(path: Path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped); raises :class:`UnreadableFile`
    for a binary file, another encoding, or one too large. Blocking: run it off the GUI thread.
    """
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise UnreadableFile(
                f"{path.name} has {size / 2**20:,.0f} MB; at most {MAX_IMPORT_CHARS:,} characters "
                "can be added at once. Split the file first; nothing was added."
            )
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"{path.name} cannot be read ({exc.strerror or exc}).") from exc
    if b"\0" in data[:SNIFF_BYTES]:
        raise UnreadableFile(
            f"{path.name} looks like a binary file (or UTF-16 text), not UTF-8 text; nothing was "
            "added. Import a .txt or .md file saved as UTF-8."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{path.name} is not UTF-8 text (byte {exc.start:,} cannot be read); nothing was "
            "added. Save it as UTF-8 and import it again."
        ) from None


class AddKnowledgeDialog(QDialog):
    """Paste or import text, pick the agent, tags and priority; Add stores it as passages.

    Args:
        contexts: where the passages go.
        agents: the agents to choose from (the first is the default).
        spawn: schedules a coroutine on the event loop.
        agent_id: the agent chosen at first (the pane's agent filter), if any.

    Signals:
        added(int, str): passages were stored: how many, and the agent's name.
    """

    added = Signal(int, str)

    def __init__(
        self,
        contexts: ContextStore,
        agents: Sequence[Agent],
        spawn: Callable[[Any], Any],
        *,
        agent_id: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.contexts = contexts
        self.spawn = spawn
        self._file_text: str | None = None
        self.setWindowTitle("Add knowledge")
        self.resize(640, 520)
        self.text = QPlainTextEdit()
        self.text.setObjectName("knowledge-text")
        self.text.setPlaceholderText(
            "Paste text here, or import a .txt or .md file. Long text is split into passages "
            "the agent can find when a question needs them."
        )
        self.import_button = QPushButton("Import file…")
        self.source_label = QLabel("")
        self.agent = QComboBox()
        for agent in agents:
            self.agent.addItem(agent.name, agent.id)
        if agent_id is not None and self.agent.findData(agent_id) >= 0:
            self.agent.setCurrentIndex(self.agent.findData(agent_id))
        self.tags = QLineEdit()
        self.tags.setPlaceholderText("optional: tags, separated by commas or spaces")
        self.priority = QComboBox()
        for level in Priority:
            self.priority.addItem(PRIORITY_NAMES[level], int(level))
        self.priority.setCurrentIndex(self.priority.findData(int(Priority.MEDIUM)))
        self.error = QLabel("")
        self.error.setObjectName("knowledge-error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.hide()
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.add_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.add_button.setText("Add")

        source = QHBoxLayout()
        source.addWidget(self.import_button)
        source.addWidget(self.source_label, 1)
        form = QFormLayout()
        form.addRow("Agent", self.agent)
        form.addRow("Tags", self.tags)
        form.addRow("Priority", self.priority)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addLayout(source)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        self.import_button.clicked.connect(self.choose_file)
        self.buttons.accepted.connect(lambda: self.spawn(self.submit()))
        self.buttons.rejected.connect(self.reject)
        self.text.textChanged.connect(self.hide_error)
        self.tags.textEdited.connect(self.hide_error)

    # -- the text ------------------------------------------------------------------------------

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import a text file", "", "Text (*.txt *.md *.markdown);;All files (*)"
        )
        if path:
            self.spawn(self.import_file(Path(path)))

    async def import_file(self, path: Path) -> bool:
        """Read ``path`` (off the GUI thread) into the dialog; False, with the reason shown,
        when it is not UTF-8 text."""
        self.import_button.setEnabled(False)
        self.source_label.setText(f"Reading {path.name}…")
        try:
            text = await asyncio.to_thread(read_text_file, path)
        except UnreadableFile as exc:
            self.source_label.setText("")
            self.show_error(str(exc))
            return False
        finally:
            self.import_button.setEnabled(True)
        self.text.blockSignals(True)
        if len(text) <= SHOW_LIMIT:
            self._file_text = None
            self.text.setReadOnly(False)
            self.text.setPlainText(text)
        else:
            self._file_text = text
            self.text.clear()
            self.text.setReadOnly(True)
            self.text.setPlaceholderText(
                f"{path.name} is too long to show here; its {len(text):,} characters will be "
                "added as they are."
            )
        self.text.blockSignals(False)
        self.source_label.setText(f"{path.name}: {len(text):,} characters")
        self.hide_error()
        return True

    def text_to_add(self) -> str:
        return self._file_text if self._file_text is not None else self.text.toPlainText()

    # -- adding --------------------------------------------------------------------------------

    async def submit(self) -> int:
        """Store the text as passages; returns how many (0, with the reason shown, if none)."""
        agent_id = self.agent.currentData()
        if not agent_id:
            self.show_error("Choose the agent that should know this.")
            return 0
        try:
            tags = parse_tags(self.tags.text())
        except InvalidContext as exc:
            self.show_error(str(exc))
            return 0
        text = self.text_to_add()
        self.add_button.setEnabled(False)
        try:
            # What ContextStore.add_text does, with the split (seconds for a book) off the GUI
            # thread.
            passages = await asyncio.to_thread(split_passages, text)
            if not passages:
                raise InvalidContext("There is no text to add: paste some or import a file.")
            added = await self.contexts.add_many(
                agent_id,
                passages,
                ContextType.KNOWLEDGE,
                priority=int(self.priority.currentData()),
                tags=tags,
            )
        except InvalidContext as exc:
            self.show_error(str(exc))
            return 0
        except Exception as exc:  # the agent deleted meanwhile, a locked file: say so, keep text
            log.exception("adding knowledge failed")
            self.show_error(f"The text could not be added: {exc}")
            return 0
        finally:
            self.add_button.setEnabled(True)
        self.added.emit(len(added), self.agent.currentText())
        self.accept()
        return len(added)

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def hide_error(self) -> None:
        self.error.hide()
