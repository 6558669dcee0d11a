"""The network as a graph: a node per agent, an edge per link or conversation, a dot per message.

One timer drives everything that moves: a few iterations of a force layout while the nodes
have not settled, and the dots of the messages in flight. It stops when nothing moves, and no
message rebuilds the scene: a message moves a dot, changes a counter, or adds one edge.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QLineF, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetrics,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPolygonF,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsScene,
    QGraphicsSceneMouseEvent,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from ...core.network import AgentMessage, MessageStatus, Node, NodeKind, NodeStatus

FRAME_MS = 16
"""About 60 frames a second while something moves; the timer stops when nothing does."""
DOT_TRAVEL_S = 0.6
"""How long a dot takes from sender to receiver."""
MAX_DOTS = 200
"""Most dots in flight at once; the oldest goes when another comes."""
SPACING = 130.0
"""The distance the layout aims for between linked agents."""
ITERATIONS_PER_FRAME = 2
START_HEAT = 40.0
"""The furthest a node may move in one iteration just after the graph changed."""
COOLING = 0.93
SETTLED = 0.4
"""Below this many pixels per iteration the layout is finished."""
GRAVITY = 0.015
REPULSION_REACH = 2.5
"""Nodes further apart than this many times SPACING no longer push each other away."""
NODE_RADIUS = 20.0

STATUS_COLOURS = {
    NodeStatus.IDLE: QColor("#43a047"),
    NodeStatus.WORKING: QColor("#1e88e5"),
    NodeStatus.INPUT_REQUIRED: QColor("#fb8c00"),
    NodeStatus.ERROR: QColor("#e53935"),
    NodeStatus.OFFLINE: QColor("#9e9e9e"),
}
STATUS_BADGES = {
    NodeStatus.IDLE: "✓",
    NodeStatus.WORKING: "…",
    NodeStatus.INPUT_REQUIRED: "?",
    NodeStatus.ERROR: "!",
    NodeStatus.OFFLINE: "×",
}
KIND_COLOURS = {
    NodeKind.LOCAL: QColor("#5c6bc0"),
    NodeKind.REMOTE: QColor("#00897b"),
    NodeKind.MODEL: QColor("#8d6e63"),
}
DOT_COLOURS = {
    "request": QColor("#1e88e5"),
    "response": QColor("#43a047"),
    "error": QColor("#e53935"),
    "broadcast": QColor("#8e24aa"),
    "notification": QColor("#6d4c41"),
    "model": QColor("#ff8f00"),
}
FINAL = {MessageStatus.DONE, MessageStatus.FAILED, MessageStatus.EXPIRED, MessageStatus.TIMED_OUT}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1.0:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def edge_key(first: str, second: str) -> tuple[str, str]:
    """Edges have no direction: a link both ways and messages both ways are one line."""
    return (first, second) if first <= second else (second, first)


_DIAMOND = QPolygonF(
    [
        QPointF(0, -NODE_RADIUS - 2),
        QPointF(NODE_RADIUS + 2, 0),
        QPointF(0, NODE_RADIUS + 2),
        QPointF(-NODE_RADIUS - 2, 0),
    ]
)
_NODE_RECT = QRectF(-78, -NODE_RADIUS - 6, 156, NODE_RADIUS * 2 + 54)
_NODE_SHAPE = QPainterPath()
_NODE_SHAPE.addEllipse(QPointF(0, 0), NODE_RADIUS + 4, NODE_RADIUS + 4)
_NODE_SHAPE.addRect(QRectF(-60, NODE_RADIUS + 2, 120, 18))


class NodeItem(QGraphicsItem):
    """An agent: its kind by shape and colour, its status by a ring and a badge, its name,
    counts and latency underneath. Dragged by the user, it stays where it was put."""

    def __init__(self, graph: NetworkGraph, node: Node) -> None:
        super().__init__()
        self.graph = graph
        self.node_id = node.id
        self.pinned = False
        self.dragging = False
        self._pressed_at: QPointF | None = None
        self._state: tuple[Any, ...] = ()
        self.name = node.name
        self.kind = node.kind
        self.status = node.status
        self.handled = node.handled
        self.failed = node.failed
        self.p50: float | None = None
        self.p95: float | None = None
        self.setFlags(
            QGraphicsItem.GraphicsItemFlag.ItemIsMovable
            | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
            | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges
        )
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setZValue(2)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.show_node(node)

    def show_node(self, node: Node, p50: float | None = None, p95: float | None = None) -> None:
        """Take the node's current name, status and counts (a repaint only if one changed)."""
        state = (node.name, node.kind, node.status, node.handled, node.failed, p50, p95)
        if state == self._state:
            return
        self._state = state
        self.name, self.kind, self.status = node.name, node.kind, node.status
        self.handled, self.failed, self.p50, self.p95 = node.handled, node.failed, p50, p95
        self.setToolTip(f"{node.name} ({node.kind}, {node.status})")
        self.update()

    def boundingRect(self) -> QRectF:
        return _NODE_RECT

    def shape(self) -> QPainterPath:
        return _NODE_SHAPE

    def paint(
        self, painter: QPainter, _option: QStyleOptionGraphicsItem, _widget: QWidget | None = None
    ) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        status = STATUS_COLOURS.get(self.status, STATUS_COLOURS[NodeStatus.IDLE])
        fill = KIND_COLOURS.get(self.kind, KIND_COLOURS[NodeKind.LOCAL])
        if self.status == NodeStatus.OFFLINE:
            fill = fill.lighter(160)
        painter.setPen(QPen(status, 4))
        painter.setBrush(fill)
        body = QRectF(-NODE_RADIUS, -NODE_RADIUS, NODE_RADIUS * 2, NODE_RADIUS * 2)
        if self.kind == NodeKind.REMOTE:
            painter.drawRoundedRect(body, 6, 6)
        elif self.kind == NodeKind.MODEL:
            painter.drawPolygon(_DIAMOND)
        else:
            painter.drawEllipse(body)
        if self.isSelected():
            painter.setPen(QPen(QColor("#ffb300"), 2, Qt.PenStyle.DashLine))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(body.adjusted(-6, -6, 6, 6))
        if self.pinned:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor("#455a64"))
            painter.drawEllipse(QPointF(-NODE_RADIUS + 2, -NODE_RADIUS + 2), 3, 3)

        initials = "".join(part[:1] for part in self.name.split()[:2]).upper() or "?"
        font = QFont(painter.font())
        font.setBold(True)
        font.setPointSizeF(9)
        painter.setFont(font)
        painter.setPen(QColor("white"))
        painter.drawText(body, Qt.AlignmentFlag.AlignCenter, initials)

        badge = QRectF(NODE_RADIUS - 8, -NODE_RADIUS - 4, 14, 14)
        painter.setPen(QPen(QColor("white"), 1.5))
        painter.setBrush(status)
        painter.drawEllipse(badge)
        font.setPointSizeF(7)
        painter.setFont(font)
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, STATUS_BADGES.get(self.status, ""))

        text_colour = QColor("#212121")
        font.setPointSizeF(8.5)
        painter.setFont(font)
        metrics = QFontMetrics(font)
        name = metrics.elidedText(self.name, Qt.TextElideMode.ElideRight, 150)
        top = NODE_RADIUS + 3
        # A veil behind the text, so that edges crossing under a label do not strike it out.
        lines = 3 if self.p50 is not None else 2
        veil = QRectF(-70, top + 1, 140, 14 + 14 * (lines - 1))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(250, 250, 250, 215))
        painter.drawRoundedRect(veil, 4, 4)
        painter.setPen(text_colour)
        painter.drawText(QRectF(-78, top, 156, 16), Qt.AlignmentFlag.AlignCenter, name)
        font.setBold(False)
        font.setPointSizeF(7.5)
        painter.setFont(font)
        painter.setPen(QColor("#546e7a"))
        counts = f"{self.status} · {self.handled} done · {self.failed} failed"
        painter.drawText(QRectF(-78, top + 15, 156, 14), Qt.AlignmentFlag.AlignCenter, counts)
        if self.p50 is not None:
            latency = f"p50 {duration(self.p50)} · p95 {duration(self.p95)}"
            painter.drawText(QRectF(-78, top + 28, 156, 14), Qt.AlignmentFlag.AlignCenter, latency)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self.graph.node_moved(self)
        return super().itemChange(change, value)

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        self._pressed_at = self.pos()
        self.dragging = True
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        self.dragging = False
        if self._pressed_at is not None and self.pos() != self._pressed_at:
            self.pinned = True  # put here by hand: the layout leaves it here
            self.update()
            self.graph.reheat(START_HEAT / 2)
        self._pressed_at = None

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        """A double click lets the layout place the node again."""
        self.pinned = False
        self.update()
        self.graph.reheat(START_HEAT / 2)
        super().mouseDoubleClickEvent(event)


_STROKER = QPainterPathStroker()
_STROKER.setWidth(12)  # an edge is easy to click, however thin it looks


class EdgeItem(QGraphicsLineItem):
    """Two agents that are linked (solid) or have only exchanged messages (dashed)."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__()
        self.key = (first, second)
        self.linked = False
        self.messages = 0
        self.highlighted = False
        self._shape = QPainterPath()
        self.setZValue(0)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.restyle()

    def restyle(self) -> None:
        if self.highlighted or self.isSelected():
            pen = QPen(QColor("#ffb300"), 4)
        elif self.linked:
            pen = QPen(QColor("#78909c"), 2)
        else:
            pen = QPen(QColor("#b0bec5"), 1.5, Qt.PenStyle.DashLine)
        self.setPen(pen)

    def set_ends(self, line: QLineF) -> None:
        if line == self.line():
            return
        self.setLine(line)
        path = QPainterPath(line.p1())
        path.lineTo(line.p2())
        self._shape = _STROKER.createStroke(path)  # made once a move, not once a paint

    def shape(self) -> QPainterPath:
        return self._shape

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        result = super().itemChange(change, value)
        if change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self.restyle()
        return result


@dataclass
class Dot:
    source: str
    target: str
    started: float
    colour: QColor
    looping: bool
    """Still in flight when it reaches the receiver: it starts again from the sender."""


class DotsItem(QGraphicsItem):
    """Every dot in flight, painted in one pass (one item, one update a frame)."""

    def __init__(self, graph: NetworkGraph) -> None:
        super().__init__()
        self.graph = graph
        self._rect = QRectF()
        self.positions: list[tuple[QPointF, QColor]] = []
        self.setZValue(3)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def set_rect(self, rect: QRectF) -> None:
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = rect

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(
        self, painter: QPainter, _option: QStyleOptionGraphicsItem, _widget: QWidget | None = None
    ) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor("white"), 1))
        for point, colour in self.positions:
            painter.setBrush(colour)
            painter.drawEllipse(point, 4.5, 4.5)


class NetworkGraph(QGraphicsView):
    """The live graph.

    Signals:
        node_clicked(str): a node was chosen (its id).
        edge_clicked(str, str): an edge was chosen (its two ids).
        cleared(): nothing is chosen any more.
    """

    node_clicked = Signal(str)
    edge_clicked = Signal(str, str)
    cleared = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("network-graph")
        self.graph_scene = QGraphicsScene(self)
        # Nodes move while the layout runs: a spatial index would be rebuilt every frame.
        self.graph_scene.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)
        self.setScene(self.graph_scene)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setBackgroundBrush(QBrush(QColor("#fafafa")))
        self.setMinimumSize(240, 180)
        # The graph is fitted to the view; scroll bars would only steal room from it.
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.nodes: dict[str, NodeItem] = {}
        self.edges: dict[tuple[str, str], EdgeItem] = {}
        self.dots: OrderedDict[str, Dot] = OrderedDict()
        self.pulses: Counter[tuple[str, str]] = Counter()
        """Dots started per (sender, receiver) since the pane opened."""
        self.dots_item = DotsItem(self)
        self.graph_scene.addItem(self.dots_item)
        self.heat = 0.0
        self._placing = False
        self._zoomed = False
        self._highlighted: EdgeItem | None = None
        self._replay_serial = 0
        self.timer = QTimer(self)
        self.timer.setInterval(FRAME_MS)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.tick)
        self.graph_scene.selectionChanged.connect(self._on_selection_changed)

    # -- nodes and edges ---------------------------------------------------------------------------

    def set_node(self, node: Node, p50: float | None = None, p95: float | None = None) -> NodeItem:
        """Show a node (placed next to the agents it is linked to when it is new)."""
        item = self.nodes.get(node.id)
        if item is None:
            item = NodeItem(self, node)
            self.nodes[node.id] = item
            self._placing = True
            item.setPos(self._place(node.id))
            self._placing = False
            self.graph_scene.addItem(item)
            self.reheat(START_HEAT)
        item.show_node(node, p50, p95)
        return item

    def remove_node(self, node_id: str) -> None:
        item = self.nodes.pop(node_id, None)
        if item is None:
            return
        for key in [key for key in self.edges if node_id in key]:
            edge = self.edges.pop(key)
            if edge is self._highlighted:
                self._highlighted = None
            self.graph_scene.removeItem(edge)
        for dot_id in [i for i, dot in self.dots.items() if node_id in (dot.source, dot.target)]:
            del self.dots[dot_id]
        self.graph_scene.removeItem(item)
        self.reheat(START_HEAT / 2)

    def edge(self, first: str, second: str) -> EdgeItem | None:
        return self.edges.get(edge_key(first, second))

    def _edge(self, first: str, second: str) -> EdgeItem | None:
        """The edge between two shown nodes, made on first use."""
        if first == second or first not in self.nodes or second not in self.nodes:
            return None
        key = edge_key(first, second)
        edge = self.edges.get(key)
        if edge is None:
            edge = EdgeItem(*key)
            self.edges[key] = edge
            self.graph_scene.addItem(edge)
            self._update_edge(edge)
            self.reheat(START_HEAT / 2)
        return edge

    def add_link(self, source: str, target: str) -> None:
        edge = self._edge(source, target)
        if edge is not None and not edge.linked:
            edge.linked = True
            edge.restyle()

    def note_message(self, message: AgentMessage, *, live: bool = True) -> None:
        """Count a message on its edge; a live one new to the graph sends a dot on its way,
        which keeps pulsing until the message is finished."""
        edge = self._edge(message.sender, message.receiver)
        if edge is None:
            return
        dot = self.dots.get(message.id)
        if dot is not None:
            if message.status in FINAL:
                dot.looping = False
            return
        if not live or message.status == MessageStatus.DELIVERED:
            return  # a status change of a message seen before the pane opened
        edge.messages += 1
        self._add_dot(
            message.id,
            Dot(
                message.sender,
                message.receiver,
                time.monotonic(),
                DOT_COLOURS.get(str(message.type), DOT_COLOURS["request"]),
                message.status not in FINAL,
            ),
        )

    def note_call(self, call_id: str, agent: str, model: str, *, done: bool, ok: bool) -> None:
        """A call from an agent to a model: a dot goes to the model and keeps going until the
        call ends, then one comes back (red when it failed)."""
        edge = self._edge(agent, model)
        if edge is None:
            return
        if not edge.linked:
            edge.linked = True
            edge.restyle()
        if not done:
            edge.messages += 1
            dot = Dot(agent, model, time.monotonic(), DOT_COLOURS["model"], True)
            self._add_dot(f"call-{call_id}", dot)
            return
        going = self.dots.get(f"call-{call_id}")
        if going is not None:
            going.looping = False
        colour = DOT_COLOURS["response"] if ok else DOT_COLOURS["error"]
        self._add_dot(f"answer-{call_id}", Dot(model, agent, time.monotonic(), colour, False))

    def pulse(self, sender: str, receiver: str, colour: QColor | None = None) -> None:
        """One dot from ``sender`` to ``receiver`` (replay)."""
        if self._edge(sender, receiver) is None:
            return
        self._replay_serial += 1
        self._add_dot(
            f"replay-{self._replay_serial}",
            Dot(sender, receiver, time.monotonic(), colour or DOT_COLOURS["request"], False),
        )

    def _add_dot(self, dot_id: str, dot: Dot) -> None:
        self.dots[dot_id] = dot
        self.pulses[(dot.source, dot.target)] += 1
        while len(self.dots) > MAX_DOTS:
            self.dots.popitem(last=False)
        self._run()

    def highlight_edge(self, first: str | None, second: str | None = None) -> None:
        """Mark one edge (replay); None clears the mark."""
        if self._highlighted is not None:
            self._highlighted.highlighted = False
            self._highlighted.restyle()
            self._highlighted = None
        if first is not None and second is not None:
            edge = self.edge(first, second)
            if edge is not None:
                edge.highlighted = True
                edge.restyle()
                self._highlighted = edge

    # -- layout --------------------------------------------------------------------------------

    def _place(self, node_id: str) -> QPointF:
        """Next to its linked neighbours if it has some shown, else on a spiral around the
        graph: a new node never lands on top of another or far from where it belongs."""
        neighbours = [
            self.nodes[other].pos()
            for key in self.edges
            if node_id in key
            for other in key
            if other != node_id and other in self.nodes
        ]
        count = len(self.nodes)
        angle = count * 2.39996  # the golden angle: no two nodes on one ray
        if neighbours:
            x = sum(p.x() for p in neighbours) / len(neighbours)
            y = sum(p.y() for p in neighbours) / len(neighbours)
            return QPointF(x + 40 * math.cos(angle), y + 40 * math.sin(angle))
        radius = SPACING * 0.6 * math.sqrt(count)
        return QPointF(radius * math.cos(angle), radius * math.sin(angle))

    def reheat(self, heat: float) -> None:
        """Let the layout move nodes again, by at most ``heat`` pixels an iteration."""
        self.heat = max(self.heat, heat)
        self._run()

    def node_moved(self, item: NodeItem) -> None:
        if self._placing:
            return
        for key, edge in self.edges.items():
            if item.node_id in key:
                self._update_edge(edge)
        # No refit here: a new scene rect replays the mouse move to the dragged item, which
        # would move it again. The scene is fitted on release, when the layout runs.

    def _update_edge(self, edge: EdgeItem) -> None:
        first, second = self.nodes[edge.key[0]], self.nodes[edge.key[1]]
        edge.set_ends(QLineF(first.pos(), second.pos()))

    def layout_step(self) -> float:
        """One iteration of a force layout (repulsion between all, springs along edges, a
        little gravity to the middle); returns the largest move."""
        items = list(self.nodes.values())
        count = len(items)
        if count == 0:
            return 0.0
        xs = [item.x() for item in items]
        ys = [item.y() for item in items]
        dx = [0.0] * count
        dy = [0.0] * count
        k2 = SPACING * SPACING
        reach = (REPULSION_REACH * SPACING) ** 2
        for i in range(count):
            xi, yi = xs[i], ys[i]
            for j in range(i + 1, count):
                ex, ey = xi - xs[j], yi - ys[j]
                d2 = ex * ex + ey * ey
                if d2 > reach:
                    continue  # far apart: no push, so that gravity keeps loners near the rest
                if d2 < 0.01:
                    ex, ey, d2 = 0.1 * (i - j), 0.1, 0.02
                force = k2 / d2
                dx[i] += ex * force
                dy[i] += ey * force
                dx[j] -= ex * force
                dy[j] -= ey * force
        index = {item.node_id: i for i, item in enumerate(items)}
        for first, second in self.edges:
            a, b = index[first], index[second]
            ex, ey = xs[a] - xs[b], ys[a] - ys[b]
            force = math.sqrt(ex * ex + ey * ey) / SPACING
            dx[a] -= ex * force
            dy[a] -= ey * force
            dx[b] += ex * force
            dy[b] += ey * force
        moved = 0.0
        self._placing = True
        try:
            for i, item in enumerate(items):
                if item.pinned or item.dragging:
                    continue
                fx = dx[i] - xs[i] * GRAVITY * count
                fy = dy[i] - ys[i] * GRAVITY * count
                length = math.hypot(fx, fy)
                if length < 1e-9:
                    continue
                step = min(length, self.heat)
                moved = max(moved, step)
                item.setPos(xs[i] + fx / length * step, ys[i] + fy / length * step)
        finally:
            self._placing = False
        self.heat *= COOLING
        return moved

    # -- frames --------------------------------------------------------------------------------

    def _run(self) -> None:
        if not self.timer.isActive():
            self.timer.start()

    def tick(self) -> None:
        """One frame: a few layout iterations if the nodes have not settled, then the dots."""
        if self.heat > SETTLED:
            moved = 0.0
            for _ in range(ITERATIONS_PER_FRAME):
                moved = self.layout_step()
            for edge in self.edges.values():
                self._update_edge(edge)
            self._fit_rect()
            if moved < SETTLED:
                self.heat = 0.0
        self._move_dots()
        if self.heat <= SETTLED and not self.dots:
            self.timer.stop()

    def _move_dots(self) -> None:
        now = time.monotonic()
        positions: list[tuple[QPointF, QColor]] = []
        finished = []
        for dot_id, dot in self.dots.items():
            source, target = self.nodes.get(dot.source), self.nodes.get(dot.target)
            if source is None or target is None:
                finished.append(dot_id)
                continue
            progress = (now - dot.started) / DOT_TRAVEL_S
            if progress >= 1.0:
                if not dot.looping:
                    finished.append(dot_id)
                    continue
                dot.started = now
                progress = 0.0
            a, b = source.pos(), target.pos()
            ex, ey = b.x() - a.x(), b.y() - a.y()
            length = math.hypot(ex, ey) or 1.0
            # Requests and answers on two lanes, a little to each side of the line.
            ox, oy = -ey / length * 4, ex / length * 4
            positions.append(
                (QPointF(a.x() + ex * progress + ox, a.y() + ey * progress + oy), dot.colour)
            )
        for dot_id in finished:
            del self.dots[dot_id]
        if positions or self.dots_item.positions:
            self.dots_item.positions = positions
            self.dots_item.update()

    def _fit_rect(self) -> None:
        """Keep the scene around the nodes and, unless the user zoomed, all of it in view."""
        if not self.nodes:
            return
        xs = [item.x() for item in self.nodes.values()]
        ys = [item.y() for item in self.nodes.values()]
        rect = QRectF(min(xs) - 90, min(ys) - 40, max(xs) - min(xs) + 180, max(ys) - min(ys) + 120)
        self.dots_item.set_rect(rect)
        self.graph_scene.setSceneRect(rect)
        if self._zoomed:
            return
        view = self.viewport().rect()
        if view.width() < 10 or view.height() < 10:
            return
        scale = 0.97 * min(1.0, view.width() / rect.width(), view.height() / rect.height())
        current = self.transform().m11()
        if abs(scale - current) > 0.04 * current:
            self.resetTransform()
            self.scale(scale, scale)

    # -- events --------------------------------------------------------------------------------

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_rect()

    def wheelEvent(self, event: QWheelEvent) -> None:
        factor = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
        self._zoomed = True
        self.scale(factor, factor)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self.itemAt(event.position().toPoint()) is None:
            self._zoomed = False  # a double click on the background fits the graph again
            self._fit_rect()
        super().mouseDoubleClickEvent(event)

    def _on_selection_changed(self) -> None:
        selected = self.graph_scene.selectedItems()
        if not selected:
            self.cleared.emit()
            return
        item = selected[0]
        if isinstance(item, NodeItem):
            self.node_clicked.emit(item.node_id)
        elif isinstance(item, EdgeItem):
            self.edge_clicked.emit(*item.key)
