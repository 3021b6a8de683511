"""Just enough PNG decoding to compare screenshots (Pillow is not a dependency).

Chromium's screenshots are 8-bit RGB or RGBA, not interlaced; that is all this reads.
"""

from __future__ import annotations

import struct
import zlib

Pixel = tuple[int, int, int]


def pixels(png: bytes) -> list[Pixel]:
    """Every pixel's (r, g, b), row by row."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat = 8, b""
    width = height = channels = 0
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        data = png[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data)
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += data
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    result: list[Pixel] = []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
        result.extend((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels))
        previous = line
    return result


def share_near(png: bytes, colour: str, tolerance: int = 24) -> float:
    """The share of pixels within ``tolerance`` (per channel) of ``colour`` (``#rrggbb``)."""
    target = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    found = pixels(png)
    near = sum(all(abs(a - b) <= tolerance for a, b in zip(p, target, strict=True)) for p in found)
    return near / len(found)
