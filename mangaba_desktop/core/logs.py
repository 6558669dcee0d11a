"""The app's log file: ``logs/mangaba-desktop.log`` in the data folder, rotated, keys redacted."""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path

from .providers.secrets import KeyStore, RedactingFilter

LOG_FOLDER = "logs"
LOG_NAME = "mangaba-desktop.log"
MAX_BYTES = 1024 * 1024
BACKUP_COUNT = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_HANDLER_NAME = "mangaba-desktop-file"
_root_level_before: int | None = None


def _installed() -> RotatingFileHandler | None:
    for handler in logging.getLogger().handlers:
        if handler.get_name() == _HANDLER_NAME and isinstance(handler, RotatingFileHandler):
            return handler
    return None


def setup_logging(directory: Path, keys: KeyStore | None = None) -> Path:
    """Write INFO and above from every logger to the app's log file.

    Calling it again does not add a second handler: the same file keeps its handler (with the
    new ``keys``), another folder replaces it.

    Args:
        directory: the data folder; the file goes in its ``logs`` folder.
        keys: the key store whose keys are taken out of every record.

    Returns:
        The log file's path.
    """
    global _root_level_before
    path = Path(directory) / LOG_FOLDER / LOG_NAME
    handler = _installed()
    if handler is not None and handler.baseFilename != os.path.abspath(path):
        shutdown_logging()
        handler = None
    if handler is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
        )
        handler.set_name(_HANDLER_NAME)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(FORMAT))
        root = logging.getLogger()
        if root.level > logging.INFO:
            # The root logger drops INFO by default (WARNING) before any handler sees it.
            _root_level_before = root.level
            root.setLevel(logging.INFO)
        root.addHandler(handler)
    for old in [each for each in handler.filters if isinstance(each, RedactingFilter)]:
        handler.removeFilter(old)
    if keys is not None:
        handler.addFilter(RedactingFilter(keys))
    return path


def shutdown_logging() -> None:
    """Remove and close the log file's handler (a no-op when none is installed)."""
    global _root_level_before
    handler = _installed()
    if handler is None:
        return
    root = logging.getLogger()
    root.removeHandler(handler)
    handler.close()
    if _root_level_before is not None:
        root.setLevel(_root_level_before)
        _root_level_before = None
