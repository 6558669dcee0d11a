"""The Agent network pane: the hub's agents as a live graph, with a timeline of their messages."""

from .pane import NetworkPane

__all__ = ["NetworkPane"]
