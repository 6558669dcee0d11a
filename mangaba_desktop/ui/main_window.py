"""The main window: docks for the panes, menus, shortcuts, status bar, saved layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QPaintEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QWidget,
)

from .. import APP_NAME, __version__
from ..core import events

if TYPE_CHECKING:
    from ..core.agent import Runtime
    from ..core.providers.completions import Completions
    from ..core.providers.probe import FoundServer
    from ..core.providers.secrets import KeyStore
    from .agent_network import NetworkPane
    from .agent_network.sharing import Sharing
    from .charts import PerformancePane
    from .chat.pane import ChatPane
    from .context_browser import ContextPane

LAYOUT_VERSION = 1

_SIDE_PANES = (
    # name, title, what shows while it opens
    ("context", "Context", "Opening what your agents remember…"),
    ("network", "Agent network", "Opening the agent network…"),
    ("performance", "Performance", "Opening the performance charts…"),
)


class MainWindow(QMainWindow):
    """The app's one window.

    Signals:
        painted: the first frame was drawn.
        closed: the user closed the window (or asked to quit).
    """

    painted = Signal()
    closed = Signal()
    plugin_failed = Signal(str, str)
    """A plugin was turned off: its name and why (emitted from whichever thread noticed)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.chat_pane: ChatPane | None = None
        self.context_pane: ContextPane | None = None
        self.network_pane: NetworkPane | None = None
        self.performance_pane: PerformancePane | None = None
        self.sharing: Sharing | None = None
        """The A2A server of the app's agents, once attached."""
        self.runtime: Runtime | None = None
        self.keys: KeyStore | None = None
        self.found_servers: list[FoundServer] = []
        self._spawn: Callable[[Any], Any] | None = None
        self._painted = False
        self._settings = QSettings(str(directory / "window.ini"), QSettings.Format.IniFormat)
        self.setWindowTitle(APP_NAME)
        self.setObjectName("main-window")
        self.resize(1200, 780)
        self.setDockNestingEnabled(True)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)

        loading = QLabel("Opening your conversations…")
        loading.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.chat_dock = self._dock("chat", "Chat", loading)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.chat_dock)
        self.side_docks: list[QDockWidget] = []
        for name, title, opening in _SIDE_PANES:
            waiting = QLabel(opening)
            waiting.setAlignment(Qt.AlignmentFlag.AlignCenter)
            dock = self._dock(name, title, waiting)
            self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
            if self.side_docks:
                self.tabifyDockWidget(self.side_docks[0], dock)
            self.side_docks.append(dock)
        self.side_docks[0].raise_()
        self.resizeDocks(
            [self.chat_dock, self.side_docks[0]], [800, 400], Qt.Orientation.Horizontal
        )
        self._default_state = self.saveState(LAYOUT_VERSION)

        self._build_status_bar()
        self._build_menus()

    # -- construction --------------------------------------------------------------------------

    def _dock(self, name: str, title: str, widget: QWidget) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{name}")
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        return dock

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("Model: loading…")
        self.network_label = QLabel("")
        self.speed_label = QLabel("")
        for label in (self.speed_label, self.network_label, self.model_label):
            label.setContentsMargins(8, 0, 8, 0)
            bar.addPermanentWidget(label)

    def _action(
        self,
        text: str,
        slot: Callable[[], Any],
        shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
    ) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(lambda _checked=False: slot())
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        self.new_chat_action = self._action("&New chat", self._on_new_chat, "Ctrl+N")
        self.search_action = self._action("&Search all chats…", self._on_search, "Ctrl+K")
        self.export_md_action = self._action("Export as &Markdown…", lambda: self._on_export("md"))
        self.export_json_action = self._action("Export as &JSON…", lambda: self._on_export("json"))
        self.stop_action = self._action("&Stop reply", self._on_stop, "Esc")
        self.regenerate_action = self._action("&Regenerate reply", self._on_regenerate, "Ctrl+R")
        self.embeddings_action = self._action(
            "Find memories by &meaning (embeddings, local model)",
            lambda: self.set_embeddings(self.embeddings_action.isChecked()),
        )
        self.embeddings_action.setCheckable(True)
        self.embeddings_action.setToolTip(
            "Also rank what the agents remember by similarity of meaning, not only by shared "
            "words. Uses the local model in the background."
        )
        self.export_memory_action = self._action("Export agents' &memory…", self._on_export_memory)
        self.import_memory_action = self._action("&Import memory…", self._on_import_memory)
        self.settings_action = self._action(
            "&Settings…", self._on_settings, QKeySequence.StandardKey.Preferences
        )
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        self.usage_action = self._action("&Usage and cost…", self._on_usage)
        self.audit_action = self._action("&Audit log…", self._on_audit_log)
        self.audit_action.setToolTip(
            "Keys, sharing, requests from other computers, settings changes, exports and imports"
        )
        self.chat_actions = [
            self.settings_action,
            self.usage_action,
            self.audit_action,
            self.new_chat_action,
            self.search_action,
            self.export_md_action,
            self.export_json_action,
            self.stop_action,
            self.regenerate_action,
            self.export_memory_action,
            self.import_memory_action,
            self.embeddings_action,
        ]
        for action in self.chat_actions:
            action.setEnabled(False)

        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.new_chat_action)
        file_menu.addSeparator()
        file_menu.addAction(self.export_md_action)
        file_menu.addAction(self.export_json_action)
        file_menu.addSeparator()
        file_menu.addAction(self.export_memory_action)
        file_menu.addAction(self.import_memory_action)
        file_menu.addSeparator()
        file_menu.addAction(self.settings_action)
        file_menu.addAction(self.audit_action)
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))

        chat_menu = bar.addMenu("&Chat")
        chat_menu.addAction(self.search_action)
        chat_menu.addAction(self.stop_action)
        chat_menu.addAction(self.regenerate_action)
        chat_menu.addSeparator()
        chat_menu.addAction(self.usage_action)
        chat_menu.addAction(self.embeddings_action)

        view_menu = bar.addMenu("&View")
        for dock in (self.chat_dock, *self.side_docks):
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        view_menu.addAction(self._action("&Reset layout", self.reset_layout))

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&Keyboard shortcuts", self._on_shortcuts))
        help_menu.addAction(self._action(f"&About {APP_NAME}", self._on_about))

    # -- services ------------------------------------------------------------------------------

    async def attach(self, runtime: Runtime, spawn: Callable[[Any], Any]) -> None:
        """Fill the Chat, Context and Agent network panes once the history is open."""
        from .agent_network import NetworkPane
        from .chat.pane import ChatPane
        from .context_browser import ContextPane

        self.runtime = runtime
        self._spawn = spawn
        self.chat_pane = ChatPane(
            runtime.chat,
            runtime.conversations,
            runtime.bus,
            spawn,
            self,
            agents=runtime.agents,
            outbox=runtime.outbox,
            settings=runtime.settings,
            audit=runtime.audit,
            network=runtime.network,
        )
        self.chat_pane.status_message.connect(self.show_status)
        self.chat_pane.reply_speed.connect(self._on_reply_speed)
        self.chat_pane.streaming_changed.connect(self._on_streaming_changed)
        self.chat_dock.setWidget(self.chat_pane)
        self.context_pane = ContextPane(
            runtime.contexts, runtime.agents, runtime.conversations, runtime.bus, spawn
        )
        self.context_pane.status_message.connect(self.show_status)
        self.chat_pane.reply_selected.connect(self.context_pane.highlight)
        self.side_docks[0].setWidget(self.context_pane)
        from .agent_network.sharing import Sharing

        self.sharing = Sharing(runtime, self.keys)
        if runtime.settings is not None:
            runtime.settings.subscribe(self._on_sharing_settings)
        self.network_pane = NetworkPane(
            runtime.network,
            runtime.agents,
            runtime.bus,
            spawn,
            runtime=runtime,
            settings=runtime.settings,
            keys=self.keys,
            sharing=self.sharing,
        )
        self.network_pane.status_message.connect(self.show_status)
        self.side_docks[1].setWidget(self.network_pane)
        from .charts import PerformancePane

        agents = runtime.agents

        async def agent_names() -> dict[str, str]:
            return {agent.id: agent.name for agent in await agents.list()}

        self.performance_pane = PerformancePane(
            runtime.metrics, runtime.bus, spawn, agent_names=agent_names
        )
        self.performance_pane.status_message.connect(self.show_status)
        self.side_docks[2].setWidget(self.performance_pane)
        for action in self.chat_actions:
            action.setEnabled(True)
        self._on_streaming_changed(False)
        self._watch_network()
        self.plugin_failed.connect(self._on_plugin_failed)
        runtime.bus.subscribe(
            events.PLUGIN_FAILED,
            lambda _name, payload: self.plugin_failed.emit(
                str(payload.get("plugin")), str(payload.get("error"))
            ),
        )
        if self._settings.value("memory/embeddings", False, type=bool):
            self.embeddings_action.setChecked(True)
            self.set_embeddings(True)
        await self.chat_pane.start()
        await self.context_pane.start()
        await self.network_pane.start()
        await self.performance_pane.start()

    async def detach(self) -> None:
        if self.chat_pane is not None:
            await self.chat_pane.flush()
        if self.context_pane is not None:
            await self.context_pane.flush()
        if self.network_pane is not None:
            await self.network_pane.flush()
        if self.performance_pane is not None:
            await self.performance_pane.flush()
        await self._close_embedder()

    def set_embeddings(self, enabled: bool) -> None:
        """Turn vector similarity in retrieval on (embedding the backlog in the background)
        or off; the choice is kept for the next start."""
        if self.runtime is None or self._spawn is None:
            return
        self._settings.setValue("memory/embeddings", enabled)
        contexts = self.runtime.contexts
        if enabled and contexts.embedder is None:
            from ..core.context.embeddings import LocalEmbedder

            contexts.embedder = LocalEmbedder()
            contexts.index_soon()
            self.show_status("Memories are being embedded in the background.")
        elif not enabled and contexts.embedder is not None:
            self._spawn(self._close_embedder())

    async def _close_embedder(self) -> None:
        import asyncio

        if self.runtime is None:
            return
        contexts = self.runtime.contexts
        embedder, contexts.embedder = contexts.embedder, None
        await contexts.stop_indexing()
        closer = getattr(embedder, "close", None)
        if closer is not None:
            await asyncio.to_thread(closer)

    async def load_models(self, completions: Completions) -> None:
        self.model_label.setText("Model: loading the local model…")
        try:
            await completions.start()
        except Exception as exc:
            self.model_label.setText("Model: unavailable")
            self.show_status(f"The local model could not start: {exc}", 0)
            return
        self._show_default_model(completions)
        if self.runtime is not None and self.runtime.settings is not None:
            self.runtime.settings.subscribe(lambda _s: self._show_default_model(completions))

    def _show_default_model(self, completions: Completions) -> None:
        model = completions.default_model
        if model.startswith("mangaba-local/"):
            self.model_label.setText(f"Model: {completions.local_model_name} (local)")
        else:
            self.model_label.setText(f"Model: {model}")

    async def probe_local_servers(self) -> None:
        """Look for model servers on this computer (Ollama, LM Studio, llama.cpp) and offer
        the ones not configured yet."""
        import asyncio
        import importlib

        from ..core.providers.probe import already_configured, probe_local_servers

        await asyncio.to_thread(importlib.import_module, "httpx")  # its import is not free
        found = await probe_local_servers()
        if self.runtime is None or self.runtime.settings is None:
            return
        settings = self.runtime.settings.settings
        self.found_servers = [f for f in found if not already_configured(f, settings)]
        if self.found_servers:
            names = ", ".join(f"{f.name} ({len(f.models)} models)" for f in self.found_servers)
            self.show_status(f"Found on this computer: {names}. Add them in Settings.", 15000)

    def show_status(self, text: str, timeout_ms: int = 8000) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    def _on_plugin_failed(self, plugin: str, error: str) -> None:
        self.show_status(
            f"The plugin “{plugin}” failed and is off until the app restarts: {error} "
            "(Settings ▸ Plugins)",
            20000,
        )

    def _watch_network(self) -> None:
        from PySide6.QtNetwork import QNetworkInformation

        if not QNetworkInformation.loadDefaultBackend() or QNetworkInformation.instance() is None:
            self.network_label.setText("Network: unknown · local model works offline")
            return
        info = QNetworkInformation.instance()
        info.reachabilityChanged.connect(self._on_reachability)
        self._on_reachability(info.reachability())

    def _on_reachability(self, reachability: Any) -> None:
        from PySide6.QtNetwork import QNetworkInformation

        online = reachability == QNetworkInformation.Reachability.Online
        self.network_label.setText("● Online" if online else "○ Offline · local model")
        if online and self.runtime is not None:
            self.runtime.outbox.nudge()  # queued messages go out as soon as the network is back

    def _on_reply_speed(self, tokens_per_second: float) -> None:
        self.speed_label.setText(f"Last reply: {tokens_per_second:.1f} tokens/s")

    def _on_streaming_changed(self, streaming: bool) -> None:
        self.stop_action.setEnabled(streaming)
        self.regenerate_action.setEnabled(not streaming)

    # -- menu actions --------------------------------------------------------------------------

    def _on_new_chat(self) -> None:
        if self.chat_pane:
            self.chat_pane.new_conversation()

    def _on_search(self) -> None:
        if self.chat_pane:
            self.chat_pane.open_search()

    def _on_export(self, kind: str) -> None:
        if self.chat_pane:
            self.chat_pane.export_current(kind)

    def _on_stop(self) -> None:
        if self.chat_pane:
            self.chat_pane.stop()

    def _on_regenerate(self) -> None:
        if self.chat_pane:
            self.chat_pane.regenerate()

    def _on_export_memory(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export what the agents remember",
            str(Path.home() / "mangaba-memory.json"),
            "JSON (*.json)",
        )
        if path and self._spawn is not None:
            self._spawn(self.export_memory(Path(path)))

    async def export_memory(self, path: Path, **scope: Any) -> None:
        from ..core.context.transfer import export_to_file

        assert self.runtime is not None
        try:
            count = await export_to_file(
                self.runtime.contexts, path, audit=self.runtime.audit, **scope
            )
        except OSError as exc:
            self.show_status(f"Export failed: {exc.strerror or exc}", 0)
            return
        self.show_status(f"Exported {count:,} contexts to {path}")

    def _on_import_memory(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self, "Import memory", str(Path.home()), "JSON (*.json)"
        )
        if path and self._spawn is not None:
            self._spawn(self.import_memory(Path(path)))

    async def import_memory(self, path: Path) -> None:
        from ..core.context.transfer import InvalidImport, import_file

        assert self.runtime is not None
        try:
            result = await import_file(self.runtime.contexts, path, audit=self.runtime.audit)
        except InvalidImport as exc:
            box = QMessageBox(
                QMessageBox.Icon.Warning,
                "Import refused",
                f"Nothing was imported. {exc}",
                QMessageBox.StandardButton.Ok,
                self,
            )
            box.setObjectName("import-refused")
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()
            return
        skipped = f" ({result.skipped:,} already there)" if result.skipped else ""
        self.show_status(f"Imported {result.added:,} contexts{skipped}.")

    def _on_shortcuts(self) -> None:
        QMessageBox.information(
            self,
            "Keyboard shortcuts",
            "Enter: send\nShift+Enter: new line\nEsc: stop the reply\nCtrl+N: new chat\n"
            "Ctrl+K: search all chats\nCtrl+R: regenerate the last reply\nCtrl+Q: quit",
        )

    def _on_sharing_settings(self, settings: Any) -> None:
        """Sharing changed in Settings (or the Share dialog): the server follows."""
        if self.sharing is not None and self._spawn is not None and self.sharing.differs(settings):
            self._spawn(self.share(settings))

    async def share(self, settings: Any, *, actor: str = "user") -> None:
        """Serve the agents as ``settings`` say (by ``actor``, for the audit log) and say so;
        settings the Share dialog already tried are not tried again."""
        assert self.sharing is not None
        self.show_status(await self.sharing.apply(settings, actor=actor), 15000)

    def _on_settings(self) -> None:
        runtime = self.runtime
        if runtime is None or runtime.settings is None or self._spawn is None or self.keys is None:
            return
        from .settings import SettingsDialog

        dialog = SettingsDialog(
            runtime.settings,
            self.keys,
            runtime.completions,
            self._spawn,
            self,
            found_servers=self.found_servers,
            plugins=runtime.plugins,
        )
        # Saved settings rebuild the Router through the settings store; keys changed in the
        # dialog do not pass through it.
        dialog.finished.connect(
            lambda _code: self.runtime and self.runtime.completions.invalidate()
        )
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()

    def _on_usage(self) -> None:
        if self.runtime is None or self._spawn is None:
            return
        from .usage_dialog import UsageDialog

        dialog = UsageDialog(self.runtime.conversations, self._spawn, self)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()

    def _on_audit_log(self) -> None:
        if self.runtime is None or self._spawn is None:
            return
        from .audit_dialog import AuditDialog

        dialog = AuditDialog(self.runtime.audit, self._spawn, self)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()

    def _on_about(self) -> None:
        QMessageBox.about(
            self,
            f"About {APP_NAME}",
            f"<b>{APP_NAME}</b> {__version__}<p>Chat with AI agents, offline first.</p>"
            f"<p>Data folder: {self.directory}</p>",
        )

    # -- layout --------------------------------------------------------------------------------

    def restore_layout(self) -> None:
        geometry = self._settings.value("geometry")
        state = self._settings.value("state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state, LAYOUT_VERSION)

    def save_layout(self) -> None:
        self._settings.setValue("geometry", self.saveGeometry())
        self._settings.setValue("state", self.saveState(LAYOUT_VERSION))
        self._settings.sync()

    def reset_layout(self) -> None:
        self.restoreState(self._default_state, LAYOUT_VERSION)
        for dock in (self.chat_dock, *self.side_docks):
            dock.setFloating(False)
            dock.show()

    # -- events --------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            QTimer.singleShot(0, self.painted.emit)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_layout()
        event.accept()
        self.closed.emit()
