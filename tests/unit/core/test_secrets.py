"""API keys: saved only in a secure keyring, refused by plain-text ones, kept out of logs."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring.backend
import keyring.errors
import pytest
from keyring.backends import fail
from keyring.backends.chainer import ChainerBackend
from keyrings.alt.file import PlaintextKeyring

from mangaba_desktop.core.logs import LOG_NAME, setup_logging, shutdown_logging
from mangaba_desktop.core.providers.secrets import (
    SERVICE,
    InsecureKeyring,
    InvalidKey,
    KeySource,
    KeyStore,
    RedactingFilter,
    redact,
)
from tests.helpers.providers import plaintext_keyring

KEY = "sk-test-4f9c2a7be13d58e06a1b"
OTHER_KEY = "sk-test-0d7e6b5a4c3f2e1d0c9b"
ENV_VAR = "MANGABA_TEST_API_KEY"


@pytest.fixture
def provider(secret_service: Any) -> Iterator[str]:
    """A provider id of its own for each test, its key removed from the shared keyring after."""
    provider_id = f"test-{uuid.uuid4().hex[:8]}"
    yield provider_id
    with contextlib.suppress(keyring.errors.PasswordDeleteError):
        secret_service.delete_password(SERVICE, provider_id)


@pytest.fixture
def plaintext(tmp_path: Path) -> PlaintextKeyring:
    return plaintext_keyring(tmp_path)


# --- the real Secret Service ----------------------------------------------------------------------


def test_secret_service_is_reported_secure(secret_service: Any) -> None:
    info = KeyStore(secret_service).backend()
    assert info.secure
    assert info.name == "SecretService Keyring"
    assert "Secret Service" in info.description


def test_saved_key_survives_a_restart_and_can_be_replaced_and_deleted(
    secret_service: Any, provider: str
) -> None:
    assert KeyStore(secret_service).set(provider, f"  {KEY}\n") == KeySource.KEYRING

    # A new KeyStore is the next start of the app: the key comes from the keyring, stripped.
    restarted = KeyStore(secret_service)
    assert restarted.get(provider) == KEY
    assert restarted.source(provider) == KeySource.KEYRING
    assert secret_service.get_password(SERVICE, provider) == KEY

    restarted.set(provider, OTHER_KEY)
    assert KeyStore(secret_service).get(provider) == OTHER_KEY
    assert secret_service.get_password(SERVICE, provider) == OTHER_KEY

    restarted.delete(provider)
    assert secret_service.get_password(SERVICE, provider) is None
    assert KeyStore(secret_service).get(provider) is None
    assert KeyStore(secret_service).source(provider) is None
    restarted.delete(provider)  # deleting a missing key is fine


def test_default_keyring_is_the_one_keyring_picks(secret_service: Any, provider: str) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(secret_service)
    try:
        keys = KeyStore()
        assert keys.backend().secure
        keys.set(provider, KEY)
        assert keyring.get_password(SERVICE, provider) == KEY
    finally:
        keyring.set_keyring(previous)


def test_session_key_is_not_saved_and_a_saved_key_replaces_it(
    secret_service: Any, provider: str
) -> None:
    keys = KeyStore(secret_service)
    assert keys.set(provider, KEY, session_only=True) == KeySource.SESSION
    assert keys.get(provider) == KEY
    assert keys.source(provider) == KeySource.SESSION
    assert secret_service.get_password(SERVICE, provider) is None
    assert KeyStore(secret_service).get(provider) is None  # gone at the next start

    keys.set(provider, OTHER_KEY)
    assert keys.get(provider) == OTHER_KEY
    assert keys.source(provider) == KeySource.KEYRING


def test_environment_key_is_used_but_never_copied(
    secret_service: Any, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, KEY)
    keys = KeyStore(secret_service)
    assert keys.get(provider, ENV_VAR) == KEY
    assert keys.source(provider, ENV_VAR) == KeySource.ENVIRONMENT
    assert keys.get(provider) is None  # only through the variable named
    assert secret_service.get_password(SERVICE, provider) is None
    assert KEY in keys.secrets()  # still redacted from the logs


def test_keyring_key_wins_over_the_environment(
    secret_service: Any, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, OTHER_KEY)
    keys = KeyStore(secret_service)
    keys.set(provider, KEY)
    assert keys.get(provider, ENV_VAR) == KEY
    assert keys.source(provider, ENV_VAR) == KeySource.KEYRING


def test_chain_writes_to_its_secure_keyring_only(
    secret_service: Any, provider: str, plaintext: PlaintextKeyring
) -> None:
    class Chain(ChainerBackend):
        backends = (plaintext, secret_service)  # type: ignore[assignment]

    keys = KeyStore(Chain())
    assert keys.backend().secure
    keys.set(provider, KEY)
    assert secret_service.get_password(SERVICE, provider) == KEY
    assert KEY not in Path(plaintext.file_path).read_text()


# --- keyrings that cannot keep a key safe ---------------------------------------------------------


def test_plaintext_keyring_refuses_to_save(plaintext: PlaintextKeyring) -> None:
    keys = KeyStore(plaintext)
    assert not keys.backend().secure
    with pytest.raises(InsecureKeyring, match="this run only") as raised:
        keys.set("openai", KEY)
    assert "environment variable" in str(raised.value)
    assert KEY not in str(raised.value)
    assert KEY not in Path(plaintext.file_path).read_text()
    assert plaintext.get_password(SERVICE, "openai") is None
    assert keys.get("openai") is None


def test_no_keyring_refuses_to_save(caplog: pytest.LogCaptureFixture) -> None:
    keys = KeyStore(fail.Keyring())
    info = keys.backend()
    assert not info.secure
    assert "can't be saved" in info.description
    with pytest.raises(InsecureKeyring):
        keys.set("openai", KEY)
    # Reading from a keyring that fails is "no key", not a crash.
    assert keys.get("openai") is None
    assert any("keyring" in record.getMessage() for record in caplog.records)
    keys.delete("openai")


@pytest.mark.parametrize("backend_kind", ["plaintext", "fail"])
def test_session_key_works_without_a_secure_keyring(
    backend_kind: str, plaintext: PlaintextKeyring
) -> None:
    backend = plaintext if backend_kind == "plaintext" else fail.Keyring()
    keys = KeyStore(backend)
    assert keys.set("openai", KEY, session_only=True) == KeySource.SESSION
    assert keys.get("openai") == KEY
    assert keys.source("openai") == KeySource.SESSION
    assert KEY not in Path(plaintext.file_path).read_text()
    keys.delete("openai")
    assert keys.get("openai") is None


class _BrokenKeyring(keyring.backend.KeyringBackend):
    """A keyring whose writes fail with an error that repeats the password."""

    priority = 5  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError(f"cannot store {password!r} for {username}")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.PasswordDeleteError("not found")


def test_keyring_failure_is_reported_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    keys = KeyStore(_BrokenKeyring())
    with pytest.raises(RuntimeError, match="could not be saved") as raised:
        keys.set("openai", KEY)
    assert not isinstance(raised.value, InsecureKeyring)
    assert KEY not in str(raised.value)
    # A traceback of it does not show the keyring's own error, which held the key.
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert KEY not in caplog.text


# --- what is not a key ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("  \n", "empty"),
        ("sk-abc def", "spaces or line breaks"),
        ("sk-abc\ncd", "spaces or line breaks"),
        ("sk-abc\u200bdef", "control characters"),
        ("k" * 5000, "4096"),
    ],
)
def test_invalid_keys_are_refused_with_a_message_that_hides_them(
    text: str, message: str, plaintext: PlaintextKeyring
) -> None:
    keys = KeyStore(plaintext)
    with pytest.raises(InvalidKey, match=message) as raised:
        keys.set("openai", text)
    if text.strip():
        assert text.strip() not in str(raised.value)
        assert "sk-abc" not in str(raised.value)
    with pytest.raises(InvalidKey):
        keys.set("openai", text, session_only=True)
    assert keys.get("openai") is None


def test_longest_accepted_key() -> None:
    keys = KeyStore(fail.Keyring())
    keys.set("openai", "k" * 4096, session_only=True)
    assert keys.get("openai") == "k" * 4096


# --- redaction ------------------------------------------------------------------------------------


def test_redact_replaces_every_known_key() -> None:
    text = f"auth {KEY} then {OTHER_KEY}; short abc stays"
    assert redact(text, [KEY, OTHER_KEY, "abc"]) == (
        "auth [redacted] then [redacted]; short abc stays"
    )
    # A key that contains another is replaced whole.
    assert redact(f"x {KEY}", [KEY[:8], KEY]) == "x [redacted]"


@pytest.fixture
def file_logger(tmp_path: Path) -> Iterator[tuple[logging.Logger, Path, KeyStore]]:
    keys = KeyStore(fail.Keyring())
    keys.set("openai", KEY, session_only=True)
    path = tmp_path / "app.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(keys))
    logger = logging.getLogger(f"mangaba_desktop.test.{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, path, keys
    logger.removeHandler(handler)
    handler.close()


def test_keys_never_reach_the_log_file(
    file_logger: tuple[logging.Logger, Path, KeyStore],
) -> None:
    logger, path, _ = file_logger
    logger.info("request with Authorization: Bearer %s", KEY)
    logger.warning(f"key in the message itself: {KEY}")
    logger.info("key in a dict argument: %(headers)s", {"headers": {"api_key": KEY}})

    def call_provider() -> None:
        raise ValueError(f"Incorrect API key provided: {KEY}")

    try:
        call_provider()
    except ValueError:
        logger.exception("the provider refused the request")

    text = path.read_text(encoding="utf-8")
    assert KEY not in text
    assert text.count("[redacted]") == 4
    assert "Incorrect API key provided: [redacted]" in text
    assert "Traceback" in text and "call_provider" in text
    assert "the provider refused the request" in text


def test_keys_read_later_are_redacted_too(
    file_logger: tuple[logging.Logger, Path, KeyStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, path, keys = file_logger
    monkeypatch.setenv(ENV_VAR, OTHER_KEY)
    assert keys.get("anthropic", ENV_VAR) == OTHER_KEY
    logger.info("using %s", OTHER_KEY)
    text = path.read_text(encoding="utf-8")
    assert OTHER_KEY not in text
    assert "using [redacted]" in text


# --- the app's log file ---------------------------------------------------------------------------


@pytest.fixture
def app_logging() -> Iterator[None]:
    yield
    shutdown_logging()


@pytest.mark.usefixtures("app_logging")
def test_setup_logging_writes_one_redacted_file(tmp_path: Path) -> None:
    keys = KeyStore(fail.Keyring())
    keys.set("openai", KEY, session_only=True)
    path = setup_logging(tmp_path, keys)
    assert path == tmp_path / "logs" / LOG_NAME
    assert setup_logging(tmp_path, keys) == path
    root = logging.getLogger()
    assert sum(getattr(h, "baseFilename", None) == str(path) for h in root.handlers) == 1

    logging.getLogger("mangaba_desktop.core.chat").info("sent with key %s", KEY)
    logging.getLogger("mangaba_desktop.core.chat").debug("not written")
    for handler in root.handlers:
        handler.flush()
    text = path.read_text(encoding="utf-8")
    assert text.count("sent with key [redacted]") == 1
    assert " INFO mangaba_desktop.core.chat: " in text
    assert KEY not in text
    assert "not written" not in text

    shutdown_logging()
    assert all(getattr(h, "baseFilename", None) != str(path) for h in root.handlers)
    logging.getLogger("mangaba_desktop.core.chat").warning("after shutdown")
    assert "after shutdown" not in path.read_text(encoding="utf-8")
