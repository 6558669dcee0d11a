"""The Chat pane: conversations on the left, the messages and the composer on the right."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListView,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ...core import events, export
from ...core.audit import AuditLog
from ...core.chat import ChatService
from ...core.events import EventBus
from ...core.network import AgentHub, NodeKind, NodeStatus
from ...core.network.remote_chat import (
    UNREACHABLE_SUFFIX,
    find_node,
    is_remote_agent,
    model_for,
)
from ...core.outbox import Outbox
from ...core.ratelimit import RateLimited
from ...core.settings import SettingsStore
from ...core.store import AgentStore, Conversation, ConversationStore, Message, SearchHit
from ...core.validation import InvalidMessage
from ..bridge import EventBridge
from .composer import Composer
from .conversations import ConversationListModel, ConversationRole
from .messages import MessageListModel, MessageView, format_cost, preserve_position
from .search import SearchDialog

DRAFT_SAVE_DELAY_MS = 400
_REMOTE_CHOICE = "Remote agent · "
"""How the model picker begins the name of a remote agent."""


class ChatPane(QWidget):
    """Chat with the models: conversations, streaming replies, search, export.

    Signals:
        status_message(str): a sentence for the status bar.
        reply_speed(float): tokens per second of the reply that just finished.
        streaming_changed(bool): whether the shown conversation has a reply streaming.
        reply_selected(list): ids of the contexts the selected reply was given (empty when
            no reply is selected).
    """

    status_message = Signal(str)
    reply_speed = Signal(float)
    streaming_changed = Signal(bool)
    reply_selected = Signal(list)

    def __init__(
        self,
        chat: ChatService,
        store: ConversationStore,
        bus: EventBus,
        spawn: Callable[[Any], Any],
        parent: QWidget | None = None,
        *,
        agents: AgentStore | None = None,
        outbox: Outbox | None = None,
        settings: SettingsStore | None = None,
        audit: AuditLog | None = None,
        network: AgentHub | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("chat-pane")
        self.chat = chat
        self.store = store
        self.audit = audit
        self.agents = agents
        self.outbox = outbox
        self.settings = settings
        self.network = network
        """Whose remote agents can answer in a chat (they are offered with the models)."""
        self.bus = bus
        self._unsubscribe_agents: Callable[[], None] | None = None
        self._unsubscribe_nodes: Callable[[], None] | None = None
        self.spawn = spawn
        self.bridge = EventBridge(bus, self)
        self.current: Conversation | None = None
        self.started = False
        self._draft_timer = QTimer(self)
        self._draft_timer.setSingleShot(True)
        self._draft_timer.setInterval(DRAFT_SAVE_DELAY_MS)
        self._draft_timer.timeout.connect(lambda: self.spawn(self.save_draft()))
        self._build()
        self._connect()

    # -- construction --------------------------------------------------------------------------

    def _build(self) -> None:
        self.conversations = ConversationListModel(self)
        self.conversation_list = QListView()
        self.conversation_list.setObjectName("conversation-list")
        self.conversation_list.setModel(self.conversations)
        self.conversation_list.setEditTriggers(
            QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.conversation_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.conversation_list.setSpacing(2)
        self.conversation_list.setWordWrap(True)
        new_button = QPushButton("New chat")
        new_button.setToolTip("Start a new conversation (Ctrl+N)")
        new_button.clicked.connect(self.new_conversation)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(new_button)
        left_layout.addWidget(self.conversation_list, 1)

        self.messages = MessageListModel(self.store, self)
        self.message_view = MessageView()
        self.message_view.setModel(self.messages)
        self.empty_label = QLabel(
            "Start typing below. Replies come from the local model on this computer, "
            "with or without a network."
        )
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setObjectName("empty-conversation")
        self.agent_combo = QComboBox()
        self.agent_combo.setObjectName("agent-picker")
        self.agent_combo.setToolTip("The agent that answers in this chat")
        self.agent_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.manage_agents_button = QPushButton("Agents…")
        self.manage_agents_button.setToolTip("Create, edit and delete agents")
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("model-picker")
        self.model_combo.setToolTip(
            "The model that answers in this chat; add models in Settings ▸ Models & providers"
        )
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_combo.setMinimumContentsLength(4)
        self.model_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.model_combo.setMaximumWidth(320)
        self.usage_label = QLabel("")
        self.usage_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.usage_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.usage_label.setObjectName("chat-usage")
        self.usage_label.setToolTip("Tokens and cost of the replies in this chat")
        # No "Agent:"/"Model:" labels: the bar must fit a narrow window beside the side panes;
        # the pickers say what they are in their tooltips and accessible names.
        self.agent_combo.setAccessibleName("Agent")
        self.model_combo.setAccessibleName("Model")
        agent_bar = QHBoxLayout()
        agent_bar.addWidget(self.agent_combo)
        agent_bar.addWidget(self.manage_agents_button)
        agent_bar.addWidget(self.model_combo, 1)
        agent_bar.addStretch(0)
        self.composer = Composer()
        plugins = self.chat.plugins
        if plugins is not None:
            self.composer.more_commands = lambda: plugins.command_specs(active_only=True)
        self.notice = QLabel("")
        self.notice.setObjectName("composer-notice")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #b3261e;")
        self.notice.hide()
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.setToolTip("Send (Enter)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the reply (Esc); what arrived is kept")
        self.stop_button.hide()
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Write the last reply again (Ctrl+R)")
        buttons = QHBoxLayout()
        buttons.addWidget(self.notice, 1)
        buttons.addWidget(self.usage_label, 1)
        buttons.addWidget(self.regenerate_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.send_button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addLayout(agent_bar)
        right_layout.addWidget(self.empty_label)
        right_layout.addWidget(self.message_view, 1)
        right_layout.addWidget(self.composer)
        right_layout.addLayout(buttons)

        splitter = QSplitter()
        splitter.setObjectName("chat-splitter")
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 600])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

    def _connect(self) -> None:
        self.conversation_list.selectionModel().currentChanged.connect(self._on_current_changed)
        self.conversation_list.customContextMenuRequested.connect(self._on_conversation_menu)
        self.conversations.rename_requested.connect(
            lambda conversation_id, title: self.spawn(self.store.rename(conversation_id, title))
        )
        self.message_view.customContextMenuRequested.connect(self._on_message_menu)
        self.message_view.near_top.connect(
            lambda: self.spawn(preserve_position(self.message_view, self.messages.load_older))
        )
        self.message_view.near_bottom.connect(lambda: self.spawn(self.messages.load_newer()))
        self.composer.submitted.connect(lambda text: self.spawn(self.send(text)))
        self.composer.refused.connect(self.show_notice)
        self.composer.textChanged.connect(self._on_composer_changed)
        self.send_button.clicked.connect(lambda: self.spawn(self.send(self.composer.toPlainText())))
        self.stop_button.clicked.connect(self.stop)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.agent_combo.activated.connect(self._on_agent_chosen)
        self.model_combo.activated.connect(self._on_model_chosen)
        self.manage_agents_button.clicked.connect(self.manage_agents)
        self.message_view.selectionModel().currentChanged.connect(self._on_message_selected)
        bridge = self.bridge
        bridge.conversation_created.connect(self.conversations.upsert)
        bridge.conversation_updated.connect(self._on_conversation_updated)
        bridge.conversation_deleted.connect(self.conversations.remove)
        bridge.message_added.connect(self._on_message_added)
        bridge.text_grown.connect(self._on_text_grown)
        bridge.message_finished.connect(self._on_message_finished)
        bridge.message_updated.connect(self._on_message_updated)
        bridge.messages_removed.connect(self._on_messages_removed)

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the agents and the conversation list, and open the most recent conversation."""
        if self.agents is not None:
            self._unsubscribe_agents = self.bus.subscribe(
                events.AGENTS_CHANGED, lambda _n, _p: self.spawn(self.load_agents())
            )
            await self.load_agents()
        if self.settings is not None:
            self.settings.subscribe(lambda _settings: self.load_models())
        if self.network is not None:
            # A remote agent reached, lost or renamed: the picker says so.
            self._unsubscribe_nodes = self.bus.subscribe(events.NETWORK_NODE, self._on_node_changed)
        self.load_models()
        conversations = await self.store.list()
        self.conversations.set_all(conversations)
        if conversations:
            self.select_conversation(conversations[0].id or 0)
        else:
            await self._show(None)
        self.composer.setFocus()
        self.started = True

    async def flush(self) -> None:
        """Save what is pending (the draft) before the app stops."""
        self._draft_timer.stop()
        await self.save_draft()
        self.bridge.close()
        if self._unsubscribe_agents is not None:
            self._unsubscribe_agents()
            self._unsubscribe_agents = None
        if self._unsubscribe_nodes is not None:
            self._unsubscribe_nodes()
            self._unsubscribe_nodes = None

    # -- conversations -------------------------------------------------------------------------

    def select_conversation(self, conversation_id: int) -> None:
        row = self.conversations.row_of(conversation_id)
        if row is None:
            return
        self.conversation_list.selectionModel().setCurrentIndex(
            self.conversations.index(row), QItemSelectionModel.SelectionFlag.ClearAndSelect
        )

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        conversation = current.data(ConversationRole) if current.isValid() else None
        same = conversation is not None and self.current is not None
        if same and conversation.id == self.current.id:
            self.current = conversation
            return
        self.spawn(self._switch_to(conversation))

    async def _switch_to(
        self, conversation: Conversation | None, around: int | None = None
    ) -> None:
        await self.save_draft()
        await self._show(conversation, around)

    async def _show(self, conversation: Conversation | None, around: int | None = None) -> None:
        self.current = conversation
        self.composer.blockSignals(True)
        self.composer.setPlainText(conversation.draft if conversation else "")
        self.composer.blockSignals(False)
        self.hide_notice()
        self._update_streaming()
        self._show_agent_of(conversation)
        self._show_model_of(conversation)
        self.spawn(self.refresh_usage())
        self.reply_selected.emit([])
        row = await self.messages.open(conversation.id if conversation else None, around)
        self.message_view.delegate.forget()
        self.empty_label.setVisible(not self.messages.rows)
        if row is not None:
            index = self.messages.index(row)
            self.message_view.setCurrentIndex(index)
            self.message_view.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
        else:
            self.message_view.scrollToBottom()

    def new_conversation(self) -> None:
        self.spawn(self._new_conversation())

    async def _new_conversation(self, draft: str = "") -> Conversation:
        # An untouched new chat at the top is reused rather than piling up empty ones.
        if self.conversations.rows:
            top = self.conversations.rows[0]
            if top.title == "New chat" and top.id and not await self.store.count(top.id):
                if draft:
                    await self.store.save_draft(top.id, draft)
                    top = top.model_copy(update={"draft": draft})
                    self.conversations.upsert(top)
                self.select_conversation(top.id)
                self.composer.setFocus()
                return top
        conversation = await self.store.create(agent_id=self.chosen_agent_id(), draft=draft)
        self.select_conversation(conversation.id or 0)
        self.composer.setFocus()
        return conversation

    def _on_conversation_updated(self, conversation: Conversation) -> None:
        self.conversations.upsert(conversation)
        if self.current is not None and conversation.id == self.current.id:
            self.current = conversation

    def _on_conversation_menu(self, position: QPoint) -> None:
        index = self.conversation_list.indexAt(position)
        conversation: Conversation | None = (
            index.data(ConversationRole) if index.isValid() else None
        )
        if conversation is None or conversation.id is None:
            return
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.rename_conversation(conversation))
        menu.addAction("Export as Markdown…", lambda: self.export(conversation, "md"))
        menu.addAction("Export as JSON…", lambda: self.export(conversation, "json"))
        menu.addSeparator()
        menu.addAction("Delete…", lambda: self.delete_conversation(conversation))
        menu.popup(self.conversation_list.viewport().mapToGlobal(position))

    def rename_conversation(self, conversation: Conversation) -> None:
        title, ok = QInputDialog.getText(self, "Rename chat", "Title:", text=conversation.title)
        if ok and title.strip() and conversation.id is not None:
            self.spawn(self.store.rename(conversation.id, title))

    def delete_conversation(self, conversation: Conversation, *, confirm: bool = True) -> None:
        if conversation.id is None:
            return
        if confirm:
            answer = QMessageBox.question(
                self,
                "Delete chat",
                f"Delete “{conversation.title}” and all its messages? This cannot be undone.",
                QMessageBox.StandardButton.Delete | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Delete:
                return
        self.spawn(self._delete(conversation.id))

    async def _delete(self, conversation_id: int) -> None:
        self.chat.stop(conversation_id)
        await self.chat.wait(conversation_id)
        was_current = self.current is not None and self.current.id == conversation_id
        await self.store.delete(conversation_id)
        if was_current:
            self.current = None
            if self.conversations.rows:
                self.select_conversation(self.conversations.rows[0].id or 0)
            else:
                await self._show(None)

    # -- agents --------------------------------------------------------------------------------

    async def load_agents(self) -> None:
        if self.agents is None:
            return
        agents = await self.agents.list()
        chosen = self.chosen_agent_id()
        self.agent_combo.clear()
        for agent in agents:
            self.agent_combo.addItem(agent.name, agent.id)
            self.agent_combo.setItemData(
                self.agent_combo.count() - 1, agent.persona[:300], Qt.ItemDataRole.ToolTipRole
            )
        wanted = self.current.agent_id if self.current is not None else chosen
        self._select_agent(wanted)

    def chosen_agent_id(self) -> str | None:
        data = self.agent_combo.currentData()
        return str(data) if data else None

    def _select_agent(self, agent_id: str | None) -> None:
        index = self.agent_combo.findData(agent_id) if agent_id else -1
        self.agent_combo.setCurrentIndex(index if index >= 0 else 0)

    def _show_agent_of(self, conversation: Conversation | None) -> None:
        if conversation is not None and conversation.agent_id:
            self._select_agent(conversation.agent_id)

    def _on_agent_chosen(self, _index: int) -> None:
        agent_id = self.chosen_agent_id()
        if self.current is None or self.current.id is None or agent_id is None:
            return
        if agent_id != self.current.agent_id:
            self.spawn(self.store.set_agent(self.current.id, agent_id))
            self.status_message.emit(
                f"{self.agent_combo.currentText()} answers in this chat from now on."
            )

    # -- models --------------------------------------------------------------------------------

    def load_models(self) -> None:
        """Fill the model picker from the settings: the default first, then every model,
        then the remote agents added in Settings ▸ Agent network."""
        models = self.settings.settings.models() if self.settings else []
        self.model_combo.clear()
        self.model_combo.addItem("Default model", None)
        self.model_combo.setItemData(
            0, "The agent's model, or the app's default model", Qt.ItemDataRole.ToolTipRole
        )
        for model in models:
            self.model_combo.addItem(model, model)
        remote = self.settings.settings.remote_agents if self.settings else []
        if remote:
            self.model_combo.insertSeparator(self.model_combo.count())
        for url in remote:
            text, tip = self._remote_choice(url)
            self.model_combo.addItem(text, model_for(url))
            self.model_combo.setItemData(
                self.model_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole
            )
        self._show_model_of(self.current)

    def _remote_choice(self, url: str) -> tuple[str, str]:
        """A remote agent as the model picker shows it: its name and whether it is reachable."""
        node = find_node(self.network, model_for(url)) if self.network is not None else None
        offline = node is None or node.status == NodeStatus.OFFLINE
        name = node.name.removesuffix(UNREACHABLE_SUFFIX) if node is not None else url
        text = f"{_REMOTE_CHOICE}{name}" + (" (offline)" if offline else "")
        tip = (
            f"{name} at {url} answers in this chat, through the agent network: the chat's "
            "agent asks it. Only your message is sent (no persona, no memories); the remote "
            "agent keeps this chat's conversation."
        )
        if offline:
            tip += (
                " It cannot be reached now: a message sent to it waits, and goes when it is back."
            )
        return text, tip

    def _on_node_changed(self, _name: str, payload: dict[str, Any]) -> None:
        node = payload.get("node")
        if node is None or getattr(node, "kind", None) != NodeKind.REMOTE:
            return
        # Rebuilt only when what it shows changes (reached, lost, renamed): a remote agent
        # goes working and idle with every request, and an open list must not be rebuilt.
        remote = self.settings.settings.remote_agents if self.settings else []
        shown = {
            self.model_combo.itemData(i): self.model_combo.itemText(i)
            for i in range(self.model_combo.count())
        }
        if any(shown.get(model_for(url)) != self._remote_choice(url)[0] for url in remote):
            self.load_models()

    def _show_model_of(self, conversation: Conversation | None) -> None:
        model = conversation.model if conversation is not None else None
        index = self.model_combo.findData(model) if model else 0
        if index < 0:  # a model no longer in the settings: still shown, as the chat uses it
            self.model_combo.addItem(f"{model} (not configured)", model)
            index = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(index)

    def _on_model_chosen(self, _index: int) -> None:
        model = self.model_combo.currentData()
        if self.current is None or self.current.id is None:
            return
        if model != self.current.model:
            self.spawn(self.store.set_model(self.current.id, model))
            shown = model or "the default model"
            if is_remote_agent(model):
                shown = self.model_combo.currentText().removeprefix(_REMOTE_CHOICE)
            self.status_message.emit(f"Replies in this chat now come from {shown}.")

    async def refresh_usage(self) -> None:
        """Show the shown chat's tokens and cost."""
        conversation = self.current
        if conversation is None or conversation.id is None:
            self.usage_label.setText("")
            return
        rows = await self.store.usage(conversation.id)
        if self.current is not conversation and (
            self.current is None or self.current.id != conversation.id
        ):
            return
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
        if not rows:
            self.usage_label.setText("")
            return
        cost = sum(r.cost_usd or 0.0 for r in rows)
        unpriced = sum(r.unpriced for r in rows)
        if unpriced == sum(r.replies for r in rows):
            shown_cost = "price unknown"  # no reply has a known price (a remote agent's)
        else:
            shown_cost = format_cost(cost) + ("+" if unpriced and cost else "")
        # Tokens only when counted: a remote agent's answer comes without a count.
        self.usage_label.setText(f"{tokens:,} tokens · {shown_cost}" if tokens else shown_cost)
        self.usage_label.setToolTip(
            "This chat so far (prompt + reply tokens; + means some replies have no known "
            "price):\n"
            + "\n".join(
                f"{r.model}: {r.replies} replies, {r.prompt_tokens:,} + "
                f"{r.completion_tokens:,} tokens, "
                + (format_cost(r.cost_usd) if r.cost_usd is not None else "price unknown")
                for r in rows
            )
        )

    # -- queued replies ------------------------------------------------------------------------

    def send_queued_now(self, message: Message, model: str | None = None) -> None:
        if self.outbox is None or message.id is None:
            return
        message_id = message.id

        async def job() -> None:
            try:
                await self.outbox.send_with(message_id, model)  # type: ignore[union-attr]
            except (LookupError, RuntimeError) as exc:
                self.show_notice(str(exc))
            self._update_streaming()

        self.spawn(job())

    def cancel_queued(self, message: Message) -> None:
        if self.outbox is None or message.id is None:
            return
        message_id = message.id

        async def job() -> None:
            try:
                await self.outbox.cancel(message_id)  # type: ignore[union-attr]
            except LookupError as exc:
                self.show_notice(str(exc))

        self.spawn(job())

    def manage_agents(self) -> None:
        if self.agents is None:
            return
        from ..agents_dialog import AgentsDialog

        dialog = AgentsDialog(
            self.agents,
            self.spawn,
            self,
            selected=self.chosen_agent_id(),
            models=self.settings.settings.models() if self.settings else None,
        )
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()

    def _on_message_selected(self, current: QModelIndex, _previous: QModelIndex) -> None:
        message = self.messages.message_at(current.row()) if current.isValid() else None
        if message is not None and message.role == "assistant":
            self.reply_selected.emit(message.used_context_ids)
        else:
            self.reply_selected.emit([])

    # -- sending -------------------------------------------------------------------------------

    async def send(self, text: str) -> Message | None:
        """Send the composer's text in the shown conversation (creating one if none)."""
        if self.current is not None and self.chat.is_streaming(self.current.id or 0):
            self.show_notice("A reply is still being written: press Esc to stop it first.")
            return None
        if not text.strip():
            self.show_notice("Type a message first: an empty message is not sent.")
            return None
        if self.current is None:
            # What was typed becomes the new conversation's draft, so it stays on screen if
            # the message is refused.
            await self._new_conversation(draft=text)
            await asyncio.sleep(0)
        conversation = self.current
        if conversation is None or conversation.id is None:
            return None
        try:
            reply = await self.chat.send(conversation.id, text)
        except (InvalidMessage, RateLimited, RuntimeError, LookupError) as exc:
            self.show_notice(str(exc))
            return None
        self.hide_notice()
        self.composer.blockSignals(True)
        self.composer.clear()
        self.composer.blockSignals(False)
        self._draft_timer.stop()
        await self.store.save_draft(conversation.id, "")
        self._update_streaming()
        return reply

    def stop(self) -> None:
        if self.current is not None and self.chat.stop(self.current.id or 0):
            self.status_message.emit("Stopped; the partial reply is kept.")

    def regenerate(self) -> None:
        if self.current is not None:
            self.spawn(self._regenerate(self.current.id or 0))

    async def _regenerate(self, conversation_id: int) -> None:
        try:
            await self.chat.regenerate(conversation_id)
        except (LookupError, RuntimeError) as exc:
            self.show_notice(str(exc))
        self._update_streaming()

    def edit_message(self, message: Message) -> None:
        if message.id is None or self.current is None:
            return
        later = [m for m in self.messages.rows if (m.id or 0) > message.id and m.role == "user"]
        text, ok = QInputDialog.getMultiLineText(
            self,
            "Edit and resend",
            "The reply to this message, and any messages after it, will be replaced"
            + (f" ({len(later)} later message(s) of yours included)" if later else "")
            + ":",
            message.content,
        )
        if ok:
            self.spawn(self._edit(self.current.id or 0, message.id, text))

    async def _edit(self, conversation_id: int, message_id: int, text: str) -> None:
        try:
            await self.chat.edit_and_resend(conversation_id, message_id, text)
        except (InvalidMessage, RuntimeError) as exc:
            self.show_notice(str(exc))
        self._update_streaming()

    # -- stream updates ------------------------------------------------------------------------

    def _on_message_added(self, message: Message) -> None:
        if self.current is None or message.conversation_id != self.current.id:
            return
        was_at_bottom = self.message_view.at_bottom() or message.role == "user"
        if not self.messages.add(message):
            self.spawn(self._show(self.current))
            return
        self.empty_label.hide()
        self.message_view.keep_bottom_if(was_at_bottom)
        self._update_streaming()

    def _on_text_grown(self, message_id: int, conversation_id: int, text: str) -> None:
        if self.current is None or conversation_id != self.current.id:
            return
        was_at_bottom = self.message_view.at_bottom()
        index = self.messages.grow(message_id, text)
        if index is not None:
            self.message_view.relayout(index)
            self.message_view.keep_bottom_if(was_at_bottom)

    def _on_message_finished(self, message: Message) -> None:
        speed = message.tokens_per_second
        if speed:
            self.reply_speed.emit(speed)
        if message.status == "error" and message.error:
            self.status_message.emit(f"The reply failed: {message.error}")
        if self.current is None or message.conversation_id != self.current.id:
            return
        was_at_bottom = self.message_view.at_bottom()
        index = self.messages.replace(message)
        if index is not None:
            self.message_view.relayout(index)
            self.message_view.keep_bottom_if(was_at_bottom)
        QTimer.singleShot(0, self._update_streaming)
        self.spawn(self.refresh_usage())

    def _on_message_updated(self, message: Message) -> None:
        if self.current is None or message.conversation_id != self.current.id:
            return
        index = self.messages.replace(message)
        if index is not None:
            self.message_view.relayout(index)
        QTimer.singleShot(0, self._update_streaming)

    def _on_messages_removed(self, conversation_id: int, message_ids: list[int]) -> None:
        if self.current is not None and conversation_id == self.current.id:
            self.messages.remove(message_ids)

    def _update_streaming(self) -> None:
        streaming = self.current is not None and self.chat.is_streaming(self.current.id or 0)
        self.stop_button.setVisible(streaming)
        self.send_button.setVisible(not streaming)
        self.regenerate_button.setEnabled(not streaming and bool(self.messages.rows))
        self.streaming_changed.emit(streaming)

    # -- messages ------------------------------------------------------------------------------

    def _on_message_menu(self, position: QPoint) -> None:
        index = self.message_view.indexAt(position)
        message = self.messages.message_at(index.row()) if index.isValid() else None
        if message is None:
            return
        menu = QMenu(self)
        menu.addAction("Copy", lambda: self.copy_message(message))
        if message.role == "user":
            menu.addAction("Edit and resend…", lambda: self.edit_message(message))
        if message.status == "queued" and self.outbox is not None:
            menu.addSeparator()
            menu.addAction("Send now", lambda: self.send_queued_now(message))
            others = menu.addMenu("Send with another model")
            for model in self.settings.settings.models() if self.settings else []:
                if model != message.model:
                    others.addAction(model, lambda m=model: self.send_queued_now(message, m))
            menu.addAction("Cancel sending", lambda: self.cancel_queued(message))
        last = self.messages.rows[-1] if self.messages.rows else None
        if message.role == "assistant" and last is not None and last.id == message.id:
            menu.addAction("Regenerate", self.regenerate)
        menu.popup(self.message_view.viewport().mapToGlobal(position))

    def copy_message(self, message: Message) -> None:
        QGuiApplication.clipboard().setText(message.content)
        self.status_message.emit("Message copied.")

    # -- notices -------------------------------------------------------------------------------

    def show_notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.show()

    def hide_notice(self) -> None:
        self.notice.hide()

    def _on_composer_changed(self) -> None:
        if self.notice.isVisible():
            self.hide_notice()
        self._draft_timer.start()

    async def save_draft(self) -> None:
        if self.current is None or self.current.id is None:
            return
        text = self.composer.toPlainText()
        if text == self.current.draft:
            return
        self.current = self.current.model_copy(update={"draft": text})
        with contextlib.suppress(LookupError):  # the conversation was deleted meanwhile
            await self.store.save_draft(self.current.id, text)

    # -- search and export ---------------------------------------------------------------------

    def open_search(self) -> SearchDialog:
        dialog = SearchDialog(self.store, self.spawn, self)
        dialog.chosen.connect(lambda hit: self.spawn(self.jump_to(hit)))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    async def jump_to(self, hit: SearchHit) -> None:
        conversation = await self.store.get(hit.conversation_id)
        if conversation is None:
            self.status_message.emit("That conversation was deleted.")
            return
        self.conversation_list.selectionModel().blockSignals(True)
        self.select_conversation(hit.conversation_id)
        self.conversation_list.selectionModel().blockSignals(False)
        self.conversation_list.viewport().update()
        await self._switch_to(conversation, around=hit.message_id)

    def export_current(self, kind: str) -> None:
        if self.current is None:
            self.status_message.emit("Open a conversation to export it.")
            return
        self.export(self.current, kind)

    def export(self, conversation: Conversation, kind: str, path: str | None = None) -> None:
        if path is None:
            suffix = ".md" if kind == "md" else ".json"
            name = "".join(c if c.isalnum() or c in " -_" else "_" for c in conversation.title)
            path, _ = QFileDialog.getSaveFileName(
                self,
                "Export conversation",
                str(Path.home() / f"{name.strip() or 'conversation'}{suffix}"),
                "Markdown (*.md)" if kind == "md" else "JSON (*.json)",
            )
            if not path:
                return
        self.spawn(self.write_export(conversation.id or 0, kind, Path(path)))

    async def write_export(self, conversation_id: int, kind: str, path: Path) -> None:
        try:
            await export.export_conversation(
                self.store, conversation_id, path, kind, audit=self.audit
            )
        except (OSError, LookupError) as exc:
            self.status_message.emit(f"Export failed: {exc}")
            return
        self.status_message.emit(f"Exported to {path}")
