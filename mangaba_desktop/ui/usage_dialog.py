"""Tokens and cost per provider and model, for every chat or the one shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.store import ConversationStore, Usage
from .chat.messages import format_cost

COLUMNS = ("Provider", "Model", "Replies", "Prompt tokens", "Reply tokens", "Cost")


class UsageDialog(QDialog):
    """What the replies used and cost, from the history (prices from litellm's local table;
    models on this computer cost nothing)."""

    def __init__(
        self,
        store: ConversationStore,
        spawn: Callable[[Any], Any],
        parent: QWidget | None = None,
        *,
        conversation_id: int | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("usage-dialog")
        self.setWindowTitle("Usage and cost")
        self.resize(720, 360)
        self.store = store
        self.summary = QLabel("Adding up…")
        self.summary.setObjectName("usage-summary")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("usage-table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        note = QLabel(
            "Prices come from the price table shipped with the app; a model it does not list "
            "is counted as “price unknown”. Models on this computer cost nothing."
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.loaded = spawn(self.load(conversation_id))

    async def load(self, conversation_id: int | None = None) -> list[Usage]:
        rows = await self.store.usage(conversation_id)
        self.table.setRowCount(len(rows))
        for row, usage in enumerate(rows):
            cost = format_cost(usage.cost_usd) if usage.cost_usd is not None else "unknown"
            if usage.unpriced and usage.cost_usd is not None:
                cost += f" (+{usage.unpriced} unpriced)"
            values = (
                usage.provider,
                usage.model,
                f"{usage.replies:,}",
                f"{usage.prompt_tokens:,}",
                f"{usage.completion_tokens:,}",
                cost,
            )
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                if column >= 2:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(row, column, item)
        total = sum(u.cost_usd or 0.0 for u in rows)
        tokens = sum(u.prompt_tokens + u.completion_tokens for u in rows)
        replies = sum(u.replies for u in rows)
        self.summary.setText(
            f"{replies:,} replies · {tokens:,} tokens · {format_cost(total)} in all"
            if rows
            else "No replies yet."
        )
        return rows
