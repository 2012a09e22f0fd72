"""Writing files whole or not at all: every output goes to a temporary file beside it, renamed into place."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "not_a_file"]


def not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (``no such file``, ``is a folder, not a file``, ``is not a regular
    file ...``), or ``None`` if it can."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists():
        return "is not a regular file (a device, a pipe or a socket)"
    return "no such file"


#: free space (bytes) below which a failed write is put down to a full disk
NEARLY_FULL = 1 << 20


def _nearly_full(folder: Path) -> bool:
    """Whether the filesystem of ``folder`` has less than :data:`NEARLY_FULL` bytes left for this user."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < NEARLY_FULL


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, rename it to ``path`` (atomic on
    one filesystem), so that a reader never sees a half-written file and a failure leaves none.

    Raises:
        ValueError: the disk is full (one line naming ``path``): the write failed with ENOSPC or EDQUOT, or
            with another error while under :data:`NEARLY_FULL` bytes were free, as numpy's and torch's writers
            report it; the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    except (OSError, RuntimeError) as err:  # numpy's and torch's writers report a full disk without an errno
        full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or _nearly_full(target.parent)
        temporary.unlink(missing_ok=True)
        if full:
            raise ValueError(f"{target}: the disk is full; nothing was written there") from None
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
