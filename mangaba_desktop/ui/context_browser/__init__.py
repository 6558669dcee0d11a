"""The Context pane: what agents remember, browsed, searched, edited and pinned."""

from .model import ContextRow, ContextTableModel
from .pane import ContextPane

__all__ = ["ContextPane", "ContextRow", "ContextTableModel"]
