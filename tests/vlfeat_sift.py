"""Test-side ctypes wrapper around the real VLFeat ``vl_sift`` (``vl_sift_new(W, H, -1, 3, 0)``'s defaults)."""
from __future__ import annotations

import ctypes
import math

import numpy as np
import torch


class VlSiftKeypoint(ctypes.Structure):
    _fields_ = [("o", ctypes.c_int), ("ix", ctypes.c_int), ("iy", ctypes.c_int), ("is_", ctypes.c_int),
                ("x", ctypes.c_float), ("y", ctypes.c_float), ("s", ctypes.c_float), ("sigma", ctypes.c_float)]


class VlSiftFilt(ctypes.Structure):
    """``sift.h``'s ``VlSiftFilt``, mirrored to read ``keys`` / ``nkeys`` (their accessors are inline)."""

    _fields_ = [("sigman", ctypes.c_double), ("sigma0", ctypes.c_double), ("sigmak", ctypes.c_double),
                ("dsigma0", ctypes.c_double),
                ("width", ctypes.c_int), ("height", ctypes.c_int), ("O", ctypes.c_int), ("S", ctypes.c_int),
                ("o_min", ctypes.c_int), ("s_min", ctypes.c_int), ("s_max", ctypes.c_int), ("o_cur", ctypes.c_int),
                ("temp", ctypes.c_void_p), ("octave", ctypes.c_void_p), ("dog", ctypes.c_void_p),
                ("octave_width", ctypes.c_int), ("octave_height", ctypes.c_int),
                ("gaussFilter", ctypes.c_void_p), ("gaussFilterSigma", ctypes.c_double),
                ("gaussFilterWidth", ctypes.c_uint64),
                ("keys", ctypes.POINTER(VlSiftKeypoint)), ("nkeys", ctypes.c_int), ("keys_res", ctypes.c_int),
                ("peak_thresh", ctypes.c_double), ("edge_thresh", ctypes.c_double),
                ("norm_thresh", ctypes.c_double), ("magnif", ctypes.c_double), ("windowSize", ctypes.c_double),
                ("grad", ctypes.c_void_p), ("grad_o", ctypes.c_int)]


def vlfeat_sift(lib: ctypes.CDLL, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every keypoint and orientation ``vl_sift`` finds in one ``(H, W)`` image (pass 0–255 values).

    Returns ``frames (N, 4)`` float64 — x, y (0-based pixels), σ (pixels), angle (radians) — and
    ``descriptors (N, 128)`` float32, in VLFeat's order: octave by octave, keypoints as detected, each
    keypoint's orientations as ``vl_sift_calc_keypoint_orientations`` lists them. A keypoint whose
    descriptor VLFeat skips (its bounds check) keeps the zeros of the buffer it was given.
    """
    filt_p, fptr = ctypes.POINTER(VlSiftFilt), ctypes.POINTER(ctypes.c_float)
    key_p = ctypes.POINTER(VlSiftKeypoint)
    lib.vl_sift_new.argtypes, lib.vl_sift_new.restype = [ctypes.c_int] * 5, filt_p
    lib.vl_sift_delete.argtypes, lib.vl_sift_delete.restype = [filt_p], None
    lib.vl_sift_process_first_octave.argtypes = [filt_p, fptr]
    lib.vl_sift_process_first_octave.restype = ctypes.c_int
    lib.vl_sift_process_next_octave.argtypes, lib.vl_sift_process_next_octave.restype = [filt_p], ctypes.c_int
    lib.vl_sift_detect.argtypes, lib.vl_sift_detect.restype = [filt_p], None
    lib.vl_sift_calc_keypoint_orientations.argtypes = [filt_p, ctypes.POINTER(ctypes.c_double), key_p]
    lib.vl_sift_calc_keypoint_orientations.restype = ctypes.c_int
    lib.vl_sift_calc_keypoint_descriptor.argtypes = [filt_p, fptr, key_p, ctypes.c_double]
    lib.vl_sift_calc_keypoint_descriptor.restype = None

    height, width = grey.shape
    pixels = np.ascontiguousarray(grey.detach().cpu().numpy(), dtype=np.float32)
    filt = lib.vl_sift_new(width, height, -1, 3, 0)
    if not filt:
        raise MemoryError("vl_sift_new failed")
    frames: list[tuple[float, float, float, float]] = []
    descriptors: list[np.ndarray] = []
    try:
        status = lib.vl_sift_process_first_octave(filt, pixels.ctypes.data_as(fptr))
        while status == 0:
            lib.vl_sift_detect(filt)
            for i in range(filt.contents.nkeys):
                key = ctypes.pointer(filt.contents.keys[i])
                angles = (ctypes.c_double * 4)()
                for angle in angles[:lib.vl_sift_calc_keypoint_orientations(filt, angles, key)]:
                    descriptor = np.zeros(128, dtype=np.float32)
                    lib.vl_sift_calc_keypoint_descriptor(filt, descriptor.ctypes.data_as(fptr), key, angle)
                    frames.append((key.contents.x, key.contents.y, key.contents.sigma, angle))
                    descriptors.append(descriptor)
            status = lib.vl_sift_process_next_octave(filt)
    finally:
        lib.vl_sift_delete(filt)
    if not frames:
        return torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 128)
    return torch.tensor(frames, dtype=torch.float64), torch.from_numpy(np.stack(descriptors))


def cells_by_hand(frames: torch.Tensor, descriptors: torch.Tensor, cell: int = 4) -> dict[tuple[int, int], torch.Tensor]:
    """D&B's grid rule as a plain loop over a keypoint list: per cell ``(⌊y/c⌋, ⌊x/c⌋)`` the keypoint of largest σ
    (the first among equals) as [descriptor, x/c − column, y/c − row, σ, angle, 1] (float64)."""
    cells: dict[tuple[int, int], torch.Tensor] = {}
    for (x, y, sigma, angle), descriptor in zip(frames.tolist(), descriptors):
        row, col = math.floor(y / cell), math.floor(x / cell)
        if (row, col) not in cells or sigma > cells[row, col][130]:
            offsets = torch.tensor([x / cell - col, y / cell - row, sigma, angle, 1.0], dtype=torch.float64)
            cells[row, col] = torch.cat([descriptor.to(torch.float64), offsets])
    return cells


def match_cells(ours: torch.Tensor, theirs: dict[tuple[int, int], torch.Tensor]) -> tuple[int, int]:
    """``(matched, extra)``: VLFeat's occupied cells that ``ours`` (133, rows, cols) holds with the descriptor within
    1e-3, offsets within 0.025 of a cell, σ within 0.5 % and the angle within 0.01 rad; and the cells ``ours``
    occupies that VLFeat leaves empty."""
    ours = ours.to(torch.float64)
    occupied = ours[132] == 1
    matched = 0
    for (row, col), cell in theirs.items():
        mine = ours[:, row, col]
        matched += bool(occupied[row, col] and (mine[:128] - cell[:128]).abs().max() <= 1e-3
                        and (mine[128:130] - cell[128:130]).abs().max() <= 0.025
                        and abs(mine[130] / cell[130] - 1) <= 0.005 and abs(mine[131] - cell[131]) <= 0.01)
    extra = int(occupied.sum()) - sum(bool(occupied[r, c]) for r, c in theirs)
    return matched, extra
