"""The Settings dialog's Plugins page over the real plugin host and the real settings file."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog

from mangaba_desktop import __version__
from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.plugins import Plugin, PluginManager, PluginState
from mangaba_desktop.core.providers.secrets import KeyStore
from mangaba_desktop.core.settings import SettingsStore
from mangaba_desktop.ui.settings import SettingsDialog
from mangaba_desktop.ui.settings.plugins_page import DESCRIPTION, NAME, STATUS, VERSION
from tests.helpers.providers import plaintext_keyring


class NeedsALicence(Plugin):
    name = "needs-licence"
    version = "2.0"
    description = "Cannot start without a licence."

    def initialize(self) -> None:
        raise RuntimeError("no licence key found")


def spawn(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    return asyncio.ensure_future(coroutine)


async def open_dialog(store: SettingsStore, plugins: PluginManager, tmp_path: Path) -> Any:
    keys = KeyStore(plaintext_keyring(tmp_path))
    dialog = SettingsDialog(store, keys, None, spawn, plugins=plugins)
    dialog.open()
    dialog.tabs.setCurrentWidget(dialog.plugins_page)
    return dialog


async def close(dialog: SettingsDialog) -> None:
    if dialog.isVisible():
        QDialog.done(dialog, QDialog.DialogCode.Rejected)
    dialog.deleteLater()
    await asyncio.sleep(0)
    gc.collect()  # on the GUI thread: a collection on a worker thread makes Qt warn


def test_the_installed_plugins_are_listed_and_turning_one_off_is_saved(loop, data_dir, tmp_path):
    async def scenario():
        store = SettingsStore(data_dir)
        plugins = PluginManager(EventBus(), settings=store)
        await plugins.load_installed()
        await plugins.register(NeedsALicence())

        dialog = await open_dialog(store, plugins, tmp_path)
        try:
            page = dialog.plugins_page
            redaction = page.item("pii-redaction")
            assert redaction is not None
            assert redaction.text(VERSION) == __version__
            assert redaction.text(STATUS) == "Active"
            assert redaction.checkState(NAME) == Qt.CheckState.Checked
            assert "phone numbers" in redaction.toolTip(DESCRIPTION)
            assert "/redact <text>" in redaction.toolTip(DESCRIPTION)
            failed = page.item("needs-licence")
            assert failed.text(STATUS) == (
                "Failed: It could not be loaded: RuntimeError: no licence key found"
            )
            assert not page.empty_label.isVisible()

            redaction.setCheckState(NAME, Qt.CheckState.Unchecked)
            assert dialog.unsaved()
            dialog.ok_button.click()
            assert not dialog.isVisible()
        finally:
            await close(dialog)

        saved = json.loads((data_dir / "settings.json").read_text(encoding="utf-8"))
        assert saved["disabled_plugins"] == ["pii-redaction"]
        assert SettingsStore(data_dir).settings.disabled_plugins == ["pii-redaction"]
        assert plugins.info("pii-redaction").state == PluginState.OFF  # at once, no restart

        again = await open_dialog(store, plugins, tmp_path)
        try:
            item = again.plugins_page.item("pii-redaction")
            assert item.checkState(NAME) == Qt.CheckState.Unchecked
            assert item.text(STATUS) == "Off"
            item.setCheckState(NAME, Qt.CheckState.Checked)
            again.apply_button.click()
            assert again.plugins_page.item("pii-redaction").text(STATUS) == "Active"
        finally:
            await close(again)
        assert store.settings.disabled_plugins == []
        await plugins.close()

    loop.run_until_complete(scenario())


def test_a_plugin_turned_off_but_no_longer_installed_stays_off(loop, data_dir, tmp_path):
    async def scenario():
        store = SettingsStore(data_dir)
        store.update(store.settings.model_copy(update={"disabled_plugins": ["uninstalled"]}))
        plugins = PluginManager(EventBus(), settings=store)

        dialog = await open_dialog(store, plugins, tmp_path)
        try:
            assert dialog.plugins_page.empty_label.isVisible()
            assert dialog.plugins_page.plugin_list.topLevelItemCount() == 0
            dialog.apply_button.click()
        finally:
            await close(dialog)
        assert store.settings.disabled_plugins == ["uninstalled"]
        await plugins.close()

    loop.run_until_complete(scenario())
