"""The first start's import of the upstream configuration, as the app runs it
(``mangaba_desktop.ui.app.first_run_import``: no window involved): keys found in a ``.env`` go
to a safe keyring, else are used for this run only, and a bad one is a note, never a failed
start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mangaba_desktop.core.providers.env_import import UPSTREAM_VARIABLES
from mangaba_desktop.core.providers.secrets import KeySource, KeyStore
from mangaba_desktop.core.settings import ProviderKind, SettingsStore
from tests.helpers.providers import plaintext_keyring

pytestmark = pytest.mark.asyncio

DOTENV_KEY = "sk-test-openai-key-from-dotenv-7a2c"

FirstRun = Callable[[SettingsStore, KeyStore, Path], Awaitable[list[str]]]


@pytest.fixture
def first_run() -> FirstRun:
    # Imported here: the module is the app's (Qt) start-up; the function itself is Qt-free.
    from mangaba_desktop.ui.app import first_run_import

    return first_run_import


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data folder; the working folder is an empty one and no upstream variable is set,
    so that only the ``.env`` a test writes there is read."""
    for variable in UPSTREAM_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.chdir(working)
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    """Keys over a plain-text keyring in ``tmp_path`` (not a safe place for them)."""
    return KeyStore(plaintext_keyring(tmp_path))


def keyring_file(tmp_path: Path) -> str:
    return (tmp_path / "keyring_pass.cfg").read_text(encoding="utf-8")


async def test_a_placeholder_key_in_dotenv_is_a_note_and_the_start_goes_on(
    first_run, data_dir, keys, tmp_path
):
    placeholder = "paste your key here"
    (data_dir / ".env").write_text(f'OPENAI_API_KEY="{placeholder}"\n', encoding="utf-8")
    settings = SettingsStore(data_dir)

    notes = await first_run(settings, keys, data_dir)

    assert any("openai key in .env was not used" in note for note in notes), notes
    saved = SettingsStore(data_dir).settings
    assert saved.first_run_import_done
    assert [p.kind for p in saved.providers] == [ProviderKind.OPENAI]
    assert keys.get("openai") is None
    assert placeholder not in keyring_file(tmp_path)
    assert await first_run(settings, keys, data_dir) == []  # done: not asked again


async def test_a_dotenv_key_with_an_unsafe_keyring_is_kept_for_this_run_only(
    first_run, data_dir, keys, tmp_path
):
    (data_dir / ".env").write_text(f"OPENAI_API_KEY={DOTENV_KEY}\n", encoding="utf-8")
    settings = SettingsStore(data_dir)

    notes = await first_run(settings, keys, data_dir)

    assert any("openai key from .env is used for this run only" in n for n in notes), notes
    assert (keys.get("openai"), keys.source("openai")) == (DOTENV_KEY, KeySource.SESSION)
    assert DOTENV_KEY not in keyring_file(tmp_path)
    assert all(DOTENV_KEY not in note for note in notes)
    saved = SettingsStore(data_dir)
    assert saved.settings.first_run_import_done
    assert DOTENV_KEY not in saved.path.read_text(encoding="utf-8")
