"""The Audit log dialog: entries newest first, filtered by action and outcome, exported to a CSV
chosen in a file dialog (the export itself then shows in the log), and reachable from the menu."""

from __future__ import annotations

import asyncio
import csv
import gc
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QComboBox, QFileDialog

from mangaba_desktop.core.audit import AuditLog
from mangaba_desktop.core.store import Database
from mangaba_desktop.ui.audit_dialog import COLUMNS, AuditDialog
from tests.helpers.app import running_app, until


class Spawner:
    """The app's ``spawn``: keeps each task until it ends, so a test can wait for them all."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def __call__(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))


async def fill(audit: AuditLog) -> None:
    await audit.append("key.added", actor="user", target="openai", detail="Saved in the keyring.")
    await audit.append(
        "a2a.refused", actor="a2a:192.0.2.7", target="/", outcome="refused", detail="No token."
    )
    await audit.append("settings.changed", target="a2a_port", detail="Changed a2a_port = 9000.")


@asynccontextmanager
async def opened(qtbot: Any, audit: AuditLog) -> AsyncIterator[AuditDialog]:
    spawn = Spawner()
    dialog = AuditDialog(audit, spawn)
    qtbot.addWidget(dialog)
    dialog.open()
    try:
        await dialog.loading
        yield dialog
        await spawn.settle()
    finally:
        dialog.done(0)
        await asyncio.sleep(0)
        gc.collect()  # here, on the GUI thread


def table(dialog: AuditDialog) -> list[tuple[str, ...]]:
    shown = dialog.table
    return [
        tuple(shown.item(row, column).text() for column in range(1, len(COLUMNS)))
        for row in range(shown.rowCount())
    ]


def choose(combo: QComboBox, data: str | None) -> None:
    index = combo.findData(data)
    assert index >= 0, f"{data!r} is not offered"
    combo.setCurrentIndex(index)


def test_entries_are_shown_newest_first_and_filtered(loop, qtbot, database: Database):
    audit = AuditLog(database)

    async def scenario() -> None:
        await fill(audit)
        async with opened(qtbot, audit) as dialog:
            assert table(dialog) == [
                ("app", "settings.changed", "a2a_port", "ok", "Changed a2a_port = 9000."),
                ("a2a:192.0.2.7", "a2a.refused", "/", "refused", "No token."),
                ("user", "key.added", "openai", "ok", "Saved in the keyring."),
            ]
            assert dialog.summary.text() == "3 entries, newest first."
            offered = [
                dialog.action_filter.itemText(i) for i in range(dialog.action_filter.count())
            ]
            assert offered == ["All actions", "a2a.refused", "key.added", "settings.changed"]

            choose(dialog.outcome_filter, "refused")
            await dialog.loading
            assert [row[1] for row in table(dialog)] == ["a2a.refused"]
            choose(dialog.outcome_filter, None)
            choose(dialog.action_filter, "key.added")
            await dialog.loading
            assert [row[1] for row in table(dialog)] == ["key.added"]

    loop.run_until_complete(scenario())


def test_export_writes_a_csv_of_the_entries_and_is_recorded(loop, qtbot, database, tmp_path):
    audit = AuditLog(database)
    target = tmp_path / "audit.csv"

    async def scenario() -> None:
        await fill(audit)
        async with opened(qtbot, audit) as dialog:
            dialog.csv_button.click()
            chooser = dialog.findChild(QFileDialog, "audit-export-file")
            assert chooser is not None
            await until(chooser.isVisible)
            assert chooser.acceptMode() == QFileDialog.AcceptMode.AcceptSave
            chooser.selectFile(str(target))
            chooser.accept()
            await until(lambda: dialog.table.rowCount() == 4)
            assert dialog.status.text() == f"Exported 3 entries to {target}."
            newest = table(dialog)[0]
            assert newest == (
                "user",
                "data.exported",
                "audit log",
                "ok",
                f"3 entries as CSV to {target}.",
            )

    loop.run_until_complete(scenario())

    with target.open(newline="", encoding="utf-8") as exported:
        rows = list(csv.DictReader(exported))
    assert [(r["actor"], r["action"], r["target"], r["outcome"], r["detail"]) for r in rows] == [
        ("user", "key.added", "openai", "ok", "Saved in the keyring."),
        ("a2a:192.0.2.7", "a2a.refused", "/", "refused", "No token."),
        ("app", "settings.changed", "a2a_port", "ok", "Changed a2a_port = 9000."),
    ]
    assert all(r["time"].endswith("+00:00") for r in rows)
    assert not Path(f"{target}.partial").exists()


def test_the_audit_log_opens_from_the_file_menu(loop, data_dir):
    async def scenario() -> None:
        async with running_app(data_dir) as app:
            window = app.window
            await app.application.runtime.audit.flush()
            assert window.audit_action in window.menuBar().actions()[0].menu().actions()
            window.audit_action.trigger()
            dialog = window.findChild(AuditDialog)
            assert dialog is not None and dialog.isVisible()
            await dialog.loading
            # The first start imported the settings from the environment, as the app.
            assert ("app", "settings.changed") in [row[:2] for row in table(dialog)]
            dialog.close()

    loop.run_until_complete(scenario())
