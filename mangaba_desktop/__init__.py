"""Mangaba Desktop: an offline-first workbench for chatting with AI agents."""

__version__ = "0.1.0"
APP_NAME = "Mangaba Desktop"
APP_ID = "mangaba-desktop"
DESKTOP_ID = "io.github.mangaba.Desktop"
"""The desktop entry's name (and the Wayland app id, the AppStream id, the macOS bundle id)."""
