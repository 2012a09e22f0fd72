"""A job's output folder: made, checked and emptied on failure; unique file stems; the versions a report records."""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["OUTPUT_MARKER", "outputs_removed_on_failure", "prepare_output_dir", "refuse_foreign", "unique_stems",
           "versions", "write_marker"]

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


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (links resolved)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def refuse_foreign(folder: Path, made_by: str, *evidence: Path) -> None:
    """``ValueError`` (one line) if ``folder`` holds files but neither the output marker nor any of ``evidence``
    (files only ``made_by`` writes, for folders of earlier versions): nothing of the user's is overwritten."""
    entries = [e for e in folder.iterdir() if e.name not in _KEPT] if folder.is_dir() else []
    if entries and not (folder / OUTPUT_MARKER).is_file() and not any(e.is_file() for e in evidence):
        raise ValueError(f"run_dir {folder} is not empty and was not made by `{made_by}`: its files are left as they "
                         "are; set another run_dir")


def write_marker(out: Path) -> None:
    """Mark ``out`` as a preimage output folder; never through a link (``O_NOFOLLOW``: a link there is refused)."""
    fd = os.open(out / OUTPUT_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write("written by preimage; overwrite=true may clear this folder\n")


def prepare_output_dir(out: str | Path, *, clear: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """Create ``out``, check it is writable, and make sure no earlier run's files mix with this run's.

    Args:
        clear: ``False``: refuse a non-empty folder. ``True`` (``overwrite=true``): empty a folder an earlier
            preimage run wrote (it holds :data:`OUTPUT_MARKER`) before writing; a non-empty folder preimage did
            not write is refused all the same. Either way the folder holds only this run's outputs, which
            :func:`outputs_removed_on_failure` relies on.
        inputs: the files the job will read: with ``clear``, one inside ``out`` is refused rather than deleted.

    Raises:
        ValueError: one line: not a folder, not writable, not empty as above, an input inside it, or a marker
            that is a link.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder: choose a folder")
    inside = [p for p in inputs if _within(Path(p), out)]
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker = out / OUTPUT_MARKER
        if marker.is_symlink() or (marker.exists() and not marker.is_file()):
            raise ValueError(f"output folder {out}: its {OUTPUT_MARKER} is a link or not a file; preimage writes "
                             "nothing through a link it did not make: remove it, or choose another folder")
        entries = [e for e in out.iterdir() if e.name not in _KEPT]
        if entries:
            if not clear:
                raise ValueError(f"output folder {out} is not empty ({len(entries)} entries): add overwrite=true to "
                                 "replace an earlier run's outputs, or choose another folder")
            if not marker.exists():
                raise ValueError(f"output folder {out} is not empty and was not written by preimage: it is not "
                                 "cleared even with overwrite=true; choose another folder")
            if inside:
                raise ValueError(f"input {inside[0]} is inside the output folder {out}, which overwrite=true would "
                                 "empty before reading it: move the inputs out, or choose another folder")
            _empty(out)
        write_marker(out)
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

    import torch

    return {"preimage": __version__, "python": platform.python_version(), "torch": torch.__version__,
            **{key: installed(name) for key, name in (("torchvision", "torchvision"),
                                                       ("pytorch_lightning", "pytorch-lightning"), ("numpy", "numpy"))}}
