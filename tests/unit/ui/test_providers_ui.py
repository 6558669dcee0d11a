"""Models in the Chat pane, driven as a user would on the real app: the model picker, a message
that waits for its model (queued) and is answered in place when the model comes back, and the
tokens and cost shown for a chat."""

from __future__ import annotations

import asyncio
import gc

from PySide6.QtCore import Qt
from PySide6.QtNetwork import QNetworkInformation

from mangaba_desktop.core import events
from mangaba_desktop.ui.usage_dialog import UsageDialog
from tests.helpers.app import running_app, until
from tests.helpers.openai_server import OpenAIServer, free_port
from tests.helpers.providers import configure, local_provider, refused_url, url_at


def configure_lan(data_dir, base_url: str, *, default_model: str = "lan/echo") -> None:
    """Settings with one server on the network, at ``base_url``, offering echo and echo-2."""
    lan = local_provider(base_url, "echo", "echo-2", id="lan", name="LAN server", timeout_s=5)
    configure(data_dir, lan, default_model=default_model, retries=0)


async def send_queued(app, text: str):
    """Send ``text`` from the chat pane; its reply once the app has queued it."""
    queued = app.next_event(events.MESSAGE_QUEUED)
    await app.pane.send(text)
    return (await asyncio.wait_for(queued, 30))["message"]


def test_a_message_for_an_unreachable_model_waits_and_is_answered_in_place(loop, data_dir):
    port = free_port()
    configure_lan(data_dir, url_at(port))
    server = OpenAIServer(reply="Back online.")

    async def scenario():
        async with running_app(data_dir) as app:
            pane = app.pane
            message = await send_queued(app, "Are you there?")
            assert message.status == "queued"
            assert "cannot be reached" in message.error
            await until(lambda: pane.messages.rows and pane.messages.rows[-1].status == "queued")
            shown = pane.messages.rows[-1]
            delegate = pane.message_view.delegate
            assert "queued" in delegate.header(shown)
            assert any("Waiting:" in text for _colour, text in delegate.footnotes(shown))
            # Nothing else to do: the user may type on, and the text they wrote is stored.
            assert [m.role for m in pane.messages.rows] == ["user", "assistant"]

            server.start(port)  # the model comes back where the app last saw it
            finished = app.next_event(
                events.MESSAGE_FINISHED, lambda p: p["message"].id == message.id
            )
            # The network comes back: the window tells the outbox, which tries at once.
            app.window._on_reachability(QNetworkInformation.Reachability.Online)
            done = (await asyncio.wait_for(finished, 30))["message"]
            assert done.status == "complete" and done.content == "Back online."
            await until(lambda: pane.messages.rows[-1].content == "Back online.")
            assert [m.id for m in pane.messages.rows][-1] == message.id  # in place, not added
            assert len(pane.messages.rows) == 2
            await until(lambda: "tokens" in pane.usage_label.text())
            assert "$0" in pane.usage_label.text()  # a server on this computer costs nothing

    try:
        loop.run_until_complete(scenario())
    finally:
        server.stop()


def test_a_queued_message_can_be_cancelled_or_sent_to_another_model(loop, data_dir):
    configure_lan(data_dir, refused_url())

    async def scenario():
        async with running_app(data_dir) as app:
            pane = app.pane
            for text in ("First", "Second"):
                await send_queued(app, text)
            first_reply, second_reply = [m for m in pane.messages.rows if m.role == "assistant"]
            assert (first_reply.status, second_reply.status) == ("queued", "queued")

            pane.cancel_queued(first_reply)
            await until(lambda: pane.messages.rows[1].status == "interrupted")
            assert pane.messages.rows[1].error == "Cancelled before it was sent."
            assert first_reply.id not in app.application.runtime.outbox.waiting

            finished = app.next_event(
                events.MESSAGE_FINISHED,
                lambda p: p["message"].id == second_reply.id and p["message"].status != "queued",
            )
            pane.send_queued_now(second_reply, "mangaba-local/smollm2-135m-instruct")
            done = (await asyncio.wait_for(finished, 120))["message"]
            assert done.status == "complete" and done.content
            assert done.model == "mangaba-local/smollm2-135m-instruct"
            assert done.provider == "mangaba-local" and done.cost_usd == 0.0

    loop.run_until_complete(scenario())


def test_queued_messages_survive_a_restart(loop, data_dir):
    port = free_port()
    configure_lan(data_dir, url_at(port))
    server = OpenAIServer(reply="Sent after the restart.")

    async def first_run():
        async with running_app(data_dir) as app:
            await send_queued(app, "Keep this for later")

    async def second_run():
        server.start(port)
        async with running_app(data_dir) as app:
            await until(
                lambda: (
                    app.pane.messages.rows
                    and app.pane.messages.rows[-1].content == "Sent after the restart."
                ),
                limit=30,
            )
            assert [m.content for m in app.pane.messages.rows] == [
                "Keep this for later",
                "Sent after the restart.",
            ]

    try:
        loop.run_until_complete(first_run())
        gc.collect()
        loop.run_until_complete(second_run())
    finally:
        server.stop()


def test_the_model_picker_sets_the_model_of_the_chat(loop, data_dir):
    with OpenAIServer(reply="From echo two.") as server:
        configure_lan(
            data_dir, server.base_url, default_model="mangaba-local/smollm2-135m-instruct"
        )

        async def scenario():
            async with running_app(data_dir) as app:
                pane = app.pane
                await pane._new_conversation()
                await until(lambda: pane.current is not None)
                combo = pane.model_combo
                models = [combo.itemData(i) for i in range(combo.count())]
                assert models == [
                    None,
                    "mangaba-local/smollm2-135m-instruct",
                    "lan/echo",
                    "lan/echo-2",
                ]
                combo.setCurrentIndex(models.index("lan/echo-2"))
                combo.activated.emit(combo.currentIndex())
                await until(lambda: pane.current.model == "lan/echo-2")
                finished = app.reply_finished()
                await pane.send("Which model?")
                reply = (await asyncio.wait_for(finished, 30))["message"]
                assert reply.content == "From echo two."
                assert reply.model == "lan/echo-2"
                assert server.requests[-1].model == "echo-2"
                assert "echo-2" in pane.message_view.delegate.header(reply)

                dialog = UsageDialog(app.application.store, app.application.spawn, app.window)
                dialog.open()
                await dialog.loaded
                table = dialog.table
                assert table.rowCount() == 1
                assert table.item(0, 1).text() == "lan/echo-2"
                assert table.item(0, 5).text() == "$0"
                assert table.item(0, 2).data(Qt.ItemDataRole.DisplayRole) == "1"
                dialog.close()
                dialog.deleteLater()

        loop.run_until_complete(scenario())
