"""The Context pane, driven as a user would, on a real SQLite file and the real stores."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QItemSelectionModel, QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QComboBox

from mangaba_desktop.core import events
from mangaba_desktop.core.context import AGENT_WIDE, ContextFilter, ContextStore, split_passages
from mangaba_desktop.core.context import passages as passages_module
from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.store import (
    AgentStore,
    ContextType,
    ConversationStore,
    Database,
    Priority,
)
from mangaba_desktop.ui.context_browser import ContextPane, ContextTableModel
from mangaba_desktop.ui.context_browser import model as model_module
from mangaba_desktop.ui.context_browser.model import HIGHLIGHT, Column
from mangaba_desktop.ui.context_browser.pane import EMPTY_STORE
from tests.helpers.app import until
from tests.helpers.db import query_file


class Spawner:
    """The app's ``spawn``: runs coroutines on the loop and keeps their tasks, so that a test
    can wait for all of them and see their errors."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def __call__(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))


@dataclass
class World:
    path: Path
    bus: EventBus
    contexts: ContextStore
    agents: AgentStore
    conversations: ConversationStore
    spawn: Spawner


@pytest.fixture
def world(database: Database, db_path: Path, bus: EventBus) -> World:
    return World(
        db_path,
        bus,
        ContextStore(database, bus),
        AgentStore(database, bus),
        ConversationStore(database, bus),
        Spawner(),
    )


@dataclass
class Seeded:
    default: str
    researcher: str
    trip_session: str
    ids: dict[str, int]


async def seed(world: World) -> Seeded:
    default = (await world.agents.list())[0].id
    researcher = (await world.agents.create("Researcher")).id
    trip = await world.conversations.create("Trip to Lisbon", agent_id=default)
    assert trip.session_id is not None
    add = world.contexts.add
    ids = {
        "lisbon": await add(
            default,
            "The user flies to Lisbon in May",
            ContextType.TASK,
            session_id=trip.session_id,
            priority=Priority.HIGH,
            tags="travel",
        ),
        "name": await add(
            default,
            "The user's name is João",
            ContextType.USER_PROFILE,
            priority=Priority.CRITICAL,
            tags="profile",
        ),
        "python": await add(
            default,
            "Python dataclasses take slots since 3.10",
            ContextType.KNOWLEDGE,
            priority=Priority.MEDIUM,
            tags="python, code",
        ),
        "espresso": await add(
            researcher,
            "foo barista notes on espresso",
            ContextType.MEMORY,
            priority=Priority.LOW,
            tags="coffee",
        ),
        "portuguese": await add(
            researcher, "Always answer in Portuguese", ContextType.SYSTEM, priority=Priority.MEDIUM
        ),
    }
    return Seeded(default, researcher, trip.session_id, {k: c.id or 0 for k, c in ids.items()})


@contextlib.asynccontextmanager
async def opened(qtbot: Any, world: World) -> AsyncIterator[ContextPane]:
    pane = ContextPane(world.contexts, world.agents, world.conversations, world.bus, world.spawn)
    qtbot.addWidget(pane)
    pane.resize(1200, 700)
    pane.show()
    await pane.start()
    try:
        yield pane
    finally:
        await world.spawn.settle()
        await pane.flush()
        await world.spawn.settle()


def shown_ids(pane: ContextPane) -> list[int] | None:
    """The ids in the table, top to bottom; None while a row is still loading."""
    rows = [pane.model.context_at(r) for r in range(pane.model.rowCount())]
    return None if any(r is None for r in rows) else [r.id for r in rows if r is not None]


def shown_set(pane: ContextPane) -> set[int] | None:
    ids = shown_ids(pane)
    return None if ids is None else set(ids)


def choose(combo: QComboBox, data: object) -> None:
    index = 0 if data is None else combo.findData(data)
    assert index >= 0, f"{data!r} is not offered"
    combo.setCurrentIndex(index)


def stored(world: World, context_id: int) -> tuple[Any, ...] | None:
    rows = query_file(
        world.path,
        "SELECT content, tags, priority, context_type FROM contexts WHERE id = ?",
        (context_id,),
    )
    return rows[0] if rows else None


def select_rows(pane: ContextPane, ids: list[int]) -> None:
    model = pane.model
    selection = pane.table.selectionModel()
    flag = QItemSelectionModel.SelectionFlag
    for number, context_id in enumerate(ids):
        row = model.row_of(context_id)
        assert row is not None
        mode = flag.ClearAndSelect if number == 0 else flag.Select
        selection.setCurrentIndex(model.index(row, 0), mode | flag.Rows)


def test_empty_store_explains_itself_and_a_new_context_appears(loop, qtbot, world):
    async def scenario():
        async with opened(qtbot, world) as pane:
            assert pane.stack.currentWidget() is pane.empty_label
            assert pane.empty_label.text() == EMPTY_STORE
            assert "as you chat" in pane.empty_label.text()
            agent = (await world.agents.list())[0]
            added = await world.contexts.add(agent.id, "The user likes green tea")
            await until(lambda: shown_ids(pane) == [added.id])
            assert pane.stack.currentWidget() is pane.table
            assert pane.count_label.text() == "1 context"
            preview = pane.model.index(0, Column.CONTENT).data()
            assert preview == "The user likes green tea"
            assert pane.model.index(0, Column.AGENT).data() == agent.name

    loop.run_until_complete(scenario())


def test_bursts_of_changes_refresh_the_table_a_few_times_not_once_each(loop, qtbot, world):
    async def scenario():
        agent = (await world.agents.list())[0]
        async with opened(qtbot, world) as pane:
            reloads = []
            original = pane.model.reload

            async def counted_reload(rows):
                reloads.append(time.perf_counter())
                return await original(rows)

            pane.model.reload = counted_reload
            started = time.perf_counter()
            for i in range(40):
                await world.contexts.add(agent.id, f"fact number {i}")
            await until(lambda: pane.model.rowCount() == 40)
            elapsed = time.perf_counter() - started
            # 40 changes; the table is read again at most once per 300 ms, plus the last one.
            assert 1 <= len(reloads) <= elapsed / 0.3 + 2, (len(reloads), elapsed)

    loop.run_until_complete(scenario())


def test_filters_by_type_priority_tag_agent_and_session(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        ids = s.ids
        async with opened(qtbot, world) as pane:
            assert shown_set(pane) == set(ids.values())
            row = pane.model.row_of(ids["lisbon"])
            assert pane.model.index(row, Column.SESSION).data() == "Trip to Lisbon"
            assert pane.model.index(row, Column.PRIORITY).data() == "High"
            assert pane.model.index(row, Column.TYPE).data() == "Task"
            row = pane.model.row_of(ids["name"])
            assert pane.model.index(row, Column.SESSION).data() == "agent-wide"

            choose(pane.type_filter, "task")
            await until(lambda: shown_ids(pane) == [ids["lisbon"]])
            choose(pane.type_filter, None)
            choose(pane.priority_filter, int(Priority.MEDIUM))
            await until(lambda: shown_set(pane) == {ids["python"], ids["portuguese"]})
            choose(pane.priority_filter, None)

            QTest.keyClicks(pane.tag_filter, "#Python")
            await until(lambda: shown_ids(pane) == [ids["python"]])
            pane.tag_filter.clear()
            await until(lambda: shown_set(pane) == set(ids.values()))

            choose(pane.agent_filter, s.researcher)
            await until(lambda: shown_set(pane) == {ids["espresso"], ids["portuguese"]})
            assert pane.session_filter.findData(s.trip_session) < 0  # not this agent's chat

            choose(pane.agent_filter, s.default)
            await until(lambda: pane.session_filter.findData(s.trip_session) >= 0)
            await until(lambda: shown_set(pane) == {ids["lisbon"], ids["name"], ids["python"]})
            assert pane.session_filter.itemText(pane.session_filter.findData(s.trip_session)) == (
                "Trip to Lisbon"
            )
            choose(pane.session_filter, s.trip_session)
            await until(lambda: shown_ids(pane) == [ids["lisbon"]])
            choose(pane.session_filter, AGENT_WIDE)
            await until(lambda: shown_set(pane) == {ids["name"], ids["python"]})

            choose(pane.type_filter, "memory")
            await until(lambda: shown_ids(pane) == [])
            assert pane.stack.currentWidget() is pane.empty_label
            assert pane.empty_label.text() == "No context matches these filters."

    loop.run_until_complete(scenario())


def test_a_tag_filter_that_is_not_a_tag_is_explained(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        async with opened(qtbot, world) as pane:
            QTest.keyClicks(pane.tag_filter, 'tra"vel')
            await until(pane.filter_notice.isVisible)
            assert "may hold only" in pane.filter_notice.text()
            assert shown_set(pane) == set(s.ids.values())  # the table is left as it was
            pane.tag_filter.setText("travel")
            await until(lambda: shown_ids(pane) == [s.ids["lisbon"]])
            assert not pane.filter_notice.isVisible()

    loop.run_until_complete(scenario())


def test_full_text_search_and_hostile_query_syntax(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        ids = s.ids
        async with opened(qtbot, world) as pane:
            failures: list[str] = []
            pane.model.failed.connect(failures.append)
            QTest.keyClicks(pane.search_box, "lisb")  # the last word is a prefix
            await until(lambda: shown_ids(pane) == [ids["lisbon"]])
            pane.search_box.clear()
            QTest.keyClicks(pane.search_box, '"foo OR (bar*')
            await until(lambda: shown_ids(pane) == [ids["espresso"]])
            for hostile in ["*", "(", '"', "NEAR(", "OR", "AND (", ")))", "-x", "^a", "a:b"]:
                pane.search_box.setText(hostile)
                assert await pane.apply_filters() is not None, hostile
                assert shown_ids(pane) is not None
            pane.search_box.setText("joão")  # accents and case do not matter
            assert await pane.apply_filters() == 1
            assert shown_ids(pane) == [ids["name"]]
            assert failures == []

    loop.run_until_complete(scenario())


def test_clicking_the_priority_header_sorts_by_priority(loop, qtbot, world, monkeypatch):
    async def scenario():
        s = await seed(world)
        async with opened(qtbot, world) as pane:
            header = pane.table.horizontalHeader()
            x = header.sectionViewportPosition(Column.PRIORITY) + 10
            levels = {
                s.ids["lisbon"]: 3,
                s.ids["name"]: 4,
                s.ids["python"]: 2,
                s.ids["espresso"]: 1,
                s.ids["portuguese"]: 2,
            }

            def expected(descending: bool) -> list[int]:
                return sorted(levels, key=lambda i: (levels[i], i), reverse=descending)

            for _ in range(2):
                QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, 5))
                descending = header.sortIndicatorOrder() == Qt.SortOrder.DescendingOrder
                assert header.sortIndicatorSection() == Column.PRIORITY
                await until(lambda d=descending: shown_ids(pane) == expected(d))
            assert pane.model.sort_key == "priority"

            # Ordering a big table by its text would sort every row for each page: refused.
            monkeypatch.setattr(model_module, "MAX_UNINDEXED_SORT_ROWS", 3)
            messages = []
            pane.status_message.connect(messages.append)
            x = header.sectionViewportPosition(Column.CONTENT) + 10
            QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, 5))
            assert messages and "Sorting 5 contexts by content" in messages[-1]
            assert header.sortIndicatorSection() == Column.PRIORITY
            assert pane.model.sort_key == "priority"

    loop.run_until_complete(scenario())


def test_editing_content_tags_and_priority_is_stored(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        target = s.ids["python"]
        async with opened(qtbot, world) as pane:
            select_rows(pane, [target])
            editor = pane.editor
            await until(lambda: editor.context_id == target)
            assert editor.content.toPlainText() == "Python dataclasses take slots since 3.10"
            assert editor.tags.text() == "python, code"
            assert not editor.save_button.isEnabled()
            editor.content.selectAll()
            editor.content.insertPlainText("Dataclasses gained slots=True in Python 3.10")
            editor.tags.selectAll()
            QTest.keyClicks(editor.tags, "python, stdlib")
            editor.priority.setCurrentIndex(editor.priority.findData(int(Priority.HIGH)))
            assert editor.dirty and editor.save_button.isEnabled()
            editor.save_button.click()
            await until(
                lambda: (
                    stored(world, target)
                    == (
                        "Dataclasses gained slots=True in Python 3.10",
                        '["python", "stdlib"]',
                        3,
                        "knowledge",
                    )
                )
            )
            await until(lambda: not editor.dirty)
            row = pane.model.row_of(target)
            await until(
                lambda: (
                    pane.model.index(pane.model.row_of(target) or 0, Column.CONTENT).data()
                    == "Dataclasses gained slots=True in Python 3.10"
                )
            )
            row = pane.model.row_of(target)
            assert pane.model.index(row, Column.TAGS).data() == "python, stdlib"
            assert pane.model.index(row, Column.PRIORITY).data() == "High"
            assert pane.table.currentIndex().row() == row  # still selected after the refresh

            editor.content.selectAll()
            editor.content.insertPlainText("scratch that")
            editor.revert_button.click()
            assert editor.content.toPlainText() == "Dataclasses gained slots=True in Python 3.10"
            assert not editor.dirty

    loop.run_until_complete(scenario())


def test_an_invalid_tag_is_explained_and_nothing_is_stored(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        target = s.ids["python"]
        before = stored(world, target)
        async with opened(qtbot, world) as pane:
            changes = []
            world.bus.subscribe(events.CONTEXTS_CHANGED, lambda _n, p: changes.append(p))
            select_rows(pane, [target])
            editor = pane.editor
            await until(lambda: editor.context_id == target)
            editor.content.selectAll()
            editor.content.insertPlainText("new text that must not be saved")
            editor.tags.selectAll()
            QTest.keyClicks(editor.tags, "good, not/good")
            editor.save_button.click()
            assert editor.error.isVisible()
            assert "“not/good” may hold only letters, digits" in editor.error.text()
            await world.spawn.settle()
            assert stored(world, target) == before
            assert changes == []
            assert editor.dirty  # what was typed is still there to fix

            editor.content.selectAll()
            editor.content.insertPlainText("   ")
            editor.tags.setText("python")
            editor.save_button.click()
            assert "empty" in editor.error.text()
            await world.spawn.settle()
            assert stored(world, target) == before

    loop.run_until_complete(scenario())


def test_pin_makes_a_context_critical_and_unpin_restores_its_priority(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        target = s.ids["python"]  # Medium
        async with opened(qtbot, world) as pane:
            select_rows(pane, [target])
            assert pane.pin_button.text() == "Pin"
            pane.pin_button.click()
            await until(lambda: stored(world, target)[2] == Priority.CRITICAL)
            await until(lambda: pane.pin_button.text() == "Unpin")
            row = pane.model.row_of(target)
            assert pane.model.index(row, Column.PRIORITY).data() == "Critical"
            pane.pin_button.click()
            await until(lambda: stored(world, target)[2] == Priority.MEDIUM)
            await until(lambda: pane.pin_button.text() == "Pin")

    loop.run_until_complete(scenario())


def test_delete_key_then_ctrl_z_restores_the_same_contexts(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        doomed = [s.ids["python"], s.ids["lisbon"]]
        everything = "SELECT * FROM contexts WHERE id IN (?, ?) ORDER BY id"
        before = query_file(world.path, everything, tuple(doomed))
        async with opened(qtbot, world) as pane:
            select_rows(pane, doomed)
            pane.table.setFocus()
            QTest.keyClick(pane.table, Qt.Key.Key_Delete)
            await until(lambda: query_file(world.path, everything, tuple(doomed)) == [])
            await until(lambda: pane.undo_bar.isVisible())
            assert pane.undo_label.text() == "Deleted 2 contexts"
            await until(lambda: pane.model.rowCount() == 3)
            assert not set(doomed) & shown_set(pane)

            QTest.keyClick(pane.table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
            await until(lambda: query_file(world.path, everything, tuple(doomed)) == before)
            await until(lambda: shown_set(pane) == set(s.ids.values()))
            assert not pane.undo_bar.isVisible()
            selected = {
                pane.model.context_at(i.row()).id
                for i in pane.table.selectionModel().selectedRows()
            }
            assert selected == set(doomed)  # the restored contexts come back selected

            select_rows(pane, [s.ids["name"]])
            pane.delete_button.click()
            await until(lambda: stored(world, s.ids["name"]) is None)
            await until(pane.undo_bar.isVisible)
            assert pane.undo_label.text() == "Deleted 1 context"
            pane.undo_button.click()
            await until(lambda: stored(world, s.ids["name"]) is not None)

    loop.run_until_complete(scenario())


def test_pasted_knowledge_is_split_into_passages(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        async with opened(qtbot, world) as pane:
            choose(pane.agent_filter, s.researcher)
            await until(lambda: pane.model.rowCount() == 2)
            dialog = pane.open_add_dialog()
            assert dialog.agent.currentData() == s.researcher  # the filter's agent
            paragraphs = [
                " ".join(f"Paragraph {p} sentence {i} about mangaba fruit." for i in range(20))
                for p in range(3)
            ]
            text = "\n\n".join(paragraphs)
            dialog.text.setPlainText(text)
            QTest.keyClicks(dialog.tags, "fruit, Brazil")
            dialog.priority.setCurrentIndex(dialog.priority.findData(int(Priority.HIGH)))
            messages = []
            pane.status_message.connect(messages.append)
            dialog.add_button.click()
            expected = split_passages(text)
            assert len(expected) >= 3
            rows = (
                "SELECT content, tags, priority, context_type, agent_id, session_id FROM contexts"
            )
            query = rows + " WHERE context_type = 'knowledge' AND agent_id = ? ORDER BY id"
            await until(
                lambda: len(query_file(world.path, query, (s.researcher,))) == len(expected)
            )
            found = query_file(world.path, query, (s.researcher,))
            assert [r[0] for r in found] == expected
            assert {r[1:] for r in found} == {
                ('["fruit", "brazil"]', 3, "knowledge", s.researcher, None)
            }
            await until(lambda: not dialog.isVisible())
            await until(lambda: pane.model.rowCount() == 2 + len(expected))
            assert messages[-1] == f"Added {len(expected)} passages of knowledge for Researcher."

    loop.run_until_complete(scenario())


def test_importing_a_markdown_file(loop, qtbot, world, tmp_path):
    async def scenario():
        agent = (await world.agents.list())[0]
        async with opened(qtbot, world) as pane:
            dialog = pane.open_add_dialog()
            assert dialog.agent.currentData() == agent.id  # no filter: the first agent
            text = "# Receitas\n\nPão de queijo 🧀 leva polvilho.\n\nCafé coado, sem açúcar."
            path = tmp_path / "receitas.md"
            path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # with a BOM, as Notepad
            assert await dialog.import_file(path)
            assert dialog.text.toPlainText() == text
            assert "receitas.md" in dialog.source_label.text()
            assert await dialog.submit() == 1
            found = query_file(world.path, "SELECT content FROM contexts")
            assert found == [(text,)]
            await until(lambda: pane.model.rowCount() == 1)

    loop.run_until_complete(scenario())


def test_a_binary_or_non_utf8_file_is_refused(loop, qtbot, world, tmp_path):
    async def scenario():
        async with opened(qtbot, world) as pane:
            dialog = pane.open_add_dialog()
            image = tmp_path / "photo.md"
            image.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
            assert not await dialog.import_file(image)
            assert dialog.error.isVisible()
            assert "photo.md looks like a binary file" in dialog.error.text()
            assert dialog.text.toPlainText() == ""

            latin = tmp_path / "notas.txt"
            latin.write_bytes("Olá, açúcar".encode("latin-1"))
            assert not await dialog.import_file(latin)
            assert "notas.txt is not UTF-8 text" in dialog.error.text()

            assert await dialog.submit() == 0
            assert "no text to add" in dialog.error.text()
            assert query_file(world.path, "SELECT count(*) FROM contexts") == [(0,)]

    loop.run_until_complete(scenario())


def test_oversized_text_is_refused_with_the_reason(loop, qtbot, world, monkeypatch):
    monkeypatch.setattr(passages_module, "MAX_IMPORT_CHARS", 1_000)

    async def scenario():
        async with opened(qtbot, world) as pane:
            dialog = pane.open_add_dialog()
            dialog.text.setPlainText("word " * 400)
            assert await dialog.submit() == 0
            assert "at most 1,000 can be added at once" in dialog.error.text()
            assert dialog.isVisible()
            assert query_file(world.path, "SELECT count(*) FROM contexts") == [(0,)]

    loop.run_until_complete(scenario())


def test_highlight_shows_which_contexts_a_reply_used(loop, qtbot, world):
    async def scenario():
        s = await seed(world)
        used = [s.ids["lisbon"], s.ids["python"]]
        async with opened(qtbot, world) as pane:
            assert not pane.highlight_bar.isVisible()
            pane.highlight(used)
            assert pane.highlight_bar.isVisible()
            assert pane.highlight_label.text() == "This reply used 2 contexts."
            for name, context_id in s.ids.items():
                row = pane.model.row_of(context_id)
                background = pane.model.index(row, 0).data(Qt.ItemDataRole.BackgroundRole)
                assert (background == HIGHLIGHT) == (context_id in used), name

            choose(pane.type_filter, "memory")  # hides both used contexts...
            await until(lambda: shown_ids(pane) == [s.ids["espresso"]])
            pane.show_only_button.click()  # ...but "show only these" shows exactly them
            await until(lambda: shown_set(pane) == set(used))
            assert pane.model.rowCount() == 2
            assert not pane.filter_bar.isEnabled()

            pane.clear_highlight_button.click()
            assert not pane.highlight_bar.isVisible()
            assert not pane.show_only_button.isChecked()
            await until(lambda: shown_ids(pane) == [s.ids["espresso"]])
            assert pane.filter_bar.isEnabled()
            row = pane.model.row_of(s.ids["espresso"])
            assert pane.model.index(row, 0).data(Qt.ItemDataRole.BackgroundRole) is None

    loop.run_until_complete(scenario())


def test_archived_contexts_are_greyed_with_their_summary(loop, qtbot, world):
    async def scenario():
        agent = (await world.agents.list())[0]
        memory = await world.contexts.add(agent.id, "Summary of the trip", ContextType.MEMORY)
        source = await world.contexts.add(agent.id, "Day one in Lisbon", ContextType.CONVERSATION)
        connection = sqlite3.connect(world.path)
        with connection:
            connection.execute(
                "UPDATE contexts SET archived = 1, parent_id = ? WHERE id = ?",
                (memory.id, source.id),
            )
        connection.close()
        async with opened(qtbot, world) as pane:
            row = pane.model.row_of(source.id)
            index = pane.model.index(row, Column.CONTENT)
            assert index.data(Qt.ItemDataRole.ToolTipRole) == (
                f"archived: summarised into memory #{memory.id}"
            )
            assert index.data(Qt.ItemDataRole.ForegroundRole) is not None
            live = pane.model.index(pane.model.row_of(memory.id), Column.CONTENT)
            assert live.data(Qt.ItemDataRole.ForegroundRole) is None

    loop.run_until_complete(scenario())


def test_undo_brings_back_a_memory_deleted_with_its_sources(loop, qtbot, world):
    async def scenario():
        agent = (await world.agents.list())[0]
        sources = [await world.contexts.add(agent.id, f"Day {i} in Lisbon") for i in (1, 2)]
        memory = await world.contexts.add(agent.id, "Summary of the trip", ContextType.MEMORY)
        connection = sqlite3.connect(world.path)
        with connection:
            connection.execute(
                "UPDATE contexts SET archived = 1, parent_id = ? WHERE id IN (?, ?)",
                (memory.id, sources[0].id, sources[1].id),
            )
        connection.close()
        everything = "SELECT * FROM contexts ORDER BY id"
        before = query_file(world.path, everything)
        async with opened(qtbot, world) as pane:
            pane.table.selectAll()
            pane.delete_button.click()
            await until(lambda: query_file(world.path, everything) == [])
            await until(pane.undo_bar.isVisible)
            pane.undo_button.click()  # the sources refer to the memory: it must come first
            await until(lambda: query_file(world.path, everything) == before)
            await until(lambda: pane.model.rowCount() == 3)

    loop.run_until_complete(scenario())


def bulk_insert(path: Path, agent_id: str, count: int) -> None:
    kinds = [k.value for k in ContextType]
    now = time.time()
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            "INSERT INTO contexts (agent_id, content, context_type, priority, created_at, digest)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                (agent_id, f"note {i} about topic {i % 97}", kinds[i % 6], 1 + i % 4, now, f"d{i}")
                for i in range(count)
            ),
        )
    connection.close()


def test_twenty_thousand_rows_are_counted_but_read_a_page_at_a_time(loop, qtbot, world):
    async def scenario():
        agent = (await world.agents.list())[0]
        bulk_insert(world.path, agent.id, 20_000)
        reads: list[int] = []
        original = world.contexts.page

        async def counted_page(where, **kwargs):
            reads.append(kwargs["offset"])
            return await original(where, **kwargs)

        world.contexts.page = counted_page
        async with opened(qtbot, world) as pane:
            model = pane.model
            assert model.rowCount() == 20_000
            assert pane.count_label.text() == "20,000 contexts"
            pane.table.viewport().repaint()
            assert shown_ids(pane) is None  # far rows are not loaded...
            assert model.cached_pages == [0]  # ...only the first page is
            pane.table.scrollToBottom()
            pane.table.viewport().repaint()
            last = model.rowCount() - 1
            await until(lambda: model.context_at(last) is not None)
            pane.table.viewport().repaint()
            assert model.index(last, Column.CONTENT).data().startswith("note 0 ")
            assert len(model.cached_pages) <= 3
            assert len(reads) <= 4, reads
            # Pages past the middle are read from the other end: the same rows, in order.
            tail = await original(ContextFilter(), offset=19_800, limit=200)
            assert [model.context_at(r).id for r in range(19_800, 20_000)] == [c.id for c in tail]

            # Ctrl+A on every row stays quick (Qt's headers would walk all rows on each paint),
            # and a bulk delete that large is refused with the reason, deleting nothing.
            messages = []
            pane.status_message.connect(messages.append)
            pane.table.setFocus()
            started = time.perf_counter()
            QTest.keyClick(pane.table, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
            pane.table.viewport().repaint()
            pane.table.horizontalHeader().viewport().repaint()
            await asyncio.sleep(0)
            assert time.perf_counter() - started < 0.5
            assert pane.selection_size() == 20_000
            QTest.keyClick(pane.table, Qt.Key.Key_Delete)
            await world.spawn.settle()
            assert messages[-1] == "20,000 contexts are selected; select at most 10,000 at a time."
            assert query_file(world.path, "SELECT count(*) FROM contexts") == [(20_000,)]
            pane.table.clearSelection()

            # A page asked for under one filter and arriving under another is dropped.
            assert model.index(10_000, Column.CONTENT).data() == "…"
            choose(pane.type_filter, "task")
            await until(lambda: model.rowCount() == 20_000 // 6 + (20_000 % 6 > 1))
            await world.spawn.settle()
            rows = [
                model.context_at(r)
                for p in model.cached_pages
                for r in range(p * 200, p * 200 + 200)
            ]
            assert all(r.context_type == "task" for r in rows if r is not None)

        # The memory held is bounded, however many pages are looked at.
        bounded = ContextTableModel(world.contexts, world.spawn, max_pages=5)
        bounded.set_filter(ContextFilter())
        await bounded.refresh()
        for page in range(0, 100, 7):
            bounded.data(bounded.index(page * 200, 0))
            await until(lambda p=page: bounded.context_at(p * 200) is not None)
        assert len(bounded.cached_pages) == 5
        await world.spawn.settle()

    loop.run_until_complete(scenario())
