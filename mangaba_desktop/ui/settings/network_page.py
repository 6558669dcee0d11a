"""The “Agent network” page: whether this app's agents are served over A2A, and how."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from ...core.settings import Settings
from .declared import description, help_label, int_spin


class NetworkPage(QWidget):
    """Sharing the agents (A2A server, port, beyond this computer) and the remote agents."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.serve = QCheckBox("Share this app's agents over A2A")
        self.serve.setObjectName("a2a-server")
        self.serve.setChecked(settings.a2a_server)
        self.port = int_spin(Settings, "a2a_port", object_name="a2a-port")
        self.port.setValue(settings.a2a_port)
        self.beyond = QCheckBox("Also to other computers (requests then need the token)")
        self.beyond.setObjectName("a2a-beyond")
        self.beyond.setChecked(settings.a2a_beyond_this_computer)
        self.serve.toggled.connect(self._update_controls)

        sharing = QGroupBox("Sharing")
        form = QFormLayout(sharing)
        form.addRow(self.serve)
        form.addRow("", help_label(description(Settings, "a2a_server")))
        form.addRow("Port", self.port)
        form.addRow(self.beyond)
        form.addRow(
            "",
            help_label(
                "Off, only programs on this computer can reach the agents. The token to "
                "give to other computers is shown by Share… in the Agent network pane."
            ),
        )

        remote = QGroupBox("Remote agents")
        remote_layout = QVBoxLayout(remote)
        urls = settings.remote_agents
        listed = "<br>".join(html.escape(url) for url in urls) if urls else "<i>None added yet.</i>"
        self.remote_list = QLabel(listed)
        self.remote_list.setObjectName("remote-agents")
        self.remote_list.setWordWrap(True)
        remote_layout.addWidget(self.remote_list)
        remote_layout.addWidget(
            help_label(
                "Add a remote agent by its URL, or remove one, from the Agent network pane "
                "(its token goes to the keyring)."
            )
        )

        layout = QVBoxLayout(self)
        layout.addWidget(sharing)
        layout.addWidget(remote)
        layout.addStretch(1)
        self._update_controls()

    def _update_controls(self) -> None:
        self.port.setEnabled(self.serve.isChecked())
        self.beyond.setEnabled(self.serve.isChecked())

    def values(self) -> dict[str, Any]:
        return {
            "a2a_server": self.serve.isChecked(),
            "a2a_port": self.port.value(),
            "a2a_beyond_this_computer": self.beyond.isChecked(),
        }
