"""Image sources for training learned inverters: built-in photos, dead leaves, folders, mixtures.

Every source is a map-style :class:`torch.utils.data.Dataset` over an unbounded index: item ``k`` (any
``k >= 0``) is a deterministic function of ``(seed, split, k)`` alone, drawn from its own
``numpy.random.Generator`` (no global RNG), so an item is the same in every epoch, run, process and worker.
``len(source)`` is the epoch or set size: a plain ``DataLoader`` reads items ``0 … length − 1`` (a fixed
val/test set); :class:`~preimage.training.datamodule.EpochSampler` reads a fresh range every epoch.

Splits are by source photograph, so that no photograph feeds two splits:

- built-in photos: test = :data:`preimage.photos.TEST_PHOTOS`; val = :data:`VAL_PHOTOS` (``rocket``, a colour
  outdoor scene, and ``gravel``, a grey texture); train = the other ``TRAIN_PHOTOS`` (both motorcycle views).
- folders: a file is a source photograph; a hash of its relative path assigns its split (:func:`split_of`).
- dead leaves: the three splits are disjoint random streams.

Convention:
    Items are float32 ``(3, S, S)`` RGB in ``[0, 1]``, ``S = crop`` pixels (grey photos replicated to three
    channels), or ``(1, S, S)`` with ``grey=True`` (:func:`preimage.images.to_grey`). ``sample(k)`` returns
    the item and the name of its source (photo name, relative file path, ``dead_leaves:<split>``).
"""
from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..files import atomic_path
from ..images import ImageError, PathLike, load_image, to_grey
from ..photos import TEST_PHOTOS, TRAIN_PHOTOS, load_photo
from .dead_leaves import check_leaves, dead_leaves

__all__ = [
    "VAL_PHOTOS", "IMAGE_EXTENSIONS", "UnreadableImageWarning", "builtin_split", "random_crop",
    "dead_leaves", "scan_images", "split_of", "ImageSource", "BuiltinPhotos", "ImageFolder",
    "DeadLeaves", "Mixture",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Built-in training photographs held out for validation (the motorcycle views stay together in train).
VAL_PHOTOS: tuple[str, ...] = ("rocket", "gravel")
#: File name endings :class:`ImageFolder` reads (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
# Random-stream codes, so that sources sharing a seed never share random numbers.
_BUILTIN, _FOLDER, _DEAD_LEAVES, _MIXTURE = 1, 2, 3, 4
_ITEM, _ORDER = 0, 1


class UnreadableImageWarning(UserWarning):
    """Files of an :class:`ImageFolder` that could not be read were skipped."""


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def _index(k: int) -> int:
    k = int(k)
    if k < 0:
        raise IndexError(f"source index must be >= 0, got {k}")
    return k


def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return SPLITS.index(split)


def builtin_split(split: str) -> tuple[str, ...]:
    """Names of the built-in photos of ``split`` (``train`` | ``val`` | ``test``), split by source photograph."""
    _split_code(split)
    return {"test": TEST_PHOTOS, "val": VAL_PHOTOS}.get(split) or tuple(n for n in TRAIN_PHOTOS if n not in VAL_PHOTOS)


def random_crop(
    image: torch.Tensor, crop: int, rng: np.random.Generator, scale: tuple[float, float] = (0.25, 1.0), flip: bool = True
) -> torch.Tensor:
    """A random square crop at a random scale, resized to ``crop × crop``, flipped left-right with p = 1/2.

    The crop's side is a fraction of the image's short side, log-uniform in ``scale``, but at least ``crop``
    pixels (no upsampling, unless the image is smaller than ``crop``); it is resized with antialiased bilinear
    interpolation, which keeps values in the input's range.

    Shape:
        ``(C, H, W)`` → ``(C, crop, crop)``.
    """
    _, h, w = image.shape
    short = min(h, w)
    f = math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
    side = min(short, max(round(f * short), crop))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out = image[:, y : y + side, x : x + side]
    if side != crop:
        out = F.interpolate(out[None], size=(crop, crop), mode="bilinear", antialias=True, align_corners=False)[0]
    if rng.random() < 0.5 and flip:
        out = out.flip(-1)
    return out.clamp(0.0, 1.0).contiguous()


class ImageSource(Dataset):
    """Base of the sources: ``length`` items by default, any index ``k >= 0`` accepted (see the module doc)."""

    def __init__(self, crop: int, length: int, seed: int, grey: bool) -> None:
        if int(crop) < 1 or int(length) < 1 or int(seed) < 0:
            raise ValueError(f"need crop >= 1, length >= 1, seed >= 0; got {crop}, {length}, {seed}")
        self.crop, self.length, self.seed, self.grey = int(crop), int(length), int(seed), bool(grey)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.sample(k)[0]

    def sample(self, k: int) -> tuple[torch.Tensor, str]:
        """Item ``k``: ``(C, S, S)`` float32 in ``[0, 1]`` and the name of its source."""
        raise NotImplementedError

    @property
    def sources(self) -> tuple[str, ...]:
        """Names of every source (photograph, file, stream) this dataset can draw from."""
        raise NotImplementedError

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        x = to_grey(x) if self.grey else x.expand(3, -1, -1)
        return x.to(torch.float32).contiguous()


class _PhotoSet(ImageSource):
    """Random crops of a fixed list of photographs; pass ``k // n`` visits each of the ``n`` once, in a seeded order."""

    _stream = 0

    def __init__(self, names: Sequence[str], split: str, crop: int, length: int, seed: int, grey: bool,
                 scale: Sequence[float], flip: bool) -> None:
        super().__init__(crop, length, seed, grey)
        self.split, self.names = split, tuple(names)
        lo, hi = (float(s) for s in scale)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {tuple(scale)}")
        self.scale, self.flip = (lo, hi), bool(flip)
        self._pass, self._perm = -1, np.arange(0)

    @property
    def sources(self) -> tuple[str, ...]:
        return self.names

    def _order(self, p: int) -> np.ndarray:
        """The order of the photos in pass ``p`` (the last one is kept)."""
        if p != self._pass:
            rng = _rng(self.seed, self._stream, _split_code(self.split), _ORDER, p)
            self._pass, self._perm = p, rng.permutation(len(self.names))
        return self._perm

    def _load(self, i: int) -> torch.Tensor | None:
        """Photo ``i`` as ``(C, H, W)``, or None if it cannot be read."""
        raise NotImplementedError

    def photos(self) -> Iterator[torch.Tensor]:
        """Every readable photo of the set, whole (not cropped), ``(C, H, W)`` in ``[0, 1]``."""
        for i in range(len(self.names)):
            image = self._load(i)
            if image is not None:
                yield image

    def sample(self, k: int) -> tuple[torch.Tensor, str]:
        k, n = _index(k), len(self.names)
        order = self._order(k // n)
        for j in range(n):  # an unreadable photo is replaced by the next one of the pass
            i = int(order[(k + j) % n])
            image = self._load(i)
            if image is not None:
                rng = _rng(self.seed, self._stream, _split_code(self.split), _ITEM, k)
                return self._finish(random_crop(image, self.crop, rng, self.scale, self.flip)), self.names[i]
        raise RuntimeError(f"{type(self).__name__}: none of the {n} images of split {self.split!r} can be read")


class BuiltinPhotos(_PhotoSet):
    """Random crops (scales, flips) of the built-in photos of ``split`` (:func:`builtin_split`).

    Args:
        split: ``train`` | ``val`` | ``test``.
        crop: output side ``S`` in pixels.
        length: items per epoch (train) or in the fixed set (val/test).
        seed: item ``k`` is a function of ``(seed, split, k)``.
        grey: one grey channel instead of RGB.
        scale: the crop's side as a fraction of the photo's short side, log-uniform in this range.
        flip: random left-right flips.

    Each pass of ``n`` consecutive items crops every photo of the split once (the two motorcycle views
    count as two). Photos are loaded on first use and kept in memory (about 60 MB for train).

    Example:
        >>> BuiltinPhotos("val", crop=32, length=4)[3].shape
        torch.Size([3, 32, 32])
    """

    _stream = _BUILTIN

    def __init__(self, split: str = "train", crop: int = 64, length: int = 1000, seed: int = 0, grey: bool = False,
                 scale: Sequence[float] = (0.25, 1.0), flip: bool = True) -> None:
        super().__init__(builtin_split(split), split, crop, length, seed, grey, scale, flip)
        self._photos: dict[int, torch.Tensor] = {}

    def _load(self, i: int) -> torch.Tensor:
        if i not in self._photos:
            self._photos[i] = load_photo(self.names[i])
        return self._photos[i]


def scan_images(root: PathLike, listing: PathLike | None = None) -> list[str]:
    """Relative POSIX paths of the files under ``root`` (recursive) ending in :data:`IMAGE_EXTENSIONS`, sorted.

    ``listing``: a text file caching the list (one path per line, after a first line naming the folder): read if
    it exists and names this folder, else written after the scan (atomically). Delete it to scan again.
    """
    root = Path(root)
    header = f"# files of {root.resolve()}"
    if listing is not None and Path(listing).is_file():
        lines = Path(listing).read_text(encoding="utf-8").split("\n")
        if lines[0] == header:
            return [line for line in lines[1:] if line]
    found = (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    files = sorted(p.relative_to(root).as_posix() for p in found)
    if listing is not None:
        Path(listing).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(listing)) as temporary:
            temporary.write_text("\n".join([header, *files]) + "\n", encoding="utf-8")
    return files


def split_of(relpath: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """The split of a file: ``u = sha1(relpath)`` as a number in ``[0, 1)``, cut at the cumulative ``fractions``."""
    u = int.from_bytes(hashlib.sha1(relpath.encode("utf-8")).digest()[:8], "big") / 2.0**64
    cum = np.cumsum(fractions)
    return SPLITS[min(int(np.searchsorted(cum, u, side="right")), 2)]


class ImageFolder(_PhotoSet):
    """Random crops (scales, flips) of the images in a folder and its subfolders.

    Args:
        root: the folder; files ending in jpg/jpeg/png/webp/bmp/tif/tiff (any case) are read.
        split: ``train`` | ``val`` | ``test``: the files whose relative path :func:`split_of` assigns to it.
        fractions: the shares of files in train, val, test (non-negative, summing to 1).
        validate: decode every file of the split once, up front, drop the unreadable ones and say how many
            in one :class:`UnreadableImageWarning`. Costs a few ms per file, so a start time that grows with the
            folder: off by default (unreadable files are then skipped and counted as they are met).
        listing: a file caching the folder's list of images (:func:`scan_images`): the splits of a run, and the
            run when it resumes, share one scan. ``preimage train`` keeps it in the run directory.
        crop, length, seed, grey, scale, flip: as :class:`BuiltinPhotos`.

    Files are listed at construction. A file that fails to load later (``validate=False``, or changed on
    disk) is replaced by the next file of the pass, deterministically, and reported by a warning that counts
    the files skipped so far in this process: an epoch never stops on a bad file.

    Raises:
        ValueError: ``root`` is not a folder, or the split has no readable image.
    """

    _stream = _FOLDER

    def __init__(self, root: PathLike, split: str = "train", crop: int = 64, length: int = 1000, seed: int = 0,
                 grey: bool = False, scale: Sequence[float] = (0.25, 1.0), flip: bool = True,
                 fractions: Sequence[float] = (0.8, 0.1, 0.1), validate: bool = False,
                 listing: PathLike | None = None) -> None:
        self.root = Path(root)
        fractions = tuple(float(f) for f in fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
        if not self.root.is_dir():
            raise ValueError(f"ImageFolder: {self.root} is not a folder")
        _split_code(split)
        files = scan_images(self.root, listing)
        names = [f for f in files if split_of(f, fractions) == split]
        if validate:
            bad: dict[str, str] = {}
            for f in names:
                try:
                    load_image(self.root / f)
                except ImageError as e:
                    bad[f] = str(e)
            if bad:
                names = [f for f in names if f not in bad]
                shown = "; ".join(list(bad.values())[:5]) + ("; ..." if len(bad) > 5 else "")
                warnings.warn(f"ImageFolder({self.root}, split={split!r}): skipped {len(bad)} of {len(bad) + len(names)} "
                              f"files that could not be read: {shown}", UnreadableImageWarning, stacklevel=2)
        if not names:
            raise ValueError(f"ImageFolder: no readable image files in split {split!r} of {self.root} "
                             f"({len(files)} image files in all, fractions {fractions})")
        super().__init__(names, split, crop, length, seed, grey, scale, flip)
        self.fractions, self.validated = fractions, bool(validate)
        self._bad: set[int] = set()

    def _load(self, i: int) -> torch.Tensor | None:
        if i in self._bad:
            return None
        try:
            # a file validated up front was checked complete then: each later load skips that second pass
            return load_image(self.root / self.names[i], check_complete=not self.validated)
        except ImageError as e:
            self._bad.add(i)
            warnings.warn(f"ImageFolder({self.root}): skipped {e}; {len(self._bad)} file(s) skipped so far",
                          UnreadableImageWarning, stacklevel=2)
            return None


@lru_cache(maxsize=4)
def _palette(names: tuple[str, ...]) -> np.ndarray:
    """Up to 2¹⁶ pixel colours of each named built-in photo, ``(P, 3)`` float32 RGB in [0, 1]."""
    colours = []
    for name in names:
        x = load_photo(name).expand(3, -1, -1).reshape(3, -1).T
        colours.append(x[:: max(1, x.shape[0] // 65536)].numpy())
    return np.ascontiguousarray(np.concatenate(colours), dtype=np.float32)


class DeadLeaves(ImageSource):
    """An infinite stream of dead-leaves images (:func:`dead_leaves`), item ``k`` a function of ``(seed, split, k)``.

    Args:
        crop: image side ``S`` in pixels (rendered at that size, no resizing).
        seed: the stream; ``split`` picks one of three disjoint sub-streams.
        length: items per epoch (train) or in the fixed set (val/test).
        grey: one grey channel instead of RGB.
        r_min, r_max: leaf radii in pixels, ``p(r) ∝ r^−3``; ``r_max=None`` means ``crop``.
        shapes: leaf shapes among ``disc`` and ``square`` (rotated), drawn uniformly.
        palette: built-in *training* photos whose pixel colours the leaves take (each leaf one flat colour).
        coverage: leaves per pixel in each batch of leaves (speed only: batches go on until the canvas is covered).

    Edges are hard (not antialiased). About 1.5 ms for a 64 × 64 image and 5 ms for 128 × 128 on one CPU
    core (squares: about 1.5 times that).
    """

    def __init__(self, crop: int = 64, seed: int = 0, split: str = "train", length: int = 1000, grey: bool = False,
                 r_min: float = 2.0, r_max: float | None = None, shapes: Sequence[str] = ("disc",),
                 palette: Sequence[str] = ("motorcycle_left",), coverage: float = 6.0) -> None:
        super().__init__(crop, length, seed, grey)
        self.split, self.r_min = split, float(r_min)
        self.r_max = float(self.crop if r_max is None else r_max)
        self.shapes, self.coverage = tuple(str(s) for s in shapes), float(coverage)
        self.palette = tuple(str(p) for p in palette)
        _split_code(split)
        outside = [p for p in self.palette if p not in builtin_split("train")]
        if outside or not self.palette:
            raise ValueError(f"palette must name built-in training photos {builtin_split('train')}, got {self.palette}")
        check_leaves(self.r_min, self.r_max, self.shapes)

    @property
    def sources(self) -> tuple[str, ...]:
        return (f"dead_leaves:{self.split}",)

    def sample(self, k: int) -> tuple[torch.Tensor, str]:
        rng = _rng(self.seed, _DEAD_LEAVES, _split_code(self.split), _ITEM, _index(k))
        labels, radii = dead_leaves(self.crop, self.crop, rng, self.r_min, self.r_max, self.shapes, self.coverage)
        colours = _palette(self.palette)
        leaf_colours = colours[rng.integers(len(colours), size=radii.size)]
        image = torch.from_numpy(leaf_colours[labels]).permute(2, 0, 1)
        return self._finish(image), self.sources[0]


class Mixture(ImageSource):
    """A weighted mixture: item ``k`` is item ``k`` of source ``j``, ``j`` drawn with probability ∝ ``weights[j]``.

    Args:
        sources: sources with the same ``crop`` and ``grey``.
        weights: non-negative, not all zero, one per source.
        length: items per epoch (train) or in the fixed set (val/test).
        seed: the source choice of item ``k`` is a function of ``(seed, k)``.
    """

    def __init__(self, sources: Sequence[ImageSource], weights: Sequence[float], length: int = 1000, seed: int = 0) -> None:
        if not sources or len(weights) != len(sources):
            raise ValueError(f"Mixture: need one weight per source, got {len(weights)} weights for {len(sources)} sources")
        p = np.asarray([float(w) for w in weights])
        if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"Mixture: weights must be finite, non-negative and not all zero, got {list(weights)}")
        if len({(s.crop, s.grey) for s in sources}) != 1:
            raise ValueError(f"Mixture: sources differ in crop or grey: {[(s.crop, s.grey) for s in sources]}")
        super().__init__(sources[0].crop, length, seed, sources[0].grey)
        self.parts, self.weights = list(sources), tuple(p / p.sum())
        self._cum = np.cumsum(self.weights)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(name for s in self.parts for name in s.sources)

    def choose(self, k: int) -> int:
        """The index of the source that item ``k`` comes from."""
        u = _rng(self.seed, _MIXTURE, 0, _ITEM, _index(k)).random()
        return min(int(np.searchsorted(self._cum, u, side="right")), len(self.parts) - 1)

    def sample(self, k: int) -> tuple[torch.Tensor, str]:
        return self.parts[self.choose(k)].sample(k)
