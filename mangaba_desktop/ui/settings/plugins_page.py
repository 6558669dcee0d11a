"""The “Plugins” page: the installed plugins, what state each is in, and which are on."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.plugins import PluginInfo, PluginState
from ...core.settings import Settings
from .declared import description, help_label

_STATES = {
    PluginState.ACTIVE: "Active",
    PluginState.OFF: "Off",
    PluginState.FAILED: "Failed",
}
NAME, VERSION, STATUS, DESCRIPTION = range(4)


class PluginsPage(QWidget):
    """One row per plugin: a checkbox to turn it on or off, its version, state (with the
    error of one that failed) and description. Saved as ``disabled_plugins``."""

    def __init__(
        self, plugins: list[PluginInfo], settings: Settings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.plugin_list = QTreeWidget(objectName="plugin-list")
        self.plugin_list.setHeaderLabels(["Plugin", "Version", "Status", "Description"])
        self.plugin_list.setRootIsDecorated(False)
        self.plugin_list.setToolTip(description(Settings, "disabled_plugins"))
        header = self.plugin_list.header()
        header.setStretchLastSection(True)
        for column in (NAME, VERSION, STATUS):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.empty_label = QLabel("No plugins are installed.", objectName="plugins-empty")
        # Names turned off whose plugin is not installed now: kept, so that a plugin
        # reinstalled later comes back off.
        self._disabled = set(settings.disabled_plugins)
        self.show_plugins(plugins)

        layout = QVBoxLayout(self)
        layout.addWidget(self.plugin_list, 1)
        layout.addWidget(self.empty_label)
        layout.addWidget(
            help_label(
                "Plugins are installed with Python packages. One that fails is off until the "
                "app restarts; turning one off or on takes effect when the settings are saved."
            )
        )

    def show_plugins(self, plugins: list[PluginInfo]) -> None:
        """List ``plugins``, keeping the boxes the user ticked or cleared meanwhile."""
        self._disabled = set(self.values()["disabled_plugins"])
        self.plugin_list.clear()
        for plugin in plugins:
            item = QTreeWidgetItem(
                [plugin.name, plugin.version, _status(plugin), plugin.description]
            )
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            off = plugin.name in self._disabled
            item.setCheckState(NAME, Qt.CheckState.Unchecked if off else Qt.CheckState.Checked)
            item.setToolTip(STATUS, plugin.error or _status(plugin))
            details = plugin.description
            if plugin.commands:
                details += "\nCommands: " + ", ".join(plugin.commands)
            item.setToolTip(DESCRIPTION, details)
            self.plugin_list.addTopLevelItem(item)
        self.empty_label.setVisible(not plugins)

    def item(self, name: str) -> QTreeWidgetItem | None:
        found = self.plugin_list.findItems(name, Qt.MatchFlag.MatchExactly, NAME)
        return found[0] if found else None

    def values(self) -> dict[str, Any]:
        disabled = set(self._disabled)
        for index in range(self.plugin_list.topLevelItemCount()):
            item = self.plugin_list.topLevelItem(index)
            name = item.text(NAME)
            if item.checkState(NAME) == Qt.CheckState.Checked:
                disabled.discard(name)
            else:
                disabled.add(name)
        return {"disabled_plugins": sorted(disabled)}


def _status(plugin: PluginInfo) -> str:
    text = _STATES[plugin.state]
    return f"{text}: {plugin.error}" if plugin.state == PluginState.FAILED else text
