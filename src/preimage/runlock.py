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
    of a process of this host that is gone (killed) is stale and taken over; any other, and a ``.lock`` that is
    not a preimage lock (a user's own file, left as it is), is a ``ValueError`` (one line): two jobs never mix
    their files in one folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir} exists and is not a folder: choose a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot write to {run_dir}: {err.strerror or err}") from None
    lock, me = run_dir / ".lock", (socket.gethostname(), os.getpid())
    mine = run_dir / f".lock.{me[1]}.tmp"
    mine.unlink(missing_ok=True)  # a killed process's of the same pid (a link is removed, never followed)
    with os.fdopen(os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "w") as f:
        f.write(f"{me[0]}:{me[1]}")
    try:
        for _ in range(3):
            try:
                os.link(mine, lock)  # atomic: the lock appears with its content, or not at all
                break
            except FileExistsError:
                holder = _holder(lock)
                if holder is None and lock.exists():
                    raise ValueError(f"{lock} is not a preimage lock (host:pid): it is left as it is; remove it "
                                     "if it is not needed, or set another folder") from None
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
