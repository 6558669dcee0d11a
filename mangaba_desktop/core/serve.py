"""The headless node: ``mangaba-desktop serve`` runs one agent as an A2A server, no window."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from .network.a2a_server import TOKEN_ENV, TOKEN_ID, A2AServer, is_loopback, server_token
from .store import Agent


def _print(text: str) -> None:
    print(text, flush=True)


def find_agent(agents: list[Agent], wanted: str) -> Agent | None:
    """The agent whose id is ``wanted``, else the one with that name (any case)."""
    by_id = next((a for a in agents if a.id == wanted), None)
    if by_id is not None:
        return by_id
    return next((a for a in agents if a.name.casefold() == wanted.casefold()), None)


async def serve(args: argparse.Namespace) -> int:
    """Serve ``args.agent`` until SIGINT or SIGTERM; returns the exit code."""
    from .agent import Runtime
    from .providers.secrets import KeySource, KeyStore

    runtime = await Runtime.open(Path(args.data_dir) if args.data_dir else None)
    try:
        await runtime.agents.default()  # a new data folder has the default agent, as in the app
        agents = await runtime.agents.list()
        agent = find_agent(agents, args.agent)
        if agent is None:
            known = ", ".join(f"{a.name} ({a.id})" for a in agents)
            print(f"There is no agent “{args.agent}”. Agents: {known}", file=sys.stderr)
            return 2
        token = None
        keys = KeyStore(audit=runtime.audit)
        if not is_loopback(args.host):
            token = server_token(keys)
            _print(f"{args.host} is reachable from other computers: requests need a bearer token.")
        server = A2AServer(
            runtime,
            host=args.host,
            port=args.port,
            token=token,
            primary=agent.id,
            only=[agent.id],  # --agent NAME serves that agent, not the whole data folder
            public_url=args.public_url,
        )
        try:
            await server.start(actor="user")  # the person who ran ``serve``
        except (OSError, RuntimeError) as exc:
            print(f"Cannot serve {agent.name}: {exc}", file=sys.stderr)
            return 1
        try:
            _print(f"serving {agent.name} at {server.url}")
            if token is not None:
                kept = keys.source(TOKEN_ID, TOKEN_ENV)
                if args.show_token or kept == KeySource.SESSION:
                    if kept == KeySource.SESSION:
                        _print(
                            "No safe keyring here: this token lasts for this run only "
                            f"(set {TOKEN_ENV} to keep one)."
                        )
                    _print(f"token: {token}")
                elif kept == KeySource.ENVIRONMENT:
                    _print(f"The token is the one in {TOKEN_ENV}.")
                else:
                    _print(
                        "The token is in the keyring (mangaba-desktop / a2a-server); "
                        "run again with --show-token to print it."
                    )
            await _until_signalled()
        finally:
            await server.stop()
        return 0
    finally:
        await runtime.close()


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    numbers = (signal.SIGINT, signal.SIGTERM)
    added = []
    for number in numbers:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows
            loop.add_signal_handler(number, stop.set)
            added.append(number)
    try:
        # Without loop signal handlers (Windows), asyncio.run turns Ctrl+C into a cancellation
        # of this wait, and the caller's cleanup still runs.
        await stop.wait()
    finally:
        for number in added:
            loop.remove_signal_handler(number)
