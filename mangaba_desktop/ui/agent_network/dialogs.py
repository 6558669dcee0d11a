"""The small forms behind the pane's actions: connect two agents, send a request, broadcast."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QWidget,
)


def agent_combo(agents: Iterable[tuple[str, str]], name: str) -> QComboBox:
    combo = QComboBox()
    combo.setObjectName(name)
    for agent_id, label in agents:
        combo.addItem(label, agent_id)
    return combo


class _Form(QDialog):
    """A titled form with OK and Cancel; OK is on only while the form makes sense."""

    def __init__(self, title: str, name: str, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setObjectName(name)
        self.form = QFormLayout(self)
        self.notice = QLabel("")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #c62828;")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

    def finish(self) -> None:
        self.form.addRow(self.notice)
        self.form.addRow(self.buttons)
        self.check()

    def problem(self) -> str:
        return ""

    def check(self) -> None:
        problem = self.problem()
        self.notice.setText(problem)
        self.notice.setVisible(bool(problem))
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(not problem)


class ConnectDialog(_Form):
    """Two agents to link (both ways)."""

    def __init__(self, agents: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__("Connect agents", "network-connect-dialog", parent)
        self.first = agent_combo(agents, "connect-first")
        self.second = agent_combo(agents, "connect-second")
        if len(agents) > 1:
            self.second.setCurrentIndex(1)
        self.form.addRow("Connect", self.first)
        self.form.addRow("with", self.second)
        for combo in (self.first, self.second):
            combo.currentIndexChanged.connect(lambda _i: self.check())
        self.finish()

    def problem(self) -> str:
        if self.first.count() < 2:
            return "Two agents are needed: create another one first."
        if self.first.currentData() == self.second.currentData():
            return "Choose two different agents."
        return ""


class RequestDialog(_Form):
    """Who asks whom to do what."""

    def __init__(
        self, agents: list[tuple[str, str]], actions: dict[str, str], parent: QWidget | None = None
    ) -> None:
        super().__init__("Send a request", "network-request-dialog", parent)
        self.sender = agent_combo(agents, "request-from")
        self.receiver = agent_combo(agents, "request-to")
        if len(agents) > 1:
            self.receiver.setCurrentIndex(1)
        self.action = QComboBox()
        self.action.setObjectName("request-action")
        for action, description in actions.items():
            self.action.addItem(action, action)
            self.action.setItemData(
                self.action.count() - 1, description, Qt.ItemDataRole.ToolTipRole
            )
        self.text = QPlainTextEdit()
        self.text.setObjectName("request-text")
        self.text.setPlaceholderText("What to say, analyse, translate or summarise")
        self.text.setMaximumHeight(90)
        self.form.addRow("From", self.sender)
        self.form.addRow("To", self.receiver)
        self.form.addRow("Action", self.action)
        self.form.addRow("Text", self.text)
        for combo in (self.sender, self.receiver, self.action):
            combo.currentIndexChanged.connect(lambda _i: self.check())
        self.text.textChanged.connect(self.check)
        self.finish()

    def problem(self) -> str:
        if self.sender.count() < 2:
            return "Two agents are needed: create another one first."
        if self.sender.currentData() == self.receiver.currentData():
            return "An agent does not send requests to itself here: choose another."
        if self.action.currentData() != "get_context" and not self.text.toPlainText().strip():
            return "Write the text of the request."
        return ""


class BroadcastDialog(_Form):
    """A message to every agent the sender is linked to (with one of the tags, if given)."""

    def __init__(self, agents: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__("Broadcast", "network-broadcast-dialog", parent)
        self.sender = agent_combo(agents, "broadcast-from")
        self.tags = QLineEdit()
        self.tags.setObjectName("broadcast-tags")
        self.tags.setPlaceholderText("Tags, separated by commas (empty: all linked agents)")
        self.text = QPlainTextEdit()
        self.text.setObjectName("broadcast-text")
        self.text.setMaximumHeight(90)
        self.form.addRow("From", self.sender)
        self.form.addRow("Tags", self.tags)
        self.form.addRow("Text", self.text)
        self.sender.currentIndexChanged.connect(lambda _i: self.check())
        self.text.textChanged.connect(self.check)
        self.finish()

    def tag_list(self) -> list[str]:
        return [tag.strip() for tag in self.tags.text().split(",") if tag.strip()]

    def problem(self) -> str:
        if self.sender.count() == 0:
            return "There is no agent to broadcast from."
        if not self.text.toPlainText().strip():
            return "Write what to broadcast."
        return ""
