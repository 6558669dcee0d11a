"""``mangaba-desktop serve``: the headless node in a subprocess, reached from the app's client,
stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mangaba_desktop.core.agent import Runtime
from mangaba_desktop.core.network import NodeKind
from mangaba_desktop.core.network.a2a_client import add_remote_agent
from tests.helpers.openai_server import OpenAIServer, free_port
from tests.helpers.providers import configure, local_provider
from tests.helpers.sources import ScriptedSource

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX"),
]

ROOT = Path(__file__).resolve().parents[2]


def start_serve(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        # No keyring daemon in a test: nothing here needs one.
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MANGABA_DATA_DIR", None)
    command = [sys.executable, "-m", "mangaba_desktop", "serve", "--data-dir", str(data_dir)]
    return subprocess.Popen(
        [*command, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def first_line(process: subprocess.Popen[str], timeout_s: float = 20.0) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout_s)
    return line.strip()


@pytest.mark.asyncio
async def test_serve_answers_the_apps_client_and_stops_on_sigterm(tmp_path):
    with OpenAIServer(reply="Answered from another machine.") as model:
        node_dir = tmp_path / "node"
        node_dir.mkdir()
        configure(
            node_dir,
            local_provider(model.base_url, "echo", timeout_s=5.0),
            default_model="test/echo",
        )
        port = free_port()
        process = start_serve(node_dir, "--agent", "mangaba", "--port", str(port))
        try:
            line = await first_line(process)
            assert line == f"serving Mangaba at http://127.0.0.1:{port}/", (
                line,
                process.stderr.read() if process.poll() is not None else "",
            )

            runtime = await Runtime.open(tmp_path / "app", completions=ScriptedSource(["x"]))
            try:
                node = await add_remote_agent(runtime, f"http://127.0.0.1:{port}")
                assert node.kind == NodeKind.REMOTE and node.name == "Mangaba"
                asker = await runtime.agents.default()
                reply = await runtime.network.request(
                    asker.id, node.id, "chat", {"message": "Hello?"}, timeout_s=20
                )
                assert reply.text == "Answered from another machine."
            finally:
                await runtime.close()

            process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, 10)
            assert code == 0, process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_serve_an_unknown_agent_lists_the_agents_and_exits_2(tmp_path):
    process = start_serve(tmp_path, "--agent", "Nobody", "--port", "0")
    _out, err = process.communicate(timeout=30)

    assert process.returncode == 2
    assert "There is no agent “Nobody”" in err and "Mangaba (" in err
