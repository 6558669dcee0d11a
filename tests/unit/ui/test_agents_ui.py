"""Agents and slash commands in the Chat pane, driven as a user would, on the real app."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from mangaba_desktop.core.paths import database_path
from mangaba_desktop.core.personas import TEMPLATES
from mangaba_desktop.ui.agents_dialog import AgentsDialog
from tests.helpers.app import running_app, until


def rows(directory: Path, sql: str, params: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(database_path(directory))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def test_typing_a_slash_offers_the_commands_and_runs_the_chosen_one(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            app.use_mock("Good morning")
            composer = app.pane.composer
            composer.setFocus()
            QTest.keyClicks(composer, "/tr")
            completer = composer.command_completer
            await until(completer.popup().isVisible)
            assert completer.currentCompletion() == "/translate"
            composer.complete_command(completer.currentCompletion())
            assert composer.toPlainText() == "/translate "
            QTest.keyClicks(composer, "english Bom dia")
            finished = app.reply_finished()
            QTest.keyClick(composer, Qt.Key.Key_Return)
            reply = (await asyncio.wait_for(finished, 60))["message"]
            assert reply.content == "Good morning"
        assert rows(data_dir, "SELECT role, content FROM messages ORDER BY id") == [
            ("user", "/translate english Bom dia"),
            ("assistant", "Good morning"),
        ]
        assert rows(data_dir, "SELECT context_type FROM contexts") == [("task",)]

    loop.run_until_complete(scenario())


def test_unknown_command_is_refused_in_place_and_help_needs_no_model(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = app.pane
            pane.composer.setFocus()
            QTest.keyClicks(pane.composer, "/frobnicate now")
            QTest.keyClick(pane.composer, Qt.Key.Key_Return)
            await until(pane.notice.isVisible)
            assert "no command /frobnicate" in pane.notice.text()
            assert pane.composer.toPlainText() == "/frobnicate now"
            assert rows(data_dir, "SELECT count(*) FROM messages") == [(0,)]

            pane.composer.clear()
            finished = app.reply_finished()
            QTest.keyClicks(pane.composer, "/help")
            pane.composer.command_completer.popup().hide()
            QTest.keyClick(pane.composer, Qt.Key.Key_Return)
            reply = (await asyncio.wait_for(finished, 20))["message"]
            assert reply.content.startswith("Commands:") and "/translate" in reply.content
            await until(lambda: len(pane.messages.rows) == 2)

    loop.run_until_complete(scenario())


def test_agents_are_created_from_a_template_and_answer_the_chat_they_are_picked_for(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            app.use_mock("Noted.")
            pane = app.pane
            dialog = AgentsDialog(app.application.runtime.agents, app.application.spawn, pane)
            dialog.open()
            finance = await dialog.create_from(next(t for t in TEMPLATES if t.name == "Finance"))
            dialog.name_edit.setText("Fin")
            dialog.tags_edit.setText("finance, reports")
            assert (await dialog.save()).name == "Fin"
            dialog.tags_edit.setText("bad tag!")
            assert await dialog.save() is None
            assert "may hold only letters" in dialog.error_label.text()
            # Closing with edits pending saves them rather than dropping what was typed.
            dialog.tags_edit.setText("finance, reports")
            dialog.persona_edit.setPlainText("You answer about money, briefly.")
            dialog.close()
            await until(lambda: not dialog.isVisible())
            # Freed here, on the GUI thread: a collection on a worker thread makes Qt warn.
            dialog.deleteLater()
            await asyncio.sleep(0)
            gc.collect()
            await until(lambda: pane.agent_combo.findData(finance.id) >= 0)

            finished = app.reply_finished()
            pane.composer.setFocus()
            QTest.keyClicks(pane.composer, "Quanto rende a poupanca?")
            QTest.keyClick(pane.composer, Qt.Key.Key_Return)
            await asyncio.wait_for(finished, 60)
            index = pane.agent_combo.findData(finance.id)
            pane.agent_combo.setCurrentIndex(index)
            pane.agent_combo.activated.emit(index)
            await until(lambda: pane.current.agent_id == finance.id)
            finished = app.reply_finished()
            QTest.keyClicks(pane.composer, "E o CDB?")
            QTest.keyClick(pane.composer, Qt.Key.Key_Return)
            await asyncio.wait_for(finished, 60)

        [(default_id,)] = rows(data_dir, "SELECT id FROM agents WHERE name = 'Mangaba'")
        assert rows(
            data_dir, "SELECT name, tags, persona FROM agents WHERE id = ?", (finance.id,)
        ) == [("Fin", '["finance", "reports"]', "You answer about money, briefly.")]
        assert rows(data_dir, "SELECT agent_id FROM contexts ORDER BY id") == [
            (default_id,),
            (finance.id,),
        ]
        assert rows(data_dir, "SELECT agent_id FROM conversations") == [(finance.id,)]

    loop.run_until_complete(scenario())


def test_selecting_a_reply_tells_which_contexts_it_was_given(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            app.use_mock("Às 18h.")
            runtime = app.application.runtime
            agent = await runtime.agents.default()
            fact = await runtime.contexts.add(agent.id, "O escritório fecha às 18h em dezembro.")
            selected: list[list[int]] = []
            app.pane.reply_selected.connect(selected.append)

            finished = app.reply_finished()
            app.pane.composer.setFocus()
            QTest.keyClicks(app.pane.composer, "A que horas fecha o escritorio?")
            QTest.keyClick(app.pane.composer, Qt.Key.Key_Return)
            reply = (await asyncio.wait_for(finished, 60))["message"]
            assert reply.used_context_ids == [fact.id]

            await until(lambda: len(app.pane.messages.rows) == 2)
            view = app.pane.message_view
            view.setCurrentIndex(app.pane.messages.index(1))
            await until(lambda: selected and selected[-1] == [fact.id])
            view.setCurrentIndex(app.pane.messages.index(0))
            await until(lambda: selected[-1] == [])

    loop.run_until_complete(scenario())


@pytest.mark.model
def test_finding_memories_by_meaning_embeds_them_and_stays_on_after_a_restart(loop, data_dir):
    async def scenario():
        async with running_app(data_dir) as app:
            runtime = app.application.runtime
            agent = await runtime.agents.default()
            await runtime.contexts.add(agent.id, "Invoices are paid on the fifth business day.")
            action = app.window.embeddings_action
            assert not action.isChecked() and runtime.contexts.embedder is None

            action.trigger()
            await runtime.contexts.wait_indexing()
            assert rows(data_dir, "SELECT count(*) FROM contexts WHERE embeddings IS NULL") == [
                (0,)
            ]
            found = await runtime.contexts.retrieve("When do bills get settled?", agent.id, None)
            assert [r.context.content for r in found][:1] == [
                "Invoices are paid on the fifth business day."
            ]

        async with running_app(data_dir) as app:
            assert app.window.embeddings_action.isChecked()
            assert app.application.runtime.contexts.embedder is not None
            app.window.embeddings_action.trigger()
            await until(lambda: app.application.runtime.contexts.embedder is None)

        async with running_app(data_dir) as app:
            assert not app.window.embeddings_action.isChecked()

    loop.run_until_complete(scenario())


def test_plugin_commands_are_offered_and_a_failing_plugin_is_named_in_the_status_bar(
    loop, data_dir
):
    from mangaba_desktop.core.plugins import Plugin

    class Broken(Plugin):
        name = "broken-hook"
        version = "1.0"
        description = "Raises before every request."

        def before_request(self, request):
            raise RuntimeError("it always breaks")

    async def scenario():
        async with running_app(data_dir) as app:
            runtime = app.application.runtime
            composer = app.pane.composer
            composer.setFocus()
            # The shipped plugin's command is offered with the app's own.
            QTest.keyClicks(composer, "/red")
            completer = composer.command_completer
            await until(completer.popup().isVisible)
            assert completer.currentCompletion() == "/redact"
            composer.clear()
            # Turned off: no longer offered.
            runtime.plugins.apply_disabled(["pii-redaction"])
            QTest.keyClicks(composer, "/red")
            await asyncio.sleep(0.1)
            assert completer.completionCount() == 0 or completer.currentCompletion() != "/redact"
            composer.clear()
            completer.popup().hide()

            # A plugin that fails is turned off, the reply still comes, and the user is told.
            await runtime.plugins.register(Broken())
            app.use_mock("Still answered")
            finished = app.reply_finished()
            QTest.keyClicks(composer, "Hello")
            QTest.keyClick(composer, Qt.Key.Key_Return)
            reply = (await asyncio.wait_for(finished, 60))["message"]
            assert reply.content == "Still answered"
            status = app.window.statusBar()
            await until(lambda: "broken-hook" in status.currentMessage())
            assert "it always breaks" in status.currentMessage()
            assert "off until the app restarts" in status.currentMessage()

    loop.run_until_complete(scenario())
