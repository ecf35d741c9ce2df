"""Render the application icon from its SVG source: PNGs for Linux menus and the window, an ICO for Windows.

Run after editing ``resources/icons/ai-service-platform.svg`` and commit what it writes::

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/make_icons.py
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
NAME = "ai-service-platform"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
"""Sizes of the freedesktop hicolor theme that menus ask for (512 for high-density screens)."""
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
ICO_PNG_FROM = 128
"""ICO entries this size and larger are PNG-compressed (Vista and later); smaller ones are plain bitmaps,
which every icon reader accepts (the Inno Setup compiler and PyInstaller's icon embedding included)."""


def render(renderer: QSvgRenderer, size: int) -> QImage:
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    return image


def png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")  # type: ignore[call-overload]  # the stubs say bytes; PySide6 takes str
    buffer.close()
    return bytes(data.data())


def bitmap_entry(image: QImage) -> bytes:
    """A 32-bit BGRA device-independent bitmap as an ICO entry: header, bottom-up pixels, empty AND mask."""
    size = image.width()
    argb = image.convertToFormat(QImage.Format.Format_ARGB32)
    stride = argb.bytesPerLine()
    raw = bytes(argb.constBits())  # little-endian ARGB32 is B, G, R, A in memory
    rows = [raw[y * stride : y * stride + size * 4] for y in range(size)]
    mask_stride = ((size + 31) // 32) * 4
    header = struct.pack("<IiiHHIIiiII", 40, size, size * 2, 1, 32, 0, size * size * 4, 0, 0, 0, 0)
    return header + b"".join(reversed(rows)) + bytes(mask_stride * size)


def ico_bytes(images: dict[int, QImage]) -> bytes:
    entries = [
        (size, png_bytes(img) if size >= ICO_PNG_FROM else bitmap_entry(img)) for size, img in images.items()
    ]
    offset = 6 + 16 * len(entries)
    directory = b""
    payload = b""
    for size, data in entries:
        side = 0 if size >= 256 else size  # 0 means 256 in an ICO directory
        directory += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(data), offset + len(payload))
        payload += data
    return struct.pack("<HHH", 0, 1, len(entries)) + directory + payload


def main() -> int:
    app = QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(ICONS / f"{NAME}.svg"))
    if not renderer.isValid():
        sys.stderr.write(f"cannot read {ICONS / f'{NAME}.svg'}\n")
        return 1
    images = {size: render(renderer, size) for size in sorted(set(PNG_SIZES) | set(ICO_SIZES))}
    for size in PNG_SIZES:
        (ICONS / f"{NAME}-{size}.png").write_bytes(png_bytes(images[size]))
    (ICONS / f"{NAME}.ico").write_bytes(ico_bytes({size: images[size] for size in ICO_SIZES}))
    sys.stdout.write(f"wrote {len(PNG_SIZES)} PNGs and {NAME}.ico to {ICONS}\n")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
