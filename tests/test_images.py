"""Tests for preimage.images: real files on disk for every conversion and every error case."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preimage.images import (
    ImageError,
    grid,
    load_image,
    load_npy,
    save_npy,
    save_png,
    side_by_side,
    to_grey,
)


def _rgb_array(h: int = 24, w: int = 32) -> np.ndarray:
    return (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ conversions


def test_rgb_png(tmp_path: Path) -> None:
    arr = _rgb_array()
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.dtype == torch.float32 and x.shape == (3, 24, 32)
    torch.testing.assert_close(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_grey_png_stays_one_channel(tmp_path: Path) -> None:
    arr = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(arr).save(tmp_path / "g.png")
    x = load_image(str(tmp_path / "g.png"))
    assert x.shape == (1, 12, 10)
    torch.testing.assert_close(x[0], torch.from_numpy(arr).float() / 255)


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    # pixel (R, G, B, A) = (255, 0, 0, 0) → white ; (0, 0, 255, 255) → blue ; (0, 0, 0, 51) → 1 − 0.2 = 0.8
    arr = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 51]]], dtype=np.uint8)
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 1, 3)
    torch.testing.assert_close(x[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(x[:, 0, 1], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(x[:, 0, 2], torch.full((3,), 0.8))


def test_la_to_grey_over_white(tmp_path: Path) -> None:
    # (L, A) = (0, 255) → 0 ; (0, 0) → 1 (white) ; (100, 255) → 100/255
    arr = np.array([[[0, 255], [0, 0], [100, 255]]], dtype=np.uint8)
    Image.fromarray(arr, "LA").save(tmp_path / "la.png")
    x = load_image(tmp_path / "la.png")
    assert x.shape == (1, 1, 3)
    torch.testing.assert_close(x[0, 0], torch.tensor([0.0, 1.0, 100 / 255]))


def test_16bit_grey_scaled_by_65535(tmp_path: Path) -> None:
    arr = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode in ("I;16", "I")
    x = load_image(tmp_path / "g16.png")
    assert x.shape == (1, 1, 4)
    torch.testing.assert_close(x[0, 0], torch.tensor([0.0, 257.0, 32768.0, 65535.0]) / 65535)


def test_palette_to_rgb(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 100, 0] + [0] * (256 * 3 - 6))
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png")
    x = load_image(tmp_path / "p.png")
    assert x.shape == (3, 1, 2)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([10.0, 20.0, 30.0]) / 255)
    torch.testing.assert_close(x[:, 0, 1], torch.tensor([200.0, 100.0, 0.0]) / 255)


def test_palette_with_transparency_over_white(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 100, 0] + [0] * (256 * 3 - 6))
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "pt.png", transparency=0)
    x = load_image(tmp_path / "pt.png")
    torch.testing.assert_close(x[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(x[:, 0, 1], torch.tensor([200.0, 100.0, 0.0]) / 255)


def test_one_bit_to_grey(tmp_path: Path) -> None:
    im = Image.new("1", (3, 2), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "b.png")
    x = load_image(tmp_path / "b.png")
    assert x.shape == (1, 2, 3)
    expected = torch.zeros(2, 3)
    expected[0, 1] = 1.0
    torch.testing.assert_close(x[0], expected)


def test_cmyk_jpeg_to_rgb(tmp_path: Path) -> None:
    # flat halves: C = 255 → cyan (0, 1, 1); K = 255 → black. JPEG is lossy: compare within 3/255.
    im = Image.new("CMYK", (32, 16), (255, 0, 0, 0))
    im.paste((0, 0, 0, 255), (16, 0, 32, 16))
    im.save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as check:
        assert check.mode == "CMYK"
    x = load_image(tmp_path / "c.jpg")
    assert x.shape == (3, 16, 32)
    torch.testing.assert_close(x[:, 8, 4], torch.tensor([0.0, 1.0, 1.0]), atol=3 / 255, rtol=0)
    torch.testing.assert_close(x[:, 8, 28], torch.zeros(3), atol=3 / 255, rtol=0)


def test_grey_option_and_to_grey(tmp_path: Path) -> None:
    arr = _rgb_array(8, 9)
    Image.fromarray(arr).save(tmp_path / "c.png")
    x = load_image(tmp_path / "c.png", grey=True)
    assert x.shape == (1, 8, 9)
    f = arr.astype(np.float64) / 255
    expected = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-6)
    # batched helper, grey passes through, white stays ≤ 1
    assert to_grey(torch.rand(2, 3, 4, 5)).shape == (2, 1, 4, 5)
    g = torch.rand(1, 4, 5)
    assert to_grey(g) is g
    Image.new("RGB", (3, 3), (255, 255, 255)).save(tmp_path / "w.png")
    assert float(load_image(tmp_path / "w.png", grey=True).max()) <= 1.0
    with pytest.raises(ValueError, match="to_grey"):
        to_grey(torch.rand(2, 4, 5, 5))


# ------------------------------------------------------------------------------------------ error cases


def _assert_one_line(err: pytest.ExceptionInfo[ImageError], path: Path) -> None:
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(err.value, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file") as err:
        load_image(tmp_path / "nope.png")
    _assert_one_line(err, tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a folder, not a file") as err:
        load_image(tmp_path)
    _assert_one_line(err, tmp_path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageError, match="not an image") as err:
        load_image(path)
    _assert_one_line(err, path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as err:
        load_image(path)
    _assert_one_line(err, path)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full.{suffix}"
    Image.fromarray(_rgb_array(64, 64)).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with Image.open(cut) as im:  # the header alone is fine: only decoding finds the damage
        assert im.size == (64, 64)
    with pytest.raises(ImageError, match="truncated or corrupt") as err:
        load_image(cut)
    _assert_one_line(err, cut)
    assert load_image(full).shape == (3, 64, 64)


def test_corrupt_png_data(tmp_path: Path) -> None:
    full = tmp_path / "full.png"
    Image.fromarray(_rgb_array(32, 32)).save(full)
    data = bytearray(full.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 60] = bytes(50)  # zeros in the compressed stream
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="truncated or corrupt") as err:
        load_image(bad)
    _assert_one_line(err, bad)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` × ``height`` but holds almost no pixel data (an image bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(100)))
                     + chunk(b"IEND", b""))
    return path


def test_image_bomb_refused_from_its_header(tmp_path: Path, recwarn) -> None:
    bomb = _png_header_only(tmp_path / "bomb.png", 10000, 10000)
    assert bomb.stat().st_size < 300
    with pytest.raises(ImageError, match="10000x10000 pixels is over the budget of 40000000 pixels") as err:
        load_image(bomb)
    _assert_one_line(err, bomb)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("suffix", [".png", ".gif", ".tiff", ".jpg", ".webp", ".bmp"])
def test_pixel_budget_applies_to_every_format(tmp_path: Path, monkeypatch, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    Image.fromarray(_rgb_array(30, 40)).save(path)
    assert load_image(path).shape == (3, 30, 40)
    monkeypatch.setenv("PREIMAGE_MAX_PIXELS", str(30 * 40 - 1))
    with pytest.raises(ImageError, match="30 pixels is over the budget of 1199"):
        load_image(path)
    monkeypatch.setenv("PREIMAGE_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="PREIMAGE_MAX_PIXELS must be a positive integer"):
        load_image(path)


def _png(path: Path, pixels: np.ndarray, *, interlaced: bool = False, keep_rows: int | None = None) -> Path:
    """An 8-bit RGB PNG written by hand (Adam7 when ``interlaced``); ``keep_rows``: only that many scanlines of
    pixel data, in a stream that ends cleanly (what Pillow decodes without complaint)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    h, w, _ = pixels.shape
    if interlaced:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        images = [pixels[y0::dy, x0::dx] for x0, y0, dx, dy in passes]
    else:
        images = [pixels]
    rows = [b"\x00" + r.tobytes() for image in images if image.size for r in image]
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1 if interlaced else 0)
    data = zlib.compress(b"".join(rows[:keep_rows]))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("interlaced", [False, True])
def test_png_with_rows_missing_is_refused_as_truncated(tmp_path: Path, interlaced: bool) -> None:
    pixels = _rgb_array(21, 19)
    whole = _png(tmp_path / "whole.png", pixels, interlaced=interlaced)
    np.testing.assert_array_equal((load_image(whole).permute(1, 2, 0).numpy() * 255).round(), pixels)
    short = _png(tmp_path / "short.png", pixels, interlaced=interlaced, keep_rows=10)
    with Image.open(short) as im:
        im.load()  # Pillow itself takes it
    with pytest.raises(ImageError, match="truncated image file") as err:
        load_image(short)
    _assert_one_line(err, short)


JPEG_ENCODINGS = {"baseline": {}, "progressive": {"progressive": True}, "optimized": {"optimize": True},
                  "4:4:4": {"subsampling": 0}, "restart markers": {"restart_marker_blocks": 2}}


def _jpeg_bytes(grey: bool, **options) -> bytes:
    """A 64×96 gradient with noise as JPEG (many blocks, none flat)."""
    rng = np.random.default_rng(1)
    pixels = np.linspace(0, 200, 96)[None, :, None] + rng.integers(0, 55, (64, 96, 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    buffer = io.BytesIO()
    (image.convert("L") if grey else image).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("grey", [False, True], ids=["rgb", "grey"])
@pytest.mark.parametrize("encoding", list(JPEG_ENCODINGS))
def test_jpeg_cut_with_its_end_marker_appended_is_refused_as_truncated(tmp_path: Path, encoding: str,
                                                                      grey: bool) -> None:
    data = _jpeg_bytes(grey, **JPEG_ENCODINGS[encoding])
    assert data.endswith(b"\xff\xd9")
    for name, complete in (("whole.jpg", data), ("trailing.jpg", data + b"bytes after the end marker")):
        (tmp_path / name).write_bytes(complete)
        with Image.open(tmp_path / name) as im:
            expected = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
        np.testing.assert_array_equal(load_image(tmp_path / name).expand(3, -1, -1).permute(1, 2, 0).numpy(), expected)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) // 2] + b"\xff\xd9")
    with Image.open(cut) as im:
        im.load()  # Pillow itself takes it, the rest grey
    with pytest.raises(ImageError, match="truncated image file") as err:
        load_image(cut)
    _assert_one_line(err, cut)


def test_multi_picture_jpeg_is_not_taken_for_truncated(tmp_path: Path) -> None:
    first, second = (Image.open(io.BytesIO(_jpeg_bytes(False))) for _ in range(2))
    first.save(tmp_path / "pair.mpo", "MPO", save_all=True, append_images=[second.rotate(90)])
    with Image.open(tmp_path / "pair.mpo") as im:
        assert im.format == "MPO" and im.n_frames == 2
        expected = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_array_equal(load_image(tmp_path / "pair.mpo").permute(1, 2, 0).numpy(), expected)


# ------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("channels", [1, 3])
def test_npy_round_trip_exact(tmp_path: Path, channels: int) -> None:
    x = torch.rand(channels, 7, 5)
    path = save_npy(x, tmp_path / "sub" / "rec.npy")
    raw = np.load(path)
    assert raw.dtype == np.float32 and raw.shape == (7, 5, channels)
    torch.testing.assert_close(load_npy(path), x, atol=0, rtol=0)


def test_npy_clamps_refuses_nan_and_keeps_suffix(tmp_path: Path) -> None:
    x = torch.tensor([[[-0.5, 0.5, 1.5]]])
    path = save_npy(x, tmp_path / "odd.data")
    assert path.exists() and not (tmp_path / "odd.data.npy").exists()
    torch.testing.assert_close(load_npy(path), torch.tensor([[[0.0, 0.5, 1.0]]]))
    with pytest.raises(ValueError, match="NaN"):
        save_npy(torch.full((1, 2, 2), float("nan")), tmp_path / "nan.npy")


def test_load_npy_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_npy(tmp_path / "missing.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ImageError, match="not a readable"):
        load_npy(tmp_path / "text.npy")
    np.save(tmp_path / "u8.npy", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageError, match="float"):
        load_npy(tmp_path / "u8.npy")
    np.save(tmp_path / "chw.npy", np.zeros((3, 4, 5), np.float32))
    with pytest.raises(ImageError, match="H x W x 1"):
        load_npy(tmp_path / "chw.npy")
    np.save(tmp_path / "hw.npy", np.full((4, 5), 0.5))
    assert load_npy(tmp_path / "hw.npy").shape == (1, 4, 5)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_within_one_level(tmp_path: Path, channels: int) -> None:
    x = torch.rand(channels, 9, 11)
    path = save_png(x, tmp_path / "out" / "rec.png")
    y = load_image(path)
    assert y.shape == (channels, 9, 11)
    assert float((y - x).abs().max()) <= 0.5 / 255 + 1e-6  # rounding: half a level
    with Image.open(path) as im:
        assert im.mode == ("L" if channels == 1 else "RGB")


def test_save_png_clamps_and_checks_shape(tmp_path: Path) -> None:
    x = torch.tensor([[[-1.0, 2.0, float("nan")]]])
    y = load_image(save_png(x, tmp_path / "c.png"))
    torch.testing.assert_close(y, torch.tensor([[[0.0, 1.0, 0.0]]]))
    with pytest.raises(ValueError, match="save_png"):
        save_png(torch.rand(2, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="save_png"):
        save_png(torch.rand(4, 4), tmp_path / "x.png")


# ------------------------------------------------------------------------------------------ montages


def test_side_by_side_shapes_and_content() -> None:
    a, b = torch.zeros(3, 8, 8), torch.zeros(1, 6, 10)
    m = side_by_side([a, b], pad=2)
    assert m.shape == (3, 2 + 8 + 2, 2 + 8 + 2 + 10 + 2) and m.dtype == torch.float32
    assert float(m[:, 2:10, 2:10].max()) == 0.0  # first tile in place
    assert float(m[:, 3:9, 12:22].max()) == 0.0  # second tile centred vertically
    assert float(m[:, 2, 12:22].min()) == 1.0  # white above it
    labelled = side_by_side([a, b], labels=["original", "HOG (GD)"], pad=2)
    assert labelled.shape[0] == 3 and labelled.shape[1] > m.shape[1]
    title = labelled[:, : labelled.shape[1] - m.shape[1] + 2]
    assert float(title.min()) < 0.5  # some text was drawn
    assert float(labelled.min()) >= 0.0 and float(labelled.max()) <= 1.0


def test_grid_shapes_and_bad_labels() -> None:
    rows = [[torch.rand(3, 10, 12), torch.rand(1, 10, 12)], [torch.rand(3, 10, 12), torch.rand(3, 10, 12)]]
    g = grid(rows, pad=3)
    assert g.shape == (3, 3 + 2 * (10 + 3), 3 + 2 * (12 + 3))
    gl = grid(rows, col_labels=["a", "b"], row_labels=["hog", "dsift"], pad=3)
    assert gl.shape[1] > g.shape[1] and gl.shape[2] > g.shape[2]
    assert grid([[torch.rand(3, 4, 4)], [torch.rand(3, 4, 4), torch.rand(3, 4, 4)]]).shape[0] == 3  # ragged
    with pytest.raises(ValueError, match="col_labels"):
        grid(rows, col_labels=["only one"])
    with pytest.raises(ValueError, match="row_labels"):
        grid(rows, row_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="no images"):
        grid([])


def test_exif_orientation_applied(tmp_path: Path) -> None:
    # orientation 6: stored 4 wide × 2 high, shown rotated 90° clockwise → 2 wide × 4 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (4, 2), (200, 10, 10)).save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").shape == (3, 4, 2)


def test_a_full_disk_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    """Every output is written to a temporary file and renamed: a write that fails (disk full) leaves neither a
    truncated file nor the temporary one, and says so in one line naming the path."""
    import errno
    import os

    from preimage.jobs.report import write_json
    from preimage.files import atomic_path

    image = torch.rand(3, 8, 8)
    save_npy(image, tmp_path / "old.npy")
    before = (tmp_path / "old.npy").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    for write, name in [(lambda p: save_npy(image, p), "old.npy"), (lambda p: save_png(image, p), "x.png"),
                        (lambda p: write_json(p, {"a": 1}), "m.json")]:
        with pytest.raises(ValueError, match=f"{name}: the disk is full"):
            write(tmp_path / name)
    assert (tmp_path / "old.npy").read_bytes() == before  # the earlier file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.npy"]  # no partial or temporary file
    monkeypatch.undo()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "y.bin") as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.npy"]
