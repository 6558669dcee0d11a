"""``mangaba-desktop --install-desktop-entry``: put the app in the Linux menu, for this user.

The downloaded folder runs from wherever it was unpacked; the menu needs a desktop entry that
points at it and an icon under the entry's name. Both go to the user's data folder
(``$XDG_DATA_HOME``, by default ``~/.local/share``); nothing needs root.
``--remove-desktop-entry`` takes them out again. Running the install again (after moving the
folder, say) rewrites the entry with the new path. Menus watch these folders: the entry shows
without logging out.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path

from . import DESKTOP_ID

ICON_SIZES = (32, 64, 256)
# Characters that make an Exec argument need quotes (Desktop Entry Specification, "The Exec key").
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def data_home() -> Path:
    configured = os.environ.get("XDG_DATA_HOME", "")
    # The specification ignores a relative path here.
    if configured and Path(configured).is_absolute():
        return Path(configured)
    return Path.home() / ".local" / "share"


def command() -> list[str]:
    """How this installation is started: the built binary, the installed script, or Python."""
    # Absolute, not resolved: a virtual environment's python is a link to the base one.
    python = Path(sys.executable).absolute()
    if getattr(sys, "frozen", False):
        # Run from an AppImage, this copy lives in its mount (APPDIR), gone when it exits: the
        # entry starts the AppImage itself. Only if this copy is in that mount: a program
        # started from another AppImage (an editor's terminal) inherits its variables.
        appimage, mount = os.environ.get("APPIMAGE"), os.environ.get("APPDIR")
        if appimage and mount and python.is_relative_to(mount) and Path(appimage).is_file():
            return [appimage]
        return [str(python)]
    # The script pip put beside this Python (the environment's bin), else the one on PATH.
    script = python.with_name("mangaba-desktop")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("mangaba-desktop")
    if found:
        return [str(Path(found).absolute())]
    return [str(python), "-m", "mangaba_desktop"]


def string_value(text: str) -> str:
    """``text`` as a string value of a desktop entry (backslash, newline, tab, CR escaped)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def exec_argument(argument: str) -> str:
    """One Exec argument: quoted as the Exec key asks, then escaped as a string value (and %
    doubled, as it starts a field code)."""
    if any(char in _RESERVED for char in argument):
        inner = "".join("\\" + char if char in '"`$\\' else char for char in argument)
        argument = f'"{inner}"'
    return string_value(argument).replace("%", "%%")


def entry_text(start: list[str]) -> str:
    template = resources.files("mangaba_desktop").joinpath(f"linux/{DESKTOP_ID}.desktop")
    lines = []
    for line in template.read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            lines.append("Exec=" + " ".join(exec_argument(part) for part in start))
            # TryExec (a plain path, not a command line): the menu hides the entry once the
            # program is gone (its folder deleted).
            lines.append("TryExec=" + string_value(start[0]))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _paths(home: Path) -> tuple[Path, list[tuple[int, Path]]]:
    entry = home / "applications" / f"{DESKTOP_ID}.desktop"
    icons = [
        (size, home / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{DESKTOP_ID}.png")
        for size in ICON_SIZES
    ]
    return entry, icons


def install(home: Path | None = None, start: list[str] | None = None) -> list[Path]:
    """Write the entry and its icons; returns the files written."""
    home = home or data_home()
    entry, icons = _paths(home)
    written = []
    icon_folder = resources.files("mangaba_desktop.ui").joinpath("icons")
    for size, target in icons:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(icon_folder.joinpath(f"mangaba-desktop-{size}.png").read_bytes())
        written.append(target)
    entry.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a menu reading the folder never sees half an entry.
    partial = entry.with_name(entry.name + ".part")
    partial.write_text(entry_text(start or command()), encoding="utf-8")
    partial.replace(entry)
    written.append(entry)
    return written


def remove(home: Path | None = None) -> list[Path]:
    """Delete the entry and its icons; returns the files that were there."""
    home = home or data_home()
    entry, icons = _paths(home)
    removed = []
    for path in [entry, *(target for _, target in icons)]:
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def main(action: str) -> int:
    if not sys.platform.startswith("linux"):
        print(
            "Desktop entries are for Linux: the Windows installer and the macOS app add the "
            "app to the Start menu and Applications themselves."
        )
        return 2
    try:
        if action == "install":
            start = command()
            written = install(start=start)
            print(f"Added Mangaba Desktop to the menu: {written[-1]}")
            print(f"It starts: {' '.join(start)}")
        else:
            removed = remove()
            if removed:
                print(f"Removed Mangaba Desktop from the menu ({len(removed)} files).")
            else:
                print("Mangaba Desktop was not in the menu: nothing to remove.")
    except OSError as exc:
        print(f"Could not change the menu: {exc}", file=sys.stderr)
        return 1
    return 0
