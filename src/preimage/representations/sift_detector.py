"""VLFeat's SIFT detector and descriptor (``vl_sift``) in PyTorch, batched: the keypoint lists of :class:`~.sift.SIFT`.

The detector and descriptor follow ``vl/sift.c`` (VLFeat 0.9.21) as ``vl_sift_new(W, H, -1, 3, 0)`` sets it up:
every octave that fits (``max(⌊log2 min(H, W)⌋ − 3, 1)``), 3 levels per octave (Gaussian levels −1…4, the
image taken as blurred by 0.5 px), first octave 0, peak threshold 0, edge threshold 10, magnification 3, a
Gaussian window of 2 bins. Difference-of-Gaussian extrema (strict, over 26 neighbours) are refined by up to
five Newton steps (moving one pixel when the offset passes 0.6), kept when the interpolated peak is non-zero,
the Harris-like edge score is below 12.1 and the offset is under 1.5; each gets up to four orientations (the
peaks within 80 % of a 36-bin histogram smoothed six times) and a 4×4×8 descriptor per orientation
(trilinear votes, L2-normalised, clamped at 0.2, normalised again). VLFeat's fast ``atan2``, ``sqrt`` and
``exp`` approximations, its order of sums in the blur and its float32/float64 mix are reproduced, so the keypoints
are VLFeat's to the last bits.

:func:`sift_keypoints` gives the keypoint list per image; :func:`descriptors_at` the descriptors at given frames.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .vlfeat_math import EPS_F, fast_atan2, fast_expn, fast_sqrt, mod_2pi

__all__ = ["DESCRIPTOR_SIZE", "Keypoints", "descriptors_at", "find_keypoints", "gaussian_octaves", "num_octaves",
           "sift_keypoints"]

LEVELS = 3  # levels per octave
_S_MIN, _S_MAX = -1, LEVELS + 1  # Gaussian levels kept per octave
_SIGMA_N = 0.5  # the blur the input image is taken to have
_SIGMA_K = 2.0 ** (1.0 / LEVELS)
_SIGMA_0 = 1.6 * _SIGMA_K
_DSIGMA_0 = _SIGMA_0 * math.sqrt(1.0 - 1.0 / (_SIGMA_K * _SIGMA_K))
EDGE_THRESHOLD = 10.0
_EDGE_SCORE_MAX = (EDGE_THRESHOLD + 1) ** 2 / EDGE_THRESHOLD
_MAGNIF = 3.0  # a spatial bin spans 3σ
_WINDOW = 2.0  # the descriptor's Gaussian window, in bins
_ORIENTATION_BINS = 36
_BINS_XY, _BINS_T = 4, 8
DESCRIPTOR_SIZE = _BINS_XY * _BINS_XY * _BINS_T
#: per cell: the descriptor, x and y offsets within the cell (in cells), σ (pixels), angle (radians), 1
_CHUNK = 256  # keypoints per vectorised descriptor batch (bounds the memory: up to 97² samples each)


@dataclass
class Keypoints:
    """The keypoints of one image, in VLFeat's order (octave by octave, as detected, orientations in turn).

    Attributes:
        frames: ``(N, 4)`` float64: x, y (0-based pixel coordinates), σ (pixels), orientation (radians).
        descriptors: ``(N, 128)`` float32, element ``t + 8·(bx + 4·by)`` for orientation bin ``t`` and
            spatial bin ``(bx, by)`` (VLFeat's layout).
    """

    frames: torch.Tensor
    descriptors: torch.Tensor


@functools.lru_cache(maxsize=None)
def _gaussian_taps(sigma: float) -> tuple[float, ...]:
    """``_vl_sift_smooth``'s kernel: half-width ``max(⌈4σ⌉, 1)``, taps and their sum in float32 as VLFeat has them."""
    half = max(math.ceil(4.0 * sigma), 1)
    offsets = np.arange(-half, half + 1).astype(np.float32) / np.float32(sigma)
    taps = np.exp(-0.5 * (offsets * offsets).astype(np.float64)).astype(np.float32)
    total = np.float32(0)
    for tap in taps:  # VLFeat sums in order
        total = np.float32(total + tap)
    return tuple(float(t) for t in taps / total)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, 1, h, w)`` float32, columns first, edges continued (VLFeat's padding).

    Each output is summed tap by tap from the top (left) in float32, as ``vl_imconvcol_vf`` sums, so the levels
    are VLFeat's to the bit (a convolution routine would add in another order).
    """
    taps = _gaussian_taps(sigma)
    half = (len(taps) - 1) // 2
    for dim in (2, 3):
        length = images.shape[dim]
        padding = (0, 0, half, half) if dim == 2 else (half, half, 0, 0)
        padded = F.pad(images, padding, mode="replicate")
        blurred = padded.narrow(dim, 0, length) * taps[0]
        for k in range(1, len(taps)):
            blurred = blurred + padded.narrow(dim, k, length) * taps[k]
        images = blurred
    return images


def _octave(base: torch.Tensor) -> torch.Tensor:
    """Gaussian levels −1…4 ``(N, 6, h, w)`` of one octave from its level −1."""
    levels = [base]
    for s in range(_S_MIN + 1, _S_MAX + 1):
        levels.append(_blur(levels[-1], _DSIGMA_0 * _SIGMA_K ** s))
    return torch.cat(levels, dim=1)


def num_octaves(height: int, width: int) -> int:
    """``vl_sift_new``'s octave count for ``noctaves = -1`` and first octave 0."""
    return max(min(height, width).bit_length() - 1 - 3, 1)


def gaussian_octaves(grey: torch.Tensor):
    """Yield ``(o, levels (N, 6, h, w))`` for each octave of ``grey (N, 1, H, W)`` (0–255)."""
    height, width = grey.shape[-2:]
    blur_in = math.sqrt((_SIGMA_0 * _SIGMA_K ** _S_MIN) ** 2 - _SIGMA_N ** 2)
    levels = _octave(_blur(grey, blur_in))
    for o in range(num_octaves(height, width)):
        if o:
            h, w = height >> o, width >> o
            # the next octave's level −1 is this one's level 2 (σ doubled), every other pixel, unblurred
            base = LEVELS - 1 - _S_MIN
            levels = _octave(levels[:, base: base + 1, : 2 * h: 2, : 2 * w: 2])
        yield o, levels


def _extrema(dog: torch.Tensor) -> torch.Tensor:
    """``(K, 4)`` (image, level s ∈ 0…2, y, x) of strict 3×3×3 extrema of ``dog (N, 5, h, w)`` (levels −1…3),
    a maximum ≥ 0 or a minimum ≤ 0, in VLFeat's scan order (image, s, y, x)."""
    centre = dog[:, 1:-1, 1:-1, 1:-1]
    levels, h, w = centre.shape[1:]
    above = torch.full_like(centre, -math.inf)
    below = torch.full_like(centre, math.inf)
    for ds in (0, 1, 2):
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if (ds, dy, dx) != (1, 1, 1):
                    other = dog[:, ds: ds + levels, dy: dy + h, dx: dx + w]
                    above, below = torch.maximum(above, other), torch.minimum(below, other)
    found = ((centre >= 0) & (centre > above)) | ((centre <= 0) & (centre < below))
    return found.nonzero() + torch.tensor([0, 0, 1, 1], device=dog.device)


def _solve3(a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``sift.c``'s Gauss elimination with partial pivoting on ``(K, 3, 3)`` float64: the same operations in the
    same order (so the same bits); 0 where a pivot falls below 1e-10 (VLFeat gives up there)."""
    a, rhs = a.clone(), rhs.clone()
    rows = torch.arange(len(a), device=a.device)
    singular = torch.zeros(len(a), dtype=torch.bool, device=a.device)
    for j in range(3):
        pivot = j + a[:, j:, j].abs().argmax(dim=1)  # the first of equal maxima, as VLFeat's strict ">"
        size = a[rows, pivot, j]
        singular |= ~(size.abs() >= np.float32(1e-10))
        order = torch.arange(3, device=a.device).repeat(len(a), 1)
        order[rows, j], order[rows, pivot] = pivot, j
        a, rhs = a[rows[:, None], order], rhs[rows[:, None], order]
        a[:, j] = a[:, j] / size[:, None]
        rhs[:, j] = rhs[:, j] / size
        for below in range(j + 1, 3):
            factor = a[:, below, j].clone()
            a[:, below] = a[:, below] - factor[:, None] * a[:, j]
            rhs[:, below] = rhs[:, below] - factor * rhs[:, j]
    for i in (2, 1):
        for above in range(i):
            rhs[:, above] = rhs[:, above] - rhs[:, i] * a[:, above, i]
    return torch.where(singular[:, None], 0.0, rhs)


def _refine(dog: torch.Tensor, found: torch.Tensor, o: int) -> dict[str, torch.Tensor]:
    """``vl_sift_detect``'s refinement and tests: the kept keypoints' image, integer level, octave position
    ``(x, y)`` (float64 from VLFeat's float32 pixels) and σ in octave pixels, in order."""
    n, _, h, w = dog.shape
    b, s, y, x = found.unbind(1)
    step_x = torch.zeros_like(x)
    step_y = torch.zeros_like(y)
    for _ in range(5):
        x, y = x + step_x, y + step_y
        at = lambda dx, dy, ds: dog[b, s + 1 + ds, y + dy, x + dx]  # noqa: E731 - levels −1…3 stored at 0…4
        # VLFeat adds and subtracts the float32 samples in float32 and goes on in float64
        wide = lambda v: v.to(torch.float64)  # noqa: E731
        centre = wide(at(0, 0, 0))
        gx = 0.5 * wide(at(1, 0, 0) - at(-1, 0, 0))
        gy = 0.5 * wide(at(0, 1, 0) - at(0, -1, 0))
        gs = 0.5 * wide(at(0, 0, 1) - at(0, 0, -1))
        dxx = wide(at(1, 0, 0) + at(-1, 0, 0)) - 2.0 * centre
        dyy = wide(at(0, 1, 0) + at(0, -1, 0)) - 2.0 * centre
        dss = wide(at(0, 0, 1) + at(0, 0, -1)) - 2.0 * centre
        dxy = 0.25 * wide(at(1, 1, 0) + at(-1, -1, 0) - at(-1, 1, 0) - at(1, -1, 0))
        dxs = 0.25 * wide(at(1, 0, 1) + at(-1, 0, -1) - at(-1, 0, 1) - at(1, 0, -1))
        dys = 0.25 * wide(at(0, 1, 1) + at(0, -1, -1) - at(0, -1, 1) - at(0, 1, -1))
        hessian = torch.stack([torch.stack([dxx, dxy, dxs], 1), torch.stack([dxy, dyy, dys], 1),
                               torch.stack([dxs, dys, dss], 1)], 1)
        offset = _solve3(hessian, -torch.stack([gx, gy, gs], 1))
        step_x = (offset[:, 0] > 0.6).long() * (x < w - 2) - (offset[:, 0] < -0.6).long() * (x > 1)
        step_y = (offset[:, 1] > 0.6).long() * (y < h - 2) - (offset[:, 1] < -0.6).long() * (y > 1)
        if not (step_x.any() or step_y.any()):
            break
    peak = centre + 0.5 * (gx * offset[:, 0] + gy * offset[:, 1] + gs * offset[:, 2])
    score = (dxx + dyy) * (dxx + dyy) / (dxx * dyy - dxy * dxy)
    xn, yn, sn = x + offset[:, 0], y + offset[:, 1], s + offset[:, 2]
    good = ((peak.abs() > 0) & (score < _EDGE_SCORE_MAX) & (score >= 0) & (offset.abs() < 1.5).all(1)
            & (xn >= 0) & (xn <= w - 1) & (yn >= 0) & (yn <= h - 1) & (sn >= _S_MIN) & (sn <= _S_MAX))
    scale = 2.0 ** o
    # VLFeat stores x, y and σ in image pixels as float32 and divides by 2^o again when it uses them
    as_stored = lambda v: v.to(torch.float32).to(torch.float64)  # noqa: E731
    return {"image": b[good], "level": s[good], "x": as_stored(xn[good] * scale) / scale,
            "y": as_stored(yn[good] * scale) / scale,
            "sigma": as_stored(_SIGMA_0 * torch.pow(2.0, sn[good] / LEVELS) * scale) / scale}


def _gradients(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient modulus and angle in ``[0, 2π]`` (float32, VLFeat's fast approximations) of levels 0…2 of
    ``levels (N, 6, h, w)``: central differences inside, one-sided on the border."""
    planes = levels[:, 1: 1 + LEVELS]

    def derivative(p: torch.Tensor, dim: int) -> torch.Tensor:
        n = p.shape[dim]
        inner = 0.5 * (p.narrow(dim, 2, n - 2) - p.narrow(dim, 0, n - 2))
        first = p.narrow(dim, 1, 1) - p.narrow(dim, 0, 1)
        last = p.narrow(dim, n - 1, 1) - p.narrow(dim, n - 2, 1)
        return torch.cat([first, inner, last], dim)

    gx, gy = derivative(planes, 3), derivative(planes, 2)
    modulus = fast_sqrt(gx * gx + gy * gy)
    angle = mod_2pi((fast_atan2(gy, gx).to(torch.float64) + 2 * math.pi).to(torch.float32))
    return modulus, angle


def _window(xi: torch.Tensor, yi: torch.Tensor, radius: torch.Tensor, low: int, y_high: int, x_high: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixels of the squares ``±radius`` around ``(yi, xi)`` inside ``[low, y_high] × [low, x_high]``, as
    flat lists ``(owner, y, x)``: keypoint by keypoint, row by row (the order VLFeat visits them)."""
    span = int(radius.max())
    steps = torch.arange(-span, span + 1, device=xi.device)
    dy = steps.repeat_interleave(len(steps))[None]
    dx = steps.repeat(len(steps))[None]
    y, x, r = yi[:, None] + dy, xi[:, None] + dx, radius[:, None]
    inside = (dx.abs() <= r) & (dy.abs() <= r) & (y >= low) & (y <= y_high) & (x >= low) & (x <= x_high)
    owner, sample = inside.nonzero().unbind(1)
    return owner, y[owner, sample], x[owner, sample]


def _orientations(modulus: torch.Tensor, angle: torch.Tensor, keys: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``vl_sift_calc_keypoint_orientations``: ``(keypoint index, angle)`` for each orientation, ordered by
    keypoint then histogram bin, at most four per keypoint."""
    h, w = modulus.shape[-2:]
    x, y, sigma = keys["x"], keys["y"], keys["sigma"]
    xi, yi = (x + 0.5).long(), (y + 0.5).long()
    sigma_w = 1.5 * sigma
    radius = torch.clamp((3.0 * sigma_w).floor(), min=1).long()
    owner, py, px = _window(xi, yi, radius, 0, h - 1, w - 1)
    ry, rx = py.to(torch.float64) - y[owner], px.to(torch.float64) - x[owner]
    r2 = rx * rx + ry * ry
    keep = r2 < (radius * radius)[owner] + 0.6  # a disc
    owner, py, px, r2 = owner[keep], py[keep], px[keep], r2[keep]
    b, s = keys["image"][owner], keys["level"][owner]
    weight = fast_expn(r2 / (2 * sigma_w * sigma_w)[owner])
    modulus_at = modulus[b, s, py, px].to(torch.float64)
    position = _ORIENTATION_BINS * angle[b, s, py, px].to(torch.float64) / (2 * math.pi)
    lower = (position - 0.5).floor()  # each sample votes bilinearly for the two bins around it
    frac = position - lower - 0.5
    hist = torch.zeros(len(x) * _ORIENTATION_BINS, dtype=torch.float64, device=x.device)
    for bin_, vote in ((lower.long(), (1 - frac) * modulus_at * weight), (lower.long() + 1, frac * modulus_at * weight)):
        hist = hist.index_add(0, _ORIENTATION_BINS * owner + bin_ % _ORIENTATION_BINS, vote)
    hist = hist.view(len(x), _ORIENTATION_BINS)
    for _ in range(6):
        hist = (hist.roll(1, 1) + hist + hist.roll(-1, 1)) / 3.0
    before, after = hist.roll(1, 1), hist.roll(-1, 1)
    peak = (hist > 0.8 * hist.max(1, keepdim=True).values) & (hist > before) & (hist > after)
    peak &= peak.cumsum(1) <= 4
    key, bin_ = peak.nonzero().unbind(1)
    h0, hm, hp = hist[key, bin_], before[key, bin_], after[key, bin_]
    shift = -0.5 * (hp - hm) / (hp + hm - 2 * h0)
    return key, 2 * math.pi * (bin_ + shift + 0.5) / _ORIENTATION_BINS


def _descriptor_chunk(modulus: torch.Tensor, angle: torch.Tensor, keys: dict[str, torch.Tensor], key: torch.Tensor,
                      angle0: torch.Tensor) -> torch.Tensor:
    """:func:`_descriptors` for a few keypoints at once."""
    h, w = modulus.shape[-2:]
    x, y, sigma = keys["x"][key], keys["y"][key], keys["sigma"][key]
    xi, yi = (x + 0.5).long(), (y + 0.5).long()
    spatial_bin = _MAGNIF * sigma + 2.220446049250313e-16
    radius = (math.sqrt(2.0) * spatial_bin * (_BINS_XY + 1) / 2.0 + 0.5).floor().long()
    owner, py, px = _window(xi, yi, radius, 1, h - 2, w - 2)
    a0, sbp = angle0[owner], spatial_bin[owner]
    fx = (px.to(torch.float64) - x[owner]).to(torch.float32).to(torch.float64)
    fy = (py.to(torch.float64) - y[owner]).to(torch.float32).to(torch.float64)
    st0, ct0 = torch.sin(a0), torch.cos(a0)
    nx = ((ct0 * fx + st0 * fy) / sbp).to(torch.float32)
    ny = ((-st0 * fx + ct0 * fy) / sbp).to(torch.float32)
    bin_x = (nx.to(torch.float64) - 0.5).to(torch.float32).floor()
    bin_y = (ny.to(torch.float64) - 0.5).to(torch.float32).floor()
    half = _BINS_XY // 2
    # only samples whose lower-left bin lies in [-3, 1]² reach a bin of the 4×4 grid
    reach = (bin_x >= -half - 1) & (bin_x < half) & (bin_y >= -half - 1) & (bin_y < half)
    owner, py, px, nx, ny, bin_x, bin_y, a0 = (t[reach] for t in (owner, py, px, nx, ny, bin_x, bin_y, a0))
    b, s = keys["image"][key][owner], keys["level"][key][owner]
    mod, ang = modulus[b, s, py, px], angle[b, s, py, px]
    theta = mod_2pi((ang.to(torch.float64) - a0).to(torch.float32))
    nt = ((_BINS_T * theta).to(torch.float64) / (2 * math.pi)).to(torch.float32)
    window = fast_expn((nx * nx + ny * ny).to(torch.float64) / (2.0 * _WINDOW * _WINDOW)).to(torch.float32)
    bin_t = nt.floor()
    frac_x = (nx.to(torch.float64) - (bin_x.to(torch.float64) + 0.5)).to(torch.float32)
    frac_y = (ny.to(torch.float64) - (bin_y.to(torch.float64) + 0.5)).to(torch.float32)
    frac_t = nt - bin_t
    base = window * mod
    hist = torch.zeros(len(key) * DESCRIPTOR_SIZE, dtype=torch.float32, device=key.device)
    for step_x in (0, 1):
        for step_y in (0, 1):
            bx, by = bin_x.long() + step_x, bin_y.long() + step_y
            keep = (bx >= -half) & (bx < half) & (by >= -half) & (by < half)
            spatial = base * (1 - step_x - frac_x).abs() * (1 - step_y - frac_y).abs()
            cell = owner * DESCRIPTOR_SIZE + (by + half) * (_BINS_T * _BINS_XY) + (bx + half) * _BINS_T
            for step_t in (0, 1):
                vote = spatial * (1 - step_t - frac_t).abs()
                index = cell + (bin_t.long() + step_t) % _BINS_T
                hist = hist.index_add(0, index[keep], vote[keep])
    hist = hist.view(len(key), DESCRIPTOR_SIZE)
    hist = hist / (fast_sqrt((hist * hist).sum(1, keepdim=True)) + EPS_F)
    hist = hist.clamp(max=0.2)
    hist = hist / (fast_sqrt((hist * hist).sum(1, keepdim=True)) + EPS_F)
    return torch.where((yi < h - 1)[:, None], hist, 0.0)  # VLFeat skips a keypoint on the last row


def _descriptors(modulus: torch.Tensor, angle: torch.Tensor, keys: dict[str, torch.Tensor], key: torch.Tensor,
                 angle0: torch.Tensor) -> torch.Tensor:
    """``vl_sift_calc_keypoint_descriptor`` for keypoints ``key`` at orientations ``angle0``: ``(P, 128)``
    float32 (zeros where VLFeat's bounds check skips the keypoint). Keypoints go in chunks of similar σ, which
    bounds the memory and the padding of each chunk's square."""
    by_size = torch.argsort(keys["sigma"][key])
    chunks = [by_size[start: start + _CHUNK] for start in range(0, len(key), _CHUNK)]
    described = torch.cat([_descriptor_chunk(modulus, angle, keys, key[c], angle0[c]) for c in chunks])
    return described[torch.argsort(torch.cat(chunks))]


def sift_keypoints(grey: torch.Tensor, differentiable: bool = False, detect_on: torch.Tensor | None = None
                   ) -> list[Keypoints]:
    """Every keypoint and orientation VLFeat's ``vl_sift`` finds, per image.

    Args:
        grey: ``(B, 1, H, W)`` or ``(H, W)`` grey image(s), 0–255 (VLFeat's range).
        differentiable: give the descriptors the gradient they have with the frames held fixed (the surrogate
            :class:`SIFT` descends); detection never has one.
        detect_on: images of ``grey``'s shape whose keypoints (frames) are used instead of ``grey``'s own: the
            descriptors of ``grey`` at another image's frames (``None``: its own).

    Returns:
        One :class:`Keypoints` per image, frames in the original image's pixels.
    """
    if grey.dim() == 2:
        grey = grey[None, None]
    grey = grey.to(torch.float32)
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        described = gaussian_octaves(grey if differentiable else grey.detach())
        if detect_on is None:
            return find_keypoints(((o, levels.detach(), levels) for o, levels in described), grey, own_frames=True)
        detect_on = detect_on.reshape(grey.shape).detach().to(torch.float32)
        pairs = ((o, found_in, levels) for (o, found_in), (_, levels) in zip(gaussian_octaves(detect_on), described))
        return find_keypoints(pairs, grey, own_frames=False)


def find_keypoints(pairs, grey: torch.Tensor, own_frames: bool) -> list[Keypoints]:
    """:func:`sift_keypoints` from ``(o, levels to detect in, levels to describe)`` per octave (the same
    levels, detached, where ``own_frames``)."""
    frames: list[list[torch.Tensor]] = [[] for _ in range(len(grey))]
    descriptors: list[list[torch.Tensor]] = [[] for _ in range(len(grey))]
    for o, found_in, levels in pairs:
        if min(levels.shape[-2:]) < 3:
            break
        dog = found_in[:, 1:] - found_in[:, :-1]
        found = _extrema(dog)
        keys = _refine(dog, found, o) if len(found) else {}
        if not len(keys.get("x", ())):
            continue
        modulus, angle = _gradients(levels)
        found_gradients = (modulus.detach(), angle.detach()) if own_frames else _gradients(found_in)
        key, angle0 = _orientations(*found_gradients, keys)
        values = _descriptors(modulus, angle, keys, key, angle0)
        scale = 2.0 ** o
        octave_frames = torch.stack([keys["x"][key] * scale, keys["y"][key] * scale,
                                     keys["sigma"][key] * scale, angle0], 1)
        for b in range(len(grey)):
            mine = keys["image"][key] == b
            frames[b].append(octave_frames[mine])
            descriptors[b].append(values[mine])
    empty_frames = grey.new_zeros(0, 4, dtype=torch.float64)
    empty_descriptors = grey.new_zeros(0, DESCRIPTOR_SIZE)
    return [Keypoints(torch.cat(f) if f else empty_frames, torch.cat(d) if d else empty_descriptors)
            for f, d in zip(frames, descriptors)]



def descriptors_at(grey: torch.Tensor, frames: list[torch.Tensor],
                   pyramid: list[tuple[int, torch.Tensor]] | None = None) -> list[torch.Tensor]:
    """SIFT descriptors ``(K_b, 128)`` of each image of ``grey (B, 1, H, W)`` (0–255) at the frames ``frames[b]``
    ``(K_b, 4)`` (x, y, σ in pixels, angle), differentiable in ``grey``. Each frame is read at the octave and
    level ``vl_sift_keypoint_init`` assigns to its σ (the largest octave whose levels reach it). ``pyramid``:
    ``grey``'s octaves ``[(o, levels)]`` where the caller has built them already."""
    frames = [f.to(torch.float64) for f in frames]
    height, width = grey.shape[-2:]
    octaves = num_octaves(height, width)
    image = torch.cat([torch.full((len(f),), b, dtype=torch.long, device=grey.device) for b, f in enumerate(frames)])
    x, y, sigma, angle0 = torch.cat(frames).unbind(1) if len(image) else grey.new_zeros(4, 0, dtype=torch.float64)
    phi = torch.log2((sigma + 2.220446049250313e-16) / _SIGMA_0)
    octave = (phi - (_S_MIN + 0.5) / LEVELS).floor().long().clamp(0, octaves - 1)
    level = (LEVELS * (phi - octave) + 0.5).long().clamp(_S_MIN + 1, _S_MAX - 2)
    out = grey.new_zeros(len(image), DESCRIPTOR_SIZE)
    for o, levels in pyramid if pyramid is not None else gaussian_octaves(grey.to(torch.float32)):
        here = (octave == o).nonzero()[:, 0]
        if min(levels.shape[-2:]) < 3 or not len(here):
            continue
        scale = 2.0 ** o
        keys = {"image": image[here], "level": level[here], "x": x[here] / scale, "y": y[here] / scale,
                "sigma": sigma[here] / scale}
        modulus, angle = _gradients(levels)
        out = out.index_copy(0, here, _descriptors(modulus, angle, keys, torch.arange(len(here)), angle0[here]))
    return list(out.split([len(f) for f in frames]))


