"""Command line: ``mangaba-desktop [--data-dir DIR]`` opens the app."""

from __future__ import annotations

import argparse
import sys

from . import APP_NAME, __version__


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mangaba-desktop", description=APP_NAME)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where history and settings live (default: the user data folder; "
        "MANGABA_DATA_DIR also sets it)",
    )
    parser.add_argument(
        "--quit-after-paint",
        action="store_true",
        help=argparse.SUPPRESS,  # start-up benchmark: print paint time and exit
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .ui.app import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
