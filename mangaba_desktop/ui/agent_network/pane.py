"""The Agent network pane: the hub's agents as a live graph, a card for the one clicked, a
timeline of their messages that can replay an exchange, and the actions that make traffic."""

from __future__ import annotations

import html
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QTextBrowser,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from ...core import events
from ...core.events import EventBus
from ...core.metrics.percentiles import p50_p95
from ...core.network import (
    AgentHub,
    AgentMessage,
    MessageType,
    NetworkError,
    Node,
    NodeKind,
)
from ...core.network.local import ACTIONS
from ...core.network.remote_chat import is_remote_agent
from ...core.settings import SettingsStore
from ...core.store import AgentStore
from ..wording import plural
from .dialogs import BroadcastDialog, ConnectDialog, RequestDialog
from .events import NetworkEvents
from .graph import DOT_COLOURS, STATUS_COLOURS, NetworkGraph, duration
from .models import ModelEndpoints, is_model
from .remote import RemoteAgentDialog, add_remote, remove_remote
from .sharing import ShareDialog, Sharing
from .timeline import WIDTHS, MessageRow, TimelineFilter, TimelineModel

log = logging.getLogger(__name__)

HISTORY_ROWS = 500
"""Messages read from the database when the pane opens."""
LATENCY_SAMPLES = 200
"""The latest answers per agent that its p50 and p95 are computed from."""
MAX_WAITING = 10_000
"""Requests remembered while their answer is awaited (for latency); the oldest are forgotten."""
FILTER_DELAY_MS = 150
NARROW_WIDTH = 720
"""Below this width the card goes under the graph."""
CARD_MESSAGES = 12
RESULT_CHARS = 400

HINT = (
    "<p style='color:#607d8b'>Click an agent for its card and recent messages, or an edge for "
    "the messages between two agents. Drag an agent to put it where you want it; a double "
    "click lets the layout place it again.</p>"
)
EMPTY = "<p style='color:#607d8b'>No agent is on the network yet. Create one with “New agent…”.</p>"


class NetworkPane(QWidget):
    """The agent network, live.

    Args:
        network: the hub whose nodes, links and messages are shown.
        agents: the app's agents (for “New agent…”).
        bus: where the hub's events come from.
        spawn: runs a coroutine on the loop and keeps its task.
        runtime: the core, for adding remote agents (with ``settings``; both needed for
            "Add remote agent…").
        settings: where remote agents' URLs are remembered.
        keys: the KeyStore their tokens are kept in.
        sharing: the A2A server of the app's agents (for "Share…").

    Signals:
        status_message(str): something the status bar may show.
    """

    status_message = Signal(str)

    def __init__(
        self,
        network: AgentHub,
        agents: AgentStore,
        bus: EventBus,
        spawn: Callable[[Any], Any],
        parent: QWidget | None = None,
        *,
        runtime: Any = None,
        settings: SettingsStore | None = None,
        keys: Any = None,
        sharing: Sharing | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("network-pane")
        # Docked in a tab with the other panes: it must not widen the window they share.
        self.setMinimumSize(320, 300)
        self.network = network
        self.agents = agents
        self.spawn = spawn
        self.runtime = runtime
        self.settings = settings
        self.keys = keys
        self.sharing = sharing
        self.started = False
        self.names: dict[str, str] = {}
        """Every agent name seen, kept after it leaves, for the timeline's older rows."""
        self.shown: tuple[str, ...] | None = None
        """What the card shows: ("node", id), ("edge", first, second) or nothing."""
        self.replay_steps: list[AgentMessage] = []
        self.replay_index = 0
        self._waiting: OrderedDict[str, float] = OrderedDict()
        self._latencies: dict[str, deque[float]] = {}
        self._agent_ids: tuple[str, ...] = ()
        self._agent_labels: tuple[str, ...] = ()
        self._sized = False
        self.models = ModelEndpoints()
        self.events = NetworkEvents(bus, self)
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(FILTER_DELAY_MS)
        self._filter_timer.timeout.connect(self.apply_filters)
        self._build()
        self._connect()

    # -- construction --------------------------------------------------------------------------

    def _build(self) -> None:
        self.new_agent_button = QPushButton("New agent…")
        self.connect_button = QPushButton("Connect agents…")
        self.request_button = QPushButton("Send request…")
        self.broadcast_button = QPushButton("Broadcast…")
        self.remote_button = QPushButton("Add remote agent…")
        self.remote_button.setToolTip("Add an A2A agent running elsewhere, by its URL")
        self.remote_button.setEnabled(self.runtime is not None and self.settings is not None)
        self.share_button = QPushButton("Share…")
        self.share_button.setToolTip("Serve this app's agents to other A2A clients")
        self.share_button.setEnabled(self.sharing is not None and self.settings is not None)
        # A toolbar, not a row: in a narrow dock the buttons that do not fit move behind its
        # » button instead of being squeezed until their words are cut.
        actions = QToolBar("Network actions")
        actions.setObjectName("network-actions")
        actions.setMovable(False)
        for button in (
            self.new_agent_button,
            self.connect_button,
            self.request_button,
            self.broadcast_button,
            self.remote_button,
            self.share_button,
        ):
            actions.addWidget(button)
        self.result_label = QLabel("")
        self.result_label.setObjectName("network-result")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_label.hide()

        self.graph = NetworkGraph()
        self.card = QTextBrowser()
        self.card.setObjectName("network-card")
        self.card.setOpenLinks(False)
        self.card.setHtml(EMPTY)
        self.top = QSplitter(Qt.Orientation.Horizontal)
        self.top.addWidget(self.graph)
        self.top.addWidget(self.card)
        self.top.setStretchFactor(0, 3)
        self.top.setStretchFactor(1, 1)

        self.model = TimelineModel(self.names, self)
        self.proxy = TimelineFilter(self)
        self.proxy.setSourceModel(self.model)
        self.type_filter = QComboBox()
        self.type_filter.setObjectName("network-type-filter")
        self.type_filter.addItem("All types", "")
        for kind in MessageType:
            self.type_filter.addItem(str(kind).capitalize(), str(kind))
        self.agent_filter = QComboBox()
        self.agent_filter.setObjectName("network-agent-filter")
        self.agent_filter.addItem("All agents", "")
        self.agent_filter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.search_box = QLineEdit()
        self.search_box.setObjectName("network-search")
        self.search_box.setPlaceholderText("Filter by text")
        self.search_box.setClearButtonEnabled(True)
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Timeline:"))
        filters.addWidget(self.type_filter)
        filters.addWidget(self.agent_filter)
        filters.addWidget(self.search_box, 1)

        self.replay_button = QPushButton("Replay")
        self.replay_button.setToolTip("Step through the exchange of the selected message")
        self.previous_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.replay_label = QLabel("Select a request, then Replay to step through its exchange.")
        self.replay_label.setObjectName("network-replay")
        self.replay_label.setWordWrap(True)
        replay = QHBoxLayout()
        replay.addWidget(self.replay_button)
        replay.addWidget(self.previous_button)
        replay.addWidget(self.next_button)
        replay.addWidget(self.replay_label, 1)

        self.table = QTableView()
        self.table.setObjectName("network-timeline")
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        rows = self.table.verticalHeader()
        rows.hide()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.horizontalHeader().setStretchLastSection(True)
        for column, width in WIDTHS.items():
            self.table.setColumnWidth(column, width)

        timeline = QWidget()
        timeline_layout = QVBoxLayout(timeline)
        timeline_layout.setContentsMargins(0, 0, 0, 0)
        timeline_layout.addLayout(filters)
        timeline_layout.addLayout(replay)
        timeline_layout.addWidget(self.table)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.top)
        self.splitter.addWidget(timeline)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(actions)
        layout.addWidget(self.result_label)
        layout.addWidget(self.splitter, 1)
        self._update_replay_buttons()

    def _connect(self) -> None:
        self.events.arrived.connect(self._on_events)
        self.graph.node_clicked.connect(self.show_node)
        self.graph.edge_clicked.connect(self.show_edge)
        self.graph.cleared.connect(self._on_cleared)
        self.new_agent_button.clicked.connect(self.open_agents_dialog)
        self.connect_button.clicked.connect(self.open_connect_dialog)
        self.request_button.clicked.connect(self.open_request_dialog)
        self.broadcast_button.clicked.connect(self.open_broadcast_dialog)
        self.remote_button.clicked.connect(self.open_remote_dialog)
        self.share_button.clicked.connect(self.open_share_dialog)
        self.card.anchorClicked.connect(self._on_card_link)
        self.type_filter.currentIndexChanged.connect(lambda _i: self.apply_filters())
        self.agent_filter.currentIndexChanged.connect(lambda _i: self.apply_filters())
        self.search_box.textChanged.connect(lambda _t: self._filter_timer.start())
        self.replay_button.clicked.connect(self.replay_selected)
        self.previous_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.table.selectionModel().selectionChanged.connect(
            lambda *_: self._update_replay_buttons()
        )

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Show the nodes and links there are, then the latest stored messages."""
        for node in list(self.network.nodes.values()):
            self._show_node(node)
        for source, target in list(self.network.links):
            self.graph.add_link(source, target)
        try:
            history = await self.network.history(limit=HISTORY_ROWS)
        except Exception:
            log.exception("the network's history could not be read")
            history = []
        self.model.add(history)
        for message in history:
            self._time(message)
            self.graph.note_message(message, live=False)
        for node in list(self.network.nodes.values()):
            self._show_node(node)
        await self._show_known_models()
        self._refresh_agent_filter()
        self._refresh_card()
        self.started = True

    async def _show_known_models(self) -> None:
        """The models the agents asked lately, with an edge to each agent that asked."""
        conversations = getattr(self.runtime, "conversations", None)
        if conversations is None:
            return
        try:
            used = await conversations.recent_models()
        except Exception:
            log.exception("the models the agents used could not be read")
            return
        for agent_id, model, provider in used:
            if is_remote_agent(model):
                continue  # drawn as the remote agent it is
            endpoint = self.models.known(agent_id, model, provider)
            self._show_node(endpoint.node)
            self._link_models(agent_id)  # or when the agent joins, if it has not yet

    def _link_models(self, agent_id: str) -> None:
        for endpoint in self.models.endpoints.values():
            if agent_id in endpoint.agents and agent_id in self.graph.nodes:
                self.graph.add_link(agent_id, endpoint.node.id)

    async def flush(self) -> None:
        """Take the last events, then stop listening (the app is stopping)."""
        self.events.close()
        self._filter_timer.stop()
        self.graph.timer.stop()

    # -- events --------------------------------------------------------------------------------

    def _on_events(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        touched: set[str] = set()
        messages: list[AgentMessage] = []
        nodes_changed = False
        for name, payload in batch:
            if name == events.NETWORK_NODE:
                node: Node = payload["node"]
                touched.add(node.id)
                if payload.get("removed"):
                    self.graph.remove_node(node.id)
                    self._latencies.pop(node.id, None)
                    nodes_changed = True
                else:
                    joined = node.id not in self.graph.nodes
                    nodes_changed |= joined or self.names.get(node.id) != node.name
                    self._show_node(node)
                    if joined:
                        self._link_models(node.id)
            elif name == events.NETWORK_LINK:
                self.graph.add_link(payload["source"], payload["target"])
                touched.update((payload["source"], payload["target"]))
            elif name == events.NETWORK_MESSAGE:
                messages.append(payload["message"])
            elif name == events.AI_REQUEST_STARTED:
                call = self.models.started(payload)
                if call is not None:
                    request_id, agent_id, model_id = call
                    nodes_changed |= model_id not in self.graph.nodes
                    self._show_node(self.models.endpoints[model_id].node)
                    self.graph.note_call(request_id, agent_id, model_id, done=False, ok=True)
                    touched.update((agent_id, model_id))
            elif name == events.AI_REQUEST_COMPLETED:
                ended = self.models.completed(payload)
                if ended is not None:
                    request_id, agent_id, asked_id, answered_id, ok = ended
                    nodes_changed |= answered_id not in self.graph.nodes
                    for model_id in {asked_id, answered_id}:
                        self._show_node(self.models.endpoints[model_id].node)
                    if answered_id != asked_id:  # a fallback answered: its own edge
                        self.graph.note_call(request_id, agent_id, asked_id, done=True, ok=False)
                        request_id = f"{request_id}-fallback"
                    self.graph.note_call(request_id, agent_id, answered_id, done=True, ok=ok)
                    touched.update((agent_id, asked_id, answered_id))
        if messages:
            bottom = self.table.verticalScrollBar()
            at_bottom = bottom.value() >= bottom.maximum()
            self.model.add(messages)
            for message in messages:
                self._time(message)
                self.graph.note_message(message)
                touched.update((message.sender, message.receiver))
            if at_bottom:
                self.table.scrollToBottom()
        for node_id in touched:
            node = self.network.nodes.get(node_id)
            if node is not None and node_id in self.graph.nodes:
                self._show_node(node)
        if nodes_changed:
            self._refresh_agent_filter()
            if self.shown is None:
                self._refresh_card()  # "no agent yet" becomes the hint, and back
        if self.shown is not None and touched.intersection(self.shown[1:]):
            self._refresh_card()

    def _show_node(self, node: Node) -> None:
        self.names[node.id] = node.name
        if node.kind == NodeKind.MODEL:
            p50, p95 = self.models.latency(node.id)
        else:
            p50, p95 = self.latency(node.id)
        self.graph.set_node(node, p50, p95)

    def _time(self, message: AgentMessage) -> None:
        """Note when a request was asked, and on its answer how long the answerer took."""
        if message.type == MessageType.REQUEST:
            if message.id not in self._waiting:
                self._waiting[message.id] = message.timestamp
                while len(self._waiting) > MAX_WAITING:
                    self._waiting.popitem(last=False)
        elif message.type in (MessageType.RESPONSE, MessageType.ERROR) and message.correlation_id:
            asked = self._waiting.pop(message.correlation_id, None)
            if asked is not None:
                samples = self._latencies.setdefault(message.sender, deque(maxlen=LATENCY_SAMPLES))
                samples.append(max(0.0, message.timestamp - asked))

    def latency(self, node_id: str) -> tuple[float | None, float | None]:
        """The p50 and p95 of the time ``node_id`` took to answer requests, in seconds."""
        return p50_p95(self._latencies.get(node_id, ()))

    # -- the card ------------------------------------------------------------------------------

    def show_node(self, node_id: str) -> None:
        self.shown = ("node", node_id)
        self._refresh_card()

    def show_edge(self, first: str, second: str) -> None:
        self.shown = ("edge", first, second)
        self._refresh_card()

    def _on_cleared(self) -> None:
        self.shown = None
        self._refresh_card()

    def _refresh_card(self) -> None:
        if self.shown is None:
            self.card.setHtml(HINT if self.graph.nodes else EMPTY)
        elif self.shown[0] == "node":
            self.card.setHtml(self._node_card(self.shown[1]))
        else:
            self.card.setHtml(self._edge_card(self.shown[1], self.shown[2]))

    def _name(self, node_id: str) -> str:
        return html.escape(self.names.get(node_id, node_id))

    def _node_card(self, node_id: str) -> str:
        if is_model(node_id):
            return self._model_card(node_id)
        node = self.network.nodes.get(node_id)
        if node is None:
            return f"<h3>{self._name(node_id)}</h3><p>This agent has left the network.</p>"
        kind = "Agent of this app" if node.kind == NodeKind.LOCAL else "Remote A2A agent"
        colour = STATUS_COLOURS[node.status].name()
        p50, p95 = self.latency(node_id)
        linked = ", ".join(self._name(other) for other in self.network.linked(node_id))
        skills = ", ".join(html.escape(skill) for skill in node.skills) or "none listed"
        tags = ", ".join(html.escape(tag) for tag in node.tags) or "none"
        latency = (
            f"p50 {duration(p50)} · p95 {duration(p95)}" if p50 is not None else "no answers yet"
        )
        remove = (
            "<p><a href='remove'>Remove this remote agent</a></p>"
            if node.kind == NodeKind.REMOTE and self.settings is not None
            else ""
        )
        return (
            f"<h3>{html.escape(node.name)}</h3>{remove}"
            f"<p><b>Kind:</b> {kind}<br><b>Location:</b> {html.escape(node.location)}<br>"
            f"<b>Status:</b> <span style='color:{colour}'>●</span> {node.status}<br>"
            f"<b>Handled:</b> {node.handled:,} · <b>failed:</b> {node.failed:,}<br>"
            f"<b>Latency:</b> {latency}</p>"
            f"<p><b>Skills:</b> {skills}<br><b>Tags:</b> {tags}<br>"
            f"<b>Linked to:</b> {linked or 'nobody yet'}</p>"
            + self._messages_html(self.model.recent(node_id, limit=CARD_MESSAGES))
        )

    def _model_card(self, node_id: str) -> str:
        endpoint = self.models.endpoints.get(node_id)
        if endpoint is None:
            return f"<h3>{self._name(node_id)}</h3><p>No call to this model is known.</p>"
        node = endpoint.node
        colour = STATUS_COLOURS[node.status].name()
        p50, p95 = self.models.latency(node_id)
        latency = (
            f"p50 {duration(p50)} · p95 {duration(p95)}" if p50 is not None else "no answers yet"
        )
        first_token = self.models.median(endpoint.first_token)
        speed = self.models.median(endpoint.speeds)
        asked_by = ", ".join(sorted(self._name(a) for a in endpoint.agents)) or "nobody yet"
        return (
            f"<h3>{html.escape(node.name)}</h3>"
            f"<p><b>Kind:</b> model endpoint<br>"
            f"<b>Provider:</b> {html.escape(endpoint.provider or node.location)}<br>"
            f"<b>Status:</b> <span style='color:{colour}'>●</span> {node.status}"
            f" · {len(endpoint.in_flight)} in flight<br>"
            f"<b>Answered:</b> {node.handled:,} · <b>failed or waiting:</b> {node.failed:,}<br>"
            f"<b>Latency:</b> {latency}<br>"
            f"<b>First token (median):</b> "
            f"{duration(first_token / 1000) if first_token is not None else '–'}<br>"
            f"<b>Tokens/s (median):</b> {f'{speed:.1f}' if speed is not None else '–'}<br>"
            f"<b>Cost this session:</b> ${endpoint.cost_usd:.4f}</p>"
            f"<p><b>Asked by:</b> {asked_by}</p>"
            "<p style='color:#607d8b'>Counts are of this session; the Performance pane keeps "
            "the history.</p>"
        )

    def _edge_card(self, first: str, second: str) -> str:
        if is_model(first) or is_model(second):
            agent, model = (second, first) if is_model(first) else (first, second)
            return (
                f"<h3>{self._name(agent)} → {self._name(model)}</h3>"
                f"<p>{self._name(agent)} asks this model; each call pulses along this edge "
                "while it runs.</p>"
            )
        linked = (first, second) in self.network.links or (second, first) in self.network.links
        rows = self.model.recent(first, second, limit=CARD_MESSAGES)
        return (
            f"<h3>{self._name(first)} ↔ {self._name(second)}</h3>"
            f"<p>{'Linked' if linked else 'Not linked; they have exchanged messages'}.</p>"
            + self._messages_html(rows)
        )

    def _messages_html(self, rows: list[MessageRow]) -> str:
        if not rows:
            return "<p><i>No messages yet.</i></p>"
        items = []
        for row in rows:
            colour = DOT_COLOURS.get(row.type, DOT_COLOURS["request"]).name()
            when = time.strftime("%H:%M:%S", time.localtime(row.timestamp))
            action = f" ({html.escape(row.action)})" if row.action else ""
            items.append(
                f"<li><span style='color:#78909c'>{when}</span> "
                f"<b style='color:{colour}'>{row.type}</b>{action} "
                f"{self._name(row.sender)} → {self._name(row.receiver)} · "
                f"{row.status.replace('_', ' ')}<br>{html.escape(row.text[:160])}</li>"
            )
        return "<h4>Recent messages</h4><ul>" + "".join(items) + "</ul>"

    # -- timeline ------------------------------------------------------------------------------

    def _refresh_agent_filter(self) -> None:
        agents = tuple(
            sorted(
                (i for i in self.graph.nodes if not is_model(i)),
                key=lambda i: self.names.get(i, i).casefold(),
            )
        )
        labels = tuple(self.names.get(i, i) for i in agents)
        if (agents, labels) == (self._agent_ids, self._agent_labels):
            return
        self._agent_ids, self._agent_labels = agents, labels
        current = self.agent_filter.currentData()
        self.agent_filter.blockSignals(True)
        self.agent_filter.clear()
        self.agent_filter.addItem("All agents", "")
        for agent_id, label in zip(agents, labels, strict=True):
            self.agent_filter.addItem(label, agent_id)
        index = self.agent_filter.findData(current)
        self.agent_filter.setCurrentIndex(max(index, 0))
        self.agent_filter.blockSignals(False)
        if current and index < 0:
            self.apply_filters()

    def apply_filters(self) -> None:
        self._filter_timer.stop()
        self.proxy.set_filter(
            self.type_filter.currentData(),
            self.agent_filter.currentData(),
            self.search_box.text(),
        )

    def selected_row(self) -> MessageRow | None:
        selected = self.table.selectionModel().selectedRows()
        if not selected:
            return None
        return self.model.row(self.proxy.mapToSource(selected[0]).row())

    def select_message(self, message_id: str) -> bool:
        """Select a message's row in the timeline (if it is there and passes the filters)."""
        number = self.model.row_of(message_id)
        if number is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(number, 0))
        if not index.isValid():
            return False
        self.table.selectionModel().select(
            index,
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows,
        )
        self.table.scrollTo(index)
        return True

    # -- replay --------------------------------------------------------------------------------

    def replay_selected(self) -> None:
        row = self.selected_row()
        if row is None:
            self.replay_label.setText("Select a message in the timeline first.")
            return
        self.spawn(self.replay(row.correlation_id or row.id))

    async def replay(self, message_id: str) -> int:
        """Load a request and its answer for stepping through; returns how many steps."""
        try:
            steps = await self.network.exchange(message_id)
        except Exception as exc:
            log.exception("the exchange %s could not be read", message_id)
            self.replay_label.setText(f"The exchange could not be read: {exc}")
            return 0
        self.replay_steps = steps
        self.replay_index = 0
        if not steps:
            self.replay_label.setText("Nothing is stored for this exchange.")
            self.graph.highlight_edge(None)
        else:
            self._show_step()
        self._update_replay_buttons()
        return len(steps)

    def step(self, delta: int) -> None:
        if not self.replay_steps:
            return
        self.replay_index = max(0, min(len(self.replay_steps) - 1, self.replay_index + delta))
        self._show_step()
        self._update_replay_buttons()

    def _show_step(self) -> None:
        message = self.replay_steps[self.replay_index]
        self.graph.highlight_edge(message.sender, message.receiver)
        self.graph.pulse(message.sender, message.receiver, DOT_COLOURS.get(str(message.type)))
        action = f" ({html.escape(message.action)})" if message.action else ""
        text = " ".join((message.error or message.text).split())[:RESULT_CHARS]
        self.replay_label.setText(
            f"Step {self.replay_index + 1} of {len(self.replay_steps)}: "
            f"<b>{message.type}</b>{action} {self._name(message.sender)} → "
            f"{self._name(message.receiver)} · {str(message.status).replace('_', ' ')}"
            f"<br>{html.escape(text)}"
        )
        self.select_message(message.id)

    def _update_replay_buttons(self) -> None:
        self.replay_button.setEnabled(self.table.selectionModel().hasSelection())
        has_steps = bool(self.replay_steps)
        self.previous_button.setEnabled(has_steps and self.replay_index > 0)
        self.next_button.setEnabled(has_steps and self.replay_index < len(self.replay_steps) - 1)

    # -- actions -------------------------------------------------------------------------------

    def _agent_choices(self) -> list[tuple[str, str]]:
        nodes = sorted(self.network.nodes.values(), key=lambda n: n.name.casefold())
        return [(node.id, node.name) for node in nodes]

    def _say(self, text: str, *, error: bool = False) -> None:
        self.result_label.setStyleSheet("color: #c62828;" if error else "")
        self.result_label.setText(text)
        self.result_label.show()
        self.status_message.emit(text)

    def open_agents_dialog(self) -> QWidget:
        from ..agents_dialog import AgentsDialog

        dialog = AgentsDialog(self.agents, self.spawn, self)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def open_connect_dialog(self) -> ConnectDialog:
        dialog = ConnectDialog(self._agent_choices(), self)
        dialog.accepted.connect(
            lambda: self.spawn(
                self.connect_agents(dialog.first.currentData(), dialog.second.currentData())
            )
        )
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def open_request_dialog(self) -> RequestDialog:
        dialog = RequestDialog(self._agent_choices(), ACTIONS, self)
        dialog.accepted.connect(
            lambda: self.spawn(
                self.send_request(
                    dialog.sender.currentData(),
                    dialog.receiver.currentData(),
                    dialog.action.currentData(),
                    dialog.text.toPlainText(),
                )
            )
        )
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def open_broadcast_dialog(self) -> BroadcastDialog:
        dialog = BroadcastDialog(self._agent_choices(), self)
        dialog.accepted.connect(
            lambda: self.spawn(
                self.send_broadcast(
                    dialog.sender.currentData(), dialog.tag_list(), dialog.text.toPlainText()
                )
            )
        )
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def open_remote_dialog(self) -> RemoteAgentDialog:
        dialog = RemoteAgentDialog(self.spawn, self.add_remote_agent, self)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def open_share_dialog(self) -> ShareDialog:
        assert self.sharing is not None
        assert self.settings is not None
        dialog = ShareDialog(self.sharing, self.settings, self.spawn, self)
        dialog.applied.connect(self.status_message.emit)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    async def add_remote_agent(self, url: str, token: str | None) -> str | None:
        """Add the A2A agent at ``url``; returns None when it is on the network, else why not."""
        assert self.runtime is not None
        assert self.settings is not None
        try:
            _node, text = await add_remote(self.runtime, self.settings, self.keys, url, token)
        except NetworkError as exc:
            return str(exc)
        self._say(text)
        return None

    def _on_card_link(self, link: QUrl) -> None:
        if link.toString() == "remove" and self.shown is not None and self.shown[0] == "node":
            self.spawn(self.remove_remote_agent(self.shown[1]))

    async def remove_remote_agent(self, node_id: str) -> bool:
        """Take a remote agent off the network and forget it (its URL and its token)."""
        node = self.network.nodes.get(node_id)
        if node is None or node.kind != NodeKind.REMOTE or self.settings is None:
            return False
        try:
            self._say(await remove_remote(self.network, self.settings, self.keys, node))
        except Exception as exc:
            log.exception("the remote agent %s could not be removed", node_id)
            self._say(f"{node.name} could not be removed: {exc}", error=True)
            return False
        return True

    async def connect_agents(self, first: str, second: str) -> bool:
        try:
            await self.network.connect(first, second)
        except NetworkError as exc:
            self._say(f"Not connected: {exc}", error=True)
            return False
        self._say(
            f"{self.names.get(first, first)} and {self.names.get(second, second)} are connected."
        )
        return True

    async def send_request(
        self, sender: str, receiver: str, action: str, text: str
    ) -> AgentMessage | None:
        """Ask ``receiver`` on behalf of ``sender``; the answer (or why there is none) is shown."""
        name = self.names.get(receiver, receiver)
        self._say(f"Asking {name} to {action}…")
        params = {"text": text} if text.strip() else {}
        written: list[str] = []

        def progress(piece: str) -> None:
            # The answer as it is written (a streaming agent, local or remote): the label
            # only, the status bar gets the outcome.
            written.append(piece)
            so_far = " ".join("".join(written).split())
            if len(so_far) > RESULT_CHARS:
                so_far = "…" + so_far[-RESULT_CHARS:]
            self.result_label.setText(f"{name} is answering: {so_far}")

        try:
            answer = await self.network.request(
                sender, receiver, action, params, on_progress=progress
            )
        except NetworkError as exc:
            self._say(f"The request to {name} failed: {exc}", error=True)
            return None
        reply = " ".join(answer.text.split())
        if len(reply) > RESULT_CHARS:
            reply = reply[:RESULT_CHARS] + "…"
        self._say(f"{name} answered: {reply}")
        return answer

    async def send_broadcast(self, sender: str, tags: Iterable[str], text: str) -> list[str]:
        tags = list(tags)
        try:
            receivers = await self.network.broadcast(sender, {"text": text}, tags)
        except NetworkError as exc:
            self._say(f"The broadcast failed: {exc}", error=True)
            return []
        if receivers:
            names = ", ".join(self.names.get(r, r) for r in receivers)
            self._say(f"Sent to {plural(len(receivers), 'agent')}: {names}.")
        elif tags:
            self._say(
                f"No agent linked to {self.names.get(sender, sender)} has the tags "
                f"{', '.join(tags)}: nobody received it."
            )
        else:
            self._say(
                f"{self.names.get(sender, sender)} is linked to no agent online: nobody "
                "received it. Connect agents first."
            )
        return receivers

    # -- events --------------------------------------------------------------------------------

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        width = event.size().width()
        orientation = Qt.Orientation.Vertical if width < NARROW_WIDTH else Qt.Orientation.Horizontal
        if self.top.orientation() != orientation or not self._sized:
            self._sized = True
            self.top.setOrientation(orientation)
            if orientation == Qt.Orientation.Horizontal:
                self.top.setSizes([width * 2 // 3, width // 3])
            else:
                height = self.top.height()
                self.top.setSizes([height * 2 // 3, height // 3])
