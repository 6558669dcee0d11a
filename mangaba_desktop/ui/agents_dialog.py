"""Create, edit and delete agents: a name, a persona, a model and tags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.personas import TEMPLATES, Persona
from ..core.store import Agent, AgentStore, InvalidAgent

_AGENT_ROLE = Qt.ItemDataRole.UserRole + 1


class AgentsDialog(QDialog):
    """The list of agents on the left, the chosen one's form on the right.

    Signals:
        saved(str): an agent was created or saved (its id).
    """

    saved = Signal(str)

    def __init__(
        self,
        agents: AgentStore,
        spawn: Callable[[Any], Any],
        parent: QWidget | None = None,
        *,
        selected: str | None = None,
        models: list[str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Agents")
        self.setObjectName("agents-dialog")
        self.resize(760, 480)
        self.agents = agents
        self.spawn = spawn
        self._selected = selected
        self._current: Agent | None = None

        self.agent_list = QListWidget()
        self.agent_list.setObjectName("agent-list")
        self.new_button = QPushButton("New agent")
        templates = QMenu(self.new_button)
        for persona in TEMPLATES:
            templates.addAction(persona.name, lambda p=persona: self.spawn(self.create_from(p)))
        self.new_button.setMenu(templates)
        self.delete_button = QPushButton("Delete…")
        left = QVBoxLayout()
        left.addWidget(self.agent_list, 1)
        row = QHBoxLayout()
        row.addWidget(self.new_button)
        row.addWidget(self.delete_button)
        left.addLayout(row)

        self.name_edit = QLineEdit()
        self.persona_edit = QPlainTextEdit()
        self.persona_edit.setPlaceholderText(
            "The system prompt: who the agent is and how it answers"
        )
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("The app's default model when none is set")
        if models:
            # The configured models are offered as one types; any litellm name is accepted.
            completer = QCompleter(models, self.model_edit)
            completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
            completer.setFilterMode(Qt.MatchFlag.MatchContains)
            self.model_edit.setCompleter(completer)
            self.model_edit.setToolTip("Configured: " + ", ".join(models[:12]))
        self.tags_edit = QLineEdit()
        self.tags_edit.setPlaceholderText("finance, reports")
        self.id_label = QLabel()
        self.id_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label = QLabel()
        self.error_label.setObjectName("agent-error")
        self.error_label.setStyleSheet("color: #b3261e;")
        self.error_label.setWordWrap(True)
        self.save_button = QPushButton("Save")
        self.save_button.setDefault(True)
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Persona", self.persona_edit)
        form.addRow("Model", self.model_edit)
        form.addRow("Tags", self.tags_edit)
        form.addRow("Id", self.id_label)
        right = QVBoxLayout()
        right.addLayout(form, 1)
        right.addWidget(self.error_label)
        right.addWidget(self.save_button, 0, Qt.AlignmentFlag.AlignRight)

        body = QHBoxLayout()
        body.addLayout(left, 1)
        body.addLayout(right, 2)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(body, 1)
        layout.addWidget(close)

        self.agent_list.currentItemChanged.connect(self._on_current_changed)
        self.save_button.clicked.connect(lambda: self.spawn(self.save()))
        self.delete_button.clicked.connect(self.confirm_delete)
        self.spawn(self.reload())

    async def reload(self, select: str | None = None) -> None:
        agents = await self.agents.list()
        wanted = select or (self._current.id if self._current else self._selected)
        self.agent_list.blockSignals(True)
        self.agent_list.clear()
        for agent in agents:
            item = QListWidgetItem(agent.name)
            item.setData(_AGENT_ROLE, agent)
            self.agent_list.addItem(item)
        self.agent_list.blockSignals(False)
        rows = [i for i, a in enumerate(agents) if a.id == wanted]
        self.agent_list.setCurrentRow(rows[0] if rows else 0)
        self.delete_button.setEnabled(len(agents) > 1)

    def _form(self) -> dict[str, str]:
        return {
            "name": self.name_edit.text(),
            "persona": self.persona_edit.toPlainText(),
            "model": self.model_edit.text().strip(),
            "tags": self.tags_edit.text(),
        }

    def _shown(self, agent: Agent) -> dict[str, str]:
        return {
            "name": agent.name,
            "persona": agent.persona,
            "model": agent.model or "",
            "tags": ", ".join(agent.tag_list),
        }

    def unsaved(self) -> dict[str, str] | None:
        """The form's values when they differ from the agent shown, else ``None``."""
        if self._current is None:
            return None
        form = self._form()
        return form if form != self._shown(self._current) else None

    def done(self, result: int) -> None:
        # Closing keeps what was typed: the edits are saved (a refused edit keeps it open).
        if self.unsaved() is not None and self._current is not None:
            self.spawn(self._save_then_close(result))
            return
        super().done(result)

    async def _save_then_close(self, result: int) -> None:
        if await self.save() is not None:
            super().done(result)

    def _on_current_changed(self, current: QListWidgetItem | None, _old: Any) -> None:
        previous, edits = self._current, self.unsaved()
        if previous is not None and edits is not None:
            # Another agent was picked with edits pending: they are saved, not dropped.
            self.spawn(self._save_edits(previous, edits))
        agent: Agent | None = current.data(_AGENT_ROLE) if current is not None else None
        self._current = agent
        self.error_label.clear()
        self.name_edit.setText(agent.name if agent else "")
        self.persona_edit.setPlainText(agent.persona if agent else "")
        self.model_edit.setText(agent.model or "" if agent else "")
        self.tags_edit.setText(", ".join(agent.tag_list) if agent else "")
        self.id_label.setText(agent.id if agent else "")

    async def _save_edits(self, agent: Agent, edits: dict[str, str]) -> None:
        try:
            await self.agents.update(agent.id, **edits)
        except (InvalidAgent, LookupError) as exc:
            self.error_label.setText(f"“{agent.name}” was not saved: {exc}")
            return
        await self.reload()

    async def save(self) -> Agent | None:
        if self._current is None:
            return None
        try:
            agent = await self.agents.update(self._current.id, **self._form())
        except InvalidAgent as exc:
            self.error_label.setText(str(exc))
            return None
        except LookupError:
            self.error_label.setText("This agent was deleted meanwhile; nothing was saved.")
            return None
        self.error_label.clear()
        await self.reload(agent.id)
        self.saved.emit(agent.id)
        return agent

    async def create_from(self, persona: Persona) -> Agent:
        agent = await self.agents.create(persona.name, persona.prompt, tags=list(persona.tags))
        await self.reload(agent.id)
        self.name_edit.setFocus()
        self.name_edit.selectAll()
        self.saved.emit(agent.id)
        return agent

    def confirm_delete(self) -> None:
        agent = self._current
        if agent is None:
            return
        answer = QMessageBox.question(
            self,
            "Delete agent",
            f"Delete “{agent.name}” and everything it remembers? Its chats stay and are "
            "answered by the default agent.",
            QMessageBox.StandardButton.Delete | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        if answer == QMessageBox.StandardButton.Delete:
            self.spawn(self.delete(agent.id))

    async def delete(self, agent_id: str) -> None:
        try:
            await self.agents.delete(agent_id)
        except InvalidAgent as exc:
            self.error_label.setText(str(exc))
            return
        self._current = None
        await self.reload()
