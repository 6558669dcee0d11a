"""Where the app keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "MANGABA_DATA_DIR"
DATABASE_NAME = "mangaba.sqlite3"


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory, creating it if needed.

    Precedence: an explicit override (``--data-dir``), then ``MANGABA_DATA_DIR``, then the
    platform's user data directory.
    """
    if override:
        path = Path(override)
    elif os.environ.get(DATA_DIR_ENV):
        path = Path(os.environ[DATA_DIR_ENV])
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("mangaba-desktop", appauthor=False))
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path(directory: Path) -> Path:
    return directory / DATABASE_NAME
