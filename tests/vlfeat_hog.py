"""Test-side ctypes wrapper around the real VLFeat ``vl_hog`` (UoCTTI, not transposed)."""
from __future__ import annotations

import ctypes

import numpy as np
import torch

VL_HOG_VARIANT_UOCTTI = 1


def _declare(lib: ctypes.CDLL) -> None:
    size, ptr, fptr = ctypes.c_uint64, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)
    lib.vl_hog_new.argtypes, lib.vl_hog_new.restype = [ctypes.c_int, size, ctypes.c_int], ptr
    lib.vl_hog_delete.argtypes, lib.vl_hog_delete.restype = [ptr], None
    lib.vl_hog_put_image.argtypes = [ptr, fptr, size, size, size, size]
    lib.vl_hog_put_image.restype = None
    lib.vl_hog_set_use_bilinear_orientation_assignments.argtypes = [ptr, ctypes.c_int]
    lib.vl_hog_set_use_bilinear_orientation_assignments.restype = None
    for name in ("vl_hog_get_width", "vl_hog_get_height", "vl_hog_get_dimension"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [ptr], size
    lib.vl_hog_extract.argtypes, lib.vl_hog_extract.restype = [ptr, fptr], None


def vlfeat_hog(
    lib: ctypes.CDLL,
    image: torch.Tensor,
    *,
    cell_size: int = 8,
    orientations: int = 9,
    bilinear_orientations: bool = False,
) -> torch.Tensor:
    """VLFeat's UoCTTI HOG of one ``(C, H, W)`` image (used as given: pass 0–255 values).

    Returns the float32 features ``(dimension, rows, cols)`` exactly as ``vl_hog_extract`` writes them.
    """
    _declare(lib)
    channels, height, width = image.shape
    pixels = np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)
    hog = lib.vl_hog_new(VL_HOG_VARIANT_UOCTTI, orientations, 0)
    if not hog:
        raise MemoryError("vl_hog_new failed")
    try:
        lib.vl_hog_set_use_bilinear_orientation_assignments(hog, int(bilinear_orientations))
        lib.vl_hog_put_image(
            hog, pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), width, height, channels, cell_size
        )
        shape = (lib.vl_hog_get_dimension(hog), lib.vl_hog_get_height(hog), lib.vl_hog_get_width(hog))
        features = np.zeros(shape, dtype=np.float32)
        lib.vl_hog_extract(hog, features.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    finally:
        lib.vl_hog_delete(hog)
    return torch.from_numpy(features)
