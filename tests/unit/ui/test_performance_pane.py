"""The Performance pane in the real app: a real chat turn and the real process sampler feed the
charts; filters, the crosshair, pause, windows, export to PNG and CSV, and the charts after a
restart."""

from __future__ import annotations

import csv
import re
import time

import pytest
from PySide6.QtGui import QImage

from mangaba_desktop.core import metrics
from mangaba_desktop.ui.charts import PerformancePane
from tests.helpers.app import Running, running_app, until

pytestmark = pytest.mark.timeout(120)


def performance_pane(app: Running) -> PerformancePane:
    pane = app.window.performance_pane
    assert pane is not None
    app.window.side_docks[2].raise_()
    return pane


async def chat_turn(app: Running, agent_id: str, text: str = "Hello?") -> None:
    runtime = app.application.runtime
    conversation = await runtime.conversations.create("Charts", agent_id=agent_id)
    await runtime.chat.send(conversation.id, text)
    await runtime.chat.wait(conversation.id)


def test_a_chat_turn_and_the_process_show_up_in_the_charts(loop, data_dir, tmp_path):
    async def scenario():
        async with running_app(data_dir) as app:
            pane = performance_pane(app)
            runtime = app.application.runtime
            ana = await runtime.agents.create("Ana")
            bruno = await runtime.agents.create("Bruno")
            app.use_mock("A reply to chart.")
            await chat_turn(app, ana.id)

            latency = pane.views["latency"]
            await until(lambda: latency.series["p50"] != [])
            [(_at, value)] = latency.series["p50"]
            assert value > 0
            assert latency.curves["p50"].getData()[1] is not None
            # Requests per minute: the step of the request counts it (once that step is over:
            # a step still filling is left out), the empty ones are 0.
            traffic = pane.views["traffic"]
            await until(lambda: max((v for _t, v in traffic.series["requests"]), default=0) > 0)
            assert min(v for _t, v in traffic.series["requests"]) == 0
            # The sampler reads the process once a second: memory and CPU appear.
            await until(lambda: pane.views["memory"].series["app"] != [], 10)
            assert pane.views["memory"].series["app"][-1][1] > 10  # MB
            await until(
                lambda: "memory" in pane.summary.text() and "threads" in pane.summary.text()
            )

            # The filters offer what was seen, the agents by name; another agent has no data.
            await until(lambda: pane.agent_box.findData(ana.id) >= 0)
            assert pane.agent_box.itemText(pane.agent_box.findData(ana.id)) == "Ana"
            assert pane.model_box.findData("openai/gpt-4o-mini") >= 0
            pane.agent_box.setCurrentIndex(pane.agent_box.findData(ana.id))
            assert latency.series["p50"] != []
            runtime.metrics.observe(metrics.REQUEST_LATENCY, 5.0, agent=bruno.id)
            await until(lambda: pane.agent_box.findData(bruno.id) >= 0)
            pane.agent_box.setCurrentIndex(pane.agent_box.findData(bruno.id))
            assert [v for _t, v in latency.series["p50"]] == [5.0]
            # The process's charts are the whole app's, whatever the filter.
            assert pane.views["memory"].series["app"] != []
            pane.agent_box.setCurrentIndex(0)

            # The crosshair reads the values under it, on every chart.
            at = latency.series["p50"][-1][0]
            pane.show_crosshair(at)
            assert re.search(r"p50 [\d.,]+ m?s · p95 [\d.,]+ m?s$", latency.readout.text())
            assert pane.views["memory"].crosshair.isVisible()
            pane.show_crosshair(None)
            assert latency.readout.text() == ""

            # Paused, the charts hold still while data keeps arriving.
            pane.set_paused(True)
            drawn = pane.redraws
            await chat_turn(app, ana.id)
            await until(
                lambda: (
                    len(
                        runtime.metrics.query(
                            metrics.REQUESTS, since=time.time() - 300, stat="count", step_s=300
                        )
                    )
                    > 0
                )
            )
            pane.refresh(force=True)
            assert pane.redraws == drawn
            pane.set_paused(False)
            assert pane.redraws > drawn

            # Exports: a PNG that is an image of the chart, a CSV of its points.
            png = pane.export_png("latency", tmp_path / "latency.png")
            image = QImage(str(png))
            assert not image.isNull() and image.width() > 100
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            data = pane.export_csv("latency", tmp_path / "latency.csv")
            rows = list(csv.reader(data.open(encoding="utf-8")))
            assert rows[0] == ["time", "p50 (ms)", "p95 (ms)"]
            assert len(rows) - 1 == len(latency.series["p50"])
            assert float(rows[-1][1]) == pytest.approx(latency.series["p50"][-1][1], rel=1e-5)

            # A hidden pane does not draw.
            app.window.side_docks[0].raise_()
            await until(lambda: not pane.shown())
            hidden = pane.redraws
            await chat_turn(app, ana.id)
            pane.refresh(force=True)
            assert pane.redraws == hidden

        # After a restart, the hour's chart still has the requests (kept by the minute).
        async with running_app(data_dir) as app:
            pane = performance_pane(app)
            pane.set_window("1 h")
            latency = pane.views["latency"]
            await until(lambda: latency.series["p50"] != [], 15)
            assert latency.time_format == "%H:%M"
            stored = await app.application.runtime.metrics.query_stored(
                metrics.REQUESTS, since=time.time() - 3600, stat="count", step_s=3600
            )
            assert sum(v for _t, v in stored) >= 3
            # Counts leave out the minute still filling (it would read as a drop).
            traffic = pane.views["traffic"]
            assert all(t + 60 <= time.time() for t, _v in traffic.series["requests"])

    loop.run_until_complete(scenario())
