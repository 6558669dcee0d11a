"""The “Models & providers” page: the list of providers, one's form, servers found nearby."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.settings import KINDS, Provider, ProviderKind
from .declared import ERROR_STYLE, ReturnLineEdit, description, float_spin, help_label
from .drafts import LOCAL_LABEL, ProviderDraft, ProviderDrafts

if TYPE_CHECKING:
    from ...core.providers.probe import FoundServer

_DRAFT_ROLE = Qt.ItemDataRole.UserRole + 1
_URL_KINDS = {kind for kind, info in KINDS.items() if info.base_url}


class ProviderForm(QWidget):
    """The fields of one provider; every edit goes straight into its draft.

    Signals:
        key_requested(object): the user asked to manage this provider's key.
    """

    key_requested = Signal(object)

    def __init__(self, drafts: ProviderDrafts, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.drafts = drafts
        self.draft: ProviderDraft | None = None
        self._file_dialog: QFileDialog | None = None

        self.kind_label = QLabel()
        self.kind_label.setObjectName("provider-kind")
        self.name_edit = QLineEdit(objectName="provider-name")
        self.name_edit.setToolTip(description(Provider, "name"))
        self.id_edit = QLineEdit(objectName="provider-id")
        self.id_edit.setToolTip(description(Provider, "id"))
        self.id_error = QLabel(objectName="provider-id-error")
        self.id_error.setStyleSheet(ERROR_STYLE)
        self.id_error.setWordWrap(True)
        self.url_edit = QLineEdit(objectName="provider-url")
        self.url_edit.setToolTip(description(Provider, "base_url"))
        self.path_edit = QLineEdit(objectName="provider-path")
        self.path_edit.setToolTip(description(Provider, "path"))
        self.path_edit.setPlaceholderText("/path/to/model.gguf")
        self.browse_button = QPushButton("Browse…", objectName="provider-browse")
        path_row = QHBoxLayout()
        path_row.setContentsMargins(0, 0, 0, 0)
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(self.browse_button)
        self.path_row = QWidget()
        self.path_row.setLayout(path_row)

        self.model_list = QListWidget(objectName="provider-models")
        self.model_list.setToolTip(
            description(Provider, "models") + " Double-click a model to rename it."
        )
        self.model_list.setMaximumHeight(110)
        self.model_edit = ReturnLineEdit(objectName="provider-model-edit")
        self.model_edit.setPlaceholderText("Model name, e.g. llama3.1:8b")
        self.add_model_button = QPushButton("Add", objectName="provider-model-add")
        self.remove_model_button = QPushButton("Remove", objectName="provider-model-remove")
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(self.add_model_button)
        model_row.addWidget(self.remove_model_button)
        models = QVBoxLayout()
        models.setContentsMargins(0, 0, 0, 0)
        models.addWidget(self.model_list)
        models.addLayout(model_row)

        self.timeout_spin = float_spin(
            Provider, "timeout_s", object_name="provider-timeout", decimals=0, suffix=" s"
        )
        self.rate_spin = float_spin(
            Provider, "requests_per_minute", object_name="provider-rate", decimals=1
        )
        self.key_button = QPushButton("API key…", objectName="provider-key")
        self.key_button.setToolTip("Save, test or remove this provider's key")

        self.form = QFormLayout()
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.addRow("Kind", self.kind_label)
        self.form.addRow("Name", self.name_edit)
        self.form.addRow("Id", self.id_edit)
        self.form.addRow("", self.id_error)
        self.form.addRow("Address", self.url_edit)
        self.form.addRow("GGUF file", self.path_row)
        self.form.addRow("Models", models)
        self.form.addRow("Timeout", self.timeout_spin)
        self.form.addRow("Requests a minute", self.rate_spin)
        self.form.addRow("", self.key_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.form)
        layout.addStretch(1)

        self.name_edit.textEdited.connect(self._on_name_edited)
        self.id_edit.textEdited.connect(self._on_id_edited)
        self.url_edit.textEdited.connect(lambda text: self._edit(base_url=text.strip() or None))
        self.path_edit.textEdited.connect(lambda text: self._edit(path=text.strip() or None))
        self.browse_button.clicked.connect(self.browse)
        self.model_edit.returnPressed.connect(self.add_model)
        self.add_model_button.clicked.connect(self.add_model)
        self.remove_model_button.clicked.connect(self.remove_model)
        self.model_list.itemChanged.connect(self._on_models_edited)
        self.timeout_spin.valueChanged.connect(lambda value: self._edit(timeout_s=value))
        self.rate_spin.valueChanged.connect(lambda value: self._edit(requests_per_minute=value))
        self.key_button.clicked.connect(lambda: self.key_requested.emit(self.draft))

    def show_draft(self, draft: ProviderDraft) -> None:
        self.draft = draft
        values = draft.values
        for widget in (self.name_edit, self.id_edit, self.url_edit, self.path_edit):
            widget.blockSignals(True)
        self.kind_label.setText(draft.info.label)
        self.name_edit.setText(draft.name)
        self.id_edit.setText(draft.id)
        self.url_edit.setText(values.get("base_url") or "")
        self.url_edit.setPlaceholderText(draft.info.base_url or "https://…")
        self.path_edit.setText(values.get("path") or "")
        for widget in (self.name_edit, self.id_edit, self.url_edit, self.path_edit):
            widget.blockSignals(False)
        self._fill_models()
        self.model_edit.clear()
        self.timeout_spin.blockSignals(True)
        self.timeout_spin.setValue(float(values["timeout_s"]))
        self.timeout_spin.blockSignals(False)
        self.rate_spin.blockSignals(True)
        self.rate_spin.setValue(float(values["requests_per_minute"]))
        self.rate_spin.blockSignals(False)
        self.form.setRowVisible(
            self.url_edit, draft.kind in _URL_KINDS or bool(values.get("base_url"))
        )
        self.form.setRowVisible(self.path_row, draft.kind == ProviderKind.GGUF)
        self.form.setRowVisible(self.key_button, draft.can_use_key)
        self._show_id_problem()

    def _fill_models(self) -> None:
        assert self.draft is not None
        self.model_list.blockSignals(True)
        self.model_list.clear()
        for model in self.draft.models:
            item = QListWidgetItem(model)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.model_list.addItem(item)
        self.model_list.blockSignals(False)

    def _edit(self, **values: Any) -> None:
        if self.draft is not None:
            self.drafts.edit(self.draft, **values)

    def _on_name_edited(self, text: str) -> None:
        draft = self.draft
        if draft is None:
            return
        if draft.id_follows_name:
            new_id = self.drafts.unique_id(text or draft.info.label, exclude=draft)
            self.id_edit.setText(new_id)
            self._edit(name=text, id=new_id)
        else:
            self._edit(name=text)
        self._show_id_problem()

    def _on_id_edited(self, text: str) -> None:
        if self.draft is None:
            return
        self.draft.id_follows_name = False
        self._edit(id=text.strip())
        self._show_id_problem()

    def _show_id_problem(self) -> None:
        if self.draft is None:
            return
        message = self.drafts.id_problem(self.draft, self.draft.id)
        self.id_error.setText(f"This id can't be used: {message}." if message else "")
        self.form.setRowVisible(self.id_error, message is not None)

    def add_model(self) -> None:
        model = self.model_edit.text().strip()
        if self.draft is None or not model:
            return
        if model not in self.draft.models:
            self._edit(models=[*self.draft.models, model])
            self._fill_models()
        self.model_edit.clear()

    def remove_model(self) -> None:
        row = self.model_list.currentRow()
        if self.draft is None or row < 0:
            return
        models = self.draft.models
        del models[row]
        self._edit(models=models)
        self._fill_models()

    def _on_models_edited(self, _item: QListWidgetItem) -> None:
        texts = [self.model_list.item(i).text().strip() for i in range(self.model_list.count())]
        self._edit(models=list(dict.fromkeys(t for t in texts if t)))

    def browse(self) -> None:
        """Choose the GGUF file in a file dialog that does not block the loop."""
        current = self.path_edit.text().strip()
        start = str(Path(current).parent) if current else str(Path.home())
        dialog = QFileDialog(self, "Choose a GGUF model file", start, "GGUF models (*.gguf)")
        dialog.setObjectName("provider-file-dialog")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(self.use_file)
        dialog.finished.connect(dialog.deleteLater)
        self._file_dialog = dialog
        dialog.open()

    def use_file(self, path: str) -> None:
        if self.draft is None or not path:
            return
        self.path_edit.setText(path)
        values: dict[str, Any] = {"path": path}
        if not self.draft.models:
            values["models"] = [Path(path).stem]
        self._edit(**values)
        self._fill_models()


class FoundServers(QGroupBox):
    """Model servers found running on this computer, each with an “Add” button.

    Signals:
        add_requested(object): the user asked to add a :class:`FoundServer`.
    """

    add_requested = Signal(object)

    def __init__(self, servers: list[FoundServer], parent: QWidget | None = None) -> None:
        super().__init__("Found on this computer", parent)
        self.setObjectName("found-servers")
        self.buttons: list[tuple[FoundServer, QPushButton]] = []
        layout = QVBoxLayout(self)
        for number, server in enumerate(servers):
            count = len(server.models)
            label = QLabel(
                f"<b>{escape(server.name)}</b> · {count} model{'' if count == 1 else 's'}<br>"
                f"{escape(server.base_url)}"
            )
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setWordWrap(True)
            button = QPushButton("Add", objectName=f"found-add-{number}")
            button.clicked.connect(lambda _=False, s=server: self.add_requested.emit(s))
            row = QHBoxLayout()
            row.addWidget(label, 1)
            row.addWidget(button)
            layout.addLayout(row)
            self.buttons.append((server, button))
        self.setVisible(bool(servers))

    def mark_configured(self, configured: set[str]) -> None:
        """Disable “Add” for the servers whose address a provider already uses."""
        for server, button in self.buttons:
            added = server.base_url.rstrip("/") in configured
            button.setEnabled(not added)
            button.setText("Added" if added else "Add")


class ProvidersPage(QWidget):
    """The providers on the left (the embedded model first, fixed), the chosen one's form.

    Signals:
        selected(object): the shown provider's draft, or None for the embedded model.
        key_requested(object): the user asked to manage a provider's key.
    """

    selected = Signal(object)
    key_requested = Signal(object)

    def __init__(
        self,
        drafts: ProviderDrafts,
        found_servers: list[FoundServer],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.drafts = drafts

        self.provider_list = QListWidget(objectName="provider-list")
        local = QListWidgetItem(LOCAL_LABEL)
        local.setData(_DRAFT_ROLE, None)
        local.setToolTip("Built in: always there, needs no key and no network")
        self.provider_list.addItem(local)
        for draft in drafts.items:
            self._add_item(draft)
        self.add_button = QPushButton("Add provider", objectName="provider-add")
        self.add_menu = QMenu(self.add_button)
        self.add_menu.setObjectName("provider-add-menu")
        for kind, info in KINDS.items():
            action = self.add_menu.addAction(info.label)
            action.setObjectName(f"add-{kind.value}")
            action.triggered.connect(lambda _=False, k=kind: self.add_kind(k))
        self.add_button.setMenu(self.add_menu)
        self.remove_button = QPushButton("Remove", objectName="provider-remove")
        self.remove_button.setToolTip(
            "Remove this provider; its saved key is deleted when you press OK or Apply"
        )
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        self.found = FoundServers(found_servers)
        left = QVBoxLayout()
        left.addWidget(self.provider_list, 1)
        left.addLayout(buttons)
        left.addWidget(self.found)

        self.form = ProviderForm(drafts)
        local_info = QWidget()
        local_layout = QVBoxLayout(local_info)
        local_layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel(f"<b>{LOCAL_LABEL}</b>")
        local_layout.addWidget(title)
        local_layout.addWidget(
            help_label(
                "The small model built into the app runs on this computer: no key, no network, "
                "no cost. It is always available and cannot be removed; the fallback settings "
                "decide whether it answers when another model can't be reached."
            )
        )
        local_layout.addStretch(1)
        self.stack = QStackedWidget()
        self.stack.addWidget(local_info)
        self.stack.addWidget(self.form)

        layout = QHBoxLayout(self)
        layout.addLayout(left, 2)
        layout.addWidget(self.stack, 3)

        self.provider_list.currentItemChanged.connect(self._on_current_changed)
        self.remove_button.clicked.connect(self.remove_current)
        self.found.add_requested.connect(self.add_found)
        self.form.key_requested.connect(self.key_requested)
        drafts.changed.connect(self._on_draft_changed)
        self.provider_list.setCurrentRow(0)
        self._mark_found()

    def _add_item(self, draft: ProviderDraft) -> QListWidgetItem:
        item = QListWidgetItem()
        item.setData(_DRAFT_ROLE, draft)
        self._label(item, draft)
        self.provider_list.addItem(item)
        return item

    def _label(self, item: QListWidgetItem, draft: ProviderDraft) -> None:
        item.setText(draft.title)

    def _item(self, draft: ProviderDraft) -> QListWidgetItem | None:
        for row in range(self.provider_list.count()):
            item = self.provider_list.item(row)
            if item.data(_DRAFT_ROLE) is draft:
                return item
        return None

    @property
    def current(self) -> ProviderDraft | None:
        item = self.provider_list.currentItem()
        return item.data(_DRAFT_ROLE) if item is not None else None

    def select(self, draft: ProviderDraft | None) -> None:
        item = self._item(draft) if draft is not None else self.provider_list.item(0)
        if item is not None:
            self.provider_list.setCurrentItem(item)

    def add_kind(self, kind: ProviderKind) -> ProviderDraft:
        draft = self.drafts.add_kind(kind)
        self.provider_list.setCurrentItem(self._add_item(draft))
        self.form.name_edit.setFocus()
        self.form.name_edit.selectAll()
        return draft

    def add_found(self, server: FoundServer) -> ProviderDraft:
        from ...core.providers.probe import provider_for

        provider = provider_for(server, self.drafts.as_settings())
        draft = self.drafts.add(provider.model_dump())
        self.provider_list.setCurrentItem(self._add_item(draft))
        self._mark_found()
        return draft

    def remove_current(self) -> None:
        draft = self.current
        if draft is None:
            return
        row = self.provider_list.currentRow()
        self.drafts.remove(draft)
        self.provider_list.takeItem(row)
        self.provider_list.setCurrentRow(min(row, self.provider_list.count() - 1))
        self._mark_found()

    def _on_current_changed(self, current: QListWidgetItem | None, _old: Any) -> None:
        draft = current.data(_DRAFT_ROLE) if current is not None else None
        if draft is None:
            self.stack.setCurrentIndex(0)
        else:
            self.form.show_draft(draft)
            self.stack.setCurrentIndex(1)
        self.remove_button.setEnabled(draft is not None)
        self.selected.emit(draft)

    def _on_draft_changed(self, draft: ProviderDraft) -> None:
        item = self._item(draft)
        if item is not None:
            self._label(item, draft)
        self._mark_found()

    def _mark_found(self) -> None:
        configured = {(d.values.get("base_url") or "").rstrip("/") for d in self.drafts.items}
        self.found.mark_configured(configured - {""})
