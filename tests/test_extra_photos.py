"""scripts/extra_photos.py's offline parts: reading a member out of a .deb (an ar archive) and telling photographic
stamps from drawings."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_SPEC = importlib.util.spec_from_file_location("extra_photos", Path(__file__).parents[1] / "scripts" / "extra_photos.py")
extra_photos = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(extra_photos)


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    """An ar archive as the format specifies it: the magic line, then per member a 60-byte header (name 16,
    mtime 12, uid 6, gid 6, mode 8, size 10, the two bytes ``\\x60\\n``) and the data, padded to an even length."""
    out = b"!<arch>\n"
    for name, data in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
        assert len(header) == 60
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def test_ar_member_finds_the_data_tarball_after_odd_sized_members() -> None:
    deb = ar_archive([("debian-binary", b"2.0\n"), ("control.tar.xz", b"abc"), ("data.tar.xz", b"payload!")])
    assert extra_photos._ar_member(deb, "data.tar") == ("data.tar.xz", b"payload!")
    assert extra_photos._ar_member(deb, "control") == ("control.tar.xz", b"abc")
    with pytest.raises(ValueError, match="no data.tar"):
        extra_photos._ar_member(ar_archive([("debian-binary", b"2.0\n")]), "data.tar")
    with pytest.raises(ValueError, match="not a Debian package"):
        extra_photos._ar_member(b"PK\x03\x04", "data.tar")


def stamp(rgb: np.ndarray) -> Image.Image:
    """An RGBA stamp: the pixels ``rgb`` (H, W, 3) inside a transparent 10-px border."""
    h, w, _ = rgb.shape
    rgba = np.zeros((h + 20, w + 20, 4), dtype=np.uint8)
    rgba[10:-10, 10:-10, :3], rgba[10:-10, 10:-10, 3] = rgb, 255
    return Image.fromarray(rgba, "RGBA")


def test_is_photo_keeps_many_coloured_cut_outs_and_drops_flat_art_and_small_stamps() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    flat_art = np.zeros((120, 150, 3), dtype=np.uint8)
    flat_art[:, 75:] = (200, 30, 30)  # two colours, as a drawing's fills
    assert extra_photos._is_photo(stamp(photo))
    assert not extra_photos._is_photo(stamp(flat_art))
    assert not extra_photos._is_photo(stamp(photo[:50, :50]))  # 70 px a side with its border: too small
    assert not extra_photos._is_photo(Image.new("RGBA", (200, 200)))  # nothing opaque
