"""The Settings dialog, driven as a user would: typing, clicking, answering its questions."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import keyring.errors
import pytest
from keyrings.alt.file import PlaintextKeyring
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialog, QFileDialog, QInputDialog, QLineEdit, QMessageBox, QWidget

from mangaba_desktop.core.providers.completions import KeyCheck
from mangaba_desktop.core.providers.probe import FoundServer
from mangaba_desktop.core.providers.secrets import SERVICE, KeySource, KeyStore
from mangaba_desktop.core.settings import (
    LOCAL_MODEL,
    ModelParams,
    Provider,
    ProviderKind,
    Settings,
    SettingsStore,
)
from mangaba_desktop.ui.settings import SettingsDialog
from tests.helpers.app import until
from tests.helpers.providers import plaintext_keyring

KEY = "sk-test-9a8b7c6d5e4f3a2b1c0d"
SCREENSHOTS = Path("/tmp")


class Spawner:
    """The app's ``spawn``: keeps each task until it ends and remembers any that failed."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.failures: list[BaseException] = []

    def __call__(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())

    async def settle(self) -> None:
        await until(lambda: not self.tasks)


class WatchedKeyStore(KeyStore):
    """The real key store, noting the threads that call it (the GUI thread never should)."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self.threads: set[threading.Thread] = set()

    def backend(self) -> Any:
        self.threads.add(threading.current_thread())
        return super().backend()

    def source(self, provider_id: str, env_var: str | None = None) -> Any:
        self.threads.add(threading.current_thread())
        return super().source(provider_id, env_var)

    def set(self, provider_id: str, key: str, *, session_only: bool = False) -> Any:
        self.threads.add(threading.current_thread())
        return super().set(provider_id, key, session_only=session_only)

    def delete(self, provider_id: str) -> None:
        self.threads.add(threading.current_thread())
        super().delete(provider_id)


class FakeCompletions:
    """Answers ``test_key`` with a set reply and remembers what it was asked."""

    def __init__(self, check: KeyCheck | None = None) -> None:
        self.check = check or KeyCheck(True, "It works.")
        self.asked: list[tuple[Provider, str | None]] = []

    async def test_key(self, provider: Provider, key: str | None) -> KeyCheck:
        self.asked.append((provider, key))
        await asyncio.sleep(0)
        return self.check


@pytest.fixture
def plaintext(tmp_path: Path) -> PlaintextKeyring:
    """A keyring that would write keys in clear to a file of the test's."""
    return plaintext_keyring(tmp_path)


@pytest.fixture
def store(data_dir: Path) -> SettingsStore:
    return SettingsStore(data_dir)


def with_openai(store: SettingsStore, provider_id: str = "openai") -> Provider:
    provider = Provider(
        id=provider_id, kind=ProviderKind.OPENAI, name="OpenAI", models=["gpt-4o-mini", "gpt-4o"]
    )
    store.update(Settings(providers=[provider]))
    return provider


@contextlib.asynccontextmanager
async def settings_dialog(
    store: SettingsStore,
    keys: KeyStore,
    completions: Any = None,
    found_servers: list[FoundServer] | None = None,
) -> AsyncIterator[SettingsDialog]:
    spawn = Spawner()
    dialog = SettingsDialog(
        store, keys, completions or FakeCompletions(), spawn, found_servers=found_servers
    )
    dialog.open()
    try:
        yield dialog
        await spawn.settle()
    finally:
        if dialog.isVisible():
            QDialog.done(dialog, QDialog.DialogCode.Rejected)
        dialog.deleteLater()
        await asyncio.sleep(0)
        # Freed here, on the GUI thread: a collection on a worker thread makes Qt warn.
        gc.collect()
    assert not spawn.failures


def find(parent: QWidget, kind: type, name: str) -> Any:
    found = parent.findChild(kind, name)
    assert found is not None, name
    return found


def type_into(edit: QLineEdit, text: str) -> None:
    edit.setFocus()
    edit.selectAll()
    QTest.keyClicks(edit, text)


def add_provider(dialog: SettingsDialog, kind: ProviderKind) -> None:
    find(dialog.providers_page.add_menu, QAction, f"add-{kind.value}").trigger()


async def question(dialog: QWidget, name: str) -> QMessageBox:
    """The question box ``name`` once it is shown."""
    boxes = lambda: [b for b in dialog.findChildren(QMessageBox, name) if b.isVisible()]  # noqa: E731
    await until(boxes)
    return boxes()[0]


def press(box: QMessageBox, text: str) -> None:
    button = next(b for b in box.buttons() if b.text() == text)
    button.click()


def saved_json(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "settings.json").read_text(encoding="utf-8"))


# --- providers ------------------------------------------------------------------------------------


def test_an_endpoint_added_by_typing_is_saved_and_read_back(loop, data_dir, store, plaintext):
    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext)) as dialog:
            saved: list[bool] = []
            dialog.saved.connect(lambda: saved.append(True))
            page = dialog.providers_page
            assert page.provider_list.item(0).text() == "SmolLM2-135M (this computer)"
            assert not page.remove_button.isEnabled()

            add_provider(dialog, ProviderKind.OPENAI_COMPATIBLE)
            form = page.form
            assert form.url_edit.text() == "http://127.0.0.1:1234/v1"
            assert not form.path_row.isVisible()
            type_into(form.name_edit, "Office LLM")
            assert form.id_edit.text() == "office-llm"
            type_into(form.id_edit, "Office LLM")
            assert form.id_error.isVisible()
            assert "lower-case letters" in form.id_error.text()
            type_into(form.id_edit, "office")
            assert not form.id_error.isVisible()
            type_into(form.url_edit, "http://10.0.0.5:8000/v1")
            type_into(form.model_edit, "qwen2.5-7b")
            QTest.keyClick(form.model_edit, Qt.Key.Key_Return)
            assert form.model_list.item(0).text() == "qwen2.5-7b"
            assert dialog.isVisible()  # Return added the model; it did not press OK
            assert "Office LLM" in page.provider_list.item(1).text()

            dialog.ok_button.click()
            assert not dialog.isVisible()
            assert saved == [True]

        [provider] = saved_json(data_dir)["providers"]
        assert provider["id"] == "office"
        assert provider["kind"] == "openai_compatible"
        assert provider["base_url"] == "http://10.0.0.5:8000/v1"
        assert provider["models"] == ["qwen2.5-7b"]
        reopened = SettingsStore(data_dir)
        assert reopened.problem is None
        assert reopened.settings.provider("office").name == "Office LLM"
        assert "office/qwen2.5-7b" in reopened.settings.models()

    loop.run_until_complete(scenario())


def test_an_invalid_address_is_explained_and_nothing_typed_is_lost(
    loop, data_dir, store, plaintext
):
    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext)) as dialog:
            add_provider(dialog, ProviderKind.OPENAI_COMPATIBLE)
            form = dialog.providers_page.form
            type_into(form.name_edit, "Files")
            type_into(form.url_edit, "ftp://files.example.org")
            dialog.tabs.setCurrentWidget(dialog.limits_page)
            dialog.limits_page.burst_spin.setValue(7)

            dialog.ok_button.click()
            assert dialog.isVisible()
            message = dialog.message_label.text()
            assert "“ftp://files.example.org” is not an http:// or https:// address" in message
            assert dialog.tabs.currentWidget() is dialog.providers_page
            assert form.name_edit.text() == "Files"
            assert form.url_edit.text() == "ftp://files.example.org"
            assert dialog.limits_page.burst_spin.value() == 7
            assert not (data_dir / "settings.json").exists()

            # Cancel asks before dropping the edits; "Keep editing" keeps them all.
            dialog.cancel_button.click()
            press(await question(dialog, "discard-question"), "Keep editing")
            await asyncio.sleep(0)
            assert dialog.isVisible() and form.url_edit.text() == "ftp://files.example.org"

            type_into(form.url_edit, "https://files.example.org/v1")
            dialog.apply_button.click()
            assert dialog.message_label.text() == "Settings saved."
            assert store.settings.agent_burst == 7
            # Saved: closing asks nothing now.
            dialog.cancel_button.click()
            assert not dialog.isVisible()

        assert saved_json(data_dir)["providers"][0]["base_url"] == "https://files.example.org/v1"

    loop.run_until_complete(scenario())


def test_cancel_discards_edits_once_the_user_agrees(loop, data_dir, store, plaintext):
    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext)) as dialog:
            add_provider(dialog, ProviderKind.GEMINI)
            dialog.reject()
            press(await question(dialog, "discard-question"), "Discard changes")
            await until(lambda: not dialog.isVisible())
        assert not (data_dir / "settings.json").exists()
        assert store.settings.providers == []

    loop.run_until_complete(scenario())


def test_a_server_found_on_this_computer_is_added_with_its_models(loop, data_dir, store, plaintext):
    found = [
        FoundServer(
            ProviderKind.OLLAMA, "Ollama", "http://127.0.0.1:11434", ["llama3.2:1b", "qwen2.5:0.5b"]
        )
    ]

    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext), found_servers=found) as dialog:
            page = dialog.providers_page
            assert page.found.isVisible()
            add = find(page, QWidget, "found-add-0")
            add.click()
            assert not add.isEnabled() and add.text() == "Added"
            assert page.form.name_edit.text() == "Ollama"
            assert page.form.id_edit.text() == "ollama"
            assert page.form.url_edit.text() == "http://127.0.0.1:11434"
            offered = dialog.fallbacks_page.add_combo
            assert offered.findText("ollama/llama3.2:1b") >= 0
            # Removing it offers the server again and its models are no longer offered.
            page.remove_button.click()
            assert add.isEnabled()
            assert offered.findText("ollama/llama3.2:1b") < 0
            add.click()
            dialog.ok_button.click()
            assert not dialog.isVisible()

        [provider] = SettingsStore(data_dir).settings.providers
        assert provider.kind == ProviderKind.OLLAMA
        assert provider.models == ["llama3.2:1b", "qwen2.5:0.5b"]

    loop.run_until_complete(scenario())


def test_a_gguf_file_is_chosen_in_a_file_dialog(loop, data_dir, store, plaintext, tmp_path):
    model = tmp_path / "tiny-chat.gguf"
    model.write_bytes(b"GGUF")

    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext)) as dialog:
            add_provider(dialog, ProviderKind.GGUF)
            form = dialog.providers_page.form
            assert form.path_row.isVisible() and not form.url_edit.isVisible()
            assert not form.key_button.isVisible()
            form.browse_button.click()
            chooser = find(form, QFileDialog, "provider-file-dialog")
            await until(chooser.isVisible)
            assert chooser.nameFilters() == ["GGUF models (*.gguf)"]
            chooser.selectFile(str(model))
            chooser.accept()
            await until(lambda: form.path_edit.text() == str(model))
            assert form.model_list.item(0).text() == "tiny-chat"
            dialog.ok_button.click()
            assert not dialog.isVisible()

        [provider] = SettingsStore(data_dir).settings.providers
        assert (provider.kind, provider.path, provider.models) == (
            ProviderKind.GGUF,
            str(model),
            ["tiny-chat"],
        )

    loop.run_until_complete(scenario())


# --- API keys -------------------------------------------------------------------------------------


def test_a_key_saved_in_the_secure_keyring_is_never_in_the_settings(
    loop, data_dir, store, secret_service, caplog
):
    caplog.set_level(logging.DEBUG)
    provider_id = f"oa-{uuid.uuid4().hex[:8]}"
    renamed = f"{provider_id}-x"
    with_openai(store, provider_id)
    keys = WatchedKeyStore(secret_service)

    async def scenario():
        async with settings_dialog(store, keys) as dialog:
            page = dialog.providers_page
            page.provider_list.setCurrentRow(1)
            page.form.key_button.click()
            key_page = dialog.keys_page
            assert dialog.tabs.currentWidget() is key_page
            await until(lambda: key_page.source_label.text().startswith("No key yet"))
            assert "OPENAI_API_KEY" in key_page.source_label.text()
            assert "Secret Service" in key_page.backend_label.text()
            assert not key_page.insecure_label.isVisible()

            assert key_page.key_edit.echoMode() == QLineEdit.EchoMode.Password
            type_into(key_page.key_edit, KEY)
            key_page.show_button.click()
            assert key_page.key_edit.echoMode() == QLineEdit.EchoMode.Normal
            key_page.save_button.click()
            await until(lambda: key_page.source_label.text().startswith("A key is saved in"))
            assert "Secret Service" in key_page.source_label.text()
            assert key_page.key_edit.text() == ""
            assert key_page.remove_button.isEnabled()
            dialog.grab().save(str(SCREENSHOTS / "settings-keys-secure.png"))

            # Renaming the provider files its key under the new id once saved.
            dialog.tabs.setCurrentWidget(page)
            type_into(page.form.id_edit, renamed)
            dialog.ok_button.click()
            assert not dialog.isVisible()
            await dialog.spawn.settle()

        assert secret_service.get_password(SERVICE, renamed) == KEY
        assert secret_service.get_password(SERVICE, provider_id) is None
        assert KEY not in (data_dir / "settings.json").read_text(encoding="utf-8")
        assert KEY not in store.settings.model_dump_json()
        assert saved_json(data_dir)["providers"][0]["id"] == renamed
        assert KEY not in caplog.text
        assert threading.main_thread() not in keys.threads

    try:
        loop.run_until_complete(scenario())
    finally:
        for each in (provider_id, renamed):
            with contextlib.suppress(keyring.errors.PasswordDeleteError):
                secret_service.delete_password(SERVICE, each)


def test_without_a_secure_keyring_a_key_is_kept_for_this_run_only_or_read_from_the_environment(
    loop, data_dir, store, plaintext, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    env_var = f"MANGABA_TEST_{uuid.uuid4().hex[:6].upper()}_KEY"
    monkeypatch.delenv(env_var, raising=False)
    keys = WatchedKeyStore(plaintext)
    keyring_file = Path(plaintext.file_path)

    async def scenario():
        async with settings_dialog(store, keys) as dialog:
            add_provider(dialog, ProviderKind.ANTHROPIC)
            dialog.providers_page.form.key_button.click()
            page = dialog.keys_page
            await until(lambda: page.insecure_label.isVisible())
            assert "can't be saved safely" in page.insecure_label.text()
            assert "never written in clear" in page.insecure_label.text()

            type_into(page.key_edit, KEY)
            page.save_button.click()
            box = await question(page, "insecure-key-question")
            assert {b.text() for b in box.buttons()} >= {
                "Keep for this run only",
                "Use an environment variable",
            }
            press(box, "Keep for this run only")
            await until(lambda: "for this run only" in page.source_label.text())
            assert await asyncio.to_thread(keys.source, "anthropic") == KeySource.SESSION
            assert page.key_edit.text() == ""

            type_into(page.key_edit, KEY)
            page.save_button.click()
            press(await question(page, "insecure-key-question"), "Use an environment variable")
            await until(lambda: page.findChild(QInputDialog, "settings-input") is not None)
            asked = page.findChild(QInputDialog, "settings-input")
            assert asked.textValue() == "ANTHROPIC_API_KEY"
            asked.setTextValue(env_var)
            asked.accept()
            await until(lambda: page.env_edit.text() == env_var)
            assert f"Set {env_var} to the key before starting the app" in page.status_label.text()
            assert page.key_edit.text() == ""

            # Without the key kept for this run, the environment variable is used.
            page.remove_button.click()
            press(await question(page, "remove-key-question"), "Remove key")
            await until(lambda: page.source_label.text().startswith("No key yet"))
            monkeypatch.setenv(env_var, "sk-from-the-environment-1234")
            await page.refresh()
            assert page.source_label.text() == f"Using {env_var} from the environment."

            dialog.ok_button.click()
            assert not dialog.isVisible()

    loop.run_until_complete(scenario())
    assert store.settings.provider("anthropic").key_env == env_var
    assert KEY not in keyring_file.read_text()
    assert plaintext.get_password(SERVICE, "anthropic") is None
    assert KEY not in (data_dir / "settings.json").read_text(encoding="utf-8")
    assert KEY not in caplog.text
    assert threading.main_thread() not in keys.threads


def test_the_test_button_shows_what_the_provider_answered(loop, store, plaintext):
    completions = FakeCompletions(KeyCheck(False, "Key rejected by OpenAI."))

    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext), completions) as dialog:
            add_provider(dialog, ProviderKind.OPENAI)
            dialog.tabs.setCurrentWidget(dialog.keys_page)
            page = dialog.keys_page
            assert page.provider_combo.currentText() == "OpenAI"
            type_into(page.key_edit, KEY)
            page.test_button.click()
            await until(lambda: page.status_label.text() == "Key rejected by OpenAI.")
            assert "#b3261e" in page.status_label.styleSheet()
            provider, key = completions.asked[-1]
            assert (provider.id, provider.kind, key) == ("openai", ProviderKind.OPENAI, KEY)

            completions.check = KeyCheck(True, "OpenAI answered: the key works.")
            page.key_edit.clear()
            page.test_button.click()
            await until(lambda: page.status_label.text() == "OpenAI answered: the key works.")
            assert "#1b7f3b" in page.status_label.styleSheet()
            assert completions.asked[-1][1] is None

    loop.run_until_complete(scenario())


# --- fallbacks, parameters, limits ----------------------------------------------------------------


def test_reordered_fallbacks_without_the_local_model_are_saved(loop, data_dir, store, plaintext):
    with_openai(store)

    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext)) as dialog:
            page = dialog.fallbacks_page
            assert page.local_check.isChecked()
            for model in ("openai/gpt-4o-mini", "openai/gpt-4o"):
                page.add_combo.setCurrentIndex(page.add_combo.findText(model))
                page.add_button.click()
            assert page.fallback_list.currentRow() == 2
            page.up_button.click()
            page.local_check.click()
            shown = [page.fallback_list.item(i).text() for i in range(page.fallback_list.count())]
            assert shown == ["openai/gpt-4o", "openai/gpt-4o-mini"]
            page.default_combo.setCurrentIndex(page.default_combo.findText("openai/gpt-4o"))

            # A provider renamed meanwhile is followed everywhere its models are named.
            dialog.providers_page.provider_list.setCurrentRow(1)
            type_into(dialog.providers_page.form.id_edit, "oa")
            assert page.fallback_list.item(0).text() == "oa/gpt-4o"
            dialog.ok_button.click()
            assert not dialog.isVisible()

        saved = SettingsStore(data_dir).settings
        assert saved.fallbacks == ["oa/gpt-4o", "oa/gpt-4o-mini"]
        assert LOCAL_MODEL not in saved.fallbacks
        assert saved.default_model == "oa/gpt-4o"

    loop.run_until_complete(scenario())


def test_per_model_parameters_and_limits_are_saved(loop, data_dir, store, plaintext):
    with_openai(store)

    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext)) as dialog:
            page = dialog.fallbacks_page
            assert page.params_combo.currentText() == "All models (default)"
            assert page.top_p_spin.text() == "unset"
            page.temperature_spin.setValue(1.0)

            page.params_combo.setCurrentIndex(page.params_combo.findText("openai/gpt-4o"))
            assert not page.own_check.isChecked() and not page.temperature_spin.isEnabled()
            page.own_check.click()
            assert page.temperature_spin.value() == 1.0  # starts from the defaults
            page.temperature_spin.setValue(0.2)
            page.max_tokens_spin.setValue(256)
            page.top_p_spin.setValue(0.9)
            page.prompt_edit.setPlainText("Answer in Portuguese.")
            limits = dialog.limits_page
            limits.rate_spin.setValue(12.5)
            limits.burst_spin.setValue(3)
            limits.context_spin.setValue(1000)
            assert "Contexts kept per agent" in limits.context_spin.toolTip()
            dialog.ok_button.click()
            assert not dialog.isVisible()

        saved = SettingsStore(data_dir).settings
        assert saved.model_params == {
            "openai/gpt-4o": ModelParams(temperature=0.2, max_tokens=256, top_p=0.9)
        }
        assert saved.default_params == ModelParams(temperature=1.0)
        assert saved.params_for("openai/gpt-4o-mini").top_p is None
        assert saved.system_prompt == "Answer in Portuguese."
        assert (saved.agent_requests_per_minute, saved.agent_burst, saved.context_cap) == (
            12.5,
            3,
            1000,
        )

    loop.run_until_complete(scenario())


# --- how it looks ---------------------------------------------------------------------------------


def test_every_tab_fits_at_800_by_600(loop, store, plaintext):
    with_openai(store)
    found = [
        FoundServer(ProviderKind.OLLAMA, "Ollama", "http://127.0.0.1:11434", ["llama3.2:1b"]),
        FoundServer(
            ProviderKind.OPENAI_COMPATIBLE, "LM Studio", "http://127.0.0.1:1234/v1", ["qwen3-4b"]
        ),
    ]

    async def scenario():
        async with settings_dialog(store, KeyStore(plaintext), found_servers=found) as dialog:
            dialog.resize(800, 600)
            dialog.providers_page.provider_list.setCurrentRow(1)
            await until(lambda: dialog.keys_page.source_label.text().startswith("No key"))
            hint = dialog.minimumSizeHint()
            assert hint.width() <= 800 and hint.height() <= 600, hint
            for index, name in enumerate(("providers", "keys", "fallbacks", "limits")):
                dialog.tabs.setCurrentIndex(index)
                await asyncio.sleep(0.05)
                assert dialog.size().width() == 800 and dialog.size().height() == 600
                dialog.grab().save(str(SCREENSHOTS / f"settings-{name}.png"))

    loop.run_until_complete(scenario())
