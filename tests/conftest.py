"""Shared fixtures: the real VLFeat library and the built-in photos.

Under CI (``CI`` or ``PREIMAGE_REQUIRE_VLFEAT`` set) a missing libvl.so.1 fails the parity tests
instead of skipping them, so that they can never silently not run there.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

import pytest
import torch

VLFEAT_REQUIRED = bool(os.environ.get("PREIMAGE_REQUIRE_VLFEAT") or os.environ.get("CI"))


def _load_libvl() -> ctypes.CDLL | None:
    for name in ("libvl.so.1", ctypes.util.find_library("vl") or "libvl.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


@pytest.fixture(scope="session")
def libvl() -> ctypes.CDLL:
    """The real VLFeat C library (Debian package libvlfeat1)."""
    lib = _load_libvl()
    if lib is None:
        message = "VLFeat (libvl.so.1) not found: apt-get install -y libvlfeat1"
        if VLFEAT_REQUIRED:
            pytest.fail(message + " (required under CI)")
        pytest.skip(message)
    return lib


#: the one skip CI accepts: a machine that cannot mount a tiny filesystem (the full-disk tests' patched twins,
#: which test the same code, run everywhere)
MACHINE_SKIP = "cannot mount a tmpfs here"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """Under CI, turn every skip into a failure (but :data:`MACHINE_SKIP`): nothing may silently not run there."""
    outcome = yield
    report = outcome.get_result()
    if (VLFEAT_REQUIRED and report.skipped and not hasattr(report, "wasxfail")
            and MACHINE_SKIP not in str(report.longrepr)):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which counts as a failure: {report.longrepr}"


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
