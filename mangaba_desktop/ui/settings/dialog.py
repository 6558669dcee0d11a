"""The Settings dialog: five tabs over one draft of the settings, saved by OK or Apply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QMessageBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.settings import InvalidSettings, Settings, SettingsStore
from .background import Tasks
from .declared import show_status, status_label
from .drafts import DraftError, ProviderDraft, ProviderDrafts, problem
from .fallbacks_page import FallbacksPage
from .keys_page import KeysPage
from .limits_page import LimitsPage
from .network_page import NetworkPage
from .plugins_page import PluginsPage
from .providers_page import ProvidersPage
from .questions import ask

if TYPE_CHECKING:
    from ...core.plugins import PluginManager
    from ...core.providers.probe import FoundServer
    from ...core.providers.secrets import KeyStore

log = logging.getLogger(__name__)


class SettingsDialog(QDialog):
    """Providers and models, API keys, fallbacks and parameters, memory and limits, the agent
    network, plugins.

    The settings are edited as a draft: OK and Apply check and save it, and a refused draft
    stays as typed. API keys are the exception: their buttons act at once, through the key
    store, and a key is never part of the settings.

    Signals:
        saved(): the settings were saved.
    """

    saved = Signal()

    def __init__(
        self,
        settings: SettingsStore,
        keys: KeyStore,
        completions: Any,
        spawn: Callable[[Coroutine[Any, Any, Any]], Any],
        parent: QWidget | None = None,
        *,
        found_servers: list[FoundServer] | None = None,
        plugins: PluginManager | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("settings-dialog")
        self.resize(800, 600)
        self.store = settings
        self.keys = keys
        self.spawn = spawn
        self.tasks = Tasks(spawn)
        current = settings.settings

        self.drafts = ProviderDrafts(current.providers, self)
        self.providers_page = ProvidersPage(self.drafts, list(found_servers or []))
        self.keys_page = KeysPage(self.drafts, keys, completions, self.tasks)
        self.fallbacks_page = FallbacksPage(self.drafts, current)
        self.limits_page = LimitsPage(current)
        self.network_page = NetworkPage(current)
        self.plugins = plugins
        self.plugins_page = PluginsPage(plugins.plugins() if plugins else [], current)
        self.tabs = QTabWidget(objectName="settings-tabs")
        self.tabs.addTab(self.providers_page, "Models && providers")
        self.tabs.addTab(self.keys_page, "API keys")
        self.tabs.addTab(self.fallbacks_page, "Fallback && parameters")
        self.tabs.addTab(self.limits_page, "Memory && limits")
        self.tabs.addTab(self.network_page, "Agent network")
        self.tabs.addTab(self.plugins_page, "Plugins")

        self.message_label = status_label("settings-message")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Apply
            | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setObjectName("settings-ok")
        self.apply_button = self.buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.apply_button.setObjectName("settings-apply")
        self.cancel_button = self.buttons.button(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.setObjectName("settings-cancel")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.message_label)
        layout.addWidget(self.buttons)

        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.apply_button.clicked.connect(self.apply)
        self.providers_page.selected.connect(self.keys_page.show_draft)
        self.providers_page.key_requested.connect(self.show_key_of)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self._saved_state = self.state()

    # -- the draft -----------------------------------------------------------------------------

    def state(self) -> tuple[Any, ...]:
        """What the user can change here, to tell whether anything was."""
        return (
            self.drafts.state(),
            self.fallbacks_page.values(),
            self.limits_page.values(),
            self.network_page.values(),
            self.plugins_page.values(),
        )

    def unsaved(self) -> bool:
        return self.state() != self._saved_state or self.keys_page.has_typed_key()

    def collect(self) -> Settings:
        """The settings as typed. Raises :class:`InvalidSettings` (:class:`DraftError` when a
        provider is at fault)."""
        values = self.store.settings.model_dump()
        values["providers"] = [p.model_dump() for p in self.drafts.providers()]
        values.update(self.fallbacks_page.values())
        values.update(self.limits_page.values())
        values.update(self.network_page.values())
        values.update(self.plugins_page.values())
        try:
            return Settings.model_validate(values)
        except ValidationError as exc:
            raise InvalidSettings(problem(exc)) from None

    def show_key_of(self, draft: ProviderDraft) -> None:
        self.keys_page.show_draft(draft)
        self.tabs.setCurrentWidget(self.keys_page)

    def _on_tab_changed(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.keys_page:
            # The provider's id may have changed meanwhile, and its key with it.
            self.tasks.run(self.keys_page.refresh())

    def _show_error(self, message: str) -> None:
        show_status(self.message_label, message, ok=False)

    # -- OK, Apply, Cancel ---------------------------------------------------------------------

    def apply(self) -> bool:
        """Check and save the settings; on a problem say what it is and keep every edit."""
        if self.keys_page.has_typed_key():
            self.tabs.setCurrentWidget(self.keys_page)
            self._show_error(
                "The API key you typed is not saved yet: press Save next to it, or clear it."
            )
            return False
        try:
            self.store.update(self.collect())
        except DraftError as exc:
            self._show_error(str(exc))
            self.tabs.setCurrentWidget(self.providers_page)
            self.providers_page.select(exc.draft)
            return False
        except InvalidSettings as exc:
            self._show_error(str(exc))
            return False
        except OSError as exc:
            self._show_error(f"The settings could not be saved: {exc.strerror or exc}.")
            return False
        moves, deletions = self.drafts.key_moves()
        if moves or deletions:
            # Not one of the dialog's tasks: this must finish even when the dialog closes.
            self.spawn(file_keys(self.keys, moves, deletions))
        self.drafts.mark_saved()
        if self.plugins is not None:
            self.plugins_page.show_plugins(self.plugins.plugins())
        self._saved_state = self.state()
        show_status(self.message_label, "Settings saved.", ok=True)
        self.saved.emit()
        return True

    def accept(self) -> None:
        if self.apply():
            super().accept()

    def reject(self) -> None:
        if self.unsaved():
            self.tasks.run(self._confirm_discard())
        else:
            super().reject()

    async def _confirm_discard(self) -> None:
        box = QMessageBox(self)
        box.setObjectName("discard-question")
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Discard changes?")
        box.setText("Some settings you changed are not saved.")
        box.setInformativeText("Discard them, or keep editing and press OK to save them.")
        discard = box.addButton("Discard changes", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep editing", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)
        if await ask(box) is discard:
            super().reject()

    def done(self, result: int) -> None:
        self.tasks.cancel()
        super().done(result)


async def file_keys(keys: KeyStore, moves: list[tuple[str, str]], deletions: list[str]) -> None:
    """File keys under their providers' new ids and forget those of removed providers."""

    def move(old: str, new: str) -> None:
        # All on the worker thread: the key is never a result or an argument the loop (and
        # its executor's debug log) gets to see.
        source = keys.source(old)
        key = keys.get(old)
        if key:
            keys.set(new, key, session_only=getattr(source, "name", "") == "SESSION")
        keys.delete(old)

    for old, new in moves:
        try:
            await asyncio.to_thread(move, old, new)
        except Exception as exc:
            log.warning("The key of %s could not be moved to %s (%s)", old, new, type(exc).__name__)
    for old in deletions:
        try:
            await asyncio.to_thread(keys.delete, old)
        except Exception as exc:
            log.warning("The key of %s could not be deleted (%s)", old, type(exc).__name__)
