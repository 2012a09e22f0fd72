"""The base class every representation Φ derives from."""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def float32_and_finite(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Decorator of a hand-written Φ's ``forward``: half-precision input is computed in float32 and the features
    returned in the input's dtype (HOG's squared 0–255 gradients overflow float16: NaN features otherwise); an
    image with a NaN or infinite pixel gets NaN features, as a network's would, instead of an index error from
    the binning (GD then notes that image as diverged). Jobs refuse such images before Φ sees them."""

    @functools.wraps(forward)
    def wrapped(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):  # check_input names what it is
            return forward(self, x, *args, **kwargs)
        if x.dtype in _LOW_PRECISION:
            return wrapped(self, x.float(), *args, **kwargs).to(x.dtype)
        bad = ~torch.isfinite(x).flatten(1).all(1) if x.is_floating_point() else None
        if bad is None or not bool(bad.any()):
            return forward(self, x, *args, **kwargs)
        features = forward(self, torch.where(bad.view(-1, 1, 1, 1), torch.zeros_like(x), x), *args, **kwargs)
        return features.masked_fill(bad.view(-1, *[1] * (features.dim() - 1)), float("nan"))

    return wrapped


def saturate(x: torch.Tensor, limit: float, *, low: float | None = None,
             straight_through: bool = False) -> torch.Tensor:
    """``min(x, limit)`` (and ``max(·, low)`` if given); with ``straight_through`` the same values, but the gradient
    passes as if unclamped.

    HOG and DSIFT saturate their normalized histograms at 0.2, and EfficientNet-Lite0's head clips at 0 and 6 (ReLU6),
    where the exact gradient is 0: a value beyond the limit gets no signal from the data term. The straight-through
    gradient is a surrogate for descent only.
    """
    if not straight_through:
        return x.clamp(min=low, max=limit)
    return x.detach().clamp(min=low, max=limit) + (x - x.detach())  # + exactly 0 (finite x): the clamp to the bit


class Representation(nn.Module):
    """A frozen, differentiable image representation Φ.

    Subclasses implement :meth:`features` (the maths, on input already in the representation's own
    range) or override :meth:`forward`, and :meth:`output_shape`.

    Shape:
        - Input: ``(B, 3, H, W)`` RGB in ``[0, 1]``; ``(B, 1, H, W)`` where a grey image is meant.
        - Output: ``(B, C, h, w)`` for spatial features, ``(B, D)`` for vectors.

    Attributes:
        spec: the registry name it was built from, e.g. ``"hog"`` or ``"alexnet:conv3"``.
        params: the builder overrides that rebuild it, ``build_representation(spec, **params)`` (JSON-serialisable);
            recorded in reports and bundles.
        min_size: the smallest ``(H, W)`` input that gives a non-empty output.
        grey: whether the representation sees a single grey channel (HOG/DSIFT inversions are grey).
        grid_step: pixels between neighbouring feature cells when the grid is exact and starts at the image's
            top-left corner, feature cell ``(r, c)`` describing pixels ``[r·step, (r+1)·step)`` (HOG: the cell
            size; DSIFT: the frame step; a CNN map: its stride, the cell's window starting
            :meth:`grid_offset` pixels earlier); ``None`` where there is none (vectors, tokens). Decoders use
            it to put each cell's pixels where they belong (:class:`~preimage.inversion.networks.DecoderConfig`
            ``cell``).
        differentiable: whether Φ has a gradient GD can follow (LBP has none: it descends :meth:`surrogate`).
        steered_by_target: whether GD's data term calls ``forward(x, target=Φ0)`` rather than ``forward(x)``: a
            surrogate whose gradient reads the target's features (SIFT's: the target's keypoint frames). The
            features it returns are Φ(x) either way.
    """

    spec: str = ""
    min_size: tuple[int, int] = (1, 1)
    grey: bool = False
    grid_step: int | None = None
    differentiable: bool = True
    steered_by_target: bool = False

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params: dict[str, Any] = dict(params)

    def freeze(self) -> "Representation":
        """Put the module in eval mode with no parameter requiring gradients; returns self."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Representation":  # noqa: D102 - always eval
        return super().train(False)

    def output_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of Φ(x) for one ``height`` × ``width`` image, without the batch dimension."""
        raise NotImplementedError

    def grid_offset(self, height: int, width: int) -> tuple[int, int]:
        """Pixels ``(rows, columns)`` by which the cells' windows start before ``r·grid_step`` at this image size,
        beyond where they start at sizes that are multiples of the step (``(0, 0)``: they never move)."""
        return 0, 0

    def surrogate(self) -> "Representation":
        """The stand-in GD descends when its ``surrogate`` setting is on: Φ's own features, to the bit, with a
        gradient that says more where Φ's says nothing (Φ itself unless a subclass has one; see HOG and DSIFT)."""
        return self

    def scoring_view(self, features: torch.Tensor) -> torch.Tensor:
        """The part of Φ(x) that M&V's feature_error scores (all of it unless a subclass says otherwise)."""
        return features

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` with a clear message if ``x`` is not a valid input batch."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{self.spec}: expected a (B, 3, H, W) or (B, 1, H, W) tensor, got {shape}")
        h, w = x.shape[-2:]
        if h < self.min_size[0] or w < self.min_size[1]:
            raise ValueError(
                f"{self.spec}: image of {h}x{w} pixels is smaller than the {self.min_size[0]}x{self.min_size[1]} "
                "this representation needs"
            )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())
