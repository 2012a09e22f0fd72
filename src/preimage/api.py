"""The Python API: tensors in, tensors out, no files written.

    import preimage
    result = preimage.invert(images, "hog")                          # M&V's gradient descent, preset mv2015
    result = preimage.invert(images, "hog", method="learned")        # D&B's shipped inverter, one pass
    phi = preimage.from_module(my_model, "block2")                   # any nn.Module, any node
    pictures = preimage.maximize(my_model, "block2:3")               # lucent-style node:channel

Every function takes a representation as a spec string (``"hog"``, ``"efficientnet_lite0:stage4"``, see
``preimage list``) or as a :class:`~preimage.representations.Representation` (``from_module``'s included), and
GD settings as keywords (``schedule=[[0.004, 100]]``, ``lambda_tv=10``, ``restarts=2``, ...) over a preset.
The jobs (``preimage invert``, ``compare``, ``analyze``) are built on the same pieces.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from .devices import resolve_device
from .images import to_grey
from .imagesets import prepare_image
from .catalogue import PathLike
from .inversion.gd import optimize_gd
from .inversion.learned import LearnedInverter
from .inversion.methods import GDMethod, HybridMethod, LearnedMethod, Method, hybrid_steps, reconstruct
from .inversion.objectives import Caricature, NeuronActivation, max_response, neuron_weights
from .inversion.presets import gd_config
from .metrics import score
from .photos import load_photo
from .representations import Representation, build_representation, from_module
from .schemas import HybridConfig

__all__ = ["InversionResult", "caricature", "invert", "load_inverter", "maximize"]

METHODS = ("gd", "learned", "hybrid")
#: the photo whose strongest response sets a maximized channel's scale (``activation 1`` = that photo's best)
NORMALIZER_PHOTO = "rocket"


@dataclass
class InversionResult:
    """What :func:`invert` returns.

    Attributes:
        images: the reconstructions ``(B, C, H, W)`` in ``[0, 1]`` (C = 1 where the method inverts grey images;
            the first restart where there are several).
        restarts: every reconstruction ``(B, R, C, H, W)`` (R = the ``restarts`` setting; 1 for learned).
        feature_error: per image, M&V's feature error in %, normalized over the batch (``None`` for one image).
        normalized_loss: per image, ‖Φ(x̂) − Φ(x)‖² / ‖Φ(x)‖² (a fraction).
        seconds: per image, wall time of its reconstruction.
        method, representation: what made them (a method name, a spec).
        settings: the GD settings used (``{}`` for learned).
    """

    images: torch.Tensor
    restarts: torch.Tensor
    feature_error: list[float | None]
    normalized_loss: list[float]
    seconds: list[float]
    method: str
    representation: str
    settings: dict[str, Any] = field(default_factory=dict)


def _representation(representation: Representation | str) -> Representation:
    if isinstance(representation, Representation):
        return representation
    if isinstance(representation, str):
        return build_representation(representation)
    raise ValueError(f"representation must be a spec string (see `preimage list`) or a Representation, "
                     f"got a {type(representation).__name__}")


def _batch(images: torch.Tensor) -> torch.Tensor:
    """``images`` as a float ``(B, C, H, W)`` batch in ``[0, 1]``; ``ValueError`` naming what is wrong."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a tensor (B, C, H, W) or (C, H, W) in [0, 1], got a {type(images).__name__}")
    x = images[None] if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1|3, H, W) or (1|3, H, W), got shape {tuple(images.shape)}")
    if x.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0): give at least one image")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"images has {int((~torch.isfinite(x)).sum())} NaN or infinite pixel values")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise ValueError(f"images must be in [0, 1], got values from {low:.4g} to {high:.4g} (8-bit pixels: divide by 255)")
    return x


def load_inverter(bundle: PathLike, *, representation: Representation | None = None,
                  device: str | torch.device | None = None) -> LearnedInverter:
    """A learned inverter from a shipped name (``"hog"``, ``"efficientnet_lite0:stage4"``; :func:`~preimage.catalogue.list_inverters`)
    or a bundle file (a ``bundle.pt`` of ``preimage train``), in eval mode.

    Args:
        representation: use this Φ instead of rebuilding the bundle's (it must match the bundle's spec and params).
        device: where to put it (default: the CPU).
    """
    return LearnedInverter.from_bundle(bundle, representation=representation, device=device)


def invert(images: torch.Tensor, representation: Representation | str, *, method: str = "gd",
           preset: str | None = None, bundle: PathLike | None = None, mask: dict[str, Any] | None = None,
           device: str | torch.device | None = "auto", progress: bool = False, **settings: Any) -> InversionResult:
    """Reconstruct images from their representation.

    Args:
        images: ``(B, C, H, W)`` or ``(C, H, W)`` in ``[0, 1]``, C = 1 or 3.
        representation: a spec (``"hog"``, ``"torchvision:resnet50:layer3"``) or a Representation.
        method: ``gd`` (M&V's gradient descent), ``learned`` (D&B's decoder, one forward pass) or ``hybrid``
            (the learned reconstruction refined by GD: ``preimage compare``'s 120 clamped steps by default).
        preset: GD settings per representation (``preimage list`` names them); default ``mv2015``.
        bundle: learned and hybrid: a shipped name or a bundle file; default: the shipped bundle named after the
            representation's spec.
        mask: GD only: ``{"window": k}`` (the central k×k neurons) or ``{"channels": [...]}``.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ...
        progress: a progress bar over GD's iterations.
        settings: GD settings over the preset: ``schedule``, ``lambda_tv``, ``restarts``, ``jitter``, ``seed``, ...

    Returns:
        :class:`InversionResult`. GD works in grey where the preset says so (HOG, HOGb, DSIFT); a grey learned
        inverter reconstructs grey images; ``images`` are scored as they were inverted.

    Raises:
        ValueError: bad images (empty, NaN, out of range), an unknown method, preset, setting or bundle, or a
            descent that diverged (one line each).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if method == "learned" and (settings or preset or mask):
        raise ValueError("preset, mask and GD settings are for methods gd and hybrid, not learned")
    if method == "gd" and bundle is not None:
        raise ValueError("bundle is for methods learned and hybrid, not gd")
    x, rep, dev = _batch(images), _representation(representation), resolve_device(device)
    inverter = load_inverter(bundle or rep.spec, representation=rep) if method != "gd" else None
    config = None
    if method != "learned":
        if method == "hybrid":  # compare's hybrid: its K steps, clamped, in the decoder's grey or colour
            settings = {**hybrid_steps(**asdict(HybridConfig())), "grey": inverter.decoder.config.out_channels == 1,
                        **settings}
        config = gd_config(preset or "mv2015", rep, settings)
    grey = config.grey if inverter is None else inverter.decoder.config.out_channels == 1
    if grey and x.shape[1] == 3:
        x = to_grey(x)
    elif not grey and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    chosen: Method
    if method == "gd":
        chosen = GDMethod(rep, config, mask=mask, progress=progress, stop_on_divergence=True)
    elif method == "learned":
        chosen = LearnedMethod(inverter)
    else:
        chosen = HybridMethod(inverter, config)
    rep.check_input(x)
    originals = list(x)
    results = reconstruct(chosen, originals, dev, batch_size=len(originals))
    recons = torch.stack([r for r, _, _ in results])
    scores = score(rep, originals, list(recons[:, 0]), dev, metrics=("feature_error", "normalized_loss"))
    return InversionResult(
        images=recons[:, 0], restarts=recons,
        feature_error=[None if v is None else 100 * v for v in scores["feature_error"]],
        normalized_loss=scores["normalized_loss"], seconds=[s for _, s, _ in results], method=method,
        representation=rep.spec, settings={} if config is None else config.record())


def _target(model: nn.Module | Representation | str, target: str | int | Sequence[int]
            ) -> tuple[Representation, list[int]]:
    """The representation and channels a :func:`maximize` target names."""
    if isinstance(model, nn.Module) and not isinstance(model, Representation):
        node, sep, channel = str(target).rpartition(":")
        if not sep or not channel.isdigit():
            raise ValueError(f"a target of a module is 'node:channel', e.g. 'layer3:12', got {target!r}")
        return from_module(model, node), [int(channel)]
    rep = _representation(model)
    channels = [target] if isinstance(target, int) else list(target) if not isinstance(target, str) else None
    if not channels or not all(isinstance(c, int) and not isinstance(c, bool) for c in channels):
        raise ValueError(f"a target of a representation is a channel index or a list of them, got {target!r}")
    return rep, channels


def maximize(model: nn.Module | Representation | str, target: str | int | Sequence[int], *,
             objective: str = "channel", size: int | None = None, preset: str = "maximize_fourier",
             device: str | torch.device | None = "auto", progress: bool = False, **settings: Any) -> torch.Tensor:
    """Images that maximize one channel (or one neuron) of a representation, from random starts (M&V IJCV 2016).

    Args:
        model: an ``nn.Module`` (then ``target`` is ``"node:channel"``, lucent's form), a Representation or a spec
            (then ``target`` is a channel index or a list of them; for vectors, a component such as a class).
        objective: ``channel`` (the channel's mean over positions or tokens) or ``neuron`` (its centre neuron).
        size: image side in pixels; default: the network's canonical side (224), 128 for HOG and DSIFT.
        preset: GD settings (``maximize_fourier``: a decorrelated Fourier parametrization with random scalings
            and rotations; ``maximize``: M&V's pixels and priors).
        settings: GD settings over the preset (``schedule``, ``restarts``, ``seed``, ...).

    Returns:
        ``(N, C, H, W)`` in ``[0, 1]``, one image per channel (the first restart). The data term is the activation
        divided by the channel's largest response to a built-in photo, so the presets' weights fit every layer.
    """
    if objective not in ("channel", "neuron"):
        raise ValueError(f"objective must be channel or neuron, got {objective!r}")
    rep, channels = _target(model, target)
    dev = resolve_device(device)
    side = int(size or getattr(rep, "canonical_size", 128))
    rep.check_input(torch.zeros(1, 3, side, side))
    config = gd_config(preset, rep, settings)
    shape = rep.output_shape(side, side)
    photo = prepare_image(load_photo(NORMALIZER_PHOTO), size=side, grey=config.grey)[None]
    with torch.no_grad():
        features = rep.to(dev)(photo.to(dev)).cpu()
    normalizers = torch.tensor([max_response(features, c, objective) for c in channels])
    if not bool((normalizers > 0).all()):
        raise ValueError(f"{rep.spec}: channel(s) {[c for c, v in zip(channels, normalizers) if v <= 0]} do not respond "
                         "to the reference photo at all (dead); pick others")
    centre = None
    if objective == "neuron" and len(shape) == 3:
        centre = (shape[1] // 2, shape[2] // 2)
    elif objective == "neuron" and len(shape) == 2:
        centre = (shape[0] // 2,)
    weights = torch.stack([neuron_weights(shape, c, centre) for c in channels])
    result = optimize_gd(NeuronActivation(rep, weights, normalizers), (len(channels), 1 if config.grey else 3, side, side),
                         config, device=dev, progress=progress)
    return result.images[:, 0]


def caricature(images: torch.Tensor, representation: Representation | str, *, preset: str = "caricature",
               device: str | torch.device | None = "auto", progress: bool = False, **settings: Any) -> torch.Tensor:
    """Caricatures (M&V IJCV 2016): each image changed to exaggerate what the representation sees in it, from the
    image itself, by minimizing −⟨Φ(x), max(Φ(x0), 0)⟩ / ‖max(Φ(x0), 0)‖² with the preset's priors.

    Returns:
        ``(B, C, H, W)`` in ``[0, 1]`` (grey where the preset inverts grey).
    """
    x, rep, dev = _batch(images), _representation(representation), resolve_device(device)
    config = gd_config(preset, rep, settings)
    x = to_grey(x) if config.grey and x.shape[1] == 3 else x.expand(-1, 1 if config.grey else 3, -1, -1)
    rep.check_input(x)
    with torch.no_grad():
        target = rep.to(dev)(x.to(dev)).cpu()
    result = optimize_gd(Caricature(rep, target), tuple(x.shape), config, init=x, random_starts=True, device=dev,
                         progress=progress)
    return result.images[:, 0]

