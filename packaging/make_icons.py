"""Draw the app's icon (a ripe mangaba with its leaf) and write every file the platforms ask for.

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/make_icons.py [--out resources/icons]

Writes ``mangaba-desktop-<size>.png`` for each size in ``PNG_SIZES``, ``mangaba-desktop.ico``
(Windows), ``mangaba-desktop.icns`` (macOS) and ``mangaba-desktop.svg`` (the scalable icon of
Linux themes). One description of the drawing feeds both QPainter and the SVG, so they cannot
drift apart. Each size is painted from the vectors rather than scaled down from a large
bitmap, which keeps the small sizes sharp; the finest details are left out where they would
only be a blur of pixels. The ICO and ICNS containers are written here byte by byte, with PNG
entries, so that making them needs no image plugin beyond PNG.
"""

from __future__ import annotations

import argparse
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QGradient,
    QGuiApplication,
    QImage,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPen,
    QRadialGradient,
)

ROOT = Path(__file__).resolve().parents[1]
NAME = "mangaba-desktop"
GRID = 1024  # the drawing's own units: one unit is one pixel of the largest PNG

PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512, 1024)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
# ICNS entry types and the pixel size each holds. The @2x types (ic11..ic14) are what Retina
# screens pick for 16, 32, 128 and 256 point icons; without them macOS scales a 1x image up.
ICNS_ENTRIES = (
    (b"icp4", 16),
    (b"icp5", 32),
    (b"icp6", 64),
    (b"ic07", 128),
    (b"ic08", 256),
    (b"ic09", 512),
    (b"ic10", 1024),
    (b"ic11", 32),
    (b"ic12", 64),
    (b"ic13", 256),
    (b"ic14", 512),
)

# -- the drawing, as data ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stop:
    offset: float
    color: str
    opacity: float = 1.0


@dataclass(frozen=True)
class Linear:
    """A linear gradient in the shape's bounding box (0..1 on each axis), as SVG's default."""

    start: tuple[float, float]
    end: tuple[float, float]
    stops: tuple[Stop, ...]


@dataclass(frozen=True)
class Radial:
    """A radial gradient in the shape's bounding box, so it stretches with an ellipse."""

    center: tuple[float, float]
    radius: float
    stops: tuple[Stop, ...]


Paint = str | Linear | Radial  # a plain "#rrggbb" or a gradient


@dataclass
class Outline:
    """Path commands that both QPainterPath and SVG understand."""

    commands: list[tuple[str, tuple[float, ...]]] = field(default_factory=list)

    def move(self, x: float, y: float) -> Outline:
        self.commands.append(("M", (x, y)))
        return self

    def curve(self, *points: float) -> Outline:
        """A cubic Bézier: first control point, second control point, end point."""
        self.commands.append(("C", points))
        return self

    def close(self) -> Outline:
        self.commands.append(("Z", ()))
        return self

    @classmethod
    def ellipse(cls, cx: float, cy: float, rx: float, ry: float) -> Outline:
        # Four cubic quarters (the usual 0.5523 handle) rather than SVG arcs, which QPainterPath
        # has no command for.
        k = 0.5523
        return (
            cls()
            .move(cx + rx, cy)
            .curve(cx + rx, cy + k * ry, cx + k * rx, cy + ry, cx, cy + ry)
            .curve(cx - k * rx, cy + ry, cx - rx, cy + k * ry, cx - rx, cy)
            .curve(cx - rx, cy - k * ry, cx - k * rx, cy - ry, cx, cy - ry)
            .curve(cx + k * rx, cy - ry, cx + rx, cy - k * ry, cx + rx, cy)
            .close()
        )


@dataclass(frozen=True)
class Shape:
    outline: Outline
    fill: Paint | None = None
    stroke: str | None = None
    stroke_opacity: float = 1.0
    stroke_width: float = 0.0  # in grid units
    # A stroke never thinner than this many pixels, so outlines survive at 16 px.
    min_stroke_px: float = 0.0
    # Drawn only from this pixel size up: below it a detail is noise, not information.
    min_size: int = 0
    rotate: tuple[float, float, float] | None = None  # degrees, around (x, y)


FRUIT_CENTER = (492.0, 562.0)
FRUIT_RADII = (350.0, 368.0)  # a touch taller than wide, as the fruit grows
# From this size down the shadow is left out and the rest is enlarged to fill the square: a
# 16 px icon cannot spare the margin that large icons keep around the drawing.
FILL_BELOW = 48


def _speckles() -> list[Shape]:
    """The small russet dots of a ripe mangaba's skin, on its sunlit-away side."""
    cx, cy = FRUIT_CENTER
    spots = (
        (170, 120, 11),
        (235, 15, 9),
        (110, 235, 10),
        (-10, 270, 8),
        (265, -105, 8),
        (20, 150, 7),
        (160, -20, 7),
        (-120, 200, 7),
        (205, 215, 8),
    )
    return [
        Shape(Outline.ellipse(cx + dx, cy + dy, r, r), fill="#a52d1c", min_size=64)
        for dx, dy, r in spots
    ]


def icon_shapes() -> list[Shape]:
    """The icon from back to front, in grid units."""
    cx, cy = FRUIT_CENTER
    rx, ry = FRUIT_RADII
    leaf = (
        Outline()
        .move(522, 182)
        .curve(575, 52, 750, 8, 908, 62)
        .curve(832, 204, 672, 254, 522, 182)
        .close()
    )
    return [
        # A soft shadow that sets the fruit on the ground in the large sizes.
        Shape(
            Outline.ellipse(cx + 10, 944, 300, 42),
            fill=Radial((0.5, 0.5), 0.5, (Stop(0, "#3b2a10", 0.38), Stop(1, "#3b2a10", 0.0))),
            min_size=FILL_BELOW,
        ),
        # The fruit: lit from the upper left, ripening to orange away from the light.
        Shape(
            Outline.ellipse(cx, cy, rx, ry),
            fill=Radial(
                (0.34, 0.28),
                0.86,
                (
                    Stop(0.0, "#fff7bd"),
                    Stop(0.32, "#ffdc4e"),
                    Stop(0.72, "#f7bb2c"),
                    Stop(1.0, "#e8921f"),
                ),
            ),
        ),
        # The red blush mangabas take on their lower, riper side.
        Shape(
            Outline.ellipse(cx, cy, rx, ry),
            fill=Radial(
                (0.82, 0.86),
                0.72,
                (Stop(0, "#d1302a", 0.85), Stop(0.5, "#e0502a", 0.35), Stop(1, "#e0502a", 0)),
            ),
        ),
        *_speckles(),
        # The rim keeps the round silhouette readable on white and on dark panels alike.
        Shape(
            Outline.ellipse(cx, cy, rx, ry),
            stroke="#8f3f12",
            stroke_opacity=0.85,
            stroke_width=12,
            min_stroke_px=1.0,
        ),
        # The shine, which makes a disc read as a fruit.
        Shape(
            Outline.ellipse(352, 396, 128, 72),
            fill=Radial((0.5, 0.5), 0.5, (Stop(0, "#ffffff", 0.9), Stop(1, "#ffffff", 0.0))),
            min_size=24,
            rotate=(-38, 352, 396),
        ),
        # Stem, then the leaf over it.
        Shape(
            Outline().move(498, 214).curve(500, 180, 508, 146, 530, 112),
            stroke="#6b3d1c",
            stroke_width=30,
            min_stroke_px=1.4,
        ),
        Shape(
            leaf,
            fill=Linear(
                (0.0, 1.0),
                (1.0, 0.0),
                (Stop(0, "#2f8a3e"), Stop(0.55, "#4fae4a"), Stop(1, "#95d463")),
            ),
            stroke="#1f5f29",
            stroke_opacity=0.9,
            stroke_width=10,
            min_stroke_px=0.8,
        ),
        Shape(
            Outline().move(540, 180).curve(650, 140, 770, 96, 888, 66),
            stroke="#d7f2a8",
            stroke_opacity=0.75,
            stroke_width=9,
            min_size=48,
        ),
    ]


# -- painting with QPainter --------------------------------------------------------------------


def _color(hex_color: str, opacity: float) -> QColor:
    color = QColor(hex_color)
    color.setAlphaF(opacity)
    return color


def _brush(paint: Paint) -> QBrush:
    if isinstance(paint, str):
        return QBrush(QColor(paint))
    gradient: QGradient
    if isinstance(paint, Linear):
        gradient = QLinearGradient(QPointF(*paint.start), QPointF(*paint.end))
    else:
        gradient = QRadialGradient(QPointF(*paint.center), paint.radius)
    gradient.setCoordinateMode(QGradient.CoordinateMode.ObjectBoundingMode)
    for stop in paint.stops:
        gradient.setColorAt(stop.offset, _color(stop.color, stop.opacity))
    return QBrush(gradient)


def _painter_path(outline: Outline) -> QPainterPath:
    path = QPainterPath()
    for command, values in outline.commands:
        if command == "M":
            path.moveTo(*values)
        elif command == "C":
            path.cubicTo(*values)
        else:
            path.closeSubpath()
    return path


def render(size: int) -> QImage:
    """The icon painted at ``size`` × ``size`` pixels."""
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    shapes = [shape for shape in icon_shapes() if size >= shape.min_size]
    scale = size / GRID
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    if size < FILL_BELOW:
        bounds = QRectF()
        for shape in shapes:
            half_stroke = max(shape.stroke_width, shape.min_stroke_px / scale) / 2
            bounds |= (
                _painter_path(shape.outline)
                .boundingRect()
                .adjusted(-half_stroke, -half_stroke, half_stroke, half_stroke)
            )
        margin = 0.5  # pixels, so the antialiased edge is not cut off
        scale = (size - 2 * margin) / max(bounds.width(), bounds.height())
        painter.translate(size / 2, size / 2)
        painter.scale(scale, scale)
        painter.translate(-bounds.center())
    else:
        painter.scale(scale, scale)
    for shape in shapes:
        painter.save()
        if shape.rotate is not None:
            angle, x, y = shape.rotate
            painter.translate(x, y)
            painter.rotate(angle)
            painter.translate(-x, -y)
        path = _painter_path(shape.outline)
        if shape.fill is not None:
            painter.fillPath(path, _brush(shape.fill))
        if shape.stroke is not None:
            width = max(shape.stroke_width, shape.min_stroke_px / scale)
            pen = QPen(_color(shape.stroke, shape.stroke_opacity), width)
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
            painter.strokePath(path, pen)
        painter.restore()
    painter.end()
    return image.convertToFormat(QImage.Format.Format_ARGB32)


def png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise RuntimeError("Qt could not encode a PNG")
    buffer.close()
    return bytes(data.data())


# -- the same drawing as SVG -------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _svg_path_data(outline: Outline) -> str:
    return " ".join(
        command + (" " + " ".join(_number(v) for v in values) if values else "")
        for command, values in outline.commands
    )


def _svg_gradient(paint: Linear | Radial, gradient_id: str) -> str:
    stops = "".join(
        f'<stop offset="{_number(s.offset)}" stop-color="{s.color}"'
        + (f' stop-opacity="{_number(s.opacity)}"' if s.opacity != 1 else "")
        + "/>"
        for s in paint.stops
    )
    if isinstance(paint, Linear):
        (x1, y1), (x2, y2) = paint.start, paint.end
        return (
            f'<linearGradient id="{gradient_id}" x1="{_number(x1)}" y1="{_number(y1)}" '
            f'x2="{_number(x2)}" y2="{_number(y2)}">{stops}</linearGradient>'
        )
    cx, cy = paint.center
    return (
        f'<radialGradient id="{gradient_id}" cx="{_number(cx)}" cy="{_number(cy)}" '
        f'r="{_number(paint.radius)}">{stops}</radialGradient>'
    )


def svg_document(title: str) -> str:
    """The icon as SVG, with every detail (it is shown large or scaled by the theme)."""
    definitions: list[str] = []
    elements: list[str] = []
    for index, shape in enumerate(icon_shapes()):
        attributes = [f'd="{_svg_path_data(shape.outline)}"']
        if isinstance(shape.fill, str):
            attributes.append(f'fill="{shape.fill}"')
        elif shape.fill is not None:
            gradient_id = f"paint{index}"
            definitions.append(_svg_gradient(shape.fill, gradient_id))
            attributes.append(f'fill="url(#{gradient_id})"')
        else:
            attributes.append('fill="none"')
        if shape.stroke is not None:
            attributes += [
                f'stroke="{shape.stroke}"',
                f'stroke-width="{_number(shape.stroke_width)}"',
                'stroke-linecap="round"',
                'stroke-linejoin="round"',
            ]
            if shape.stroke_opacity != 1:
                attributes.append(f'stroke-opacity="{_number(shape.stroke_opacity)}"')
        if shape.rotate is not None:
            angle, x, y = shape.rotate
            attributes.append(f'transform="rotate({_number(angle)} {_number(x)} {_number(y)})"')
        elements.append(f"  <path {' '.join(attributes)}/>")
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{GRID}" height="{GRID}" '
            f'viewBox="0 0 {GRID} {GRID}">',
            f"  <title>{escape(title)}</title>",
            "  <defs>",
            *(f"    {definition}" for definition in definitions),
            "  </defs>",
            *elements,
            "</svg>",
            "",
        ]
    )


# -- containers --------------------------------------------------------------------------------


def ico_bytes(pngs: Sequence[tuple[int, bytes]]) -> bytes:
    """An ICO of PNG-compressed images (read by Windows Vista and later at every size).

    Layout: ICONDIR (reserved 0, type 1 = icon, count), one 16-byte ICONDIRENTRY per image
    (width and height as a byte, where 0 means 256; no palette; 1 plane; 32 bits per pixel;
    the PNG's length and its offset from the start of the file), then the PNGs.
    """
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = len(header) + 16 * len(pngs)
    directory = b""
    for size, png in pngs:
        if not 1 <= size <= 256:
            raise ValueError(f"an ICO holds images of 1 to 256 pixels, not {size}")
        side = size % 256  # 256 is written as 0
        directory += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(png), offset)
        offset += len(png)
    return header + directory + b"".join(png for _, png in pngs)


def icns_bytes(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """An ICNS: b'icns' and the file's length, then per image its type, its length with the
    8-byte entry header, and the PNG; all lengths big-endian."""
    body = b"".join(kind + struct.pack(">I", 8 + len(png)) + png for kind, png in entries)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


# -- the command -------------------------------------------------------------------------------


def write_icons(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sorted({*PNG_SIZES, *ICO_SIZES, *(size for _, size in ICNS_ENTRIES)})
    pngs = {size: png_bytes(render(size)) for size in sizes}
    written: list[Path] = []

    def write(name: str, data: bytes) -> None:
        path = folder / name
        path.write_bytes(data)
        written.append(path)

    for size in PNG_SIZES:
        write(f"{NAME}-{size}.png", pngs[size])
    write(f"{NAME}.ico", ico_bytes([(size, pngs[size]) for size in ICO_SIZES]))
    write(f"{NAME}.icns", icns_bytes((kind, pngs[size]) for kind, size in ICNS_ENTRIES))
    write(f"{NAME}.svg", svg_document("Mangaba Desktop").encode())
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "icons")
    options = parser.parse_args()
    _app = QGuiApplication.instance() or QGuiApplication([])
    for path in write_icons(options.out.resolve()):
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"{path.stat().st_size:>9,} bytes  {shown}")


if __name__ == "__main__":
    main()
