"""One process per run folder: the ``.lock`` a training or comparison takes, and which process launches a run."""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

__all__ = ["launching_process", "run_dir_lock"]


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
