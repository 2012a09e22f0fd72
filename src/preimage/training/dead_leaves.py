"""Dead-leaves images: occluding shapes with power-law radii p(r) ∝ r⁻³ (a natural-image statistics model).

Pure rendering functions on numpy; :class:`preimage.training.sources.DeadLeaves` wraps them as a source.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _power_integral(r_min: float, r_max: float, exponent: float) -> float:
    if exponent == 1.0:
        return math.log(r_max / r_min)
    return (r_max ** (1.0 - exponent) - r_min ** (1.0 - exponent)) / (1.0 - exponent)


def power_law_radii(rng: np.random.Generator, n: int, r_min: float, r_max: float, exponent: float = 3.0) -> np.ndarray:
    """``n`` radii with density ``p(r) ∝ r^−exponent`` on ``[r_min, r_max]`` (inverse-CDF sampling). Shape ``(n,)``."""
    u = rng.random(n)
    if exponent == 1.0:
        return r_min * (r_max / r_min) ** u
    a, b = r_min ** (1.0 - exponent), r_max ** (1.0 - exponent)
    return (a + u * (b - a)) ** (1.0 / (1.0 - exponent))


def _leaf_mixture(height: int, width: int, r_min: float, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Exponents and probabilities of ``r^−3 (W + 2r)(H + 2r) = HW r^−3 + 2(H + W) r^−2 + 4 r^−1``."""
    exps = np.array([3.0, 2.0, 1.0])
    w = np.array([height * width, 2.0 * (height + width), 4.0]) * [_power_integral(r_min, r_max, e) for e in exps]
    return exps, w


def leaf_radii(rng: np.random.Generator, n: int, r_min: float, r_max: float, height: int, width: int) -> np.ndarray:
    """Radii of ``n`` leaves whose centres are uniform on ``[−r, W + r] × [−r, H + r]``. Shape ``(n,)``.

    Drawn from ``q(r) ∝ r^−3 (W + 2r)(H + 2r)``: large leaves reach the canvas from a larger area, so this
    is the law of the leaves touching the canvas in a stationary dead-leaves model with ``p(r) ∝ r^−3``.
    """
    exps, w = _leaf_mixture(height, width, r_min, r_max)
    comp = rng.choice(3, size=n, p=w / w.sum())
    r = np.empty(n)
    for c, e in enumerate(exps):
        m = comp == c
        r[m] = power_law_radii(rng, int(m.sum()), r_min, r_max, e)
    return r


_SHAPES = {"disc": math.pi, "square": 2.0}  # area / r² (r: the disc's radius, the square's half-diagonal)


def check_leaves(r_min: float, r_max: float, shapes: Sequence[str]) -> None:
    if not 0.0 < r_min < r_max:
        raise ValueError(f"need 0 < r_min < r_max, got {r_min}, {r_max}")
    if not shapes or set(shapes) - set(_SHAPES):
        raise ValueError(f"shapes must be a non-empty subset of {sorted(_SHAPES)}, got {list(shapes)}")


def dead_leaves(height: int, width: int, rng: np.random.Generator, r_min: float = 2.0, r_max: float = 64.0,
                shapes: Sequence[str] = ("disc",), coverage: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Label map of a dead-leaves image: the index of the topmost leaf at every pixel.

    Leaves (discs, or squares at random angles inscribed in the disc) are stacked front to back, leaf 0 on
    top, in batches of about ``coverage`` leaves per pixel, until every pixel is covered; their radii follow
    :func:`leaf_radii` (``p(r) ∝ r^−3`` in pixels). Pixel ``(i, j)`` has its centre at ``(j + ½, i + ½)``.

    Returns:
        labels ``(H, W)`` int64 in ``[0, N)``, and the radii ``(N,)`` of all ``N`` leaves drawn (the deepest
        ones may be hidden).
    """
    check_leaves(r_min, r_max, shapes)
    exps, w = _leaf_mixture(height, width, r_min, r_max)
    area = float(np.mean([_SHAPES[s] for s in shapes]))
    batch = math.ceil(coverage * w.sum() / (area * _power_integral(r_min, r_max, 1.0)))
    square = np.array([s == "square" for s in shapes])
    none = np.iinfo(np.int64).max
    labels = np.full(height * width, none, dtype=np.int64)
    radii: list[np.ndarray] = []
    while True:
        r = leaf_radii(rng, batch, r_min, r_max, height, width)
        cx, cy = rng.uniform(-r, width + r), rng.uniform(-r, height + r)
        is_square = square[rng.integers(len(shapes), size=batch)]
        angle = rng.uniform(0.0, math.pi / 2, size=batch)
        x0, y0 = np.maximum(np.ceil(np.stack([cx, cy]) - r - 0.5), 0).astype(np.int64)
        x1, y1 = np.minimum(np.floor(np.stack([cx, cy]) + r - 0.5), [[width - 1], [height - 1]]).astype(np.int64)
        bw, bh = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
        counts = bw * bh  # the pixels of each leaf's bounding box, clipped to the canvas
        holes = np.flatnonzero(labels == none)
        if holes.size * batch < counts.sum():  # few holes left: test them against every leaf
            leaf, pix = np.tile(np.arange(batch), holes.size), np.repeat(holes, batch)
            px, py = pix % width, pix // width
        else:  # test every (leaf, pixel of its bounding box) pair
            leaf = np.repeat(np.arange(batch), counts)
            local = np.arange(leaf.size) - np.repeat(np.cumsum(counts) - counts, counts)
            px, py = x0[leaf] + local % bw[leaf], y0[leaf] + local // bw[leaf]
        dx, dy = px + 0.5 - cx[leaf], py + 0.5 - cy[leaf]
        inside = dx * dx + dy * dy <= r[leaf] ** 2
        if square.any():
            sq = np.flatnonzero(is_square[leaf])
            c, s, half = np.cos(angle)[leaf[sq]], np.sin(angle)[leaf[sq]], r[leaf[sq]] / math.sqrt(2.0)
            inside[sq] = (np.abs(c * dx[sq] + s * dy[sq]) <= half) & (np.abs(c * dy[sq] - s * dx[sq]) <= half)
        top = np.full(height * width, none, dtype=np.int64)
        np.minimum.at(top, py[inside] * width + px[inside], leaf[inside] + batch * len(radii))
        labels = np.where(labels == none, top, labels)
        radii.append(r)
        if (labels != none).all():
            return labels.reshape(height, width), np.concatenate(radii)
