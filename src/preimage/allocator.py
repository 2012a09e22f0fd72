"""The CPU's memory allocator told to keep freed memory for reuse (glibc only; no torch import, so the CLI may
call it before anything heavy)."""
from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory"]

# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on a 64-bit system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MAX_MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of handing them back to the system.

    By default glibc returns a large freed block to the system (unmapping it, or trimming the heap's top) and the
    next tensor of that size is faulted in again page by page. A GD step on the CPU allocates and frees tens of MB:
    GD at EfficientNet-Lite0's stage2 took 1.7× as long so, and training a decoder on stage4 1.2×
    (``scripts/benchmark_allocator.py``). With this, blocks under 32 MiB come from the heap and the heap is never
    trimmed: the process keeps its peak memory until it ends. Process-wide, so entry points call it (the
    CLI, the scripts that time GD), never the library on import; a notebook may call it once.

    Returns:
        ``True`` if applied; ``False`` (nothing changed) off glibc (macOS, musl), or where the environment sets
        malloc's tunables (``MALLOC_*``, or ``glibc.malloc`` in ``GLIBC_TUNABLES``: the user's choice stands).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    return bool(mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
