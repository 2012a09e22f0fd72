"""Reading and writing images for the CLI: robust loading, PNG / NPY output, simple labelled montages.

Convention:
    Images are float32 tensors ``(C, H, W)`` in ``[0, 1]``, ``C = 3`` (RGB) or ``C = 1`` (grey).
    Reconstructions on disk: ``<stem>.png`` for looking at and ``<stem>.npy``, float32
    ``H × W × C`` in ``[0, 1]``, for scoring (never score after an 8-bit round trip).
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .files import atomic_path, not_a_file
from .truncation import jpeg_data_missing, png_rows_missing

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "MAX_PIXELS", "ImageError", "check_side", "load_image", "max_pixels", "to_grey", "save_png", "save_npy", "load_npy", "side_by_side", "grid", "label_font",
]

#: The largest image (width × height) :func:`load_image` decodes: 40 megapixels, e.g. 8000 × 5000 (its float32 RGB
#: tensor takes 480 MB). Larger images are refused from their header, before any pixel is decoded, whatever
#: the file's size (a 235-byte PNG may declare 10000²). Set ``$PREIMAGE_MAX_PIXELS`` to change it.
MAX_PIXELS = 40_000_000

#: ITU-R BT.601 luma weights, as MATLAB's ``rgb2gray`` (DSIFT's grey image, as VLFeat's MATLAB examples make it).
GREY_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class ImageError(ValueError):
    """An image file that cannot be read; the message is one line naming the path."""


class _PixelValueError(ValueError):
    """Pixel values that have no place in [0, 1] (the message says which)."""


def _decode(im: Image.Image) -> np.ndarray:
    """A loaded PIL image as float32 ``H × W × C`` in ``[0, 1]`` (C = 1 or 3); alpha composited over white."""
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return (np.asarray(im, dtype=np.float32) / 65535.0)[..., None]
    elif mode == "I":
        return _int32_pixels(np.asarray(im, dtype=np.int64))[..., None]
    elif mode == "F":
        return _float_pixels(np.asarray(im, dtype=np.float64))[..., None]
    elif mode == "La":
        im = im.convert("LA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode or "a" in mode else "RGB")  # CMYK, YCbCr, RGBa, RGBX, ...
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] in (2, 4):  # alpha over white: c·a + 1·(1 − a)
        alpha = arr[..., -1:]
        arr = arr[..., :-1] * alpha + (1.0 - alpha)
    return arr


def _int32_pixels(values: np.ndarray) -> np.ndarray:
    """32-bit integer pixels in ``[0, 1]``: ÷ 65535 when they fit 16 bits (16-bit data stored as 32-bit), else
    ÷ (2³¹ − 1), the type's range; negative values cannot be mapped (:class:`_PixelValueError`)."""
    negative = int((values < 0).sum())
    if negative:
        raise _PixelValueError(f"32-bit integer image with {negative} negative pixel values (as low as {int(values.min())}): "
                         "convert it to an 8- or 16-bit image, or to floats in [0, 1]")
    top = 65535.0 if int(values.max(initial=0)) <= 65535 else float(2**31 - 1)
    return (values / top).astype(np.float32)


def _float_pixels(values: np.ndarray) -> np.ndarray:
    """Floating-point pixels, which must be finite and in ``[0, 1]`` already (a float image has no range of its own
    to scale by): :class:`_PixelValueError` saying how many are not."""
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise _PixelValueError(f"floating-point image with {bad} NaN or infinite pixel values")
    outside = int(((values < 0) | (values > 1)).sum())
    if outside:
        raise _PixelValueError(f"floating-point image with {outside} of {values.size} pixel values "
                         f"({100 * outside / values.size:.1f} %) outside [0, 1] (from {values.min():.4g} to "
                         f"{values.max():.4g}): floats are read as they are, not clipped; scale it to [0, 1]")
    return values.astype(np.float32)


def max_pixels() -> int:
    """The pixel budget: ``$PREIMAGE_MAX_PIXELS`` if set (a positive integer), else :data:`MAX_PIXELS`."""
    value = os.environ.get("PREIMAGE_MAX_PIXELS")
    if value is None:
        return MAX_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"PREIMAGE_MAX_PIXELS must be a positive integer, got {value!r}")
    return int(value)


def check_side(name: str, side: int) -> int:
    """``side`` (pixels) of a square image whose area is within :func:`max_pixels`, else ``ValueError``."""
    if side * side > max_pixels():
        raise ValueError(f"{name}={side}: {side * side:,} pixels per image are over the budget of {max_pixels():,} "
                         "(PREIMAGE_MAX_PIXELS)")
    return side


def load_image(path: PathLike, grey: bool = False, *, check_complete: bool = True) -> torch.Tensor:
    """Read an image file as float32 ``(C, H, W)`` in ``[0, 1]``.

    Args:
        path: any format Pillow reads (png, jpg, webp, bmp, tiff, gif: first frame, ...).
        grey: convert colour images to one grey channel with :func:`to_grey`.
        check_complete: also refuse a PNG or JPEG whose data ends early but cleanly, which Pillow decodes
            without an error (:mod:`preimage.truncation`: one more pass over the file); ``False`` for a file
            this process has already loaded with the check (a training folder, item after item).

    Returns:
        ``(3, H, W)`` for colour images, ``(1, H, W)`` for grey ones (or always with ``grey=True``).

    Raises:
        ImageError: missing, a directory, unreadable, not an image, truncated or corrupt, empty, 0 pixels, or
            more pixels than the budget (:func:`max_pixels`, checked from the header before decoding).

    Convention:
        Modes: ``1``/``L`` → grey; ``I;16`` → grey ÷ 65535; ``I`` (32-bit integers) → grey ÷ 65535 when every
        value fits 16 bits, else ÷ (2³¹ − 1), negative values refused; ``F`` → grey, as it is: values outside
        [0, 1], NaN or infinite are refused (never clipped);
        ``P`` → RGB; ``CMYK``/``YCbCr`` → RGB (Pillow's conversion); ``RGBA``, ``LA`` and palettes with
        transparency are alpha-composited over **white** and the alpha dropped. EXIF orientation is
        applied (the image the right way up, as a viewer shows it). The whole file is decoded inside
        the check, so truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False).
    """
    p = Path(path)
    budget = max_pixels()
    if not_a_file(p):
        raise ImageError(f"{p}: {not_a_file(p)}")
    try:
        if p.stat().st_size == 0:
            raise ImageError(f"{p}: empty file (0 bytes)")
        with warnings.catch_warnings():  # Pillow warns of large images: the budget decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            if im.width * im.height > budget:  # from the header: nothing is decoded yet
                raise ImageError(f"{p}: image of {im.width}x{im.height} pixels is over the budget of {budget} "
                                 "pixels (set PREIMAGE_MAX_PIXELS to raise it)")
            im.load()  # force the lazy decoder so that truncation and corruption surface here
            if check_complete and im.format == "PNG" and png_rows_missing(p):
                raise ImageError(f"{p}: truncated image file (its pixel data ends before the last row)")
            if check_complete and im.format in ("JPEG", "MPO") and jpeg_data_missing(p, im):
                raise ImageError(f"{p}: truncated image file (its compressed data ends before the last block)")
            im = ImageOps.exif_transpose(im)
    except ImageError:
        raise
    except MemoryError:
        raise
    except PermissionError as e:
        raise ImageError(f"{p}: permission denied") from e
    except Image.DecompressionBombError as e:
        raise ImageError(f"{p}: image too large ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"{p}: not an image file Pillow can read") from e
    except Exception as e:  # noqa: BLE001 - Pillow decoders raise OSError, SyntaxError, ValueError, ...
        detail = " ".join(str(e).split()) or type(e).__name__
        raise ImageError(f"{p}: truncated or corrupt image file ({detail})") from e
    if im.width == 0 or im.height == 0:
        raise ImageError(f"{p}: image has no pixels ({im.width}x{im.height})")
    try:
        arr = _decode(im)
    except _PixelValueError as e:
        raise ImageError(f"{p}: {e}") from None
    except (ValueError, OSError) as e:
        raise ImageError(f"{p}: unsupported image mode {im.mode!r} ({' '.join(str(e).split())})") from e
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
    return to_grey(x).clamp_(0.0, 1.0) if grey else x


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """Grey ``0.299 R + 0.587 G + 0.114 B`` (in float, no rounding); grey input is returned unchanged.

    Shape:
        ``(…, 3, H, W)`` → ``(…, 1, H, W)``; ``(…, 1, H, W)`` passes through.

    Example:
        >>> to_grey(torch.ones(2, 3, 4, 5)).shape
        torch.Size([2, 1, 4, 5])
    """
    if x.dim() < 3 or x.shape[-3] not in (1, 3):
        raise ValueError(f"to_grey: expected (..., 3, H, W) or (..., 1, H, W), got {tuple(x.shape)}")
    if x.shape[-3] == 1:
        return x
    w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(dim=-3, keepdim=True)


def _check_chw(name: str, image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected a (1, H, W) or (3, H, W) tensor, got {shape}")
    return image.detach().to("cpu", torch.float32)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` float → ``H × W × C`` uint8: NaN → 0, clamp to [0, 1], round(255 x)."""
    x = torch.nan_to_num(image, nan=0.0).clamp(0.0, 1.0)
    return torch.round(x * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()


def load_images(paths: Sequence[PathLike], grey: bool = False) -> list[torch.Tensor]:
    """:func:`load_image` of each path (with the completeness check), decoded by a few threads at once
    (Pillow's decoders and zlib release the GIL); the error is that of the first failing path in order."""
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(paths)))) as pool:
        return list(pool.map(functools.partial(load_image, grey=grey), paths))


def save_png(image: torch.Tensor, path: PathLike) -> Path:
    """Write ``(C, H, W)`` in ``[0, 1]`` as an 8-bit PNG (grey for C = 1, RGB for C = 3).

    Values are clamped to ``[0, 1]`` (NaN → 0) and rounded to the nearest of 256 levels. Parent
    folders are created. Returns the path written.
    """
    arr = _to_uint8(_check_chw("save_png", image))
    p = Path(path)
    with atomic_path(p) as temporary:
        # zlib level 1: faster than Pillow's default 6 for a few more bytes (these are for looking at)
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(temporary, format="PNG", compress_level=1)
    return p


def save_npy(image: torch.Tensor, path: PathLike) -> Path:
    """Write ``(C, H, W)`` as float32 ``H × W × C`` in ``[0, 1]``, exactly to ``path``.

    Values are clamped to ``[0, 1]``; non-finite values raise ``ValueError`` (they would poison scores).
    Parent folders are created. Returns the path written.
    """
    x = _check_chw("save_npy", image)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"save_npy: {path}: the image has NaN or infinite values")
    arr = np.ascontiguousarray(x.clamp(0.0, 1.0).permute(1, 2, 0).numpy(), dtype=np.float32)
    p = Path(path)
    with atomic_path(p) as temporary, open(temporary, "wb") as f:  # a file: np.save would append ".npy"
        np.save(f, arr, allow_pickle=False)
    return p


def load_npy(path: PathLike) -> torch.Tensor:
    """Read a reconstruction written by :func:`save_npy`: float ``H × W × C`` (or ``H × W``) → float32 ``(C, H, W)``.

    Raises:
        ImageError: missing, not a NumPy file, not a floating-point array, or not ``H × W × {1, 3}``.
    """
    p = Path(path)
    if not_a_file(p):
        raise ImageError(f"{p}: {not_a_file(p)}")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - ValueError, EOFError, OSError, UnpicklingError...
        raise ImageError(f"{p}: not a readable .npy array ({' '.join(str(e).split())})") from e
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.floating):
        raise ImageError(f"{p}: expected a float array in [0, 1], got dtype {getattr(arr, 'dtype', type(arr))}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3) or 0 in arr.shape:
        raise ImageError(f"{p}: expected an H x W x 1 or H x W x 3 array, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))


# ------------------------------------------------------------------------------------------- montages


def _rgb(image: torch.Tensor) -> torch.Tensor:
    x = _check_chw("montage", image)
    x = torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0)
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


#: Pixel size of the montage labels' font.
LABEL_FONT_SIZE = 12


@functools.lru_cache(maxsize=None)
def label_font(size: int = LABEL_FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` px (its scalable FreeType font, Pillow >= 10.1).

    Falls back to the fixed ~10 px bitmap default (which renders some punctuation, e.g. ``:``, barely or
    not at all) when this Pillow is older or built without FreeType.
    """
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1: no size argument; no FreeType support
        return ImageFont.load_default()


def _text_size(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox((0, 0), text, font=font)
    return right, bottom  # from the origin, so that glyph offsets are kept


def _draw_text(canvas: torch.Tensor, text: str, x: int, y: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """Draw black ``text`` with its top-left at ``(x, y)`` onto a ``(3, H, W)`` float canvas, in place."""
    w, h = _text_size(font, text)
    if w == 0:
        return
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).multiline_text((0, 0), text, fill=255, font=font)
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)
    h, w = min(h, canvas.shape[1] - y), min(w, canvas.shape[2] - x)
    canvas[:, y : y + h, x : x + w] *= 1.0 - m[:h, :w]


def grid(
    rows: Sequence[Sequence[torch.Tensor]],
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    pad: int = 4,
) -> torch.Tensor:
    """A rows × columns montage on white, with optional column titles above and row titles on the left.

    Args:
        rows: ``rows[r][c]`` is a ``(1 or 3, H, W)`` image in ``[0, 1]``; sizes may differ (each cell is
            as large as the largest image of its row and column, images centred); rows may be ragged.
        col_labels: one title per column, drawn in black with :func:`label_font`.
        row_labels: one title per row.
        pad: white margin between and around cells, in pixels.

    Returns:
        float32 ``(3, H, W)`` in ``[0, 1]``: grey images are replicated to RGB.
    """
    if not rows or not any(len(r) for r in rows):
        raise ValueError("grid: no images")
    n_cols = max(len(r) for r in rows)
    for name, labels, n in (("col_labels", col_labels, n_cols), ("row_labels", row_labels, len(rows))):
        if labels is not None and len(labels) != n:
            raise ValueError(f"grid: {len(labels)} {name} for {n} {name.split('_')[0]}s")
    cells = [[_rgb(im) for im in r] for r in rows]
    font = label_font()
    col_w = [0] * n_cols
    row_h = [max((im.shape[1] for im in r), default=0) for r in cells]
    for r in cells:
        for c, im in enumerate(r):
            col_w[c] = max(col_w[c], im.shape[2])
    title_h = 0
    if col_labels is not None:
        sizes = [_text_size(font, t) for t in col_labels]
        col_w = [max(w, s[0]) for w, s in zip(col_w, sizes)]
        title_h = max(s[1] for s in sizes) + pad
    left_w = 0
    if row_labels is not None:
        sizes = [_text_size(font, t) for t in row_labels]
        row_h = [max(h, s[1]) for h, s in zip(row_h, sizes)]
        left_w = max(s[0] for s in sizes) + pad
    height = pad + title_h + sum(row_h) + pad * len(rows)
    width = pad + left_w + sum(col_w) + pad * n_cols
    canvas = torch.ones(3, height, width)
    x0 = [pad + left_w + sum(col_w[:c]) + pad * c for c in range(n_cols)]
    y0 = [pad + title_h + sum(row_h[:r]) + pad * r for r in range(len(rows))]
    for r, row in enumerate(cells):
        for c, im in enumerate(row):
            h, w = im.shape[1:]
            y, x = y0[r] + (row_h[r] - h) // 2, x0[c] + (col_w[c] - w) // 2
            canvas[:, y : y + h, x : x + w] = im
    for c, text in enumerate(col_labels or []):
        _draw_text(canvas, text, x0[c] + (col_w[c] - _text_size(font, text)[0]) // 2, pad, font)
    for r, text in enumerate(row_labels or []):
        _draw_text(canvas, text, pad, y0[r] + (row_h[r] - _text_size(font, text)[1]) // 2, font)
    return canvas


def side_by_side(images: Sequence[torch.Tensor], labels: Sequence[str] | None = None, pad: int = 4) -> torch.Tensor:
    """A horizontal montage of ``images`` (``(1 or 3, H, W)`` in ``[0, 1]``) with optional titles above.

    Images of different heights are centred vertically on white; grey is replicated to RGB.

    Returns:
        float32 ``(3, H, W)`` in ``[0, 1]``.

    Example:
        >>> side_by_side([torch.rand(3, 8, 8), torch.rand(1, 6, 10)], pad=2).shape
        torch.Size([3, 12, 24])
    """
    return grid([list(images)], col_labels=labels, pad=pad)
