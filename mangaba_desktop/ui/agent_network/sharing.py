"""Sharing the app's agents over A2A: the server started, stopped and restarted as the settings
say (:class:`Sharing`, used at start-up and by the Share dialog), and the Share dialog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ...core.network.a2a_server import A2AServer, server_token
from ...core.settings import InvalidSettings, Settings, SettingsStore

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
EVERYWHERE = "0.0.0.0"


def sharing_of(settings: Settings) -> tuple[bool, int, bool]:
    """What of the settings decides how the agents are shared."""
    return (settings.a2a_server, settings.a2a_port, settings.a2a_beyond_this_computer)


class Sharing:
    """The A2A server of the app's agents, as the settings want it.

    Args:
        runtime: the core whose agents are served.
        keys: the KeyStore the bearer token is kept in (blocking; used in a thread).
    """

    def __init__(self, runtime: Any, keys: Any) -> None:
        self.runtime = runtime
        self.keys = keys
        self.server: A2AServer | None = None
        self.problem: str | None = None
        """Why the last :meth:`apply` could not start the server; None when it could."""
        self._lock = asyncio.Lock()
        self._applied: tuple[bool, int, bool] | None = None
        """The settings the server runs with (see :func:`sharing_of`); None before any."""

    @property
    def running(self) -> bool:
        return self.server is not None

    @property
    def url(self) -> str | None:
        """The root URL the agents are served at; None when they are not."""
        return self.server.url if self.server is not None else None

    @property
    def urls(self) -> list[str]:
        """Every URL the agents answer at (this computer's name and, beyond it, loopback)."""
        if self.server is None:
            return []
        urls = [self.server.url]
        if self.server.host == EVERYWHERE:
            urls.append(f"http://{LOOPBACK}:{urlsplit(self.server.url).port}/")
        return urls

    @property
    def token(self) -> str | None:
        """The bearer token requests need; None when the agents are served on loopback only."""
        return self.server.token if self.server is not None else None

    async def apply(self, settings: Settings, *, actor: str = "app", retry: bool = False) -> str:
        """Stop, and start again when ``settings`` share the agents; returns what to tell the
        user (a failure to listen is said, never raised). ``actor`` is who asked, for the
        audit log. Settings already applied are not applied again; after a failure they are
        tried again only with ``retry`` (the user pressed Apply: not start-up, and not the
        echo of that same save)."""
        async with self._lock:
            wanted = sharing_of(settings)
            if wanted == self._applied and (self.problem is None or not retry):
                return self.problem or self.describe()  # already so, or already tried
            await self._stop(actor)
            self.problem = None
            self._applied = wanted
            if not settings.a2a_server:
                return "The agents are not shared."
            beyond = settings.a2a_beyond_this_computer
            try:
                token = await asyncio.to_thread(server_token, self.keys) if beyond else None
                server = A2AServer(
                    self.runtime,
                    host=EVERYWHERE if beyond else LOOPBACK,
                    port=settings.a2a_port,
                    token=token,
                )
                await server.start(actor=actor)
            except (OSError, RuntimeError, ValueError) as exc:
                self.problem = f"The agents could not be shared: {exc}"
                log.warning("%s", self.problem)
                return self.problem
            self.server = server
            return self.describe()

    def describe(self) -> str:
        """What is shared now, in a sentence."""
        if self.server is not None:
            return f"Agents shared at {self.server.url}"
        return self.problem or "The agents are not shared."

    def differs(self, settings: Settings) -> bool:
        """Whether ``settings`` want the agents shared otherwise than they are."""
        if self._applied is None:
            return settings.a2a_server  # nothing runs: only a wish to share changes that
        return sharing_of(settings) != self._applied

    async def stop(self) -> None:
        async with self._lock:
            await self._stop()

    async def _stop(self, actor: str = "app") -> None:
        self._applied = None
        server = self.server
        if server is None:
            return
        try:
            await server.stop(actor=actor)
        finally:
            self.server = None  # only once nothing listens: the URL shown stays true


class ShareDialog(QDialog):
    """Whether and how the app's agents are served over A2A; Apply saves and (re)starts.

    Signals:
        applied(str): what happened, for the status bar.
    """

    applied = Signal(str)

    def __init__(
        self,
        sharing: Sharing,
        store: SettingsStore,
        spawn: Callable[[Any], Any],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Share agents")
        self.setObjectName("network-share-dialog")
        self.sharing = sharing
        self.store = store
        self.spawn = spawn
        settings = store.settings
        self.serve = QCheckBox("Serve this app's agents over A2A")
        self.serve.setObjectName("share-serve")
        self.serve.setChecked(settings.a2a_server)
        self.port = QSpinBox()
        self.port.setObjectName("share-port")
        self.port.setRange(1024, 65535)
        self.port.setValue(settings.a2a_port)
        self.beyond = QCheckBox("Allow other computers (needs the token)")
        self.beyond.setObjectName("share-beyond")
        self.beyond.setChecked(settings.a2a_beyond_this_computer)
        self.beyond.setToolTip(Settings.model_fields["a2a_beyond_this_computer"].description)
        self.state = QLabel("")
        self.state.setObjectName("share-state")
        self.state.setWordWrap(True)
        self.token = QLineEdit()
        self.token.setObjectName("share-token")
        self.token.setReadOnly(True)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy_token)
        self.token_row = QWidget()
        row = QHBoxLayout(self.token_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.token, 1)
        row.addWidget(self.copy_button)
        self.token_label = QLabel("Token")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Apply | QDialogButtonBox.StandardButton.Close
        )
        self.apply_button = self.buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.apply_button.clicked.connect(lambda: self.spawn(self.apply()))
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow(self.serve)
        form.addRow("Port", self.port)
        form.addRow(self.beyond)
        form.addRow(self.state)
        form.addRow(self.token_label, self.token_row)
        form.addRow(self.buttons)
        self.serve.toggled.connect(self._update_controls)
        self._update_controls()
        self.show_state()

    def _update_controls(self) -> None:
        self.port.setEnabled(self.serve.isChecked())
        self.beyond.setEnabled(self.serve.isChecked())

    def show_state(self, text: str = "") -> None:
        urls = self.sharing.urls
        if urls:
            shown = "<br>".join(f"<code>{url}</code>" for url in urls)
            self.state.setText(f"Shared at:<br>{shown}")
        else:
            self.state.setText(self.sharing.problem or text or "The agents are not shared.")
        token = self.sharing.token
        self.token.setText(token or "")
        self.token_label.setVisible(bool(token))
        self.token_row.setVisible(bool(token))

    def copy_token(self) -> None:
        QGuiApplication.clipboard().setText(self.token.text())

    async def apply(self) -> str:
        """Save the choices and start, stop or restart the server; returns what happened."""
        wanted = self.store.settings.model_copy(
            update={
                "a2a_server": self.serve.isChecked(),
                "a2a_port": self.port.value(),
                "a2a_beyond_this_computer": self.beyond.isChecked(),
            }
        )
        self.apply_button.setEnabled(False)
        try:
            try:
                saved = self.store.update(wanted)
            except InvalidSettings as exc:
                text = f"The settings were not saved: {exc}"
            else:
                text = await self.sharing.apply(saved, actor="user", retry=True)
        finally:
            # The dialog may have been closed (and deleted) while the server started.
            with contextlib.suppress(RuntimeError):
                self.apply_button.setEnabled(True)
        with contextlib.suppress(RuntimeError):
            self.show_state(text)
            self.applied.emit(text)
        return text
