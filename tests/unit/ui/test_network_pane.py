"""The Agent network pane in the real app: nodes, edges, dots, the card, the timeline, replay,
dragging, and the actions that make traffic."""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from mangaba_desktop.core.network import MessageType
from mangaba_desktop.ui.agent_network import NetworkPane
from mangaba_desktop.ui.agent_network.graph import NetworkGraph
from tests.helpers.app import Running, running_app, until
from tests.helpers.sources import ScriptedSource


def network_pane(app: Running) -> NetworkPane:
    pane = app.window.network_pane
    assert pane is not None
    app.window.side_docks[1].raise_()
    return pane


async def create_agents(app: Running, *names: str, tags: str = "") -> list[str]:
    runtime = app.application.runtime
    assert runtime is not None
    ids = [(await runtime.agents.create(name, tags=tags)).id for name in names]
    pane = network_pane(app)
    await until(lambda: all(agent_id in pane.graph.nodes for agent_id in ids))
    return ids


def view_point(graph: NetworkGraph, node_id: str) -> QPoint:
    item = graph.nodes[node_id]
    graph.ensureVisible(item)
    return graph.mapFromScene(item.pos())


async def settled(graph: NetworkGraph) -> None:
    await until(lambda: not graph.timer.isActive() or (graph.heat == 0 and not graph.dots))


def test_nodes_edges_dots_card_timeline_and_replay(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = network_pane(app)
            hub = app.application.runtime.network
            ana, bruno = await create_agents(app, "Ana", "Bruno")
            assert pane.graph.nodes[ana].name == "Ana"
            # Nothing chosen yet: the card says how to read the graph, not that it is empty.
            await until(lambda: "Click an agent for its card" in pane.card.toPlainText())

            await hub.connect(ana, bruno)
            await until(lambda: (e := pane.graph.edge(ana, bruno)) is not None and e.linked)

            app.use_mock("Hello from Bruno.")
            rows_before = pane.model.rowCount()
            asked = asyncio.ensure_future(hub.request(ana, bruno, "chat", {"message": "Hi"}))
            # A dot runs along the edge while the request is in flight.
            await until(lambda: any(d.source == ana for d in pane.graph.dots.values()))
            assert pane.graph.pulses[(ana, bruno)] >= 1
            response = await asyncio.wait_for(asked, 60)
            assert response.text == "Hello from Bruno."
            await until(lambda: pane.model.row_of(response.id) is not None)
            assert pane.model.rowCount() >= rows_before + 2
            assert pane.graph.pulses[(bruno, ana)] >= 1
            await until(lambda: pane.graph.nodes[bruno].handled == 1)
            assert pane.graph.nodes[bruno].p50 is not None

            # A click on a node shows its card, skills included.
            await settled(pane.graph)
            viewport = pane.graph.viewport()
            QTest.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=view_point(pane.graph, bruno))
            await until(lambda: pane.shown == ("node", bruno))
            card = pane.card.toPlainText()
            assert "Bruno" in card
            assert "summarize" in card and "translate" in card
            assert "Hello from Bruno." in card

            # A click on the edge shows the messages between the two.
            ends = [pane.graph.mapFromScene(pane.graph.nodes[i].pos()) for i in (ana, bruno)]
            middle = (ends[0] + ends[1]) / 2
            QTest.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=middle)
            await until(lambda: pane.shown is not None and pane.shown[0] == "edge")
            edge_card = pane.card.toPlainText()
            assert "Ana ↔ Bruno" in edge_card or "Bruno ↔ Ana" in edge_card
            assert "Hello from Bruno." in edge_card

            # Filters narrow the timeline.
            total = pane.proxy.rowCount()
            pane.type_filter.setCurrentIndex(pane.type_filter.findData("response"))
            assert 1 <= pane.proxy.rowCount() < total
            pane.type_filter.setCurrentIndex(0)
            pane.search_box.setFocus()
            QTest.keyClicks(pane.search_box, "from Bruno")
            await until(lambda: pane.proxy.rowCount() < total)
            assert all(
                "from Bruno"
                in pane.model.row(pane.proxy.mapToSource(pane.proxy.index(r, 0)).row()).text
                for r in range(pane.proxy.rowCount())
            )
            pane.search_box.clear()
            pane.apply_filters()
            pane.agent_filter.setCurrentIndex(pane.agent_filter.findData(bruno))
            assert pane.proxy.rowCount() == total
            pane.agent_filter.setCurrentIndex(0)

            # Replay steps through the request, then its answer.
            request_id = response.correlation_id
            assert pane.select_message(request_id)
            assert pane.replay_button.isEnabled()
            QTest.mouseClick(pane.replay_button, Qt.MouseButton.LeftButton)
            await until(lambda: len(pane.replay_steps) == 2)
            assert "Step 1 of 2" in pane.replay_label.text()
            assert pane.replay_steps[0].type == MessageType.REQUEST
            assert pane.graph.edge(ana, bruno).highlighted
            pulses = pane.graph.pulses[(bruno, ana)]
            QTest.mouseClick(pane.next_button, Qt.MouseButton.LeftButton)
            assert "Step 2 of 2" in pane.replay_label.text()
            assert "response" in pane.replay_label.text()
            assert pane.graph.pulses[(bruno, ana)] == pulses + 1
            assert not pane.next_button.isEnabled()
            QTest.mouseClick(pane.previous_button, Qt.MouseButton.LeftButton)
            assert "Step 1 of 2" in pane.replay_label.text()

            # A deleted agent leaves the graph, its edges with it.
            await app.application.runtime.agents.delete(bruno)
            await until(lambda: bruno not in pane.graph.nodes)
            assert pane.graph.edge(ana, bruno) is None

    loop.run_until_complete(scenario())


def drag(graph: NetworkGraph, start: QPoint, end: QPoint) -> None:
    viewport = graph.viewport()
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
    for step in range(1, 6):
        point = QPointF(start + (end - start) * (step / 5))
        move = QMouseEvent(
            QEvent.Type.MouseMove,
            point,
            QPointF(viewport.mapToGlobal(point)),
            Qt.MouseButton.NoButton,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        QApplication.sendEvent(viewport, move)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=end)


def test_a_dragged_node_stays_where_it_was_put(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = network_pane(app)
            (first, second) = await create_agents(app, "Carla", "Davi")
            await settled(pane.graph)
            start = view_point(pane.graph, first)
            drag(pane.graph, start, start + QPoint(40, 25))
            item = pane.graph.nodes[first]
            assert item.pinned
            where = item.pos()
            others = await create_agents(app, "Eva", "Fabio", "Gil")
            runtime = app.application.runtime
            for other in others:
                await runtime.network.connect(first, other)
            await until(lambda: len(pane.graph.edges) >= 3)
            await settled(pane.graph)
            assert item.pos() == where
            assert pane.graph.nodes[second].pos() != where

    loop.run_until_complete(scenario())


def click_ok(dialog: Any) -> None:
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert ok.isEnabled(), dialog.notice.text()
    QTest.mouseClick(ok, Qt.MouseButton.LeftButton)


def test_actions_connect_request_broadcast_and_errors(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = network_pane(app)
            hub = app.application.runtime.network
            ana, bruno = await create_agents(app, "Ana", "Bruno", tags="team")
            app.use_mock("Done.")

            dialog = pane.open_connect_dialog()
            dialog.first.setCurrentIndex(dialog.first.findData(ana))
            dialog.second.setCurrentIndex(dialog.second.findData(ana))
            assert not dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
            dialog.second.setCurrentIndex(dialog.second.findData(bruno))
            click_ok(dialog)
            await until(lambda: (ana, bruno) in hub.links)
            await until(lambda: "connected" in pane.result_label.text())

            dialog = pane.open_request_dialog()
            dialog.sender.setCurrentIndex(dialog.sender.findData(ana))
            dialog.receiver.setCurrentIndex(dialog.receiver.findData(bruno))
            dialog.action.setCurrentIndex(dialog.action.findData("summarize"))
            dialog.text.setFocus()
            QTest.keyClicks(dialog.text, "A long text to summarise.")
            click_ok(dialog)
            await until(lambda: "Bruno answered: Done." in pane.result_label.text(), 60)

            dialog = pane.open_broadcast_dialog()
            dialog.sender.setCurrentIndex(dialog.sender.findData(ana))
            QTest.keyClicks(dialog.tags, "nobody-has-this")
            QTest.keyClicks(dialog.text, "Meeting at noon")
            click_ok(dialog)
            await until(lambda: "nobody received it" in pane.result_label.text())

            assert await pane.send_broadcast(ana, ["team"], "Meeting at noon") == [bruno]
            assert "Sent to 1 agent: Bruno" in pane.result_label.text()

            assert await pane.send_request(ana, "nobody", "chat", "Hi") is None
            assert "There is no agent" in pane.result_label.text()
            assert "Traceback" not in pane.result_label.text()

            agents_dialog = pane.open_agents_dialog()
            assert agents_dialog.isVisible()
            agents_dialog.reject()

    loop.run_until_complete(scenario())


def test_the_models_the_agents_ask_are_nodes_with_their_calls(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = network_pane(app)
            runtime = app.application.runtime
            [ana] = await create_agents(app, "Ana")
            conversation = await runtime.conversations.create("Model test", agent_id=ana)
            app.use_mock("An answer from the model.")

            await runtime.chat.send(conversation.id, "Hello?")
            model_node = "model:openai/gpt-4o-mini"
            # The model appears, linked to the agent that asked it, and the call pulses there.
            await until(lambda: model_node in pane.graph.nodes)
            await runtime.chat.wait(conversation.id)
            await until(lambda: pane.graph.nodes[model_node].handled == 1)
            item = pane.graph.nodes[model_node]
            assert (item.kind, item.status) == ("model", "idle")
            assert item.p50 is not None
            edge = pane.graph.edge(ana, model_node)
            assert edge is not None and edge.linked and edge.messages == 1
            assert pane.graph.pulses[(ana, model_node)] == 1
            assert pane.graph.pulses[(model_node, ana)] == 1
            # Not an agent: the timeline's agent filter does not offer it.
            assert pane.agent_filter.findData(model_node) < 0

            pane.show_node(model_node)
            card = pane.card.toPlainText()
            assert "openai/gpt-4o-mini" in card and "model endpoint" in card
            assert "Answered: 1" in card and "Asked by: Ana" in card

        # Opened again: the models asked lately are drawn at once, with their edges.
        async with running_app(data_dir) as app:
            pane = network_pane(app)
            await until(lambda: pane.started)
            assert "model:openai/gpt-4o-mini" in pane.graph.nodes
            # Its edge as soon as the agent is on the network again.
            await until(lambda: pane.graph.edge(ana, "model:openai/gpt-4o-mini") is not None)

    loop.run_until_complete(scenario())


def test_a_request_from_the_pane_shows_the_answer_as_it_is_written(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = network_pane(app)
            ana, bruno = await create_agents(app, "Ana", "Bruno")
            chat = app.application.chat
            source = ScriptedSource(["Bom ", "dia, ", "Ana!"], interval=0.3)
            chat.completions = source
            chat.model = source.default_model

            asked = asyncio.ensure_future(pane.send_request(ana, bruno, "chat", "Olá"))
            await until(lambda: "Bruno is answering: Bom" in pane.result_label.text())
            assert not asked.done()
            answer = await asyncio.wait_for(asked, 30)
            assert answer is not None and answer.text == "Bom dia, Ana!"
            assert pane.result_label.text() == "Bruno answered: Bom dia, Ana!"

    loop.run_until_complete(scenario())


def test_a_call_answered_by_a_fallback_counts_against_the_model_asked():
    from mangaba_desktop.core.network import NodeStatus
    from mangaba_desktop.ui.agent_network.models import ModelEndpoints

    models = ModelEndpoints()
    asked = {"request_id": "r1", "agent_id": "ana", "model": "openai/gpt-4o"}
    assert models.started(asked) == ("r1", "ana", "model:openai/gpt-4o")
    ended = models.completed(
        {
            "request_id": "r1",
            "model": "mangaba-local/smollm2",  # the fallback that answered
            "requested_model": "openai/gpt-4o",
            "provider": "mangaba-local",
            "status": "complete",
            "latency_ms": 120.0,
        }
    )

    assert ended == ("r1", "ana", "model:openai/gpt-4o", "model:mangaba-local/smollm2", True)
    cloud = models.endpoints["model:openai/gpt-4o"]
    local = models.endpoints["model:mangaba-local/smollm2"]
    assert (cloud.node.handled, cloud.node.failed, cloud.node.status) == (0, 1, NodeStatus.ERROR)
    assert cloud.provider is None and not cloud.latencies  # not the fallback's figures
    assert (local.node.handled, local.node.status, local.provider) == (
        1,
        NodeStatus.IDLE,
        "mangaba-local",
    )
    assert list(local.latencies) == [120.0] and local.agents == {"ana"}
