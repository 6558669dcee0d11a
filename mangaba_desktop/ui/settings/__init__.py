"""The Settings dialog, one module per tab; :class:`SettingsDialog` is what the app opens."""

from .dialog import SettingsDialog

__all__ = ["SettingsDialog"]
