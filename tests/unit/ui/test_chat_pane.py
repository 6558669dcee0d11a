"""The Chat pane, driven as a user would, on the real app and a real SQLite file."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, Qt
from PySide6.QtTest import QTest

from mangaba_desktop.core import events
from mangaba_desktop.core.paths import database_path
from mangaba_desktop.ui.bridge import REPAINT_INTERVAL_MS
from tests.helpers.app import running_app, until


def type_and_send(pane, text: str) -> None:
    pane.composer.setFocus()
    if text.isascii():
        QTest.keyClicks(pane.composer, text)
    else:  # QTest types ASCII only; the rest arrives as an input method would send it
        pane.composer.insertPlainText(text)
    QTest.keyClick(pane.composer, Qt.Key.Key_Return)


def stored_messages(directory: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(database_path(directory))
    try:
        return db.execute("SELECT role, content, status FROM messages ORDER BY id").fetchall()
    finally:
        db.close()


def test_typed_message_streams_a_reply_and_survives_a_restart(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            app.use_mock("Olá! I am **here** to help.")
            finished = app.reply_finished()
            type_and_send(app.pane, "Meu nome é João")
            reply = (await asyncio.wait_for(finished, 60))["message"]
            assert reply.status == "complete"
            assert reply.content == "Olá! I am **here** to help."
            assert app.pane.composer.toPlainText() == ""
            assert [m.role for m in app.pane.messages.rows] == ["user", "assistant"]
            assert app.pane.conversations.rows[0].title == "Meu nome é João"
            assert "tokens/s" in app.window.speed_label.text()

        async with running_app(data_dir) as app:
            await until(lambda: len(app.pane.messages.rows) == 2)
            assert [c.title for c in app.pane.conversations.rows] == ["Meu nome é João"]
            contents = [m.content for m in app.pane.messages.rows]
            assert contents == ["Meu nome é João", "Olá! I am **here** to help."]

    loop.run_until_complete(scenario())


def test_shift_enter_makes_a_new_line_and_empty_messages_are_refused(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = app.pane
            pane.composer.setFocus()
            QTest.keyClicks(pane.composer, "   ")
            QTest.keyClick(pane.composer, Qt.Key.Key_Return)
            await until(pane.notice.isVisible)
            assert "empty" in pane.notice.text()
            assert pane.composer.toPlainText() == "   "  # refused in place, nothing lost
            pane.composer.clear()
            QTest.keyClicks(pane.composer, "line one")
            QTest.keyClick(pane.composer, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
            QTest.keyClicks(pane.composer, "line two")
            assert pane.composer.toPlainText() == "line one\nline two"
        assert stored_messages(data_dir) == []

    loop.run_until_complete(scenario())


def test_a_5mb_paste_is_refused_at_once_with_a_message(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = app.pane
            refusals: list[str] = []
            pane.composer.refused.connect(refusals.append)
            pane.composer.setPlainText("keep me")
            mime = QMimeData()
            mime.setText("x" * (5 * 1024 * 1024))
            started = time.perf_counter()
            pane.composer.insertFromMimeData(mime)
            elapsed = time.perf_counter() - started
            assert elapsed < 0.5
            assert refusals and "5,242,880" in refusals[0]
            await until(pane.notice.isVisible)
            assert pane.composer.toPlainText() == "keep me"

    loop.run_until_complete(scenario())


def test_stream_repaints_are_batched(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            long_reply = " ".join(f"word{i}" for i in range(1500))
            app.use_mock(long_reply)
            deltas: list[float] = []
            app.application.bus.subscribe(
                events.MESSAGE_DELTA, lambda _n, _p: deltas.append(time.perf_counter())
            )
            repaints: list[float] = []
            app.pane.bridge.text_grown.connect(lambda *_: repaints.append(time.perf_counter()))
            finished = app.reply_finished()
            type_and_send(app.pane, "stream a lot")
            reply = (await asyncio.wait_for(finished, 60))["message"]
            assert reply.content == long_reply
            shown = app.pane.messages.rows[-1].content
            assert shown == long_reply  # batching loses nothing
            assert len(deltas) > 100
            assert len(repaints) < len(deltas)
            span = max(repaints[-1] - repaints[0], 1e-3)
            gaps = [b - a for a, b in itertools.pairwise(repaints)]
            # No two flushes closer than the repaint interval, except the final flush at the end.
            assert sum(g < (REPAINT_INTERVAL_MS / 1000) * 0.8 for g in gaps) <= 1, (span, gaps)

    loop.run_until_complete(scenario())


def test_search_jumps_to_the_hit_in_another_conversation(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            store = app.application.store
            first = await store.create("Receitas")
            for i in range(120):
                await store.add_message(first.id, "user", f"message number {i}")
            await store.add_message(first.id, "user", "the secret ingredient is mangaba 🥭")
            for i in range(120):
                await store.add_message(first.id, "user", f"later message {i}")
            second = await store.create("Other")
            await store.add_message(second.id, "user", "unrelated")
            await until(lambda: app.pane.conversations.row_of(second.id) is not None)
            app.pane.select_conversation(second.id)
            await until(lambda: [m.content for m in app.pane.messages.rows] == ["unrelated"])

            dialog = app.pane.open_search()
            QTest.keyClicks(dialog.query, "secret ingred")
            hits = await dialog.run_search()
            assert [h.conversation_title for h in hits] == ["Receitas"]
            assert dialog.results.count() == 1
            QTest.keyClick(dialog.query, Qt.Key.Key_Return)
            await until(
                lambda: (
                    app.pane.current.id == first.id
                    and app.pane.message_view.currentIndex().isValid()
                )
            )
            selected = app.pane.message_view.currentIndex()
            assert app.pane.messages.message_at(selected.row()).content.startswith(
                "the secret ingredient"
            )
            assert app.pane.messages.has_older and app.pane.messages.has_newer

    loop.run_until_complete(scenario())


def test_stop_keeps_the_partial_reply_of_the_local_model(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            first_delta = app.next_event(events.MESSAGE_DELTA)
            finished = app.reply_finished()
            type_and_send(app.pane, "Write a very long story about a cat who sails the sea.")
            await asyncio.wait_for(first_delta, 120)
            await asyncio.sleep(0.3)
            assert app.pane.stop_button.isVisible()
            stop_pressed = time.perf_counter()
            QTest.keyClick(app.window, Qt.Key.Key_Escape)
            reply = (await asyncio.wait_for(finished, 5))["message"]
            assert time.perf_counter() - stop_pressed < 0.2
            assert reply.status == "interrupted"
            assert reply.content.strip()
            await until(app.pane.send_button.isVisible)
        rows = stored_messages(data_dir)
        assert rows[-1][2] == "interrupted" and rows[-1][1] == reply.content

    loop.run_until_complete(scenario())


@pytest.mark.parametrize("kind", ["md", "json"])
def test_export(loop, data_dir, tmp_path, kind):
    async def scenario():
        async with running_app(data_dir) as app:
            app.use_mock("A reply with `code`.")
            finished = app.reply_finished()
            type_and_send(app.pane, "Export me, por favor 😀")
            await asyncio.wait_for(finished, 60)
            target = tmp_path / f"out.{kind}"
            await app.pane.write_export(app.pane.current.id, kind, target)
            text = target.read_text(encoding="utf-8")
            if kind == "json":
                document = json.loads(text)
                assert [m["content"] for m in document["messages"]] == [
                    "Export me, por favor 😀",
                    "A reply with `code`.",
                ]
            else:
                assert "## You" in text and "Export me, por favor 😀" in text
                assert "## Assistant" in text and "A reply with `code`." in text

    loop.run_until_complete(scenario())


def test_rename_and_delete_conversation(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            store = app.application.store
            keep = await store.create("Keep")
            doomed = await store.create("Doomed")
            await store.add_message(doomed.id, "user", "bye")
            await until(lambda: len(app.pane.conversations.rows) == 2)
            assert [c.title for c in app.pane.conversations.rows] == ["Doomed", "Keep"]
            await store.rename(keep.id, "  Kept   safe ")
            await until(lambda: "Kept safe" in [c.title for c in app.pane.conversations.rows])
            row = app.pane.conversations.row_of(keep.id)
            assert app.pane.conversations.setData(app.pane.conversations.index(row), "Inline")
            await until(lambda: "Inline" in [c.title for c in app.pane.conversations.rows])
            assert (await store.get(keep.id)).title == "Inline"
            app.pane.select_conversation(doomed.id)
            await until(lambda: app.pane.current is not None and app.pane.current.id == doomed.id)
            app.pane.delete_conversation(app.pane.current, confirm=False)
            await until(lambda: len(app.pane.conversations.rows) == 1)
            assert [c.title for c in app.pane.conversations.rows] == ["Inline"]
            assert app.pane.current.id == keep.id
        assert stored_messages(data_dir) == []

    loop.run_until_complete(scenario())
