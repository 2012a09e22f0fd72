"""Test-side ctypes wrapper around the real VLFeat ``vl_lbp`` (uniform mapping, not transposed)."""
from __future__ import annotations

import ctypes

import numpy as np
import torch

VL_LBP_UNIFORM = 0


def vlfeat_lbp(lib: ctypes.CDLL, grey: torch.Tensor, cell_size: int = 16) -> torch.Tensor:
    """``vl_lbp_process`` on one ``(H, W)`` image (used as given: pass 0–255 values), into a zeroed buffer.

    Returns the float32 features ``(58, ⌊H/c⌋, ⌊W/c⌋)`` exactly as VLFeat writes them (dimension planes).
    """
    size, ptr, fptr = ctypes.c_uint64, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)
    lib.vl_lbp_new.argtypes, lib.vl_lbp_new.restype = [ctypes.c_int, ctypes.c_int], ptr
    lib.vl_lbp_delete.argtypes, lib.vl_lbp_delete.restype = [ptr], None
    lib.vl_lbp_get_dimension.argtypes, lib.vl_lbp_get_dimension.restype = [ptr], size
    lib.vl_lbp_process.argtypes, lib.vl_lbp_process.restype = [ptr, fptr, fptr, size, size, size], None
    height, width = grey.shape
    pixels = np.ascontiguousarray(grey.detach().cpu().numpy(), dtype=np.float32)
    lbp = lib.vl_lbp_new(VL_LBP_UNIFORM, 0)
    if not lbp:
        raise MemoryError("vl_lbp_new failed")
    try:
        dimension = lib.vl_lbp_get_dimension(lbp)
        features = np.zeros((dimension, height // cell_size, width // cell_size), dtype=np.float32)
        lib.vl_lbp_process(lbp, features.ctypes.data_as(fptr), pixels.ctypes.data_as(fptr), width, height, cell_size)
    finally:
        lib.vl_lbp_delete(lbp)
    return torch.from_numpy(features)
