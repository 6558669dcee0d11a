"""``mangaba-desktop --install-desktop-entry``: the unpacked Linux build puts itself in the menu
with an entry that starts it from wherever it is, and takes itself out again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mangaba_desktop import DESKTOP_ID as APP_ID
from mangaba_desktop import desktop_entry
from mangaba_desktop.desktop_entry import entry_text, exec_argument, install, remove

ENTRY = Path("applications") / f"{APP_ID}.desktop"


def _keys(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[:1] != "#")


def _unescape_string(value: str) -> str:
    """A string value as a menu reads it: \\s, \\n, \\t, \\r and \\\\ undone."""
    escapes = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    text, index = "", 0
    while index < len(value):
        if value[index] == "\\" and value[index + 1 : index + 2] in escapes:
            text += escapes[value[index + 1]]
            index += 2
        else:
            text += value[index]
            index += 1
    return text


def _unescape_exec(value: str) -> list[str]:
    """What a menu runs: the string value's escapes undone, then the Exec key's quoting (in
    quotes, a backslash escapes ", `, $ and itself), then %% is a percent sign."""
    text = _unescape_string(value)
    arguments, current, quoted, index = [], "", False, 0
    while index < len(text):
        char = text[index]
        if quoted and char == "\\" and text[index + 1 : index + 2] in ('"', "`", "$", "\\"):
            current += text[index + 1]
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            arguments.append(current)
            current = ""
        else:
            current += char
        index += 1
    arguments.append(current)
    return [argument.replace("%%", "%") for argument in arguments]


def test_the_entry_starts_this_copy_and_its_icons_are_there(tmp_path):
    start = ["/opt/Mangaba Desktop (2)/mangaba-desktop"]

    written = install(tmp_path, start)

    entry = tmp_path / ENTRY
    assert entry in written
    keys = _keys(entry.read_text(encoding="utf-8"))
    assert _unescape_exec(keys["Exec"]) == start
    # TryExec is a plain path, never quoted: a quote there would hide the entry.
    assert keys["TryExec"] == "/opt/Mangaba Desktop (2)/mangaba-desktop"
    assert keys["Icon"] == APP_ID
    assert keys["Name"] == "Mangaba Desktop"
    for size in (32, 64, 256):
        icon = tmp_path / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils")
def test_the_written_entry_passes_the_freedesktop_validator(tmp_path):
    install(tmp_path, ["/home/ana/Apps/mangaba desktop/mangaba-desktop"])

    done = subprocess.run(
        ["desktop-file-validate", str(tmp_path / ENTRY)], capture_output=True, text=True
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in done.stdout.lower()


@pytest.mark.parametrize(
    ("argument", "written"),
    [
        ("/opt/mangaba/mangaba-desktop", "/opt/mangaba/mangaba-desktop"),
        ("/opt/my apps/mangaba-desktop", '"/opt/my apps/mangaba-desktop"'),
        ('/opt/a"b/x', '"/opt/a\\\\"b/x"'),
        ("/opt/$HOME/x", '"/opt/\\\\$HOME/x"'),
        ("/opt/100%/x", "/opt/100%%/x"),
        ("/opt/two\nlines/x", '"/opt/two\\nlines/x"'),
    ],
)
def test_exec_arguments_are_quoted_as_the_specification_asks(argument, written):
    assert exec_argument(argument) == written
    assert _unescape_exec(exec_argument(argument)) == [argument]


def test_installing_again_after_moving_the_folder_points_at_the_new_place(tmp_path):
    install(tmp_path, ["/old/place/mangaba-desktop"])

    install(tmp_path, ["/new/place/mangaba-desktop"])

    text = (tmp_path / ENTRY).read_text(encoding="utf-8")
    assert "/new/place/" in text and "/old/place/" not in text
    lines = text.splitlines()
    assert sum(line.startswith("Exec=") for line in lines) == 1
    assert sum(line.startswith("TryExec=") for line in lines) == 1


def test_remove_takes_out_only_what_install_wrote(tmp_path):
    install(tmp_path, ["/opt/mangaba/mangaba-desktop"])
    neighbour = tmp_path / "applications" / "org.example.Other.desktop"
    neighbour.write_text("[Desktop Entry]\nName=Other\n", encoding="utf-8")

    removed = remove(tmp_path)

    assert len(removed) == 4
    assert not (tmp_path / ENTRY).exists()
    assert not list((tmp_path / "icons").rglob("*.png"))
    assert neighbour.exists()
    assert remove(tmp_path) == []


def test_a_source_install_is_started_through_its_own_environment(monkeypatch, tmp_path):
    # No script beside this Python and none on PATH: Python runs the package.
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert desktop_entry.command() == [str(python), "-m", "mangaba_desktop"]
    # The environment's own script, when pip put one there.
    script = python.with_name("mangaba-desktop")
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    script.chmod(0o755)
    assert desktop_entry.command() == [str(script)]


def test_the_command_line_installs_into_the_users_data_folder(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    run = [sys.executable, "-m", "mangaba_desktop"]

    added = subprocess.run(
        [*run, "--install-desktop-entry"], env=env, capture_output=True, text=True, timeout=60
    )
    gone = subprocess.run(
        [*run, "--remove-desktop-entry"], env=env, capture_output=True, text=True, timeout=60
    )

    assert added.returncode == 0, added.stderr
    assert "Added Mangaba Desktop to the menu" in added.stdout
    assert gone.returncode == 0, gone.stderr
    assert "Removed Mangaba Desktop from the menu (4 files)" in gone.stdout
    assert not (tmp_path / "share" / ENTRY).exists()


def test_an_unwritable_data_folder_is_reported_not_a_traceback(tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "share"
    blocked.write_text("a file where the folder should be", encoding="utf-8")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocked))

    assert desktop_entry.main("install") == 1
    assert "Could not change the menu" in capsys.readouterr().err


def test_entry_text_keeps_the_rest_of_the_shipped_entry():
    keys = _keys(entry_text(["/x/mangaba-desktop"]))

    assert keys["Type"] == "Application"
    assert keys["StartupWMClass"] == "mangaba-desktop"
    assert keys["Categories"] == "Utility;"


def test_an_appimage_is_started_as_the_appimage_not_from_its_mount(monkeypatch, tmp_path):
    appimage = tmp_path / "Mangaba_Desktop-0.1.0-x86_64.AppImage"
    appimage.write_bytes(b"\x7fELF")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/tmp/.mount_MangabXYZ/usr/lib/mangaba-desktop")
    monkeypatch.setenv("APPIMAGE", str(appimage))
    monkeypatch.setenv("APPDIR", "/tmp/.mount_MangabXYZ")
    assert desktop_entry.command() == [str(appimage)]
    # Not run from an AppImage: the binary itself.
    monkeypatch.delenv("APPIMAGE")
    assert desktop_entry.command() == ["/tmp/.mount_MangabXYZ/usr/lib/mangaba-desktop"]


def test_another_appimages_variables_do_not_redirect_the_entry(monkeypatch, tmp_path):
    # Started from an editor's terminal, itself an AppImage: its variables are inherited.
    editor = tmp_path / "Editor.AppImage"
    editor.write_bytes(b"\x7fELF")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/mangaba-desktop/mangaba-desktop")
    monkeypatch.setenv("APPIMAGE", str(editor))
    monkeypatch.setenv("APPDIR", "/tmp/.mount_EditorABC")
    assert desktop_entry.command() == ["/opt/mangaba-desktop/mangaba-desktop"]
