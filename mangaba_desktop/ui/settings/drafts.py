"""The providers being edited: plain values the forms change freely until OK or Apply.

Nothing here is checked while the user types (a half-typed address is fine); the values become
:class:`Provider` objects, and their problems messages, only when the settings are saved.
"""

from __future__ import annotations

import copy
import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from PySide6.QtCore import QObject, Signal

from ...core.providers.probe import unique_provider_id
from ...core.settings import (
    KINDS,
    LOCAL_MODEL,
    InvalidSettings,
    KindInfo,
    Provider,
    ProviderKind,
    Settings,
)

FIELD_LABELS = {
    "id": "Id",
    "name": "Name",
    "base_url": "Address",
    "path": "GGUF file",
    "models": "Models",
    "timeout_s": "Timeout",
    "requests_per_minute": "Requests a minute",
    "key_env": "Environment variable",
}


def problem(error: ValidationError) -> str:
    """The first thing wrong, in words: “Id: use 1 to 40 lower-case letters…”."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    message = str(first["msg"]).removeprefix("Value error, ")
    label = FIELD_LABELS.get(field, field)
    return f"{label}: {message}" if label else message


class DraftError(InvalidSettings):
    """A provider cannot be saved as typed; :attr:`draft` says which one."""

    def __init__(self, draft: ProviderDraft, message: str) -> None:
        super().__init__(message)
        self.draft = draft


@dataclass(eq=False)
class ProviderDraft:
    """One provider as typed. Compared by identity: two drafts may hold the same values."""

    values: dict[str, Any]
    saved_id: str | None = None
    """Its id in the saved settings; None until it is saved."""
    key_id: str | None = None
    """The id its key is filed under in the key store, when that may differ from :attr:`id`."""
    id_follows_name: bool = False
    """The id is derived from the name until the user types one."""

    @property
    def id(self) -> str:
        return str(self.values.get("id") or "")

    @property
    def name(self) -> str:
        return str(self.values.get("name") or "")

    @property
    def kind(self) -> ProviderKind:
        return ProviderKind(self.values["kind"])

    @property
    def info(self) -> KindInfo:
        return KINDS[self.kind]

    @property
    def models(self) -> list[str]:
        return list(self.values.get("models") or [])

    @property
    def env_var(self) -> str | None:
        return self.values.get("key_env") or self.info.key_env

    @property
    def can_use_key(self) -> bool:
        """Cloud providers need a key; an OpenAI-compatible endpoint may want one."""
        return self.info.needs_key or self.kind == ProviderKind.OPENAI_COMPATIBLE

    @property
    def title(self) -> str:
        """Its name, with its kind when the name does not already say it."""
        name = self.name or self.info.label
        return name if name == self.info.label else f"{name} ({self.info.label})"

    def model_id(self, model: str) -> str:
        return f"{self.id}/{model}"

    def provider(self) -> Provider:
        """The provider these values describe. Raises :class:`DraftError`."""
        try:
            provider = Provider.model_validate(self.values)
        except ValidationError as exc:
            raise DraftError(self, f"“{self.name or self.info.label}”: {problem(exc)}") from None
        try:
            Settings(providers=[provider]).check()
        except InvalidSettings as exc:
            raise DraftError(self, str(exc)) from None
        return provider


@dataclass(frozen=True)
class ModelRef:
    """A model the pages refer to, following its provider's id when the user renames it."""

    draft: ProviderDraft | None
    name: str
    """The model's name at its provider; the whole model id when there is no draft."""

    @property
    def model_id(self) -> str:
        return self.draft.model_id(self.name) if self.draft is not None else self.name


LOCAL = ModelRef(None, LOCAL_MODEL)
LOCAL_LABEL = "SmolLM2-135M (this computer)"


def label(ref: ModelRef) -> str:
    """How a model is named in lists: the embedded one by what it is, others by their id."""
    return LOCAL_LABEL if ref == LOCAL else ref.model_id


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


class ProviderDrafts(QObject):
    """The providers as the dialog holds them until they are saved.

    Signals:
        added(object): a :class:`ProviderDraft` was added.
        removed(object): a draft was removed.
        changed(object): a draft's values changed.
    """

    added = Signal(object)
    removed = Signal(object)
    changed = Signal(object)

    def __init__(self, providers: list[Provider], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.items = [ProviderDraft(p.model_dump(), p.id, p.id) for p in providers]
        self.stale_key_ids: set[str] = set()
        """Ids whose keys belong to no provider any more (deleted once the settings are saved)."""

    def add(self, values: dict[str, Any]) -> ProviderDraft:
        draft = ProviderDraft(values, id_follows_name=True)
        self.items.append(draft)
        self.added.emit(draft)
        return draft

    def add_kind(self, kind: ProviderKind) -> ProviderDraft:
        """A new provider of ``kind`` with what that kind offers by default."""
        info = KINDS[kind]
        return self.add(
            Provider.model_construct(
                id=self.unique_id(info.label),
                kind=kind,
                name=info.label,
                base_url=info.base_url,
                models=list(info.models),
            ).model_dump()
        )

    def remove(self, draft: ProviderDraft) -> None:
        self.items.remove(draft)
        if draft.key_id:
            self.stale_key_ids.add(draft.key_id)
        self.removed.emit(draft)

    def edit(self, draft: ProviderDraft, **values: Any) -> None:
        draft.values.update(values)
        self.changed.emit(draft)

    def unique_id(self, name: str, *, exclude: ProviderDraft | None = None) -> str:
        """A valid id made from ``name`` that no other provider has."""
        return unique_provider_id(_ascii(name), (d.id for d in self.items if d is not exclude))

    def id_problem(self, draft: ProviderDraft, text: str) -> str | None:
        """What is wrong with ``text`` as the id of ``draft``, per the declared validator."""
        try:
            Provider.model_validate({**draft.values, "id": text})
        except ValidationError as exc:
            for error in exc.errors():
                if tuple(error["loc"][:1]) == ("id",):
                    return str(error["msg"]).removeprefix("Value error, ")
        if any(other.id == text for other in self.items if other is not draft):
            return f"another provider already uses “{text}”"
        return None

    def providers(self) -> list[Provider]:
        """Every provider, checked. Raises :class:`DraftError` for the first one that fails."""
        return [draft.provider() for draft in self.items]

    def as_settings(self) -> Settings:
        """The providers as they stand, unchecked (for code that only looks at them)."""
        return Settings.model_construct(
            providers=[Provider.model_construct(**d.values) for d in self.items]
        )

    def find(self, provider_id: str) -> ProviderDraft | None:
        return next((d for d in self.items if d.id == provider_id), None)

    def ref(self, model_id: str) -> ModelRef:
        """The reference for a saved model id: tied to its provider's draft when there is one."""
        provider_id, _, name = model_id.partition("/")
        draft = self.find(provider_id) if name else None
        return ModelRef(draft, name) if draft is not None else ModelRef(None, model_id)

    def refs(self) -> list[ModelRef]:
        """Every model offered, the local one first (as :meth:`Settings.models`)."""
        found = [LOCAL]
        found.extend(ModelRef(d, m) for d in self.items for m in d.models)
        return list(dict.fromkeys(found))

    def state(self) -> list[dict[str, Any]]:
        return copy.deepcopy([d.values for d in self.items])

    def key_moves(self) -> tuple[list[tuple[str, str]], list[str]]:
        """Keys to file under a provider's new id, and keys of removed providers."""
        moves = [(d.key_id, d.id) for d in self.items if d.key_id and d.key_id != d.id]
        kept = {d.id for d in self.items} | {old for old, _new in moves}
        return moves, sorted(self.stale_key_ids - kept)

    def mark_saved(self) -> None:
        for draft in self.items:
            draft.saved_id = draft.id
            draft.key_id = draft.id
            draft.id_follows_name = False
        self.stale_key_ids.clear()
