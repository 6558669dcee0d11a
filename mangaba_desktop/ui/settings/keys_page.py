"""The “API keys” page: where keys are kept, where a provider's key comes from, and a field to
save, test or remove one. The key itself is never shown, logged or put into the settings."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.settings import Provider
from .background import Tasks
from .declared import (
    ERROR_STYLE,
    ReturnLineEdit,
    description,
    help_label,
    show_status,
    status_label,
)
from .drafts import DraftError, ProviderDraft, ProviderDrafts
from .questions import ask, ask_text

if TYPE_CHECKING:
    from ...core.providers.secrets import BackendInfo, KeySource, KeyStore

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def suggested_env_var(draft: ProviderDraft) -> str:
    return draft.env_var or re.sub(r"[^A-Z0-9]+", "_", draft.id.upper()).strip("_") + "_API_KEY"


class KeysPage(QWidget):
    """One provider's API key, through the key store (every call off the GUI thread)."""

    def __init__(
        self,
        drafts: ProviderDrafts,
        keys: KeyStore,
        completions: Any,
        tasks: Tasks,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.drafts = drafts
        self.keys = keys
        self.completions = completions
        self.tasks = tasks
        self.draft: ProviderDraft | None = None
        self.backend: BackendInfo | None = None
        self.source: KeySource | None = None

        self.provider_combo = QComboBox(objectName="key-provider")
        self.empty_label = help_label(
            "No provider needs a key yet. Add a cloud provider, or an OpenAI-compatible "
            "endpoint that asks for one, on the Models & providers tab.",
            object_name="key-empty",
        )
        top = QFormLayout()
        top.addRow("Provider", self.provider_combo)

        self.backend_label = QLabel("Looking for the keyring…", objectName="key-backend")
        self.backend_label.setWordWrap(True)
        self.insecure_label = QLabel(objectName="key-insecure")
        self.insecure_label.setWordWrap(True)
        self.insecure_label.setStyleSheet(ERROR_STYLE)
        self.insecure_label.hide()
        where = QGroupBox("Where keys are kept")
        where_layout = QVBoxLayout(where)
        where_layout.addWidget(self.backend_label)
        where_layout.addWidget(self.insecure_label)

        self.source_label = QLabel(objectName="key-source")
        self.source_label.setWordWrap(True)
        self.key_edit = ReturnLineEdit(objectName="key-edit")
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText("Paste a new key here")
        self.show_button = QToolButton(objectName="key-show")
        self.show_button.setText("Show")
        self.show_button.setCheckable(True)
        self.show_button.setToolTip("Show or hide the key you are typing")
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_edit, 1)
        key_row.addWidget(self.show_button)
        self.save_button = QPushButton("Save", objectName="key-save")
        self.save_button.setToolTip("Save the key you typed")
        self.test_button = QPushButton("Test", objectName="key-test")
        self.test_button.setToolTip(
            "Send one tiny request with the key you typed (or the saved one when the field "
            "is empty)"
        )
        self.remove_button = QPushButton("Remove", objectName="key-remove")
        self.remove_button.setToolTip("Forget the saved key")
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.test_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        self.status_label = status_label("key-status")
        self.env_edit = QLineEdit(objectName="key-env")
        self.env_edit.setToolTip(description(Provider, "key_env"))
        env_row = QFormLayout()
        env_row.addRow("Environment variable", self.env_edit)
        self.key_group = QGroupBox("Key")
        key_layout = QVBoxLayout(self.key_group)
        key_layout.addWidget(self.source_label)
        key_layout.addLayout(key_row)
        key_layout.addLayout(buttons)
        key_layout.addWidget(self.status_label)
        key_layout.addLayout(env_row)
        key_layout.addWidget(help_label(description(Provider, "key_env")))

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.empty_label)
        layout.addWidget(where)
        layout.addWidget(self.key_group)
        layout.addStretch(1)

        self.provider_combo.currentIndexChanged.connect(self._on_provider_chosen)
        self.show_button.toggled.connect(self._on_show_toggled)
        self.save_button.clicked.connect(lambda: self.tasks.run(self.save_key()))
        self.test_button.clicked.connect(lambda: self.tasks.run(self.test_key()))
        self.remove_button.clicked.connect(lambda: self.tasks.run(self.remove_key()))
        self.key_edit.returnPressed.connect(self.save_button.click)
        self.env_edit.textEdited.connect(self._on_env_edited)
        self.env_edit.editingFinished.connect(lambda: self.tasks.run(self.refresh()))
        drafts.added.connect(self._fill_combo)
        drafts.removed.connect(self._fill_combo)
        drafts.changed.connect(self._on_draft_changed)
        self._fill_combo()
        self.tasks.run(self._load_backend())

    # -- which provider ------------------------------------------------------------------------

    def _fill_combo(self, *_args: Any) -> None:
        keep = self.draft
        self.provider_combo.blockSignals(True)
        self.provider_combo.clear()
        for draft in self.drafts.items:
            if draft.can_use_key:
                self.provider_combo.addItem(draft.title, draft)
        self.provider_combo.blockSignals(False)
        index = self._index(keep) if keep is not None else -1
        self.provider_combo.setCurrentIndex(max(index, 0) if self.provider_combo.count() else -1)
        self._on_provider_chosen(self.provider_combo.currentIndex())

    def _index(self, draft: ProviderDraft) -> int:
        for index in range(self.provider_combo.count()):
            if self.provider_combo.itemData(index) is draft:
                return index
        return -1

    def show_draft(self, draft: ProviderDraft | None) -> None:
        """Show ``draft``'s key when it can have one (the providers page chose it)."""
        index = self._index(draft) if draft is not None else -1
        if index >= 0:
            self.provider_combo.setCurrentIndex(index)

    def _on_draft_changed(self, draft: ProviderDraft) -> None:
        index = self._index(draft)
        if index >= 0:
            self.provider_combo.setItemText(index, draft.title)
        if draft is self.draft:
            self.key_group.setTitle(f"Key for {draft.name or draft.info.label}")

    def _on_provider_chosen(self, index: int) -> None:
        draft = self.provider_combo.itemData(index) if index >= 0 else None
        changed = draft is not self.draft
        self.draft = draft
        self.empty_label.setVisible(draft is None)
        self.provider_combo.setEnabled(draft is not None)
        self.key_group.setEnabled(draft is not None)
        if not changed:
            return
        # A key typed for one provider is never carried over to another.
        self.key_edit.clear()
        self.show_button.setChecked(False)
        self.status_label.clear()
        self.source = None
        if draft is None:
            self.key_group.setTitle("Key")
            self.source_label.clear()
            self.env_edit.clear()
            return
        self.key_group.setTitle(f"Key for {draft.name or draft.info.label}")
        self.env_edit.setText(draft.values.get("key_env") or "")
        self.env_edit.setPlaceholderText(draft.info.key_env or "e.g. MY_SERVER_API_KEY")
        self.source_label.setText("Looking for a key…")
        self._update_buttons()
        self.tasks.run(self.refresh())

    def _on_env_edited(self, text: str) -> None:
        if self.draft is not None:
            self.drafts.edit(self.draft, key_env=text.strip() or None)

    def _on_show_toggled(self, shown: bool) -> None:
        mode = QLineEdit.EchoMode.Normal if shown else QLineEdit.EchoMode.Password
        self.key_edit.setEchoMode(mode)
        self.show_button.setText("Hide" if shown else "Show")

    def has_typed_key(self) -> bool:
        return bool(self.key_edit.text().strip())

    # -- what the store says -------------------------------------------------------------------

    async def _load_backend(self) -> BackendInfo:
        if self.backend is None:
            self.backend = await asyncio.to_thread(self.keys.backend)
            self._show_backend(self.backend)
        return self.backend

    def _show_backend(self, info: BackendInfo) -> None:
        if info.secure:
            named = f" ({info.name})" if info.name not in info.description else ""
            self.backend_label.setText(f"Keys are kept in {info.description}{named}.")
        else:
            self.backend_label.setText(f"Keyring: {info.name}.")
            self.insecure_label.setText(
                f"{info.description} A key you enter can be kept for this run only, or read "
                "from an environment variable; it is never written in clear."
            )
        self.insecure_label.setVisible(not info.secure)

    async def refresh(self) -> None:
        """Ask the store where the shown provider's key comes from."""
        draft = self.draft
        if draft is None:
            return
        env_var = draft.env_var
        source = await asyncio.to_thread(self.keys.source, draft.id, env_var)
        backend = await self._load_backend()
        if draft is not self.draft:
            return
        self.source = source
        self.source_label.setText(self._describe_source(draft, source, env_var, backend))
        self._update_buttons()

    def _describe_source(
        self,
        draft: ProviderDraft,
        source: KeySource | None,
        env_var: str | None,
        backend: BackendInfo,
    ) -> str:
        name = draft.name or draft.info.label
        kind = getattr(source, "name", None)
        if kind == "KEYRING":
            return f"A key is saved in {backend.description}."
        if kind == "SESSION":
            return "A key is kept for this run only: it is forgotten when the app quits."
        if kind == "ENVIRONMENT":
            return f"Using {env_var} from the environment."
        if not draft.info.needs_key:
            return "No key: requests are sent without one (most local servers need none)."
        where = f" or set {env_var} before starting the app" if env_var else ""
        return f"No key yet: {name} can't answer until you save one{where}."

    def _update_buttons(self, busy: bool = False) -> None:
        stored = getattr(self.source, "name", None) in ("KEYRING", "SESSION")
        self.save_button.setEnabled(not busy)
        self.test_button.setEnabled(not busy)
        self.remove_button.setEnabled(not busy and stored)

    # -- save, test, remove --------------------------------------------------------------------

    async def save_key(self) -> None:
        draft = self.draft
        key = self.key_edit.text().strip()
        if draft is None:
            return
        if not key:
            show_status(self.status_label, "Paste a key in the field first.", ok=False)
            return
        backend = await self._load_backend()
        session_only = False
        if not backend.secure:
            answer = await self._ask_insecure(draft, backend)
            if answer == "environment":
                await self.use_environment(draft)
                return
            if answer != "session":
                return
            session_only = True
        self._update_buttons(busy=True)
        try:
            # A closure, not arguments: the loop's executor logs the arguments it is given.
            source = await asyncio.to_thread(
                lambda: self.keys.set(draft.id, key, session_only=session_only)
            )
        except (ValueError, RuntimeError) as exc:
            # InvalidKey and InsecureKeyring, or a keyring that failed: their messages are
            # written for the user and never hold the key.
            show_status(self.status_label, str(exc), ok=False)
            self._update_buttons()
            return
        except Exception as exc:
            log.warning("saving a key for %s failed (%s)", draft.id, type(exc).__name__)
            show_status(
                self.status_label, f"The key could not be saved ({type(exc).__name__}).", ok=False
            )
            self._update_buttons()
            return
        if draft.key_id and draft.key_id != draft.id:
            self.drafts.stale_key_ids.add(draft.key_id)
        draft.key_id = draft.id
        if draft is self.draft:
            self.key_edit.clear()
            self.show_button.setChecked(False)
        saved_in = (
            "for this run only" if getattr(source, "name", "") == "SESSION" else backend.description
        )
        show_status(self.status_label, f"Key saved ({saved_in}).", ok=True)
        await self.refresh()

    async def _ask_insecure(self, draft: ProviderDraft, backend: BackendInfo) -> str | None:
        box = QMessageBox(self)
        box.setObjectName("insecure-key-question")
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("No safe place for the key")
        box.setText(
            f"The key for {draft.name or draft.info.label} can't be saved safely on this computer."
        )
        box.setInformativeText(
            f"{backend.description}\n\nKeep it for this run only (it is forgotten when the app "
            "quits), or read it from an environment variable you set before starting the app. "
            "The key is never written in clear."
        )
        session = box.addButton("Keep for this run only", QMessageBox.ButtonRole.AcceptRole)
        environment = box.addButton(
            "Use an environment variable", QMessageBox.ButtonRole.ActionRole
        )
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(session)
        clicked = await ask(box)
        if clicked is session:
            return "session"
        if clicked is environment:
            return "environment"
        return None

    async def use_environment(self, draft: ProviderDraft) -> None:
        """Read the key from an environment variable the user names; the typed key is dropped."""
        name = await ask_text(
            self,
            "Use an environment variable",
            "Name of the environment variable that will hold the key:",
            suggested_env_var(draft),
        )
        if name is None:
            return
        name = name.strip()
        if not _ENV_NAME.match(name):
            show_status(
                self.status_label,
                f"“{name}” can't be an environment variable: use letters, digits and _.",
                ok=False,
            )
            return
        self.drafts.edit(draft, key_env=name)
        if draft is not self.draft:
            return
        self.env_edit.setText(name)
        self.key_edit.clear()
        show_status(
            self.status_label,
            f"Set {name} to the key before starting the app (for example in your shell "
            "profile), then press OK to keep this setting. The key you typed was not saved.",
            ok=None,
        )
        await self.refresh()

    async def test_key(self) -> None:
        draft = self.draft
        if draft is None:
            return
        try:
            provider = draft.provider()
        except DraftError as exc:
            show_status(self.status_label, str(exc), ok=False)
            return
        key = self.key_edit.text().strip() or None
        show_status(self.status_label, f"Asking {provider.name}…", ok=None)
        self._update_buttons(busy=True)
        try:
            check = await self.completions.test_key(provider, key)
        except Exception as exc:
            log.warning("testing the key of %s failed (%s)", provider.id, type(exc).__name__)
            show_status(
                self.status_label, f"The test could not run ({type(exc).__name__}).", ok=False
            )
        else:
            if draft is self.draft:
                show_status(self.status_label, check.message, ok=check.ok)
        self._update_buttons()

    async def remove_key(self) -> None:
        draft = self.draft
        if draft is None:
            return
        box = QMessageBox(self)
        box.setObjectName("remove-key-question")
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Remove the key")
        box.setText(f"Remove the saved key for {draft.name or draft.info.label}?")
        if draft.env_var:
            box.setInformativeText(f"A key in {draft.env_var} is not affected.")
        remove = box.addButton("Remove key", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        if await ask(box) is not remove:
            return
        self._update_buttons(busy=True)
        try:
            await asyncio.to_thread(self.keys.delete, draft.id)
        except RuntimeError as exc:
            show_status(self.status_label, str(exc), ok=False)
        else:
            show_status(self.status_label, "The key was removed.", ok=True)
        await self.refresh()
