"""The “Fallback & parameters” page: which models answer when the chosen one can't, and how
models are asked (default model, per-model parameters, system prompt)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...core.settings import ModelParams, Settings
from .declared import description, fixed_width, float_spin, help_label, int_spin, set_value
from .drafts import LOCAL, ModelRef, ProviderDraft, ProviderDrafts, label

_REF_ROLE = Qt.ItemDataRole.UserRole + 1
ALL_MODELS = "All models (default)"


class FallbacksPage(QWidget):
    """The fallback order, retries, the default model, parameters and the system prompt."""

    def __init__(
        self, drafts: ProviderDrafts, settings: Settings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.drafts = drafts
        self.default_ref = drafts.ref(settings.default_model)
        self.default_params: dict[str, Any] = settings.default_params.model_dump()
        self.params: dict[ModelRef, dict[str, Any]] = {
            drafts.ref(model): params.model_dump()
            for model, params in settings.model_params.items()
        }

        self.fallback_list = QListWidget(objectName="fallback-list")
        self.fallback_list.setToolTip(description(Settings, "fallbacks"))
        for model in settings.fallbacks:
            self._append(drafts.ref(model))
        self.up_button = QPushButton("Up", objectName="fallback-up")
        self.down_button = QPushButton("Down", objectName="fallback-down")
        self.remove_button = QPushButton("Remove", objectName="fallback-remove")
        order = QVBoxLayout()
        order.addWidget(self.up_button)
        order.addWidget(self.down_button)
        order.addWidget(self.remove_button)
        order.addStretch(1)
        listed = QHBoxLayout()
        listed.addWidget(self.fallback_list, 1)
        listed.addLayout(order)
        self.add_combo = QComboBox(objectName="fallback-add-model")
        self.add_combo.setPlaceholderText("Add model…")
        self.add_button = QPushButton("Add", objectName="fallback-add")
        adding = QHBoxLayout()
        adding.addWidget(self.add_combo, 1)
        adding.addWidget(self.add_button)
        adding.addSpacing(24)
        self.local_check = QCheckBox(
            "When the chosen model can't be reached, answer with the local model",
            objectName="local-fallback",
        )
        self.retries_spin = int_spin(Settings, "retries", object_name="retries")
        self.retries_spin.setValue(settings.retries)
        retries = QLabel("Retries", objectName="retries-label")
        retries.setBuddy(self.retries_spin)
        adding.addWidget(retries)
        adding.addWidget(self.retries_spin)
        fallback_box = QGroupBox("When the chosen model can't be reached")
        fallback_layout = QVBoxLayout(fallback_box)
        fallback_layout.addWidget(help_label(description(Settings, "fallbacks")))
        fallback_layout.addLayout(listed, 1)
        fallback_layout.addLayout(adding)
        fallback_layout.addWidget(self.local_check)

        self.default_combo = QComboBox(objectName="default-model")
        self.default_combo.setToolTip(description(Settings, "default_model"))
        self.params_combo = QComboBox(objectName="params-model")
        self.params_combo.setToolTip(description(Settings, "model_params"))
        # Model names can be long (OpenRouter's above all): they must not widen the page.
        for combo in (self.add_combo, self.default_combo, self.params_combo):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(18)
        self.own_check = QCheckBox("Use its own parameters", objectName="params-own")
        self.own_check.setToolTip("Otherwise the model is asked with the defaults")
        self.temperature_spin = float_spin(
            ModelParams, "temperature", object_name="params-temperature", decimals=2, step=0.1
        )
        self.max_tokens_spin = int_spin(ModelParams, "max_tokens", object_name="params-max-tokens")
        self.top_p_spin = QDoubleSpinBox(objectName="params-top-p")
        self.top_p_spin.setRange(0.0, 1.0)
        self.top_p_spin.setDecimals(2)
        self.top_p_spin.setSingleStep(0.05)
        # 0 is not a valid top_p (it must be above 0), so the bottom of the range means unset.
        self.top_p_spin.setSpecialValueText("unset")
        self.top_p_spin.setToolTip(description(ModelParams, "top_p"))
        fixed_width(self.top_p_spin)
        asked = QFormLayout()
        asked.addRow("Default model", self.default_combo)
        asked.addRow("Parameters for", self.params_combo)
        asked.addRow("", self.own_check)
        asked.addRow("Temperature", self.temperature_spin)
        asked.addRow("Max tokens", self.max_tokens_spin)
        asked.addRow("top_p", self.top_p_spin)
        asked_box = QGroupBox("How models are asked")
        asked_layout = QVBoxLayout(asked_box)
        asked_layout.addLayout(asked)
        asked_layout.addStretch(1)

        self.prompt_edit = QPlainTextEdit(objectName="system-prompt")
        self.prompt_edit.setPlainText(settings.system_prompt)
        self.prompt_edit.setPlaceholderText("Optional: instructions every agent gets first")
        prompt_box = QGroupBox("System prompt")
        prompt_layout = QVBoxLayout(prompt_box)
        prompt_layout.addWidget(help_label(description(Settings, "system_prompt")))
        prompt_layout.addWidget(self.prompt_edit)

        columns = QHBoxLayout()
        columns.addWidget(asked_box, 1)
        columns.addWidget(prompt_box, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(fallback_box, 1)
        layout.addLayout(columns)

        self.up_button.clicked.connect(lambda: self.move(-1))
        self.down_button.clicked.connect(lambda: self.move(1))
        self.remove_button.clicked.connect(self.remove_current)
        self.add_button.clicked.connect(self.add_chosen)
        self.local_check.toggled.connect(self._on_local_toggled)
        self.fallback_list.currentRowChanged.connect(lambda _row: self._update_buttons())
        self.default_combo.currentIndexChanged.connect(self._on_default_chosen)
        self.params_combo.currentIndexChanged.connect(lambda _index: self._show_params())
        self.own_check.toggled.connect(self._on_own_toggled)
        self.temperature_spin.valueChanged.connect(lambda v: self._set_param("temperature", v))
        self.max_tokens_spin.valueChanged.connect(lambda v: self._set_param("max_tokens", v))
        self.top_p_spin.valueChanged.connect(lambda v: self._set_param("top_p", v or None))
        drafts.added.connect(self._refresh_models)
        drafts.changed.connect(self._refresh_models)
        drafts.removed.connect(self._on_provider_removed)
        self._refresh_models()

    # -- fallback order ------------------------------------------------------------------------

    def fallbacks(self) -> list[ModelRef]:
        items = (self.fallback_list.item(i) for i in range(self.fallback_list.count()))
        return [item.data(_REF_ROLE) for item in items]

    def _append(self, ref: ModelRef) -> None:
        item = QListWidgetItem(label(ref))
        item.setData(_REF_ROLE, ref)
        self.fallback_list.addItem(item)

    def move(self, step: int) -> None:
        row = self.fallback_list.currentRow()
        target = row + step
        if row < 0 or not 0 <= target < self.fallback_list.count():
            return
        item = self.fallback_list.takeItem(row)
        self.fallback_list.insertItem(target, item)
        self.fallback_list.setCurrentRow(target)

    def remove_current(self) -> None:
        row = self.fallback_list.currentRow()
        if row >= 0:
            self.fallback_list.takeItem(row)
            self._refresh_models()

    def add_chosen(self) -> None:
        ref = self.add_combo.currentData()
        if isinstance(ref, ModelRef) and ref not in self.fallbacks():
            self._append(ref)
            self.fallback_list.setCurrentRow(self.fallback_list.count() - 1)
            self._refresh_models()

    def _on_local_toggled(self, checked: bool) -> None:
        present = LOCAL in self.fallbacks()
        if checked and not present:
            self._append(LOCAL)
        elif not checked and present:
            self.fallback_list.takeItem(self.fallbacks().index(LOCAL))
        self._refresh_models()

    def _update_buttons(self) -> None:
        row, count = self.fallback_list.currentRow(), self.fallback_list.count()
        self.up_button.setEnabled(row > 0)
        self.down_button.setEnabled(0 <= row < count - 1)
        self.remove_button.setEnabled(row >= 0)
        self.add_button.setEnabled(self.add_combo.count() > 0)

    # -- models offered ------------------------------------------------------------------------

    def _refresh_models(self, *_args: Any) -> None:
        """Show the providers' current models and ids everywhere a model is named."""
        refs = self.drafts.refs()
        chosen = self.fallbacks()
        for row, ref in enumerate(chosen):
            self.fallback_list.item(row).setText(label(ref))
        self.local_check.blockSignals(True)
        self.local_check.setChecked(LOCAL in chosen)
        self.local_check.blockSignals(False)
        self._fill(self.add_combo, [r for r in refs if r not in chosen], None)
        self.add_combo.setCurrentIndex(-1)
        offered = refs if self.default_ref in refs else [*refs, self.default_ref]
        self._fill(self.default_combo, offered, self.default_ref)
        shown = self.params_combo.currentData()
        with_params = refs + [r for r in self.params if r not in refs]
        self.params_combo.blockSignals(True)
        self.params_combo.clear()
        self.params_combo.addItem(ALL_MODELS, None)
        for ref in with_params:
            self.params_combo.addItem(label(ref), ref)
        index = with_params.index(shown) + 1 if shown in with_params else 0
        self.params_combo.setCurrentIndex(index)
        self.params_combo.blockSignals(False)
        self._show_params()
        self._update_buttons()

    def _fill(self, combo: QComboBox, refs: list[ModelRef], current: ModelRef | None) -> None:
        combo.blockSignals(True)
        combo.clear()
        for ref in refs:
            combo.addItem(label(ref), ref)
        if current is not None:
            combo.setCurrentIndex(refs.index(current))
        combo.blockSignals(False)

    def _on_default_chosen(self, index: int) -> None:
        ref = self.default_combo.itemData(index)
        if isinstance(ref, ModelRef):
            self.default_ref = ref

    def _on_provider_removed(self, draft: ProviderDraft) -> None:
        # The removed provider's models are no longer offered: nothing may still name them.
        for row in reversed(range(self.fallback_list.count())):
            if self.fallback_list.item(row).data(_REF_ROLE).draft is draft:
                self.fallback_list.takeItem(row)
        if self.default_ref.draft is draft:
            self.default_ref = LOCAL
        self.params = {ref: p for ref, p in self.params.items() if ref.draft is not draft}
        self._refresh_models()

    # -- parameters ----------------------------------------------------------------------------

    def _target(self) -> dict[str, Any] | None:
        """The parameters the form edits: the defaults, a model's own, or None (it has none)."""
        ref = self.params_combo.currentData()
        if ref is None:
            return self.default_params
        return self.params.get(ref)

    def _show_params(self) -> None:
        ref = self.params_combo.currentData()
        target = self._target()
        self.own_check.blockSignals(True)
        self.own_check.setChecked(ref is not None and target is not None)
        self.own_check.blockSignals(False)
        self.own_check.setEnabled(ref is not None)
        shown = target if target is not None else self.default_params
        set_value(self.temperature_spin, shown["temperature"])
        set_value(self.max_tokens_spin, shown["max_tokens"])
        set_value(self.top_p_spin, shown["top_p"] or 0.0)
        for spin in (self.temperature_spin, self.max_tokens_spin, self.top_p_spin):
            spin.setEnabled(target is not None)

    def _on_own_toggled(self, checked: bool) -> None:
        ref = self.params_combo.currentData()
        if ref is None:
            return
        if checked:
            self.params[ref] = dict(self.default_params)
        else:
            self.params.pop(ref, None)
        self._show_params()

    def _set_param(self, name: str, value: Any) -> None:
        target = self._target()
        if target is not None:
            target[name] = value

    # -- the result ----------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        return {
            "default_model": self.default_ref.model_id,
            "fallbacks": [ref.model_id for ref in self.fallbacks()],
            "model_params": {ref.model_id: dict(p) for ref, p in self.params.items()},
            "default_params": dict(self.default_params),
            "system_prompt": self.prompt_edit.toPlainText(),
            "retries": self.retries_spin.value(),
        }
