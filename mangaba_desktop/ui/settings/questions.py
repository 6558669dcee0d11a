"""Questions asked without blocking the loop: the box is opened and its answer awaited."""

from __future__ import annotations

import asyncio

from PySide6.QtWidgets import QAbstractButton, QInputDialog, QLineEdit, QMessageBox, QWidget


async def ask(box: QMessageBox) -> QAbstractButton | None:
    """Open ``box`` and return the button clicked (None when it was closed otherwise)."""
    answer: asyncio.Future[QAbstractButton | None] = asyncio.get_running_loop().create_future()
    box.finished.connect(lambda _result: answer.done() or answer.set_result(box.clickedButton()))
    box.open()
    try:
        return await answer
    finally:
        box.deleteLater()


async def ask_text(parent: QWidget, title: str, label: str, text: str = "") -> str | None:
    """Ask for one line of text; None when the user cancels."""
    dialog = QInputDialog(parent)
    dialog.setObjectName("settings-input")
    dialog.setWindowTitle(title)
    dialog.setLabelText(label)
    dialog.setTextEchoMode(QLineEdit.EchoMode.Normal)
    dialog.setTextValue(text)
    answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def finished(result: int) -> None:
        if not answer.done():
            accepted = result == QInputDialog.DialogCode.Accepted
            answer.set_result(dialog.textValue() if accepted else None)

    dialog.finished.connect(finished)
    dialog.open()
    try:
        return await answer
    finally:
        dialog.deleteLater()
