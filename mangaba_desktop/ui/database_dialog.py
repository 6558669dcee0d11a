"""Opening the history file, and what the user can do when it cannot be opened."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from ..core.paths import database_path
from ..core.store import Database, DatabaseOpenError, list_backups, restore_backup


async def _ask(dialog: QMessageBox) -> object:
    """Show ``dialog`` without blocking the loop; return the button clicked."""
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    dialog.finished.connect(lambda _result: done.done() or done.set_result(dialog.clickedButton()))
    dialog.open()
    return await done


async def open_database(parent: QWidget, directory: Path) -> Database | None:
    """Open (creating or migrating) the database in ``directory``.

    When it cannot be opened, explain why and offer the ways out: restore the newest backup,
    open another data folder, or quit. Returns ``None`` if the user quits.
    """
    path = database_path(directory)
    while True:
        try:
            return await asyncio.to_thread(Database, path)
        except DatabaseOpenError as error:
            failure = error
        backups = list_backups(path)
        dialog = QMessageBox(parent)
        dialog.setIcon(QMessageBox.Icon.Critical)
        dialog.setWindowTitle("The chat history cannot be opened")
        dialog.setText(failure.message)
        restore = None
        if backups and path.exists():
            dialog.setInformativeText(
                f"The newest backup is {backups[0].name}. Restoring it keeps the current file "
                "beside it, renamed, so nothing is deleted."
            )
            restore = dialog.addButton("Restore backup", QMessageBox.ButtonRole.AcceptRole)
        else:
            dialog.setInformativeText("You can open another data folder, or quit.")
        other = dialog.addButton("Open another folder…", QMessageBox.ButtonRole.ActionRole)
        dialog.addButton("Quit", QMessageBox.ButtonRole.RejectRole)
        clicked = await _ask(dialog)
        dialog.deleteLater()
        if restore is not None and clicked is restore:
            await asyncio.to_thread(restore_backup, path, backups[0])
        elif clicked is other:
            chosen = QFileDialog.getExistingDirectory(
                parent, "Choose a data folder", str(directory)
            )
            if not chosen:
                continue
            directory = Path(chosen)
            path = database_path(directory)
        else:
            return None
