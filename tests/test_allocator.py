"""keep_freed_memory: a freed tensor's block stays in the heap for the next one instead of going back to the system
(glibc's own accounting, mallinfo2, in a fresh process)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import preimage

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a 20 MB tensor made and freed; printed: whether keep_freed_memory applied, the bytes mmapped for it while it
# lived, and the free bytes the heap holds after it is gone
_ONE_TENSOR = """
import ctypes, sys, torch
import preimage
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
applied = preimage.keep_freed_memory() if sys.argv[1] == "keep" else None
before = mallinfo2()
tensor = torch.ones(5 << 20)
alive = mallinfo2()
del tensor
after = mallinfo2()
print(applied, alive.hblkhd - before.hblkhd, after.fordblks - before.fordblks)
"""


def _one_tensor(setting: str, **env: str) -> tuple[str, int, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", _ONE_TENSOR, setting], env={**clean, **env}, capture_output=True,
                          text=True, check=True)
    applied, mapped, kept = done.stdout.split()
    return applied, int(mapped), int(kept)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_a_freed_block_stays_in_the_heap() -> None:
    size = 20 << 20
    applied, mapped, kept = _one_tensor("default")  # glibc by default: mapped on its own, unmapped when freed
    assert applied == "None" and mapped >= size and kept < size // 10
    applied, mapped, kept = _one_tensor("keep")
    # kept: the block's 20 MB less what the interpreter took from the heap meanwhile (12 KB seen once pytest's
    # collection had set TORCHINDUCTOR_CACHE_DIR, which the child inherits)
    assert applied == "True" and mapped == 0 and kept >= size - (1 << 20)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_environments_malloc_settings_stand() -> None:
    applied, mapped, kept = _one_tensor("keep", MALLOC_ARENA_MAX="2")
    assert applied == "False" and mapped >= 20 << 20 and kept < 2 << 20


def test_off_glibc_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert preimage.keep_freed_memory() is False
