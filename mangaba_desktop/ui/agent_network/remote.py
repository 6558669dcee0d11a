"""Remote A2A agents added by the user: looked up, added (their URL in the settings, their
token in the keyring), brought back at start-up, removed; and the "Add remote agent" dialog."""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ...core.network import NetworkError, Node, NodeKind, NodeStatus
from ...core.network.a2a_client import RemoteAgentInfo, add_remote_agent, resolve_card
from ...core.network.remote_chat import UNREACHABLE_SUFFIX
from ...core.providers.secrets import InsecureKeyring, InvalidKey
from ...core.settings import InvalidSettings, SettingsStore

KEY_PREFIX = "a2a-remote:"


def token_id(url: str) -> str:
    """The keyring entry (provider id) of the token of the remote agent at ``url``."""
    return f"{KEY_PREFIX}{url}"


async def reconnect(runtime: Any, keys: Any, url: str) -> Node:
    """Add the remote agent at ``url`` again, with its token from the keyring.

    Raises:
        NetworkError: it cannot be reached or its card is not usable.
    """
    token = await asyncio.to_thread(keys.get, token_id(url)) if keys is not None else None
    return await add_remote_agent(runtime, url, token=token)


RETRY_DELAYS_S = (15.0, 30.0, 60.0, 120.0, 300.0)
"""How long to wait before each new try of a remote agent that could not be reached (the
last repeats)."""


async def reconnect_until_reachable(
    runtime: Any,
    keys: Any,
    url: str,
    *,
    wanted: Callable[[], bool],
    delays: tuple[float, ...] | None = None,
    on_failure: Callable[[str], None] | None = None,
) -> Node | None:
    """Bring the remote agent at ``url`` back; while it cannot be reached, it is drawn as an
    offline node (asking it fails at once, saying so) and tried again after each of
    ``delays`` (:data:`RETRY_DELAYS_S` by default; the last repeats) for as long as
    ``wanted()`` (the user has not removed it). Returns its node once reached, None when no
    longer wanted."""
    hub = runtime.network
    delays = delays or RETRY_DELAYS_S
    waiting_id = f"a2a:{url}"
    attempt = 0
    while wanted():
        try:
            node = await reconnect(runtime, keys, url)
        except NetworkError as exc:
            if on_failure is not None and attempt == 0:
                on_failure(str(exc))
            if waiting_id not in hub.nodes:
                hub.register(_unreachable(url, waiting_id), _offline(url))
            await asyncio.sleep(delays[min(attempt, len(delays) - 1)])
            attempt += 1
            continue
        if node.id != waiting_id and waiting_id in hub.nodes:
            await hub.unregister(waiting_id)
        return node
    if waiting_id in hub.nodes:
        await hub.unregister(waiting_id)
    return None


def _unreachable(url: str, node_id: str) -> Node:
    host = urlsplit(url).netloc or url
    return Node(
        id=node_id,
        name=f"{host}{UNREACHABLE_SUFFIX}",
        kind=NodeKind.REMOTE,
        location=url,
        status=NodeStatus.OFFLINE,
    )


def _offline(url: str) -> Callable[[Any], Awaitable[Any]]:
    async def refuse(_message: Any) -> Any:
        raise NetworkError(f"The agent at {url} cannot be reached yet; it is tried again.")

    return refuse


async def add_remote(
    runtime: Any, store: SettingsStore, keys: Any, url: str, token: str | None
) -> tuple[Node, str]:
    """Add the agent at ``url`` to the network and remember it: the URL in the settings, the
    token in the keyring. Returns its node and a sentence for the user.

    Raises:
        NetworkError: it cannot be added (nothing is remembered then).
    """
    url = url.strip()
    token = (token or "").strip() or None
    node = await add_remote_agent(runtime, url, token=token)
    note = ""
    if token is not None and keys is not None:
        try:
            await asyncio.to_thread(keys.set, token_id(url), token)
        except InvalidKey as exc:
            note = f" The token was not kept: {exc}"
        except (InsecureKeyring, RuntimeError) as exc:
            with contextlib.suppress(InvalidKey):
                await asyncio.to_thread(keys.set, token_id(url), token, session_only=True)
            note = f" Its token is kept for this run only: {exc}"
    settings = store.settings
    if url not in settings.remote_agents:
        try:
            remembered = [*settings.remote_agents, url]
            store.update(settings.model_copy(update={"remote_agents": remembered}))
        except InvalidSettings as exc:
            note += f" It is not remembered for the next start: {exc}"
    return node, f"{node.name} ({url}) is on the network.{note}"


async def remove_remote(network: Any, store: SettingsStore, keys: Any, node: Node) -> str:
    """Take a remote agent off ``network`` (the hub) and forget its URL and token."""
    url = node.location
    await network.unregister(node.id)
    settings = store.settings
    if url in settings.remote_agents:
        remaining = [u for u in settings.remote_agents if u != url]
        store.update(settings.model_copy(update={"remote_agents": remaining}))
    if keys is not None:
        try:
            await asyncio.to_thread(keys.delete, token_id(url))
        except RuntimeError as exc:
            return f"{node.name} was removed, but its token stays in the keyring: {exc}"
    return f"{node.name} was removed from the network."


def describe(info: RemoteAgentInfo) -> str:
    """The card of a remote agent, as rich text."""
    skills = ", ".join(html.escape(skill) for skill in info.skills) or "none listed"
    access = "needs a token" if info.needs_auth else "open"
    return (
        f"<b>{html.escape(info.name)}</b><br>{html.escape(info.description)}<br>"
        f"<b>Skills:</b> {skills}<br>"
        f"<b>Protocol:</b> A2A {html.escape(info.protocol_version or '?')} · {access} · "
        f"{'streaming' if info.streaming else 'no streaming'}"
    )


class RemoteAgentDialog(QDialog):
    """A remote A2A agent's URL and optional token: Look up shows its card, Add adds it.

    Args:
        spawn: runs a coroutine on the loop.
        add: adds the agent (url, token); returns None when added, else why not.
    """

    def __init__(
        self,
        spawn: Callable[[Any], Any],
        add: Callable[[str, str | None], Awaitable[str | None]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add a remote agent")
        self.setObjectName("network-remote-dialog")
        self.setMinimumWidth(440)
        self.spawn = spawn
        self._add = add
        self.url = QLineEdit()
        self.url.setObjectName("remote-url")
        self.url.setPlaceholderText("http://host:port/ — the agent's address or its card's")
        self.token = QLineEdit()
        self.token.setObjectName("remote-token")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("Only if the agent needs one")
        self.lookup_button = QPushButton("Look up")
        self.lookup_button.setObjectName("remote-lookup")
        self.card = QLabel("Enter the agent's URL, then Look up to see its card.")
        self.card.setObjectName("remote-card")
        self.card.setWordWrap(True)
        self.notice = QLabel("")
        self.notice.setObjectName("remote-notice")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #c62828;")
        self.notice.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.add_button = self.buttons.addButton("Add", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(lambda: self.spawn(self.add()))
        self.buttons.rejected.connect(self.reject)
        self.lookup_button.clicked.connect(lambda: self.spawn(self.lookup()))
        self.url.textChanged.connect(lambda _t: self._update_buttons())
        form = QFormLayout(self)
        form.addRow("URL", self.url)
        form.addRow("Token", self.token)
        form.addRow("", self.lookup_button)
        form.addRow(self.card)
        form.addRow(self.notice)
        form.addRow(self.buttons)
        self._busy = False
        self._update_buttons()

    def _update_buttons(self) -> None:
        ready = bool(self.url.text().strip()) and not self._busy
        self.lookup_button.setEnabled(ready)
        self.add_button.setEnabled(ready)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self._update_buttons()

    def _problem(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    async def lookup(self) -> RemoteAgentInfo | None:
        """Read the agent's card and show it (or why it cannot be read)."""
        self._set_busy(True)
        self._problem("")
        self.card.setText("Looking up…")
        try:
            _card, info = await resolve_card(self.url.text(), token=self.token.text() or None)
        except NetworkError as exc:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.card.setText("")
                self._problem(str(exc))
                self._set_busy(False)
            return None
        with contextlib.suppress(RuntimeError):
            self.card.setText(describe(info))
            self._set_busy(False)
        return info

    async def add(self) -> bool:
        """Add the agent; the dialog closes once it is on the network."""
        self._set_busy(True)
        self._problem("")
        problem = await self._add(self.url.text(), self.token.text() or None)
        with contextlib.suppress(RuntimeError):
            self._set_busy(False)
            if problem:
                self._problem(problem)
            else:
                self.accept()
        return problem is None
