"""Providers, settings, the app's Completions and its replies, as the provider tests set them up:
OpenAI-compatible servers on 127.0.0.1 (``tests.helpers.openai_server``) and plain-text keyrings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keyrings.alt.file import PlaintextKeyring

from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.providers.completions import Completions
from mangaba_desktop.core.providers.secrets import KeyStore
from mangaba_desktop.core.settings import Provider, ProviderKind, Settings, SettingsStore
from mangaba_desktop.core.store import Message, MessageStatus
from tests.helpers.openai_server import free_port


def url_at(port: int) -> str:
    """The OpenAI-compatible API address of ``port`` on 127.0.0.1."""
    return f"http://127.0.0.1:{port}/v1"


def refused_url() -> str:
    """An API address on 127.0.0.1 where nothing listens (the connection is refused)."""
    return url_at(free_port())


def local_provider(
    base_url: str, *models: str, id: str = "test", name: str = "Test server", **fields: Any
) -> Provider:
    """An OpenAI-compatible provider at ``base_url`` offering ``models``."""
    return Provider(
        id=id,
        kind=ProviderKind.OPENAI_COMPATIBLE,
        name=name,
        base_url=base_url,
        models=list(models),
        **fields,
    )


def settings_with(*providers: Provider, **fields: Any) -> Settings:
    """Settings offering ``providers`` and no fallback (unless ``fields`` give one)."""
    return Settings(providers=list(providers), **{"fallbacks": [], **fields})


def configure(data_dir: Path, *providers: Provider, **fields: Any) -> None:
    """Save ``settings_with(*providers, **fields)`` for an app started on ``data_dir``, its
    first-run import done."""
    settings = settings_with(*providers, **{"first_run_import_done": True, **fields})
    SettingsStore(data_dir).update(settings)


def completions_for(
    *providers: Provider, keys: KeyStore | None = None, **fields: Any
) -> Completions:
    """The app's Completions over the checked ``settings_with(*providers, **fields)``, reading
    keys from ``keys`` (the environment only when None); the caller closes it."""
    return Completions(settings=settings_with(*providers, **fields).check(), keys=keys)


async def ask(
    chat: ChatService,
    conversation_id: int,
    text: str,
    model: str,
    status: MessageStatus = MessageStatus.COMPLETE,
    **params: Any,
) -> Message:
    """Send ``text`` to ``model`` (with ``params``) and return the reply as stored once the chat
    is done with it, checked to be that message's reply and to have ``status``."""
    sent = await chat.send(conversation_id, text, model=model, params=params or None)
    reply = await chat.wait(conversation_id)
    assert reply is not None and reply.id == sent.id, reply
    assert reply.status == status, reply
    return reply


def plaintext_keyring(directory: Path) -> PlaintextKeyring:
    """A keyring that writes keys in clear to a file in ``directory``, already holding another
    app's password (so that the file exists and can be read back)."""
    backend = PlaintextKeyring()
    backend.file_path = str(directory / "keyring_pass.cfg")
    backend.set_password("another-app", "user", "unrelated-secret")
    return backend
