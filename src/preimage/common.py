"""What every job shares: image sets and the one square crop, output folders, stems, versions, bundle paths, devices.

Neutral ground: the jobs (invert, compare, train, the analyses) and the scripts import from here; this module
imports nothing of theirs.
"""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from .config import package_root
from .images import load_images, to_grey
from .photos import TEST_PHOTOS, load_photo, photo_path

__all__ = ["BUILTIN", "IMAGE_SUFFIXES", "bundle_path", "device_name", "grey_square", "launching_process",
           "run_dir_lock", "list_images", "load_image_set", "outputs_removed_on_failure",
           "prepare_image", "prepare_output_dir", "resolve_device", "resolve_image_path", "square", "synchronize",
           "unique_stems", "versions"]

BUILTIN = "builtin"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


# ------------------------------------------------------------------------------------------------- images


def resolve_image_path(item: str) -> Path:
    """``builtin:NAME`` → the built-in photo's file; anything else is a path."""
    prefix = f"{BUILTIN}:"
    return photo_path(item[len(prefix):]) if item.startswith(prefix) else Path(item)


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, H, W)`` → ``(C, size, size)`` in ``[0, 1]``: the shorter side resized to ``size`` (bicubic,
    antialiased), then the central square cropped.

    The one square crop of every job (compare, the analyses, the scripts): resizing the whole photo first
    and antialiasing it keeps the crop free of aliasing when a large photo is shrunk, as torchvision's
    ImageNet ``Resize`` + ``CenterCrop`` do.
    """
    x = image[None]
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                      antialias=True, align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[0, :, top:top + size, left:left + size].clamp(0, 1)


def prepare_image(image: torch.Tensor, *, size: int | None, grey: bool) -> torch.Tensor:
    """The image as a job sees it: grey (or RGB, grey files replicated), then :func:`square` if ``size`` is set."""
    image = to_grey(image) if grey else image.expand(3, -1, -1).contiguous()
    return square(image, size) if size else image


def grey_square(name: str, size: int) -> torch.Tensor:
    """Built-in photo ``name`` as grey ``(1, size, size)`` in [0, 1] (:func:`prepare_image`)."""
    return prepare_image(load_photo(name), size=size, grey=True)


def list_images(images: str | Sequence[str]) -> list[tuple[str, Path]]:
    """``(name, path)`` of every image: ``builtin`` (the built-in test photos, never used in training), a folder
    (recursive, sorted), one file, or a list of files / ``builtin:NAME``."""
    if isinstance(images, str):
        if images in (BUILTIN, f"{BUILTIN}:test"):
            return [(f"{BUILTIN}:{n}", resolve_image_path(f"{BUILTIN}:{n}")) for n in TEST_PHOTOS]
        root = Path(images)
        if root.is_file():
            return [(str(root), root)]
        if not root.is_dir():
            raise ValueError(f"images: {root} is neither a folder nor an image file (or `builtin`)")
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise ValueError(f"images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        return [(str(p), p) for p in found]
    items = [str(i) for i in images]
    if not items:
        raise ValueError("images: an empty list")
    return [(i, resolve_image_path(i)) for i in items]


def load_image_set(images: str | Sequence[str], *, limit: int | None = None, size: int | None = None,
                   grey: bool = True) -> tuple[list[str], list[Path], list[torch.Tensor]]:
    """Names, paths and prepared images (:func:`prepare_image`) of an image set (:func:`list_images`)."""
    listed = list_images(images)[:limit]
    paths = [p for _, p in listed]
    return [n for n, _ in listed], paths, [prepare_image(x, size=size, grey=grey) for x in load_images(paths)]


# ------------------------------------------------------------------------------------------------ outputs


#: the file that marks a folder as a preimage output folder (written first, so that a crashed run leaves it too)
OUTPUT_MARKER = ".preimage-output"
_KEPT = (OUTPUT_MARKER, ".lock")


def _empty(out: Path) -> int:
    """Remove everything in ``out`` but the output marker and a run lock; returns how many entries went."""
    entries = [e for e in out.iterdir() if e.name not in _KEPT]
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return len(entries)


def prepare_output_dir(out: str | Path, *, clear: bool = False) -> Path:
    """Create ``out``, check it is writable, and make sure no earlier run's files mix with this run's.

    Args:
        clear: ``False``: refuse a non-empty folder. ``True`` (``overwrite=true``): empty a folder an earlier
            preimage run wrote (it holds :data:`OUTPUT_MARKER`) before writing; a non-empty folder preimage did
            not write is refused all the same. Either way the folder holds only this run's outputs, which
            :func:`outputs_removed_on_failure` relies on.

    Raises:
        ValueError: one line: not writable, or not empty as above.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        entries = [e for e in out.iterdir() if e.name not in _KEPT]
        if entries:
            if not clear:
                raise ValueError(f"output folder {out} is not empty ({len(entries)} entries): add overwrite=true to "
                                 "replace an earlier run's outputs, or choose another folder")
            if not (out / OUTPUT_MARKER).exists():
                raise ValueError(f"output folder {out} is not empty and was not written by preimage: it is not "
                                 "cleared even with overwrite=true; choose another folder")
            _empty(out)
        (out / OUTPUT_MARKER).write_text("written by preimage; overwrite=true may clear this folder\n")
    except OSError as err:
        raise ValueError(f"cannot write to output folder {out}: {err.strerror or err}") from None
    if _prepared:  # inside outputs_removed_on_failure: the innermost job owns this folder
        _prepared[-1].append(out)
    return out


#: per running :func:`outputs_removed_on_failure` block, innermost last: the folders its job prepared
_prepared: list[list[Path]] = []


@contextlib.contextmanager
def outputs_removed_on_failure() -> Iterator[None]:
    """Run a job so that if it fails (an error, a full disk, Ctrl-C), the output folders it prepared with
    :func:`prepare_output_dir` are emptied again: a failed run leaves an empty folder, never part of its outputs
    (each folder was empty, or emptied by ``overwrite=true``, when the job took it)."""
    _prepared.append([])
    try:
        yield
    except BaseException as err:
        emptied = [out for out in _prepared[-1] if _empty(out)]
        if emptied and isinstance(err, ValueError):
            said = "; ".join(f"{out} was emptied of the outputs this run had written" for out in emptied)
            raise ValueError(f"{err}; {said}") from None
        raise
    finally:
        _prepared.pop()


def unique_stems(paths: Sequence[Path], reserved: Sequence[str] = ()) -> list[str]:
    """File stems, each different from the others and from ``reserved`` (the names of the job's own files):
    a stem already taken gets the first free ``_2``, ``_3``, ... suffix (so ``a/x``, ``b/x``, ``x_2`` give
    ``x``, ``x_3``, ``x_2``: the literal name keeps its stem wherever it comes)."""
    literal = {p.stem for p in paths}
    taken = set(reserved)
    stems = []
    for p in paths:
        stem, k = p.stem, 2
        while stem in taken or (stem != p.stem and stem in literal):
            stem, k = f"{p.stem}_{k}", k + 1
        taken.add(stem)
        stems.append(stem)
    return stems


def versions() -> dict[str, str]:
    """Versions of the software that produced an output (read from the installed distributions: importing
    Lightning and torchvision only to ask would cost seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"preimage": __version__, "python": platform.python_version(), "torch": torch.__version__,
            **{key: installed(name) for key, name in (("torchvision", "torchvision"),
                                                       ("pytorch_lightning", "pytorch-lightning"), ("numpy", "numpy"))}}


def bundle_path(value: str | os.PathLike | None) -> Path | None:
    """An inverter bundle path as given (from the working folder); a relative path found only in the package
    (the shipped ``checkpoints/hog.pt`` ...) resolves there, so the configs' defaults work from any folder and
    from an installed wheel. ``None`` for an empty value."""
    if not value:
        return None
    path = Path(os.fspath(value))
    if not path.is_absolute() and not path.exists() and (package_root() / path).exists():
        return package_root() / path
    return path


def launching_process() -> bool:
    """Whether this is the process that starts a run (global rank 0 before Lightning sets ranks up)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def _holder(lock: Path) -> tuple[str, int] | None:
    """``(host, pid)`` written in a lock file, or ``None`` if it is unreadable."""
    try:
        host, _, pid = lock.read_text().strip().rpartition(":")
    except OSError:
        return None
    return (host, int(pid)) if pid.isdigit() else None


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Own ``run_dir`` for the duration: ``run_dir/.lock`` holds ``host:pid``, made whole in one step (a hard link
    of a written file) before the job writes anything, and removed on exit if it is still this process's. A lock
    of a process of this host that is gone (killed) is stale and taken over; any other is a ``ValueError`` (one
    line): two jobs never mix their files in one folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock, me = run_dir / ".lock", (socket.gethostname(), os.getpid())
    mine = run_dir / f".lock.{me[1]}.tmp"
    mine.write_text(f"{me[0]}:{me[1]}")
    try:
        for _ in range(3):
            try:
                os.link(mine, lock)  # atomic: the lock appears with its content, or not at all
                break
            except FileExistsError:
                holder = _holder(lock)
                if holder is not None and holder != me and (holder[0] != me[0] or _alive(holder[1])):
                    raise ValueError(f"{run_dir} is in use by another preimage process (pid {holder[1]} on "
                                     f"{holder[0]}): wait for it to finish, or set another run_dir") from None
                with contextlib.suppress(FileNotFoundError):
                    if _holder(lock) == holder:  # stale (its process was killed): take it over
                        lock.unlink()
        else:
            raise ValueError(f"{run_dir}: could not take the lock {lock}")
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        if _holder(lock) == me:
            lock.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ devices


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` (or ``mps``) as given.

    Raises:
        ValueError: any other device, or one this machine does not have (one line).
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device} is not a device preimage runs on: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device} was asked for but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device} was asked for but MPS is not available here")
    return dev


def device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``: the device as reports name it."""
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that wall-clock timings include it; no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
