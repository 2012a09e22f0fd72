"""Image sources: determinism, splits by source photograph, dead-leaves statistics, unreadable folder files."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preimage.photos import TEST_PHOTOS, TRAIN_PHOTOS
from preimage.training.dead_leaves import dead_leaves, leaf_radii, power_law_radii
from preimage.training.sources import (
    VAL_PHOTOS, BuiltinPhotos, DeadLeaves, ImageFolder, Mixture, UnreadableImageWarning, builtin_split, scan_images,
    split_of,
)


def _photograph(name: str) -> str:
    """The source photograph of a built-in photo: the two stereo views are one."""
    return "motorcycle" if name.startswith("motorcycle_") else name


def _check_images(xs: list[torch.Tensor], channels: int, size: int) -> None:
    for x in xs:
        assert x.shape == (channels, size, size) and x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


# ------------------------------------------------------------------------------------------- built-in photos


def test_builtin_splits_disjoint_by_source_photograph() -> None:
    splits = {s: BuiltinPhotos(s, crop=16, length=40) for s in ("train", "val", "test")}
    names = {s: set(d.sources) for s, d in splits.items()}
    assert names["test"] == set(TEST_PHOTOS) and names["val"] == set(VAL_PHOTOS)
    assert names["train"] | names["val"] == set(TRAIN_PHOTOS)
    assert {"motorcycle_left", "motorcycle_right"} <= names["train"]
    photographs = {s: {_photograph(n) for n in ns} for s, ns in names.items()}
    assert not photographs["train"] & photographs["val"]
    assert not photographs["train"] & photographs["test"]
    assert not photographs["val"] & photographs["test"]
    for s, d in splits.items():  # every item says where it came from, and that is in its split
        assert {d.sample(k)[1] for k in range(len(d))} <= names[s]


def test_builtin_items_deterministic_and_in_range() -> None:
    a, b = BuiltinPhotos("train", crop=24, length=8, seed=3), BuiltinPhotos("train", crop=24, length=8, seed=3)
    xs = [a[k] for k in range(8)]
    _check_images(xs, 3, 24)
    for k in (5, 0, 7, 1000):  # any order, any index
        assert torch.equal(a[k], b[k])
    assert torch.equal(xs[5], a[5])
    other = BuiltinPhotos("train", crop=24, length=8, seed=4)
    assert not all(torch.equal(a[k], other[k]) for k in range(8))


def test_builtin_pass_visits_every_photo_once() -> None:
    d = BuiltinPhotos("test", crop=16, length=12, seed=1)
    n = len(TEST_PHOTOS)
    for p in range(2):
        assert sorted(d.sample(p * n + i)[1] for i in range(n)) == sorted(TEST_PHOTOS)


def test_builtin_grey_photos_replicated_and_grey_option() -> None:
    d = BuiltinPhotos("test", crop=16, length=6)
    for k in range(len(TEST_PHOTOS)):
        x, name = d.sample(k)
        if name in ("camera", "coins", "moon"):
            assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    _check_images([BuiltinPhotos("test", crop=16, grey=True)[k] for k in range(3)], 1, 16)


def test_builtin_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        BuiltinPhotos("validation")
    with pytest.raises(ValueError, match="scale"):
        BuiltinPhotos("train", scale=(0.5, 2.0))
    with pytest.raises(IndexError):
        BuiltinPhotos("train")[-1]
    assert builtin_split("val") == VAL_PHOTOS


# ------------------------------------------------------------------------------------------- dead leaves


def _loglog_slope(r: np.ndarray, weights: np.ndarray, r_min: float, r_max: float) -> float:
    edges = np.geomspace(r_min, r_max, 16)
    hist, _ = np.histogram(r, bins=edges, weights=weights)
    density = hist / np.diff(edges)
    centres = np.sqrt(edges[1:] * edges[:-1])
    return float(np.polyfit(np.log(centres), np.log(density), 1)[0])


def test_power_law_radii_slope() -> None:
    r = power_law_radii(np.random.default_rng(0), 200_000, 1.0, 100.0)
    assert r.min() >= 1.0 and r.max() <= 100.0
    assert _loglog_slope(r, np.ones_like(r), 1.0, 100.0) == pytest.approx(-3.0, abs=0.1)


def test_leaf_radii_are_the_stationary_power_law() -> None:
    """Reweighting by 1 / (W + 2r)(H + 2r), the reach of a leaf, gives back p(r) ∝ r^-3."""
    h, w = 64, 96
    r = leaf_radii(np.random.default_rng(1), 200_000, 1.0, 100.0, h, w)
    assert _loglog_slope(r, 1.0 / ((w + 2 * r) * (h + 2 * r)), 1.0, 100.0) == pytest.approx(-3.0, abs=0.1)


@pytest.mark.parametrize("shapes", [("disc",), ("disc", "square")])
def test_dead_leaves_cover_the_canvas(shapes: tuple[str, ...]) -> None:
    labels, radii = dead_leaves(48, 40, np.random.default_rng(2), 2.0, 48.0, shapes)
    assert labels.shape == (48, 40) and labels.min() >= 0 and labels.max() < radii.size
    assert len(np.unique(labels)) > 20  # many visible leaves, mostly small


def test_dead_leaves_source() -> None:
    d = DeadLeaves(crop=32, seed=5, length=4)
    xs = [d[k] for k in range(4)]
    _check_images(xs, 3, 32)
    assert all(float(x.std()) > 0.02 for x in xs)  # not constant
    assert torch.equal(xs[2], DeadLeaves(crop=32, seed=5)[2])  # item k is a function of (seed, k)
    assert not torch.equal(xs[2], DeadLeaves(crop=32, seed=5, split="val")[2])
    assert not torch.equal(xs[2], DeadLeaves(crop=32, seed=6)[2])
    assert d.sample(10**9)[1] == "dead_leaves:train"
    _check_images([DeadLeaves(crop=16, grey=True, shapes=("square",))[0]], 1, 16)


def test_dead_leaves_bad_arguments() -> None:
    with pytest.raises(ValueError, match="palette"):
        DeadLeaves(palette=("astronaut",))  # a test photo
    with pytest.raises(ValueError, match="shapes"):
        DeadLeaves(shapes=("triangle",))
    with pytest.raises(ValueError, match="r_min"):
        DeadLeaves(r_min=10.0, r_max=5.0)


# ------------------------------------------------------------------------------------------- folders


def _image(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3 if mode == "RGB" else 1), dtype=np.uint8)
    return Image.fromarray(arr if mode == "RGB" else arr[..., 0], mode)


@pytest.fixture
def folder(tmp_path):
    """5 readable images in nested folders, a truncated PNG, a text file named .jpg, and things to ignore."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    _image((40, 30), "RGB", 0).save(tmp_path / "one.png")
    _image((30, 40), "L", 1).save(tmp_path / "a" / "two.JPG", quality=90)
    _image((64, 48), "RGB", 2).save(tmp_path / "a" / "b" / "three.jpeg")
    _image((20, 20), "RGB", 3).save(tmp_path / "a" / "b" / "four.tiff")
    _image((50, 50), "RGB", 4).save(tmp_path / "a" / "five.webp")
    _image((40, 40), "RGB", 5).save(tmp_path / "a" / "corrupt.png")
    data = (tmp_path / "a" / "corrupt.png").read_bytes()
    (tmp_path / "a" / "corrupt.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "a" / "b" / "notes.jpg").write_text("not an image\n")
    (tmp_path / "readme.txt").write_text("ignored\n")
    (tmp_path / "a" / "folder.png").mkdir()  # a folder, not a file: ignored
    return tmp_path


GOOD = {"one.png", "a/two.JPG", "a/b/three.jpeg", "a/b/four.tiff", "a/five.webp"}


def test_folder_skips_unreadable_files_with_one_warning(folder) -> None:
    with pytest.warns(UnreadableImageWarning, match=r"skipped 2 of 7 files") as record:
        d = ImageFolder(folder, crop=16, length=12, fractions=(1.0, 0.0, 0.0), validate=True)
    assert len(record) == 1
    assert set(d.sources) == GOOD
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing more to say during the epoch
        items = [d.sample(k) for k in range(len(d))]
    _check_images([x for x, _ in items], 3, 16)  # the 20×20 and grey files too
    assert {name for _, name in items} == GOOD  # 12 items: two passes over the 5 files, 2 more
    with pytest.warns(UnreadableImageWarning):
        again = ImageFolder(folder, crop=16, fractions=(1.0, 0.0, 0.0), validate=True)
    assert torch.equal(items[3][0], again[3])


def test_folder_lazy_validation_substitutes_and_counts(folder) -> None:
    d = ImageFolder(folder, crop=16, length=14, fractions=(1.0, 0.0, 0.0), validate=False)
    assert len(d.sources) == 7
    with pytest.warns(UnreadableImageWarning) as record:
        names = [d.sample(k)[1] for k in range(len(d))]  # two whole passes: never raises
    assert set(names) <= GOOD
    messages = [str(w.message) for w in record]
    assert len(messages) == 2 and "2 file(s) skipped so far" in messages[-1]


@pytest.mark.parametrize("validate", [True, False])
def test_folder_checks_each_file_complete_once_when_validated(folder, monkeypatch, validate: bool) -> None:
    """Validated up front, a file is not checked for missing rows or blocks again at every item; without the
    validation, every load checks it."""
    import preimage.images as images

    checked: list[str] = []
    for name in ("png_rows_missing", "jpeg_data_missing"):
        real = getattr(images, name)
        monkeypatch.setattr(images, name, lambda p, *a, _real=real: checked.append(p.name) or _real(p, *a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        d = ImageFolder(folder, crop=16, length=10, fractions=(1.0, 0.0, 0.0), validate=validate)
        at_start = len(checked)
        for k in range(len(d)):
            d.sample(k)
    assert (at_start > 0) == validate and (len(checked) > at_start) != validate


def test_folder_split_by_file(tmp_path) -> None:
    for i in range(20):
        _image((8, 8), "RGB", i).save(tmp_path / f"img{i:02d}.png")
    fractions = (0.5, 0.25, 0.25)
    parts = {s: set(ImageFolder(tmp_path, s, crop=8, fractions=fractions).sources) for s in ("train", "val", "test")}
    assert set().union(*parts.values()) == {f"img{i:02d}.png" for i in range(20)}
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
    assert all(split_of(n, fractions) == s for s, ns in parts.items() for n in ns)
    with pytest.raises(ValueError, match="no readable image files"):
        ImageFolder(tmp_path, "val", fractions=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="not a folder"):
        ImageFolder(tmp_path / "missing")


def test_folder_list_scanned_once_and_cached(tmp_path, monkeypatch) -> None:
    """With a listing file the splits and a later run share one scan: a file added afterwards is not seen until
    the listing is deleted; a listing of another folder is not used."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        _image((8, 8), "RGB", i).save(root / f"img{i:02d}.png")
    listing = tmp_path / "run" / "images.txt"
    scans = []
    real_rglob = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: scans.append(self) or real_rglob(self, pattern))
    parts = {s: set(ImageFolder(root, s, crop=8, fractions=(0.5, 0.5, 0.0), listing=listing).sources)
             for s in ("train", "val")}
    assert len(scans) == 1 and parts["train"] | parts["val"] == {f"img{i:02d}.png" for i in range(12)}
    assert listing.read_text().splitlines()[1:] == sorted(f"img{i:02d}.png" for i in range(12))
    _image((8, 8), "RGB", 99).save(root / "img99.png")
    assert "img99.png" not in scan_images(root, listing) and len(scans) == 1
    other = tmp_path / "other"
    other.mkdir()
    _image((8, 8), "RGB", 7).save(other / "x.png")
    assert scan_images(other, listing) == ["x.png"] and len(scans) == 2  # the listing names another folder
    listing.unlink()
    assert "img99.png" in scan_images(root, listing)


def test_split_of_fractions() -> None:
    splits = [split_of(f"n{i}/img{i}.jpg") for i in range(4000)]
    assert splits.count("train") / 4000 == pytest.approx(0.8, abs=0.03)
    assert splits.count("val") / 4000 == pytest.approx(0.1, abs=0.03)


# ------------------------------------------------------------------------------------------- mixtures


def test_mixture_weights_and_items() -> None:
    parts = [BuiltinPhotos("train", crop=16), DeadLeaves(crop=16)]
    m = Mixture(parts, [1.0, 3.0], length=10, seed=0)
    picks = np.array([m.choose(k) for k in range(4000)])
    assert picks.mean() == pytest.approx(0.75, abs=0.03)
    x, name = m.sample(7)
    assert torch.equal(x, parts[m.choose(7)][7]) and name in m.sources
    assert all(Mixture(parts, [0.0, 1.0]).choose(k) == 1 for k in range(50))
    with pytest.raises(ValueError, match="crop"):
        Mixture([BuiltinPhotos("train", crop=16), DeadLeaves(crop=32)], [1.0, 1.0])
    with pytest.raises(ValueError, match="weights"):
        Mixture(parts, [-1.0, 1.0])


def test_photos_are_the_split_s_whole_images(tmp_path: Path) -> None:
    """``photos()`` gives every readable file of the split, uncropped, as the file reads (an unreadable one skipped)."""
    arrays = {f"{i}.png": np.random.default_rng(i).integers(0, 256, (30 + i, 40, 3), dtype=np.uint8) for i in range(4)}
    for name, array in arrays.items():
        Image.fromarray(array).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    folder = ImageFolder(tmp_path, split="train", crop=16, fractions=(1.0, 0.0, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        photos = list(folder.photos())
    expected = [torch.from_numpy(arrays[name]).permute(2, 0, 1).float() / 255 for name in sorted(arrays)]
    assert len(photos) == 4 and all(torch.allclose(p, e) for p, e in zip(photos, expected))
