"""The “Memory & limits” page: how fast agents may go and how much each one remembers."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QFormLayout, QGroupBox, QVBoxLayout, QWidget

from ...core.settings import Settings
from .declared import description, float_spin, help_label, int_spin


class LimitsPage(QWidget):
    """Requests a minute and burst per agent, and the contexts kept per agent."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rate_spin = float_spin(
            Settings, "agent_requests_per_minute", object_name="agent-rate", decimals=1
        )
        self.rate_spin.setValue(settings.agent_requests_per_minute)
        self.burst_spin = int_spin(Settings, "agent_burst", object_name="agent-burst")
        self.burst_spin.setValue(settings.agent_burst)
        self.context_spin = int_spin(Settings, "context_cap", object_name="context-cap")
        self.context_spin.setSingleStep(1000)
        self.context_spin.setValue(settings.context_cap)

        pace = QGroupBox("Pace of each agent")
        pace_form = QFormLayout(pace)
        pace_form.addRow("Requests a minute", self.rate_spin)
        pace_form.addRow("", help_label(description(Settings, "agent_requests_per_minute")))
        pace_form.addRow("Burst", self.burst_spin)
        pace_form.addRow("", help_label(description(Settings, "agent_burst")))
        memory = QGroupBox("Memory")
        memory_form = QFormLayout(memory)
        memory_form.addRow("Contexts kept", self.context_spin)
        memory_form.addRow("", help_label(description(Settings, "context_cap")))

        layout = QVBoxLayout(self)
        layout.addWidget(pace)
        layout.addWidget(memory)
        layout.addStretch(1)

    def values(self) -> dict[str, Any]:
        return {
            "agent_requests_per_minute": self.rate_spin.value(),
            "agent_burst": self.burst_spin.value(),
            "context_cap": self.context_spin.value(),
        }
