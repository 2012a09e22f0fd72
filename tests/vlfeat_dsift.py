"""Test-side ctypes driver for VLFeat's dense SIFT (``libvl.so.1``), the reference for ``preimage``'s DSIFT.

Only ``vl_dsift_new_basic``, ``vl_dsift_process``, ``vl_dsift_delete`` and ``_vl_dsift_update_buffers``
are exported; the ``vl_dsift_set_*``/``get_*`` accessors are inline in ``vl/dsift.h``, so the
``VlDsiftFilter`` struct is mirrored here to switch on the flat window (MATLAB's ``'Fast'``), set the
window size and read the frames and descriptors.
"""
from __future__ import annotations

import ctypes

import numpy as np


class _Geometry(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("numBinT", "numBinX", "numBinY", "binSizeX", "binSizeY")]


class _Keypoint(ctypes.Structure):
    _fields_ = [(name, ctypes.c_double) for name in ("x", "y", "s", "norm")]


class _DsiftFilter(ctypes.Structure):
    """Mirror of ``VlDsiftFilter`` in ``/usr/include/vl/dsift.h`` (VLFeat 0.9.21)."""

    _fields_ = [
        *[(name, ctypes.c_int) for name in (
            "imWidth", "imHeight", "stepX", "stepY", "boundMinX", "boundMinY", "boundMaxX", "boundMaxY")],
        ("geom", _Geometry),
        ("useFlatWindow", ctypes.c_int),
        ("windowSize", ctypes.c_double),
        ("numFrames", ctypes.c_int),
        ("descrSize", ctypes.c_int),
        ("frames", ctypes.POINTER(_Keypoint)),
        ("descrs", ctypes.POINTER(ctypes.c_float)),
        ("numBinAlloc", ctypes.c_int),
        ("numFrameAlloc", ctypes.c_int),
        ("numGradAlloc", ctypes.c_int),
        ("grads", ctypes.POINTER(ctypes.POINTER(ctypes.c_float))),
        ("convTmp1", ctypes.POINTER(ctypes.c_float)),
        ("convTmp2", ctypes.POINTER(ctypes.c_float)),
    ]


def _bind(lib: ctypes.CDLL) -> None:
    filt = ctypes.POINTER(_DsiftFilter)
    lib.vl_dsift_new_basic.argtypes = [ctypes.c_int] * 4
    lib.vl_dsift_new_basic.restype = filt
    lib.vl_dsift_process.argtypes = [filt, ctypes.POINTER(ctypes.c_float)]
    lib.vl_dsift_process.restype = None
    lib.vl_dsift_delete.argtypes = [filt]
    lib.vl_dsift_delete.restype = None
    lib._vl_dsift_update_buffers.argtypes = [filt]
    lib._vl_dsift_update_buffers.restype = None


def vlfeat_dsift(
    lib: ctypes.CDLL, image: np.ndarray, *, bin_size: int, step: int, window_size: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``vl_dsift`` with the flat window on one grey ``(H, W)`` image (any range; 0–255 here).

    Returns:
        ``(descriptors, frames)``: float32 ``(N, 128)`` in VLFeat's element order and float64 ``(N, 3)``
        rows of ``(x, y, norm)`` (the frame centre and its gradient mass), frames row by row.
    """
    _bind(lib)
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {image.shape}")
    height, width = image.shape
    ptr = lib.vl_dsift_new_basic(width, height, step, bin_size)
    if not ptr:
        raise MemoryError("vl_dsift_new_basic returned NULL")
    try:
        filt = ptr.contents
        filt.useFlatWindow = 1
        filt.windowSize = window_size
        lib._vl_dsift_update_buffers(ptr)
        lib.vl_dsift_process(ptr, image.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        count, size = filt.numFrames, filt.descrSize
        if count == 0:
            return np.zeros((0, size), np.float32), np.zeros((0, 3), np.float64)
        descriptors = np.ctypeslib.as_array(filt.descrs, shape=(count * size,)).reshape(count, size).copy()
        frames = np.array([(k.x, k.y, k.norm) for k in filt.frames[:count]], dtype=np.float64)
    finally:
        lib.vl_dsift_delete(ptr)
    return descriptors, frames
