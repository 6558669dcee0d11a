"""The window: panes, menus and shortcuts, saved layout, and a database that will not open."""

from __future__ import annotations

import asyncio

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QApplication, QMessageBox

from mangaba_desktop import DESKTOP_ID
from mangaba_desktop.core.paths import database_path
from mangaba_desktop.core.store import Database
from tests.helpers.app import running_app


def test_docks_panes_and_shortcuts(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            window = app.window
            titles = [d.windowTitle() for d in (window.chat_dock, *window.side_docks)]
            assert titles == ["Chat", "Context", "Agent network", "Performance"]
            assert window.side_docks[0].widget() is window.context_pane
            assert window.side_docks[1].widget() is window.network_pane
            assert window.side_docks[2].widget() is window.performance_pane
            # The icon and the desktop entry the window system matches it with.
            assert QApplication.desktopFileName() == DESKTOP_ID
            assert QSize(256, 256) in QApplication.windowIcon().availableSizes()
            shortcuts = {
                a.text().replace("&", ""): a.shortcut().toString() for a in window.chat_actions
            }
            assert shortcuts["New chat"] == "Ctrl+N"
            assert shortcuts["Search all chats…"] == "Ctrl+K"
            assert shortcuts["Stop reply"] == "Esc"
            assert window.model_label.text().startswith("Model:")

    loop.run_until_complete(scenario())


def test_layout_is_restored(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            app.window.resize(720, 520)
            app.window.side_docks[2].hide()
            await asyncio.sleep(0.05)
        async with running_app(data_dir) as app:
            assert app.window.size().width() == 720
            assert app.window.size().height() == 520
            assert not app.window.side_docks[2].isVisible()
            assert app.window.side_docks[0].isVisible()

    loop.run_until_complete(scenario())


async def _dialog() -> QMessageBox:
    for _ in range(500):
        boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox)]
        visible = [b for b in boxes if b.isVisible()]
        if visible:
            return visible[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no dialog appeared")


def test_corrupt_database_offers_backup_restore(loop, data_dir):
    async def scenario():
        path = database_path(data_dir)
        # A good file with a backup of it, then damage the live file.
        db = Database(path)
        db.close()
        Database.daily_backup(type("D", (), {"path": path})())  # a real daily copy of the file
        path.write_bytes(b"this is not a database" * 100)
        async with running_app(data_dir, wait_ready=False) as app:
            box = await _dialog()
            assert "damaged" in box.text()
            restore = next(b for b in box.buttons() if b.text() == "Restore backup")
            restore.click()
            async with asyncio.timeout(30):
                while app.window.chat_pane is None:
                    await asyncio.sleep(0.02)
        replaced = list(data_dir.glob("*.replaced-*"))
        assert replaced and replaced[0].read_bytes().startswith(b"this is not")

    loop.run_until_complete(scenario())


def test_corrupt_database_without_backup_can_quit(loop, data_dir):
    async def scenario():
        database_path(data_dir).write_bytes(b"\x00garbage" * 500)
        async with running_app(data_dir, wait_ready=False) as app:
            box = await _dialog()
            assert "damaged" in box.text()
            assert not any(b.text() == "Restore backup" for b in box.buttons())
            next(b for b in box.buttons() if b.text() == "Quit").click()
            assert await asyncio.wait_for(app.main, 10) == 1
        assert database_path(data_dir).read_bytes().startswith(b"\x00garbage")

    loop.run_until_complete(scenario())
