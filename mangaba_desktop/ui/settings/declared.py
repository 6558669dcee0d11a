"""Widgets built from the settings' declarations: bounds and help come from the fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent, QPalette
from PySide6.QtWidgets import QDoubleSpinBox, QLabel, QLineEdit, QSizePolicy, QSpinBox

ERROR_STYLE = "color: #b3261e;"
SUCCESS_STYLE = "color: #1b7f3b;"


def description(model: type[BaseModel], name: str) -> str:
    """The ``description`` a field is declared with (what the user is told about it)."""
    return model.model_fields[name].description or ""


def _bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None, bool]:
    """The field's lower and upper bounds, and whether the lower one is excluded."""
    low = high = None
    exclusive = False
    for item in model.model_fields[name].metadata:
        if getattr(item, "ge", None) is not None:
            low = item.ge
        if getattr(item, "gt", None) is not None:
            low, exclusive = item.gt, True
        if getattr(item, "le", None) is not None:
            high = item.le
        if getattr(item, "lt", None) is not None:
            high = item.lt
    return low, high, exclusive


def int_spin(model: type[BaseModel], name: str, *, object_name: str) -> QSpinBox:
    """A spin box over an integer field's declared range, its description as tooltip."""
    low, high, exclusive = _bounds(model, name)
    spin = QSpinBox()
    spin.setObjectName(object_name)
    spin.setRange(int(low or 0) + (1 if exclusive else 0), int(high or 2_000_000_000))
    spin.setGroupSeparatorShown(True)
    spin.setToolTip(description(model, name))
    fixed_width(spin)
    return spin


def float_spin(
    model: type[BaseModel],
    name: str,
    *,
    object_name: str,
    decimals: int = 1,
    step: float = 1.0,
    suffix: str = "",
) -> QDoubleSpinBox:
    """A spin box over a number field's declared range, its description as tooltip."""
    low, high, exclusive = _bounds(model, name)
    spin = QDoubleSpinBox()
    spin.setObjectName(object_name)
    spin.setDecimals(decimals)
    spin.setSingleStep(step)
    minimum = float(low or 0.0) + (10.0**-decimals if exclusive else 0.0)
    spin.setRange(minimum, float(high if high is not None else 1e9))
    spin.setGroupSeparatorShown(True)
    spin.setSuffix(suffix)
    spin.setToolTip(description(model, name))
    fixed_width(spin)
    return spin


def fixed_width(spin: QSpinBox | QDoubleSpinBox) -> None:
    """Keep a number field as wide as its largest value needs, not as wide as the form."""
    policy = spin.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Fixed)
    spin.setSizePolicy(policy)


def help_label(text: str, *, object_name: str | None = None) -> QLabel:
    """Explanatory text under a field, quieter than the field's label."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    font = label.font()
    font.setPointSizeF(font.pointSizeF() * 0.9)
    label.setFont(font)
    if object_name:
        label.setObjectName(object_name)
    return label


def status_label(object_name: str) -> QLabel:
    label = QLabel()
    label.setObjectName(object_name)
    label.setWordWrap(True)
    return label


def show_status(label: QLabel, text: str, *, ok: bool | None) -> None:
    """Put ``text`` in ``label``: green when ``ok``, red when not, plain when None."""
    label.setStyleSheet("" if ok is None else SUCCESS_STYLE if ok else ERROR_STYLE)
    label.setText(text)


def set_value(spin: Any, value: float) -> None:
    """Set a spin box without telling its listeners (the form is being filled, not edited)."""
    spin.blockSignals(True)
    spin.setValue(value)
    spin.blockSignals(False)


class ReturnLineEdit(QLineEdit):
    """A field whose Return key acts on it alone: it must not also press the dialog's OK."""

    def keyPressEvent(self, event: QKeyEvent) -> None:
        super().keyPressEvent(event)
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            event.accept()
