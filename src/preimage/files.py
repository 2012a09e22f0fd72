"""Writing files whole or not at all: every output goes to a temporary file beside it, renamed into place."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, rename it to ``path`` (atomic on
    one filesystem), so that a reader never sees a half-written file and a failure leaves none.

    Raises:
        ValueError: the disk is full (one line naming ``path``); the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ValueError(f"{target}: the disk is full; nothing was written there") from None
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
