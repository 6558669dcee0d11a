"""Command line: ``mangaba-desktop [--data-dir DIR]`` opens the app;
``mangaba-desktop serve --agent NAME`` runs one agent as an A2A server without a window;
``mangaba-desktop --self-test`` checks the installation and exits;
``mangaba-desktop --install-desktop-entry`` adds it to the Linux menu."""

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
        "--self-test",
        action="store_true",
        help="check this installation without a window (a temporary data folder, one turn "
        "on the embedded model, the keyring), print a report and exit (0: it works)",
    )
    entry = parser.add_mutually_exclusive_group()
    entry.add_argument(
        "--install-desktop-entry",
        action="store_true",
        help="Linux: add this copy of the app to the menu, for you (a desktop entry and its "
        "icon in ~/.local/share), and exit",
    )
    entry.add_argument(
        "--remove-desktop-entry",
        action="store_true",
        help="Linux: take the app out of the menu again, and exit",
    )
    parser.add_argument(
        "--quit-after-paint",
        action="store_true",
        help=argparse.SUPPRESS,  # start-up benchmark: print paint time and exit
    )
    return parser.parse_args(argv)


def parse_serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mangaba-desktop serve",
        description="Serve one agent over A2A (protocol 1.0), without a window, until SIGTERM.",
    )
    parser.add_argument("--agent", required=True, metavar="NAME", help="the agent's name or id")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the interface to listen on (default 127.0.0.1; any other needs a bearer token, "
        "made and kept in the keyring)",
    )
    parser.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    parser.add_argument("--data-dir", metavar="DIR", help="where history and settings live")
    parser.add_argument("--show-token", action="store_true", help="print the bearer token")
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="the address other computers reach this node at, for its agent card "
        "(default: this host's name and the port)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["serve"]:
        import asyncio

        from .core.serve import serve

        return asyncio.run(serve(parse_serve_args(arguments[1:])))
    args = parse_args(argv)
    if args.self_test:
        from .selftest import run as self_test

        return self_test()
    if args.install_desktop_entry or args.remove_desktop_entry:
        from .desktop_entry import main as desktop_entry

        return desktop_entry("install" if args.install_desktop_entry else "remove")
    from .ui.app import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
