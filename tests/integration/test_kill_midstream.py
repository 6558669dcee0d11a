"""The app is killed (SIGKILL: power cut, OOM killer) while a reply streams: at the next start
the question is intact and the reply is kept, marked interrupted, with what had arrived."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.paths import database_path
from mangaba_desktop.core.store import ConversationStore, Database, MessageStatus
from tests.helpers.db import query_file
from tests.helpers.streaming_child import QUESTION

REPO = Path(__file__).resolve().parents[2]


def partial_reply(db_path: Path) -> str:
    """The reply's text as it is on disk now ('' if not there yet)."""
    if not db_path.exists():  # do not create the file before the child does
        return ""
    try:
        found = query_file(
            db_path,
            "SELECT content FROM messages WHERE role = 'assistant' AND status = 'streaming'",
        )
    except sqlite3.OperationalError:  # the child is still creating the schema
        return ""
    return found[0][0] if found else ""


def wait_for_partial_reply(db_path: Path, child: subprocess.Popen, within: float) -> str:
    """Poll the child's file, from this process, until its reply has text on disk."""
    deadline = time.monotonic() + within
    while not (seen := partial_reply(db_path)):
        if child.poll() is not None:
            pytest.fail(f"the child stopped on its own:\n{child.stderr.read()}")
        assert time.monotonic() < deadline, "no partial reply reached the disk"
        time.sleep(0.05)
    return seen


def kill_child_mid_stream(data_dir: Path) -> str:
    """Start the app's core in a child process on ``data_dir``, SIGKILL it once its reply has
    text on disk; return that text."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.streaming_child"],
        cwd=REPO,
        env={**os.environ, "MANGABA_DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = wait_for_partial_reply(database_path(data_dir), child, within=30)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return seen


@pytest.mark.asyncio
async def test_reply_survives_a_kill_mid_stream(tmp_path):
    db_path = database_path(tmp_path)
    seen = kill_child_mid_stream(tmp_path)

    database = Database(db_path)
    try:
        store = ConversationStore(database, EventBus())
        assert await store.recover_interrupted() == 1
        [conversation] = await store.list()
        _, messages = await store.export(conversation.id)
    finally:
        database.close()

    assert query_file(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert conversation.title == QUESTION
    [asked, reply] = messages
    assert (asked.role, asked.content, asked.status) == ("user", QUESTION, MessageStatus.COMPLETE)
    assert reply.role == "assistant"
    assert reply.status == MessageStatus.INTERRUPTED
    assert reply.content.startswith(seen)  # later snapshots may have landed before the kill
    assert reply.content.startswith("w0 w1 w2 ")
