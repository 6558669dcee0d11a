"""Plugins: code installed beside the app that sees prompts and replies and adds commands.

See :mod:`.hooks` for writing one and :mod:`.host` for how they are found and kept apart.
"""

from .hooks import (
    HOOK_TIMEOUT_S,
    HOOKS,
    AddedContext,
    Plugin,
    PluginCommand,
    Request,
    Response,
    StoredMessage,
)
from .host import (
    ENTRY_POINT_GROUP,
    PluginInfo,
    PluginManager,
    PluginRefused,
    PluginState,
    may_leave_this_computer,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOKS",
    "HOOK_TIMEOUT_S",
    "AddedContext",
    "Plugin",
    "PluginCommand",
    "PluginInfo",
    "PluginManager",
    "PluginRefused",
    "PluginState",
    "Request",
    "Response",
    "StoredMessage",
    "may_leave_this_computer",
]
