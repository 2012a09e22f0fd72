"""Image files whose data ends early although Pillow decodes them without an error, filling the rest.

Pillow refuses a file cut short, but not one that is cut and then ends properly: a PNG whose compressed rows stop
before the last one (the rest black) or a JPEG cut mid-scan with its end-of-image marker appended (libjpeg
warns, which Pillow ignores, and the rest is grey). These functions find both from the file itself.
"""
from __future__ import annotations

import io
import mmap
import re
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["jpeg_data_missing", "png_rows_missing"]

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def png_rows_missing(path: Path) -> bool:
    """Whether a PNG's pixel data (its IDAT chunks, inflated) is shorter than its header says: a file that ends
    cleanly after part of its rows, which Pillow decodes without an error (the rest black). Streams the data."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
        inflater, produced, header = zlib.decompressobj(), 0, None
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            data = f.read(length)
            f.read(4)  # CRC (Pillow checks it)
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", data[:13])
            elif kind == b"IDAT":
                chunk = data
                while chunk:
                    produced += len(inflater.decompress(chunk, 1 << 20))
                    chunk = inflater.unconsumed_tail
            elif kind == b"IEND":
                break
    if header is None:
        return False
    width, height, depth, colour, _, _, interlace = header
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    row = lambda w: 0 if w == 0 else 1 + (w * bits + 7) // 8  # noqa: E731 - filter byte + packed samples
    if interlace:  # Adam7: seven reduced images
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        expected = sum(row(-(-(width - x0) // dx)) * -(-(height - y0) // dy)
                       for x0, y0, dx, dy in passes if width > x0 and height > y0)
    else:
        expected = row(width) * height
    return produced < expected


#: a JPEG marker: 0xFF, then a code that is neither a stuffed zero, a restart marker, nor a fill byte
_JPEG_MARKER = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")
_JPEG_EOI, _JPEG_TEM = 0xD9, 0x01
#: bytes that cannot form a marker (no 0xFF), put before a JPEG's end marker by :func:`jpeg_data_missing`
_FILLER = bytes(np.random.default_rng(20150612).integers(0, 0xFF, 256, dtype=np.uint8))


def _jpeg_end(data: bytes | mmap.mmap) -> int | None:
    """Offset of the end-of-image marker that closes a JPEG's first image (after its segments and scans), or
    None if there is none. The markers are followed by their segment lengths; a scan's entropy-coded data
    (where 0xFF is stuffed as 0xFF00 and restart markers may appear) is skipped by the marker search."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while (found := _JPEG_MARKER.search(data, at)) is not None:
        at = found.start()
        code = data[at + 1]
        if code == _JPEG_EOI:
            return at
        if code == _JPEG_TEM:  # no segment
            at += 2
            continue
        if at + 4 > len(data):
            return None
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return None


def jpeg_data_missing(path: Path, decoded: Image.Image) -> bool:
    """Whether a JPEG's last scan ends before its last block: a file cut short with an end marker appended.

    libjpeg decodes such a scan as far as its data goes and fills the rest. To tell, the file is decoded once
    more with filler bytes put before its end marker: a complete scan ends before them (libjpeg skips bytes
    between a scan and the next marker), so the image is the same; an incomplete one reads them as its missing
    data, so the image changes. ``decoded`` is the file as Pillow loaded it (first frame).
    A progressive JPEG cut exactly between two scans is a complete, coarser JPEG and is not reported.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        end = _jpeg_end(data)
        if end is None:
            return False
        padded = data[:end] + _FILLER + data[end:end + 2]
    try:
        with Image.open(io.BytesIO(padded)) as again:
            again.load()
            return not np.array_equal(np.asarray(again), np.asarray(decoded))
    except Exception:  # noqa: BLE001 - the filler, read as data, broke the decoder: the scan was incomplete
        return True
