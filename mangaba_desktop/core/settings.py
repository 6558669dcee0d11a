"""The user's settings: providers, models, fallback order, parameters, limits.

Declared once here, typed and documented (each field's ``description`` is what the Settings
dialog shows), versioned, and kept as JSON in the data folder. Secrets are never part of them:
a provider names where its key comes from (the OS keyring, or an environment variable), never
the key itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from .audit import AuditLog

log = logging.getLogger(__name__)

SETTINGS_NAME = "settings.json"
SETTINGS_VERSION = 1

LOCAL_PROVIDER_ID = "mangaba-local"
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
LOCAL_MODEL = f"{LOCAL_PROVIDER_ID}/{LOCAL_MODEL_NAME}"
"""The embedded model: always there, needs no key and no network."""


class ProviderKind(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    OPENROUTER = "openrouter"
    OPENAI_COMPATIBLE = "openai_compatible"
    OLLAMA = "ollama"
    GGUF = "gguf"


@dataclass(frozen=True)
class KindInfo:
    label: str
    litellm_prefix: str
    """What litellm calls the provider, as the first part of its model names."""
    needs_key: bool
    key_env: str | None
    """The environment variable a key is read from when none is in the keyring."""
    base_url: str | None
    """The default address; None for the provider's own cloud."""
    models: tuple[str, ...]
    """Models offered when the user adds the provider (they may type others)."""
    local: bool = False
    """Runs on this computer (no network, no cost)."""


KINDS: dict[ProviderKind, KindInfo] = {
    ProviderKind.GEMINI: KindInfo(
        "Google Gemini",
        "gemini",
        True,
        "GEMINI_API_KEY",
        None,
        ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"),
    ),
    ProviderKind.OPENAI: KindInfo(
        "OpenAI", "openai", True, "OPENAI_API_KEY", None, ("gpt-4o-mini", "gpt-4o", "gpt-4.1")
    ),
    ProviderKind.ANTHROPIC: KindInfo(
        "Anthropic",
        "anthropic",
        True,
        "ANTHROPIC_API_KEY",
        None,
        ("claude-haiku-4-5", "claude-sonnet-4-5"),
    ),
    ProviderKind.OPENROUTER: KindInfo(
        "OpenRouter",
        "openrouter",
        True,
        "OPENROUTER_API_KEY",
        None,
        ("openai/gpt-4o-mini", "anthropic/claude-haiku-4.5"),
    ),
    ProviderKind.OPENAI_COMPATIBLE: KindInfo(
        "OpenAI-compatible endpoint",
        "openai",
        False,
        None,
        "http://127.0.0.1:1234/v1",
        (),
    ),
    ProviderKind.OLLAMA: KindInfo(
        "Ollama", "ollama_chat", False, None, "http://127.0.0.1:11434", (), local=True
    ),
    ProviderKind.GGUF: KindInfo(
        "GGUF file on disk", LOCAL_PROVIDER_ID, False, None, None, (), local=True
    ),
}


class InvalidSettings(ValueError):
    """Settings that cannot be used; the message says which and why."""


_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


class Provider(BaseModel):
    """A place models come from."""

    id: str = Field(description="Short name used in model names, as in “openai/gpt-4o-mini”.")
    kind: ProviderKind
    name: str = Field(description="What the app calls it.")
    base_url: str | None = Field(
        default=None,
        description="The API's address, for endpoints on your network or computer.",
    )
    models: list[str] = Field(default_factory=list, description="Models offered in the chat.")
    path: str | None = Field(default=None, description="The GGUF file (GGUF providers).")
    key_env: str | None = Field(
        default=None,
        description="Environment variable to read the API key from when the keyring has none.",
    )
    timeout_s: float = Field(
        default=60.0, ge=1.0, le=3600.0, description="Seconds to wait for a reply to start."
    )
    requests_per_minute: float = Field(
        default=60.0,
        gt=0.0,
        le=100_000.0,
        description="Requests a minute sent to it; a burst waits its turn instead of failing.",
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if value == LOCAL_PROVIDER_ID or not _ID.match(value):
            raise ValueError(
                "use 1 to 40 lower-case letters, digits, '.', '_' or '-' "
                f"(and not “{LOCAL_PROVIDER_ID}”)"
            )
        return value

    @property
    def info(self) -> KindInfo:
        return KINDS[self.kind]

    @property
    def needs_key(self) -> bool:
        return self.info.needs_key

    @property
    def env_var(self) -> str | None:
        return self.key_env or self.info.key_env

    @property
    def is_local(self) -> bool:
        if self.info.local:
            return True
        url = self.base_url or ""
        return any(h in url for h in ("://127.0.0.1", "://localhost", "://[::1]"))

    def model_id(self, model: str) -> str:
        return f"{self.id}/{model}"

    def litellm_model(self, model: str) -> str:
        if self.kind == ProviderKind.GGUF:
            return f"{LOCAL_PROVIDER_ID}/{self.id}/{model}"
        return f"{self.info.litellm_prefix}/{model}"


class ModelParams(BaseModel):
    """How a model is asked (the upstream defaults: 0.7 and 1024)."""

    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Randomness, 0 to 2.")
    max_tokens: int = Field(
        default=1024, ge=1, le=1_000_000, description="Longest reply, in tokens."
    )
    top_p: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Nucleus sampling; unset leaves the default."
    )

    def as_params(self) -> dict[str, float | int]:
        params: dict[str, float | int] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.top_p is not None:
            params["top_p"] = self.top_p
        return params


class Settings(BaseModel):
    """Everything the user can set. Saved as JSON; never holds a secret."""

    version: int = SETTINGS_VERSION
    providers: list[Provider] = Field(default_factory=list)
    default_model: str = Field(
        default=LOCAL_MODEL, description="The model new conversations and agents use."
    )
    fallbacks: list[str] = Field(
        default_factory=lambda: [LOCAL_MODEL],
        description="Tried in this order when the chosen model cannot be reached. Without the "
        "local model here, a message waits (queued) until its model is back.",
    )
    model_params: dict[str, ModelParams] = Field(
        default_factory=dict, description="Per model: temperature, max tokens, top_p."
    )
    default_params: ModelParams = Field(default_factory=ModelParams)
    system_prompt: str = Field(
        default="", description="Added before every agent's persona (SYSTEM_PROMPT upstream)."
    )
    retries: int = Field(
        default=2, ge=0, le=10, description="Retries, with back-off, on 429, 5xx and timeouts."
    )
    agent_requests_per_minute: float = Field(
        default=60.0, gt=0.0, le=100_000.0, description="Requests a minute one agent may start."
    )
    agent_burst: int = Field(
        default=20, ge=1, le=10_000, description="Requests an agent may start at once."
    )
    context_cap: int = Field(
        default=50_000, ge=100, le=10_000_000, description="Contexts kept per agent."
    )
    a2a_server: bool = Field(
        default=False, description="Serve this app's agents to other A2A clients."
    )
    a2a_port: int = Field(
        default=8765, ge=1024, le=65535, description="The port the agents are served on."
    )
    a2a_beyond_this_computer: bool = Field(
        default=False,
        description="Listen on every network interface; requests then need the bearer token.",
    )
    remote_agents: list[str] = Field(
        default_factory=list,
        description="URLs of remote A2A agents, added by the user (their tokens are in the "
        "keyring, never here).",
    )
    # A new field with a default: files written before it read as "none off", and older
    # versions of the app ignore it, so SETTINGS_VERSION stays.
    disabled_plugins: list[str] = Field(
        default_factory=list,
        description="Installed plugins that are turned off (not even loaded); every other "
        "installed plugin is on.",
    )
    first_run_import_done: bool = False

    def provider(self, provider_id: str) -> Provider | None:
        return next((p for p in self.providers if p.id == provider_id), None)

    def provider_of(self, model: str) -> Provider | None:
        """The configured provider of ``provider/model``; None for the local model or unknown."""
        provider_id, _, _ = model.partition("/")
        return self.provider(provider_id)

    def models(self) -> list[str]:
        """Every model the user can choose, the local one first."""
        found = [LOCAL_MODEL]
        for provider in self.providers:
            found.extend(provider.model_id(m) for m in provider.models)
        return list(dict.fromkeys(found))

    def params_for(self, model: str) -> ModelParams:
        return self.model_params.get(model, self.default_params)

    def check(self) -> Settings:
        """Raise :class:`InvalidSettings` for settings that parse but cannot work together."""
        ids = [p.id for p in self.providers]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InvalidSettings(f"Two providers are called “{duplicates[0]}”.")
        for provider in self.providers:
            if provider.kind == ProviderKind.OPENAI_COMPATIBLE and not provider.base_url:
                raise InvalidSettings(f"“{provider.name}” needs the address of its API.")
            if provider.kind == ProviderKind.GGUF and not provider.path:
                raise InvalidSettings(f"“{provider.name}” needs a GGUF file.")
            if provider.base_url and not re.match(r"^https?://[^/\s]+", provider.base_url):
                raise InvalidSettings(
                    f"“{provider.base_url}” is not an http:// or https:// address."
                )
        return self


def changed_fields(before: Settings, after: Settings) -> list[str]:
    """The names of the fields whose values differ, in declaration order."""
    return [name for name in Settings.model_fields if getattr(before, name) != getattr(after, name)]


def describe_changes(before: Settings, after: Settings) -> dict[str, str]:
    """What differs between two settings, for the audit log: each field that changed (in
    declaration order) with how, that is the new value of flags and numbers only (text may hold
    an address with a password in it, or a prompt), and for providers which were added, removed
    or changed (and in which fields)."""
    changes = {}
    for name in changed_fields(before, after):
        old, new = getattr(before, name), getattr(after, name)
        if name == "providers":
            changes[name] = _provider_changes(old, new)
        elif isinstance(new, bool | int | float):
            changes[name] = f"{name} = {json.dumps(new)}"
        else:
            changes[name] = name
    return changes


def _provider_changes(before: list[Provider], after: list[Provider]) -> str:
    old = {p.id: p for p in before}
    new = {p.id: p for p in after}
    parts = []
    if added := [i for i in new if i not in old]:
        parts.append("added " + ", ".join(added))
    if removed := [i for i in old if i not in new]:
        parts.append("removed " + ", ".join(removed))
    changed = []
    for provider_id in (i for i in new if i in old and new[i] != old[i]):
        fields = [
            f
            for f in Provider.model_fields
            if getattr(old[provider_id], f) != getattr(new[provider_id], f)
        ]
        changed.append(f"{provider_id} ({', '.join(fields)})")
    if changed:
        parts.append("changed " + ", ".join(changed))
    if not parts:
        parts.append("reordered")
    return f"providers: {'; '.join(parts)}"


class SettingsStore:
    """The settings file: read once, saved atomically, listeners told of each change.

    A file that cannot be read is kept aside as ``settings.json.bad`` and the defaults are
    used, with :attr:`problem` saying what happened.

    Args:
        directory: the data folder.
        audit: where changes are recorded (the fields, never secret values).
    """

    def __init__(self, directory: Path, *, audit: AuditLog | None = None) -> None:
        self.path = directory / SETTINGS_NAME
        self.audit = audit
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Settings], None]] = []
        self.settings = self._load()

    def _load(self) -> Settings:
        if not self.path.exists():
            return Settings()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Settings.model_validate(data).check()
        except (OSError, ValueError, ValidationError, InvalidSettings) as exc:
            aside = self.path.with_name(SETTINGS_NAME + ".bad")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.problem = (
                f"The settings file could not be read ({_first_line(exc)}); it was kept as "
                f"{aside.name} and the defaults are in use."
            )
            log.warning("%s", self.problem)
            return Settings()

    def subscribe(self, listener: Callable[[Settings], None]) -> None:
        self._listeners.append(listener)

    def update(self, settings: Settings, *, actor: str = "user") -> Settings:
        """Check, save and publish new settings; a change is audited, by ``actor``.

        Raises:
            InvalidSettings: they cannot be used; nothing was saved.
        """
        try:
            settings = Settings.model_validate(settings.model_dump()).check()
        except ValidationError as exc:
            raise InvalidSettings(_first_line(exc)) from None
        with self._lock:
            temporary = self.path.with_name(SETTINGS_NAME + ".tmp")
            temporary.write_text(settings.model_dump_json(indent=2), encoding="utf-8")
            os.replace(temporary, self.path)
            before, self.settings = self.settings, settings
        self._record(before, settings, actor)
        for listener in list(self._listeners):
            try:
                listener(settings)
            except Exception:
                log.exception("a settings listener failed")
        return settings

    def _record(self, before: Settings, after: Settings, actor: str) -> None:
        if self.audit is None:
            return
        changes = describe_changes(before, after)
        if changes:
            self.audit.record(
                "settings.changed",
                actor=actor,
                target=", ".join(changes),
                detail="Changed " + "; ".join(changes.values()) + ".",
            )


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error.get("loc", ()))
        return f"{where}: {error.get('msg', '')}" if where else str(error.get("msg", ""))
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
