"""The audit log, newest first: who did what security-relevant thing, when, and how it ended;
filtered by action and outcome, and exported to CSV or JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.audit import AuditLog, ExportKind, Outcome, iso_time
from ..core.store.models import AuditEntry

COLUMNS = ("Time", "Actor", "Action", "Target", "Outcome", "Detail")
MAX_SHOWN = 2000
"""The newest entries shown; an export has them all."""
_NOT_OK = QColor("#b3261e")
_FILTERS = {ExportKind.CSV: "CSV (*.csv)", ExportKind.JSON: "JSON (*.json)"}


def shown_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


class AuditDialog(QDialog):
    """The entries of the audit log in a table, read off the GUI thread.

    Signals:
        loaded(int): the table was filled with this many entries.
        exported(str): an export was written to this path.
    """

    loaded = Signal(int)
    exported = Signal(str)

    def __init__(
        self, audit: AuditLog, spawn: Callable[[Any], Any], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("audit-dialog")
        self.setWindowTitle("Audit log")
        self.resize(980, 520)
        self.audit = audit
        self.spawn = spawn
        self._tasks: set[asyncio.Future[Any]] = set()
        self._generation = 0
        self._closed = False
        self._file_dialog: QFileDialog | None = None

        self.action_filter = QComboBox(objectName="audit-action-filter")
        self.action_filter.addItem("All actions", None)
        self.outcome_filter = QComboBox(objectName="audit-outcome-filter")
        self.outcome_filter.addItem("All outcomes", None)
        for outcome in Outcome:
            self.outcome_filter.addItem(outcome.value, outcome.value)
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Action"))
        filters.addWidget(self.action_filter, 1)
        filters.addWidget(QLabel("Outcome"))
        filters.addWidget(self.outcome_filter)
        filters.addStretch(1)

        self.summary = QLabel("Reading the log…", objectName="audit-summary")
        self.table = QTableWidget(0, len(COLUMNS), objectName="audit-table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.status = QLabel("", objectName="audit-status")
        self.status.setWordWrap(True)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.csv_button = QPushButton("Export CSV…", objectName="audit-export-csv")
        self.json_button = QPushButton("Export JSON…", objectName="audit-export-json")
        for button in (self.csv_button, self.json_button):
            button.setToolTip("Export the entries of the chosen action and outcome, oldest first")
            buttons.addButton(button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        note = QLabel(
            "Security-relevant actions: API keys, sharing the agents, requests from other "
            "computers, settings changes, exports and imports. Secrets are never recorded."
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        layout.addWidget(self.status)
        layout.addWidget(buttons)

        self.action_filter.currentIndexChanged.connect(lambda _i: self.reload())
        self.outcome_filter.currentIndexChanged.connect(lambda _i: self.reload())
        self.csv_button.clicked.connect(lambda: self.choose_export_file(ExportKind.CSV))
        self.json_button.clicked.connect(lambda: self.choose_export_file(ExportKind.JSON))
        self.reload()

    # -- loading -------------------------------------------------------------------------------

    def _run(self, coroutine: Any) -> Any:
        task = self.spawn(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def reload(self) -> Any:
        """Read the entries again (in the background); returns the task."""
        self.loading = self._run(self.load())
        return self.loading

    def _chosen(self) -> tuple[str | None, str | None]:
        return self.action_filter.currentData(), self.outcome_filter.currentData()

    async def load(self) -> list[AuditEntry]:
        """Fill the table with the newest entries of the chosen action and outcome."""
        self._generation += 1
        generation = self._generation
        action, outcome = self._chosen()
        entries = await self.audit.entries(action=action, outcome=outcome, limit=MAX_SHOWN)
        actions = await self.audit.actions()
        if self._closed or generation != self._generation:
            return entries  # closed, or the filters changed while this was read
        self._offer_actions(actions)
        self._fill(entries)
        if not entries:
            self.summary.setText("No entries." if action or outcome else "The log is empty.")
        elif len(entries) == MAX_SHOWN:
            self.summary.setText(f"The newest {MAX_SHOWN:,} entries; an export has them all.")
        else:
            self.summary.setText(f"{len(entries):,} entries, newest first.")
        self.loaded.emit(len(entries))
        return entries

    def _offer_actions(self, actions: list[str]) -> None:
        chosen = self.action_filter.currentData()
        offered = [self.action_filter.itemData(i) for i in range(1, self.action_filter.count())]
        if offered == actions:
            return
        self.action_filter.blockSignals(True)
        self.action_filter.clear()
        self.action_filter.addItem("All actions", None)
        for action in actions:
            self.action_filter.addItem(action, action)
        self.action_filter.setCurrentIndex(max(self.action_filter.findData(chosen), 0))
        self.action_filter.blockSignals(False)

    def _fill(self, entries: list[AuditEntry]) -> None:
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            values = (
                shown_time(entry.time),
                entry.actor,
                entry.action,
                entry.target,
                entry.outcome,
                entry.detail,
            )
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                if column == 0:
                    item.setToolTip(iso_time(entry.time, "seconds"))
                elif column == len(COLUMNS) - 1:
                    item.setToolTip(value)
                if entry.outcome != Outcome.OK:
                    item.setForeground(QBrush(_NOT_OK))
                self.table.setItem(row, column, item)

    # -- export --------------------------------------------------------------------------------

    def choose_export_file(self, kind: ExportKind) -> QFileDialog:
        """Ask where to export (a file dialog that does not block the loop)."""
        suffix = kind.value
        start = str(Path.home() / f"mangaba-audit-log.{suffix}")
        dialog = QFileDialog(self, "Export the audit log", start, _FILTERS[kind])
        dialog.setObjectName("audit-export-file")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix(suffix)
        dialog.fileSelected.connect(lambda path: self._run(self.export(Path(path), kind)))
        dialog.finished.connect(dialog.deleteLater)
        self._file_dialog = dialog
        dialog.open()
        return dialog

    async def export(self, path: Path, kind: ExportKind = ExportKind.CSV) -> int | None:
        """Export the entries of the chosen action and outcome to ``path``; returns how many,
        or None when the file could not be written (the reason is shown)."""
        action, outcome = self._chosen()
        self.status.setText(f"Exporting to {path}…")
        try:
            written = await self.audit.export(path, kind, action=action, outcome=outcome)
        except OSError as exc:
            if not self._closed:
                self.status.setText(f"The export failed: {exc.strerror or exc}")
            return None
        if self._closed:
            return written
        self.status.setText(f"Exported {written:,} entries to {path}.")
        self.exported.emit(str(path))
        await self.reload()  # the export itself is now in the log
        return written

    def done(self, result: int) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        super().done(result)
