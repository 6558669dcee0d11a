"""A2A in the real app: a remote agent added by URL from the Agent network pane (its card
looked up, its URL remembered in the settings and its token in the keyring, back after a
restart, removed), and the app's own agents shared over A2A from the Share dialog."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path

import httpx
import pytest
from keyring.errors import PasswordDeleteError
from PySide6.QtCore import Qt, QUrl

from mangaba_desktop.core import events
from mangaba_desktop.core.agent import Runtime
from mangaba_desktop.core.audit import Action
from mangaba_desktop.core.network import AgentOffline, NodeKind, NodeStatus
from mangaba_desktop.core.network.a2a_server import TOKEN_ID, A2AServer
from mangaba_desktop.core.providers.secrets import SERVICE
from mangaba_desktop.core.settings import SettingsStore
from mangaba_desktop.ui.agent_network import NetworkPane
from mangaba_desktop.ui.agent_network import remote as remote_module
from mangaba_desktop.ui.agent_network.remote import token_id
from tests.helpers.app import Running, running_app, until
from tests.helpers.openai_server import free_port
from tests.helpers.providers import configure
from tests.helpers.sources import ScriptedSource

pytestmark = pytest.mark.timeout(180)

TOKEN = "remote-token-0123456789"


def forget(backend, *entries: str) -> None:
    for entry in entries:
        with contextlib.suppress(PasswordDeleteError):
            backend.delete_password(SERVICE, entry)


def network_pane(app: Running) -> NetworkPane:
    pane = app.window.network_pane
    assert pane is not None
    app.window.side_docks[1].raise_()
    return pane


def saved(data_dir: Path) -> dict:
    return json.loads((data_dir / "settings.json").read_text(encoding="utf-8"))


def remote_nodes(pane: NetworkPane) -> list:
    return [n for n in pane.network.nodes.values() if n.kind == NodeKind.REMOTE]


def test_a_remote_agent_is_added_by_url_comes_back_after_a_restart_and_can_be_removed(
    loop, tmp_path, data_dir, default_keyring
):
    configure(data_dir)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()

    async def scenario() -> None:
        remote = await Runtime.open(remote_dir, completions=ScriptedSource(["Bom ", "dia!"]))
        default = await remote.agents.default()
        await remote.agents.update(default.id, name="Faraway", persona="A distant helper.")
        server = A2AServer(remote, token=TOKEN)
        await server.start()
        try:
            async with running_app(data_dir) as app:
                pane = network_pane(app)
                assert pane.remote_button.isEnabled()

                # A URL where nothing answers: the sentence says so, nothing is added.
                dialog = pane.open_remote_dialog()
                dialog.url.setText(f"http://127.0.0.1:{free_port()}/")
                dialog.lookup_button.click()
                await until(lambda: dialog.notice.text() != "")
                assert dialog.notice.text().startswith("No agent card at http://127.0.0.1:")
                dialog.add_button.click()
                await until(lambda: dialog.add_button.isEnabled() and dialog.notice.text())
                assert dialog.isVisible()
                assert remote_nodes(pane) == []
                dialog.url.setText("not a url")
                dialog.lookup_button.click()
                await until(lambda: "is not an http(s) address" in dialog.notice.text())
                dialog.reject()

                # The real one: its card, then Add.
                dialog = pane.open_remote_dialog()
                dialog.url.setText(server.url)
                dialog.token.setText(TOKEN)
                dialog.lookup_button.click()
                await until(lambda: "Skills" in dialog.card.text())
                card = dialog.card.text()
                assert "Faraway" in card and "A distant helper." in card
                assert "chat" in card and "summarize" in card
                assert "A2A 1.0" in card and "needs a token" in card and "streaming" in card
                closed: list[int] = []
                dialog.finished.connect(closed.append)
                dialog.add_button.click()
                await until(lambda: len(remote_nodes(pane)) == 1)
                node = remote_nodes(pane)[0]
                await until(lambda: node.id in pane.graph.nodes)
                assert node.name == "Faraway" and node.location == server.url
                await until(lambda: closed == [1])  # accepted, and closed
                assert "Faraway" in pane.result_label.text()
                assert saved(data_dir)["remote_agents"] == [server.url]
                assert TOKEN not in (data_dir / "settings.json").read_text()
                assert default_keyring.get_password(SERVICE, token_id(server.url)) == TOKEN

            # Restarted on the same data folder: back, with its token from the keyring.
            async with running_app(data_dir) as app:
                pane = network_pane(app)
                await until(lambda: len(remote_nodes(pane)) == 1)
                node = remote_nodes(pane)[0]
                assert node.name == "Faraway"
                runtime = app.application.runtime
                local = await runtime.agents.default()
                await until(lambda: local.id in runtime.network.nodes)
                reply = await runtime.network.request(local.id, node.id, "chat", {"message": "Oi"})
                assert reply.text == "Bom dia!"

                # Removed from its card: off the network, out of the settings and the keyring.
                await until(lambda: node.id in pane.graph.nodes)
                pane.show_node(node.id)
                assert "Remove this remote agent" in pane.card.toPlainText()
                pane.card.anchorClicked.emit(QUrl("remove"))
                await until(lambda: remote_nodes(pane) == [])
                await until(lambda: node.id not in pane.graph.nodes)
                assert saved(data_dir)["remote_agents"] == []
                assert default_keyring.get_password(SERVICE, token_id(server.url)) is None
        finally:
            await server.stop()
            await remote.close()
            forget(default_keyring, token_id(server.url))

    loop.run_until_complete(scenario())


def test_an_unreachable_remote_agent_is_drawn_offline_and_tried_again_until_it_answers(
    loop, tmp_path, data_dir, monkeypatch
):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    configure(data_dir, remote_agents=[url])
    monkeypatch.setattr(remote_module, "RETRY_DELAYS_S", (0.3,))
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()

    async def scenario() -> None:
        async with running_app(data_dir) as app:
            status = app.window.statusBar()
            await until(
                lambda: f"Remote agent {url} could not be reached" in status.currentMessage()
            )
            assert "tried again" in status.currentMessage()
            pane = network_pane(app)
            # Drawn, offline: asking it is an error at once, saying so.
            await until(lambda: len(remote_nodes(pane)) == 1)
            [waiting] = remote_nodes(pane)
            assert waiting.status == NodeStatus.OFFLINE and waiting.location == url
            await until(lambda: waiting.id in pane.graph.nodes)
            runtime = app.application.runtime
            local = await runtime.agents.default()
            await until(lambda: local.id in runtime.network.nodes)
            with pytest.raises(AgentOffline, match="offline"):
                await runtime.network.request(local.id, waiting.id, "chat", {"message": "Oi"})

            # The agent comes up later: it joins the network in place of the offline node.
            remote = await Runtime.open(remote_dir, completions=ScriptedSource(["Bom ", "dia!"]))
            server = A2AServer(remote, port=port)
            await server.start()
            try:
                await until(lambda: [n.status for n in remote_nodes(pane)] == [NodeStatus.IDLE], 10)
                [node] = remote_nodes(pane)
                reply = await runtime.network.request(local.id, node.id, "chat", {"message": "Oi"})
                assert reply.text == "Bom dia!"
                await until(lambda: waiting.id not in pane.graph.nodes or waiting.id == node.id)
            finally:
                await server.stop()
                await remote.close()
        assert SettingsStore(data_dir).settings.remote_agents == [url]

    loop.run_until_complete(scenario())


async def card_at(url: str) -> dict:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{url}.well-known/agent-card.json")
        response.raise_for_status()
        return response.json()


def test_sharing_the_agents_from_the_share_dialog(loop, data_dir, default_keyring):
    configure(data_dir)
    port = free_port()

    async def scenario() -> None:
        async with running_app(data_dir) as app:
            pane = network_pane(app)
            sharing = app.window.sharing
            assert sharing is not None and pane.share_button.isEnabled()
            default = await app.application.runtime.agents.default()

            dialog = pane.open_share_dialog()
            assert not dialog.serve.isChecked() and dialog.token_row.isHidden()
            dialog.serve.setChecked(True)
            dialog.port.setValue(port)
            dialog.apply_button.click()
            await until(lambda: sharing.url is not None)
            url = f"http://127.0.0.1:{port}/"
            assert sharing.url == url
            await until(lambda: url in dialog.state.text())
            assert dialog.token_row.isHidden()
            assert (await card_at(url))["name"] == default.name
            settings = saved(data_dir)
            assert settings["a2a_server"] is True and settings["a2a_port"] == port

            # Off: nothing listens any more.
            dialog.serve.setChecked(False)
            assert await dialog.apply() == "The agents are not shared."
            assert sharing.url is None
            with pytest.raises(httpx.ConnectError):
                await card_at(url)

            # Beyond this computer: the token is shown (and kept in the keyring).
            dialog.serve.setChecked(True)
            dialog.beyond.setChecked(True)
            text = await dialog.apply()
            assert text.startswith("Agents shared at http://"), text
            token = dialog.token.text()
            assert token and token == sharing.token
            assert default_keyring.get_password(SERVICE, TOKEN_ID) == token
            assert not dialog.token_row.isHidden()
            assert url in dialog.state.text()
            assert (await card_at(url))["name"] == default.name
            async with httpx.AsyncClient(timeout=10) as http:
                refused = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "x"})
            assert refused.status_code == 401
            dialog.copy_button.click()
            dialog.reject()

        # Started again: the agents are shared at start-up.
        async with running_app(data_dir) as app:
            sharing = app.window.sharing
            await until(lambda: sharing.url is not None)
            assert sharing.token == token
            status = app.window.statusBar()
            await until(lambda: "Agents shared at" in status.currentMessage())
        # Stopped with the app.
        with pytest.raises(httpx.ConnectError):
            await card_at(url)

    try:
        loop.run_until_complete(scenario())
    finally:
        forget(default_keyring, TOKEN_ID)


def test_a_port_in_use_is_a_status_message(loop, data_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        configure(data_dir, a2a_server=True, a2a_port=port)

        async def scenario() -> None:
            async with running_app(data_dir) as app:
                status = app.window.statusBar()
                await until(lambda: "could not be shared" in status.currentMessage())
                assert app.window.sharing.url is None
                assert str(port) in app.window.sharing.problem

        loop.run_until_complete(scenario())


def test_sharing_is_turned_on_and_off_from_the_settings(loop, data_dir, default_keyring):
    configure(data_dir)
    port = free_port()

    async def scenario() -> None:
        from PySide6.QtWidgets import QApplication

        from mangaba_desktop.ui.settings import SettingsDialog

        async with running_app(data_dir) as app:
            window = app.window
            sharing = window.sharing
            assert sharing is not None and sharing.url is None

            def open_dialog() -> SettingsDialog:
                window._on_settings()
                [dialog] = [
                    w
                    for w in QApplication.topLevelWidgets()
                    if isinstance(w, SettingsDialog) and w.isVisible()
                ]
                return dialog

            dialog = open_dialog()
            page = dialog.network_page
            assert not page.serve.isChecked() and not page.port.isEnabled()
            page.serve.setChecked(True)
            assert page.port.isEnabled()
            page.port.setValue(port)
            dialog.ok_button.click()
            url = f"http://127.0.0.1:{port}/"
            await until(lambda: sharing.url == url)
            assert (await card_at(url))["name"] == "Mangaba"
            await until(lambda: url in window.statusBar().currentMessage())
            assert saved(data_dir)["a2a_server"] is True

            # Another setting saved: the server is left running as it is.
            server = sharing.server
            dialog = open_dialog()
            dialog.limits_page.burst_spin.setValue(9)
            dialog.ok_button.click()
            await asyncio.sleep(0.2)
            assert sharing.server is server

            # Off from the settings: nothing listens any more.
            dialog = open_dialog()
            dialog.network_page.serve.setChecked(False)
            dialog.ok_button.click()
            await until(lambda: sharing.url is None)
            with pytest.raises(httpx.ConnectError):
                await card_at(url)

    loop.run_until_complete(scenario())


def test_a_remote_agent_is_chosen_in_the_chat_pane_and_answers_there(loop, tmp_path, data_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    configure(data_dir, remote_agents=[url])
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()

    def remote_choice(pane) -> tuple[int, str]:
        combo = pane.model_combo
        index = combo.findData(f"a2a:{url}")
        return index, combo.itemText(index) if index >= 0 else ""

    async def scenario() -> None:
        remote = await Runtime.open(remote_dir, completions=ScriptedSource(["Bom ", "dia!"]))
        default = await remote.agents.default()
        await remote.agents.update(default.id, name="Faraway")
        server = A2AServer(remote, port=port)
        await server.start()
        try:
            async with running_app(data_dir) as app:
                pane = app.pane
                await pane._new_conversation()
                await until(lambda: pane.current is not None)
                # Offered with the models, by name, once it is reached.
                await until(lambda: remote_choice(pane)[1] == "Remote agent · Faraway", 10)
                index, _text = remote_choice(pane)
                tip = pane.model_combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
                assert "Only your message is sent" in tip
                pane.model_combo.setCurrentIndex(index)
                pane.model_combo.activated.emit(index)
                await until(lambda: pane.current.model == f"a2a:{url}")
                assert "Faraway" in app.window.statusBar().currentMessage()

                finished = app.reply_finished()
                await pane.send("Bom dia?")
                reply = (await asyncio.wait_for(finished, 30))["message"]
                assert (reply.status, reply.content) == ("complete", "Bom dia!")
                header = pane.message_view.delegate.header(reply)
                assert f"127.0.0.1:{port} · A2A" in header
                # A remote agent says neither its tokens nor its price: none are made up.
                assert "tokens" not in header and reply.completion_tokens is None
                await until(lambda: pane.usage_label.text() == "price unknown")
                # In the network pane it is the agent's request to Faraway, not a model.
                graph = network_pane(app).graph
                await until(lambda: any(n.startswith("a2a:") for n in graph.nodes))
                assert not any(n.startswith("model:a2a:") for n in graph.nodes)

                # The agent goes away: the next message waits for it, and the picker says
                # it is offline.
                await server.stop()
                finished = app.next_event(
                    events.MESSAGE_FINISHED, lambda p: p["message"].status == "queued"
                )
                await pane.send("Ainda aí?")
                waiting = (await asyncio.wait_for(finished, 30))["message"]
                assert "Faraway cannot be reached now" in waiting.error
                await until(lambda: remote_choice(pane)[1].endswith("(offline)"))
                assert pane.model_combo.currentData() == f"a2a:{url}"
        finally:
            await server.stop()
            await remote.close()

    loop.run_until_complete(scenario())


def test_a_busy_port_in_the_share_dialog_is_tried_once_per_apply(loop, data_dir):
    configure(data_dir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def scenario() -> None:
            async with running_app(data_dir) as app:
                runtime = app.application.runtime
                dialog = network_pane(app).open_share_dialog()
                dialog.serve.setChecked(True)
                dialog.port.setValue(port)

                text = await dialog.apply()
                await asyncio.sleep(0.3)  # the saved settings' own echo has had its turn

                assert "could not be shared" in text
                failed = await runtime.audit.entries(action=Action.A2A_STARTED, outcome="failed")
                assert len(failed) == 1, [(e.actor, e.detail) for e in failed]
                # Apply again: the user asks, so it is tried again.
                await dialog.apply()
                await asyncio.sleep(0.3)
                failed = await runtime.audit.entries(action=Action.A2A_STARTED, outcome="failed")
                assert len(failed) == 2
                dialog.reject()

        loop.run_until_complete(scenario())
