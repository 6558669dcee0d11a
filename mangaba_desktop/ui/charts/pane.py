"""The Performance pane: live charts of the metrics, filtered by agent, provider and model,
over the last 5 minutes to 7 days, with a crosshair, zoom, pause and export.

One timer, ten times a second at most, redraws the charts whose data changed (the collector's
``version`` says so); nothing is redrawn while the pane is hidden or paused. The live window
reads the samples in memory; the longer ones read the minutes kept in SQLite, off the GUI
thread, every few seconds.
"""

from __future__ import annotations

import bisect
import csv
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGraphicsItem,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core import events, metrics
from ...core.events import EventBus
from ...core.metrics import MetricsCollector
from ...core.metrics.minutes import LABEL_NAMES
from ...core.metrics.percentiles import ZERO_WHEN_EMPTY
from .definitions import CHARTS, WINDOWS, Chart, Window

log = logging.getLogger(__name__)

REFRESH_MS = 100
"""At most ten redraws a second."""
TWO_COLUMNS_WIDTH = 900
"""From this width the charts go two by two."""

pg.setConfigOptions(antialias=False, background="w", foreground="#37474f")

Series = list[tuple[float, float]]


def _value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "–"
    if unit == "ms" and value >= 1000:
        return f"{value / 1000:.2f} s"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"


class ChartView(QWidget):
    """One chart: its title, its plot (time axis, a line per series, a crosshair with the
    values under it) and its export buttons."""

    export_png_requested = Signal(str)
    export_csv_requested = Signal(str)

    def __init__(self, chart: Chart, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.chart = chart
        self.series: dict[str, Series] = {line.label: [] for line in chart.lines}
        self.time_format = "%H:%M:%S"
        """How the crosshair writes a step's time (with the day on windows over a day)."""
        self.curves_filled = False
        """Whether the curves show :attr:`series` (a chart not drawn yet shows nothing)."""
        self.title = QLabel(f"<b>{chart.title}</b> <span style='color:#78909c'>{chart.unit}</span>")
        self.readout = QLabel("")
        self.readout.setObjectName(f"chart-readout-{chart.key}")
        self.readout.setStyleSheet("color: #546e7a;")
        png = QToolButton()
        png.setText("PNG")
        png.setToolTip(f"Save the {chart.title.lower()} chart as an image")
        png.clicked.connect(lambda: self.export_png_requested.emit(chart.key))
        data = QToolButton()
        data.setText("CSV")
        data.setToolTip(f"Save the {chart.title.lower()} data as CSV")
        data.clicked.connect(lambda: self.export_csv_requested.emit(chart.key))
        # The readout may be long: it shrinks (and is cut) rather than widen the pane.
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        header = QHBoxLayout()
        header.addWidget(self.title)
        header.addWidget(self.readout, 1)
        header.addWidget(png)
        header.addWidget(data)

        self.plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem()})
        self.plot.setObjectName(f"chart-{chart.key}")
        self.plot.setMinimumHeight(150)
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        item = self.plot.getPlotItem()
        item.addLegend(offset=(8, 4), labelTextSize="8pt")
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        for name in ("left", "bottom"):
            # Painted from a cached pixmap while the range stays (drawing the ticks' text is
            # most of a chart's paint).
            item.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.curves: dict[str, pg.PlotDataItem] = {}
        for line in chart.lines:
            self.curves[line.label] = self.plot.plot(
                [], [], name=line.label, pen=pg.mkPen(line.colour, width=1.6)
            )
        self.crosshair = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#b0bec5"))
        self.crosshair.setVisible(False)
        self.plot.addItem(self.crosshair, ignoreBounds=True)
        self.empty = pg.TextItem("No data yet", color="#90a4ae", anchor=(0.5, 0.5))
        self.plot.addItem(self.empty, ignoreBounds=True)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(0)
        layout.addLayout(header)
        layout.addWidget(self.plot)

    def show_series(self, series: dict[str, Series], since: float, until: float) -> bool:
        """Take the chart's points; returns whether anything changed (and was redrawn)."""
        if series == self.series and self.curves_filled:
            return False
        self.series = series
        self.curves_filled = True
        empty = True
        for label, points in series.items():
            curve = self.curves.get(label)
            if curve is None:
                continue
            if points:
                empty = False
                x = np.fromiter((p[0] for p in points), float, len(points))
                y = np.fromiter((p[1] for p in points), float, len(points))
                curve.setData(x, y, connect="finite")
            else:
                curve.setData([], [])
        self.empty.setVisible(empty)
        if empty:
            self.empty.setPos((since + until) / 2, 0.5)
        return True

    def set_crosshair(self, at: float | None) -> None:
        """Show the values at ``at`` (Unix time), or hide the crosshair."""
        if at is None:
            self.crosshair.setVisible(False)
            self.readout.setText("")
            return
        self.crosshair.setVisible(True)
        self.crosshair.setPos(at)
        parts = []
        step_start = None
        for line in self.chart.lines:
            point = containing(self.series.get(line.label, []), at)
            if point is not None:
                step_start = point[0] if step_start is None else max(step_start, point[0])
                parts.append(f"{line.label} {_value(point[1], self.chart.unit)}")
        when = time.strftime(self.time_format, time.localtime(step_start or at))
        self.readout.setText(f"{when}  " + " · ".join(parts) if parts else when)


def containing(points: Series, at: float) -> tuple[float, float] | None:
    """The point of the step ``at`` falls in: the last one starting at or before it."""
    index = bisect.bisect_right(points, (at, math.inf)) - 1
    return points[index] if index >= 0 else None


class PerformancePane(QWidget):
    """Live charts of the metrics.

    Args:
        collector: the collector the charts read.
        bus: for agents being renamed (their names label the filter).
        spawn: runs a coroutine on the loop and keeps its task.
        agent_names: reads the app's agents' names by id (async); ids are shown without it.

    Signals:
        status_message(str): something the status bar may show.
    """

    status_message = Signal(str)

    def __init__(
        self,
        collector: MetricsCollector,
        bus: EventBus,
        spawn: Callable[[Any], Any],
        parent: QWidget | None = None,
        *,
        agent_names: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("performance-pane")
        self.setMinimumSize(320, 300)
        self.metrics = collector
        self.spawn = spawn
        self.agent_names = agent_names
        self.names: dict[str, str] = {}
        self.span_window = WINDOWS[0]
        self.paused = False
        self.redraws = 0
        """How many times the charts were drawn (for tests and the benchmark)."""
        self._drawn_version = -1
        self._drawn_at = 0.0
        self._reading = False
        self._labels: dict[str, list[str]] = {}
        self._zoomed = False
        self._closed = False
        self._reread = False
        """A refresh was asked while a stored read was running: read again when it ends."""
        self._steps: dict[tuple[str, str], dict[float, float]] = {}
        """Each live line's points by step, kept between refreshes (see :meth:`_read_live`)."""
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._unsubscribe = bus.subscribe(events.AGENTS_CHANGED, self._on_agents_changed)

    # -- construction --------------------------------------------------------------------------

    def _build(self) -> None:
        self.window_box = QComboBox()
        self.window_box.setObjectName("performance-window")
        for window in WINDOWS:
            self.window_box.addItem(window.label, window.label)
        self.filter_boxes = {
            name: self._filter_box(f"performance-{name}", f"All {name}s") for name in LABEL_NAMES
        }
        """By label name, as :meth:`MetricsCollector.query` takes them."""
        self.agent_box, self.provider_box, self.model_box = self.filter_boxes.values()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Hold the charts still (zoom and the crosshair still work)")
        self.reset_button = QPushButton("Reset zoom")
        self.reset_button.setToolTip("Show the whole window again")
        self.reset_button.setEnabled(False)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Last"))
        controls.addWidget(self.window_box)
        for box in self.filter_boxes.values():
            controls.addWidget(box)
        controls.addStretch(1)
        controls.addWidget(self.pause_button)
        controls.addWidget(self.reset_button)
        self.summary = QLabel("Waiting for the first readings…")
        self.summary.setObjectName("performance-summary")
        self.summary.setStyleSheet("color: #546e7a;")

        self.views: dict[str, ChartView] = {}
        self.grid = grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        self.columns = 1
        first: pg.PlotWidget | None = None
        for index, chart in enumerate(CHARTS):
            view = ChartView(chart)
            view.export_png_requested.connect(self._ask_png)
            view.export_csv_requested.connect(self._ask_csv)
            if first is None:
                first = view.plot
            else:
                view.plot.setXLink(first)  # one time axis: zoom one, zoom all
            view.plot.scene().sigMouseMoved.connect(
                lambda position, v=view: self._on_mouse_moved(v, position)
            )
            view.plot.getViewBox().sigRangeChangedManually.connect(self._on_zoomed)
            grid.addWidget(view, index, 0)
            self.views[chart.key] = view
        charts = QWidget()
        charts.setLayout(grid)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(charts)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(controls)
        layout.addWidget(self.summary)
        layout.addWidget(scroll, 1)

        self.window_box.currentIndexChanged.connect(self._on_window_changed)
        for box in self.filter_boxes.values():
            box.currentIndexChanged.connect(lambda _i: self._on_filter_changed())
        self.pause_button.toggled.connect(self.set_paused)
        self.reset_button.clicked.connect(self.reset_zoom)

    def _filter_box(self, name: str, everything: str) -> QComboBox:
        box = QComboBox()
        box.setObjectName(name)
        box.addItem(everything, None)
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        return box

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._read_names()
        self._timer.start()
        self.refresh(force=True)

    async def flush(self) -> None:
        """Stop drawing and take the charts apart (the app is stopping): their scenes go now,
        on this thread, not whenever a collection happens to run on another one."""
        self._closed = True
        self._timer.stop()
        self._unsubscribe()
        for view in self.views.values():
            view.plot.close()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        columns = 2 if self.width() >= TWO_COLUMNS_WIDTH else 1
        if columns != self.columns:
            self.columns = columns
            for index, view in enumerate(self.views.values()):
                self.grid.addWidget(view, index // columns, index % columns)

    def shown(self) -> bool:
        """Whether any of the pane is on screen (a dock behind another tab stays "visible"
        to Qt, with nothing of it showing)."""
        return self.isVisible() and not self.visibleRegion().isEmpty()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._closed:
            self.refresh(force=True)

    # -- controls ------------------------------------------------------------------------------

    def set_window(self, label: str) -> None:
        self.window_box.setCurrentIndex(self.window_box.findData(label))

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.pause_button.setChecked(paused)
        self.pause_button.setText("Resume" if paused else "Pause")
        if not paused:
            self.refresh(force=True)

    def reset_zoom(self) -> None:
        self._zoomed = False
        self.reset_button.setEnabled(False)
        self._fit(*self._span())

    def filters(self) -> dict[str, str | None]:
        return {name: box.currentData() for name, box in self.filter_boxes.items()}

    def _on_window_changed(self, index: int) -> None:
        window = self.span_window = WINDOWS[max(index, 0)]
        self._steps.clear()
        if window.seconds > 86400:
            time_format = "%a %d %b %H:%M"
        else:
            time_format = "%H:%M:%S" if window.step_s < 60 else "%H:%M"
        self._zoomed = False
        self.reset_button.setEnabled(False)
        span = self._span()
        for view in self.views.values():
            view.time_format = time_format
            view.show_series({line.label: [] for line in view.chart.lines}, *span)
        self.refresh(force=True)

    def _on_filter_changed(self) -> None:
        self._steps.clear()
        self.refresh(force=True)

    def _on_zoomed(self, *_args: Any) -> None:
        self._zoomed = True
        self.reset_button.setEnabled(True)

    def _on_agents_changed(self, _name: str, _payload: dict[str, Any]) -> None:
        self.spawn(self._read_names())

    async def _read_names(self) -> None:
        if self.agent_names is None:
            return
        try:
            self.names = dict(await self.agent_names())
        except Exception:
            log.exception("the agents' names could not be read")
            return
        self._labels = {}  # relabel the agent filter

    # -- drawing -------------------------------------------------------------------------------

    def _span(self) -> tuple[float, float]:
        """The window, ending with the step now filling: it moves a step at a time, so that
        the time axis is redrawn once a step, not at every refresh."""
        step = self.span_window.step_s
        until = (math.floor(time.time() / step) + 1) * step
        return until - self.span_window.seconds, until

    def refresh(self, *, force: bool = False) -> None:
        """Redraw if something changed (or ``force``), unless hidden or paused."""
        if self._closed or self.paused or not self.shown():
            return
        self._refresh_filters()
        window = self.span_window
        if window.stored:
            stale = time.monotonic() - self._drawn_at >= window.refresh_s
            if force or (stale and self.metrics.version != self._drawn_version):
                if self._reading:
                    self._reread = True  # the read running was asked before this change
                else:
                    self._reading = True
                    self.spawn(self._read_stored(window, self.metrics.version))
            return
        if not force and (
            self.metrics.version == self._drawn_version
            or time.monotonic() - self._drawn_at < window.refresh_s
        ):
            return
        version = self.metrics.version
        since, until = self._span()
        filters = self.filters()
        data = {
            chart.key: self._read_live(chart, since, until, window, filters) for chart in CHARTS
        }
        self._draw(data, since, until, version)

    def _read_live(
        self,
        chart: Chart,
        since: float,
        until: float,
        window: Window,
        filters: dict[str, str | None],
    ) -> dict[str, Series]:
        """The chart's points from memory: the steps read before are kept, and only the last
        ones (the one that was filling, and any since) are read again."""
        labels = filters if chart.labelled else {}
        series: dict[str, Series] = {}
        for line in chart.lines:
            steps = self._steps.setdefault((chart.key, line.label), {})
            kept = [at for at in steps if at >= since]
            tail = max(max(kept) - window.step_s, since) if kept else since
            for at in [at for at in steps if at < since or at >= tail]:
                del steps[at]
            steps.update(
                self.metrics.query(
                    line.metric,
                    since=tail,
                    until=until,
                    stat=line.stat,
                    step_s=window.step_s,
                    **labels,
                )
            )
            series[line.label] = _complete(sorted(steps.items()), line.stat, window, until)
        return series

    async def _read_stored(self, window: Window, version: int) -> None:
        try:
            since, until = self._span()
            filters = self.filters()
            data: dict[str, dict[str, Series]] = {}
            for chart in CHARTS:
                labels = filters if chart.labelled else {}
                data[chart.key] = {
                    line.label: _complete(
                        await self.metrics.query_stored(
                            line.metric,
                            since=since,
                            until=until,
                            stat=line.stat,
                            step_s=window.step_s,
                            **labels,
                        ),
                        line.stat,
                        window,
                        time.time(),
                    )
                    for line in chart.lines
                }
        except Exception as exc:
            log.exception("the stored metrics could not be read")
            self.status_message.emit(f"The stored metrics could not be read: {exc}")
            return
        finally:
            self._reading = False
        if self._closed:
            return
        if self._reread or window is not self.span_window or filters != self.filters():
            self._reread = False
            self.refresh(force=True)  # what is asked now, not what was asked then
            return
        if not self.paused:
            self._draw(data, since, until, version)

    def _draw(
        self, data: dict[str, dict[str, Series]], since: float, until: float, version: int
    ) -> None:
        for key, series in data.items():
            self.views[key].show_series(series, since, until)
        if not self._zoomed:
            self._fit(since, until)
        self._drawn_version = version
        self._drawn_at = time.monotonic()
        self.redraws += 1
        self._show_summary()

    def _fit(self, since: float, until: float) -> None:
        first = self.views[CHARTS[0].key].plot
        first.getViewBox().setXRange(since, until, padding=0)
        for view in self.views.values():
            view.plot.getViewBox().enableAutoRange(axis=pg.ViewBox.YAxis)

    def _show_summary(self) -> None:
        parts = []
        for metric, shown in (
            (metrics.RSS, "memory {:,.0f} MB"),
            (metrics.CPU, "CPU {:.1f}%"),
            (metrics.THREADS, "threads {:,.0f}"),
            (metrics.OPEN_FILES, "open files {:,.0f}"),
        ):
            value = self.metrics.latest(metric)
            if value is not None:
                parts.append(shown.format(value))
        if parts:
            self.summary.setText("Now: " + " · ".join(parts))

    def _refresh_filters(self) -> None:
        labels = self.metrics.label_values()
        if labels == self._labels:
            return
        self._labels = labels
        for name, box in self.filter_boxes.items():
            current = box.currentData()
            box.blockSignals(True)
            while box.count() > 1:
                box.removeItem(1)
            for value in labels.get(name, []):
                text = self.names.get(value, value) if name == "agent" else value
                box.addItem(text, value)
            index = box.findData(current)
            box.setCurrentIndex(max(index, 0))
            box.blockSignals(False)

    # -- the crosshair -------------------------------------------------------------------------

    def _on_mouse_moved(self, view: ChartView, position: Any) -> None:
        box = view.plot.getViewBox()
        if not view.plot.sceneBoundingRect().contains(position):
            for other in self.views.values():
                other.set_crosshair(None)
            return
        at = box.mapSceneToView(position).x()
        self.show_crosshair(at)

    def show_crosshair(self, at: float | None) -> None:
        """The crosshair at ``at`` on every chart (they share one time axis)."""
        for view in self.views.values():
            view.set_crosshair(at)

    # -- export --------------------------------------------------------------------------------

    def export_png(self, key: str, path: Path) -> Path:
        """Save a chart as a PNG image."""
        if not self.views[key].plot.grab().save(str(path), "PNG"):
            raise OSError(f"{path} could not be written.")
        return path

    def export_csv(self, key: str, path: Path) -> Path:
        """Save a chart's data as CSV: a time column (ISO, local time), one column per line."""
        view = self.views[key]
        labels = [line.label for line in view.chart.lines]
        rows: dict[float, dict[str, float]] = {}
        for label in labels:
            for at, value in view.series.get(label, []):
                rows.setdefault(at, {})[label] = value
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            unit = view.chart.unit
            writer.writerow(["time", *(f"{label} ({unit})" for label in labels)])
            for at in sorted(rows):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at))
                writer.writerow([stamp, *(_csv_value(rows[at].get(label)) for label in labels)])
        return path

    def _ask_png(self, key: str) -> None:
        path = self._ask_path(key, "png", "PNG image (*.png)")
        if path is not None:
            self._export(self.export_png, key, path)

    def _ask_csv(self, key: str) -> None:
        path = self._ask_path(key, "csv", "CSV (*.csv)")
        if path is not None:
            self._export(self.export_csv, key, path)

    def _ask_path(self, key: str, suffix: str, kinds: str) -> Path | None:
        stamp = time.strftime("%Y%m%d-%H%M")
        name, _kind = QFileDialog.getSaveFileName(
            self, "Export chart", f"mangaba-{key}-{stamp}.{suffix}", kinds
        )
        return Path(name) if name else None

    def _export(self, export: Callable[[str, Path], Path], key: str, path: Path) -> None:
        try:
            export(key, path)
        except OSError as exc:
            self.status_message.emit(f"The chart could not be saved: {exc}")
            return
        self.status_message.emit(f"Saved {path.name}.")


def _complete(points: Series, stat: str, window: Window, now: float) -> Series:
    """Without the step still filling, for counts and rates: it would read low (a minute's
    worth of requests counted over the hour it starts), a false drop at the right edge."""
    if stat in ZERO_WHEN_EMPTY and points and points[-1][0] + window.step_s > now:
        return points[:-1]
    return points


def _csv_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:.6g}"
