"""API keys: kept in the operating system's keyring, never in the database, settings or logs.

A key is looked up in this order: a key given for this run only (kept in memory), the keyring
(service :data:`SERVICE`, user name = the provider's id), then the provider's environment
variable. Keys from the environment are used as they are and never copied anywhere.

Every key value the process has seen is remembered in memory so that :class:`RedactingFilter`
can take it out of log records before any handler writes them.
"""

from __future__ import annotations

import logging
import os
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keyring.backend

    from ..audit import AuditLog

log = logging.getLogger(__name__)

SERVICE = "mangaba-desktop"
"""The keyring service every key is stored under."""

MAX_KEY_LENGTH = 4096
REDACTED = "[redacted]"
MIN_REDACTED_LENGTH = 4
"""Shorter strings would blank out ordinary words; no real key is that short."""


class InvalidKey(ValueError):
    """The text given as a key cannot be one; the message is written for the user."""


class InsecureKeyring(RuntimeError):
    """No keyring on this computer can keep a key safely; nothing was saved."""


class KeySource(StrEnum):
    KEYRING = "keyring"
    SESSION = "session"
    """Given for this run only, kept in memory."""
    ENVIRONMENT = "environment"


@dataclass(frozen=True)
class BackendInfo:
    """The keyring keys are saved in, for the settings dialog."""

    name: str
    secure: bool
    description: str


_INSECURE_HELP = (
    "Use the key for this run only, or set it in the provider's environment variable "
    "before starting the app."
)

# Known backends by (module, class name): what the user knows them as.
_DESCRIPTIONS = {
    ("keyring.backends.SecretService", "Keyring"): "GNOME Keyring / KWallet via Secret Service",
    ("keyring.backends.libsecret", "Keyring"): "GNOME Keyring / KWallet via libsecret",
    ("keyring.backends.kwallet", "DBusKeyring"): "KDE Wallet",
    ("keyring.backends.Windows", "WinVaultKeyring"): "Windows Credential Manager",
    ("keyring.backends.macOS", "Keyring"): "macOS Keychain",
}
_NO_KEYRING = {
    "keyring.backends.fail": "No system keyring was found: keys can't be saved safely.",
    "keyring.backends.null": "The keyring is turned off: keys can't be saved.",
}


def _is_file_store(backend: Any) -> bool:
    # keyrings.alt's file keyrings (plain text, or encrypted with a password typed on a
    # terminal) all derive from keyrings.alt.file_base.Keyring.
    return any(cls.__module__.startswith("keyrings.alt.file") for cls in type(backend).__mro__)


def _is_chainer(backend: Any) -> bool:
    from keyring.backends.chainer import ChainerBackend

    return isinstance(backend, ChainerBackend)


def _priority(backend: Any) -> float:
    try:
        return float(backend.priority)
    except Exception:  # a backend's priority raises when it cannot run here
        return -1.0


def _is_secure(backend: Any) -> bool:
    if _is_chainer(backend):
        return any(_is_secure(each) for each in backend.backends)
    if type(backend).__module__ in _NO_KEYRING or _is_file_store(backend):
        return False
    # keyring itself recommends only backends of priority 1 or more.
    return _priority(backend) >= 1


def _describe(backend: Any) -> BackendInfo:
    cls = type(backend)
    name = str(getattr(backend, "name", cls.__name__))
    if not _is_secure(backend):
        description = _NO_KEYRING.get(cls.__module__)
        if description is None:
            description = f"{name} is not a secure keyring: keys can't be saved safely."
        return BackendInfo(name, False, description)
    description = _DESCRIPTIONS.get((cls.__module__, cls.__name__), name)
    return BackendInfo(name, True, description)


def _check_key(key: str) -> str:
    key = key.strip()
    if not key:
        raise InvalidKey("The key is empty.")
    if any(ch.isspace() for ch in key):
        raise InvalidKey("The key has spaces or line breaks in it.")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in key):
        raise InvalidKey("The key has invisible control characters in it.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(
            f"The key is longer than {MAX_KEY_LENGTH} characters; paste only the key itself."
        )
    return key


def _reason(error: BaseException, secrets: Iterable[str]) -> str:
    text = redact(str(error), secrets).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class KeyStore:
    """The API keys of the providers.

    Args:
        backend: the keyring to use; by default the one ``keyring`` picks for this computer,
            found on first use (importing keyring and asking D-Bus takes a moment).
        audit: where keys added and removed are recorded (never their values); see
            :meth:`AuditLog.use_keys <mangaba_desktop.core.audit.AuditLog.use_keys>`.
    """

    def __init__(
        self,
        backend: keyring.backend.KeyringBackend | None = None,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        self._backend = backend
        self._lock = threading.RLock()
        self._session: dict[str, str] = {}
        self._seen: set[str] = set()
        self.audit: AuditLog | None = None
        if audit is not None:
            audit.use_keys(self)

    def _record(self, action: str, provider_id: str, outcome: str, detail: str, actor: str) -> None:
        if self.audit is not None:
            self.audit.record(
                action, actor=actor, target=provider_id, outcome=outcome, detail=detail
            )

    def _keyring(self) -> Any:
        with self._lock:
            if self._backend is None:
                import keyring

                self._backend = keyring.get_keyring()
            return self._backend

    def _write_target(self) -> Any:
        """The backend a key is written to: in a chain, the first secure one, so that a key
        never lands in a plain-text keyring further down the chain."""
        backend = self._keyring()
        if _is_chainer(backend):
            return next((each for each in backend.backends if _is_secure(each)), backend)
        return backend

    def _remember(self, key: str) -> None:
        with self._lock:
            self._seen.add(key)

    def backend(self) -> BackendInfo:
        """Which keyring keys are saved in, and whether it keeps them safe."""
        return _describe(self._write_target())

    def _lookup(self, provider_id: str, env_var: str | None) -> tuple[str, KeySource] | None:
        with self._lock:
            key = self._session.get(provider_id)
        if key is not None:
            return key, KeySource.SESSION
        key = self._read_keyring(provider_id)
        if key:
            self._remember(key)
            return key, KeySource.KEYRING
        if env_var:
            key = os.environ.get(env_var, "").strip()
            if key:
                self._remember(key)
                return key, KeySource.ENVIRONMENT
        return None

    def _read_keyring(self, provider_id: str) -> str | None:
        try:
            return self._keyring().get_password(SERVICE, provider_id)
        except Exception as error:
            # A locked, missing or broken keyring means "no key"; the user is asked for one.
            with self._lock:
                known = list(self._seen)
            log.warning(
                "Could not read the key of %s from the keyring (%s)",
                provider_id,
                _reason(error, known),
            )
            return None

    def get(self, provider_id: str, env_var: str | None = None) -> str | None:
        """The key of a provider, or None when it has none."""
        found = self._lookup(provider_id, env_var)
        return found[0] if found else None

    def source(self, provider_id: str, env_var: str | None = None) -> KeySource | None:
        """Where the key :meth:`get` would return comes from."""
        found = self._lookup(provider_id, env_var)
        return found[1] if found else None

    def set(
        self, provider_id: str, key: str, *, session_only: bool = False, actor: str = "user"
    ) -> KeySource:
        """Save a provider's key; the attempt is audited (``key.added``), never the key.

        Args:
            provider_id: the provider the key belongs to.
            key: the key as pasted; surrounding whitespace is dropped.
            session_only: keep it in memory for this run instead of the keyring.
            actor: who saves it, for the audit log (``user``, or ``app`` at start-up).

        Raises:
            InvalidKey: the text cannot be a key.
            InsecureKeyring: the keyring would not keep it safe; nothing was saved.
            RuntimeError: the keyring failed; the message never holds the key.
        """
        try:
            key = _check_key(key)
        except InvalidKey as refused:
            self._record("key.added", provider_id, "refused", str(refused), actor)
            raise
        self._remember(key)
        if session_only:
            with self._lock:
                self._session[provider_id] = key
            self._record("key.added", provider_id, "ok", "Kept in memory for this run only.", actor)
            return KeySource.SESSION
        target = self._write_target()
        info = _describe(target)
        if not info.secure:
            self._record("key.added", provider_id, "refused", info.description, actor)
            raise InsecureKeyring(f"{info.description} {_INSECURE_HELP}")
        try:
            target.set_password(SERVICE, provider_id, key)
        except Exception as error:
            reason = _reason(error, [key])
            log.warning("Could not save the key of %s in %s (%s)", provider_id, info.name, reason)
            self._record("key.added", provider_id, "failed", reason, actor)
            raise RuntimeError(
                f"The key could not be saved in {info.description} ({reason})."
            ) from None
        with self._lock:
            # The saved key takes over from one given for this run only.
            self._session.pop(provider_id, None)
        self._record("key.added", provider_id, "ok", f"Saved in {info.description}.", actor)
        return KeySource.KEYRING

    def delete(self, provider_id: str, *, actor: str = "user") -> None:
        """Forget a provider's key, for this run and in the keyring. A missing key is fine.
        The attempt is audited (``key.removed``).

        Raises:
            RuntimeError: the keyring failed to delete it.
        """
        from keyring.errors import NoKeyringError, PasswordDeleteError

        with self._lock:
            had_session_key = self._session.pop(provider_id, None) is not None
            known = list(self._seen)
        backend = self._keyring()
        detail = "Deleted from the keyring."
        try:
            backend.delete_password(SERVICE, provider_id)
        except (PasswordDeleteError, NoKeyringError):
            detail = "Forgotten for this run." if had_session_key else "No key was saved."
        except Exception as error:
            reason = _reason(error, known)
            log.warning("Could not delete the key of %s from the keyring (%s)", provider_id, reason)
            self._record("key.removed", provider_id, "failed", reason, actor)
            raise RuntimeError(
                f"The key could not be deleted from {_describe(backend).description} ({reason})."
            ) from None
        self._record("key.removed", provider_id, "ok", detail, actor)

    def secrets(self) -> list[str]:
        """Every key value this process has read or set, longest first (for redaction)."""
        with self._lock:
            return sorted(self._seen, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret of 4 characters or more replaced by ``[redacted]``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_REDACTED_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Takes every known key out of a log record before a handler formats it.

    The record is changed in place (message formatted once with its arguments, traceback
    rendered to text), so handlers after this one see the redacted record too.

    Args:
        keys: the key store whose keys are redacted.
    """

    def __init__(self, keys: KeyStore) -> None:
        super().__init__()
        self._keys = keys
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._keys.secrets()
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: keep both, as text
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            redacted = redact(record.exc_text, secrets)
            if redacted != record.exc_text:
                record.exc_text = redacted
                # Formatters render exc_text; without exc_info none can render the original.
                record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True
