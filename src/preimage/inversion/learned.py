"""The learned inverter (Dosovitskiy & Brox 2016): a representation Φ and the decoder trained to invert it,
loaded from a bundle (:mod:`.bundles`) by a shipped name or a path."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..images import to_grey
from ..representations import Representation, build_representation, is_representation, list_representations
from ..catalogue import PathLike, plain_value, read_manifest, shipped_bundles
from .bundles import BundleError, bundle_file, load_bundle, meta_decoder, params_differ
from .networks import Decoder, DecoderConfig

__all__ = ["LearnedInverter", "shipped_reconstruction"]


def _rebuild_representation(manifest: dict[str, Any], name: str) -> Representation:
    """Build the manifest's representation from its spec and params, checking that the params round-trip."""
    spec, params = manifest["spec"], manifest["params"]
    if not is_representation(spec):
        raise BundleError(f"{name} inverts {spec!r}, unknown here; valid: {', '.join(list_representations())}")
    try:
        representation = build_representation(spec, **params)
    except ValueError as err:
        raise BundleError(f"{name}: cannot build its representation {spec} with {params}: {err}") from None
    if plain_value(representation.params, "params") != params:
        raise BundleError(f"{name}: {spec} rebuilt with {representation.params}, not the recorded {params}")
    return representation


class LearnedInverter(nn.Module):
    r"""A representation Φ and the decoder trained to invert it: images or features → reconstructions.

    Args:
        representation: Φ (frozen).
        decoder: the trained decoder for Φ.
        manifest: the bundle manifest it came from (empty if built by hand).

    Shape:
        - :meth:`forward`: :math:`(B, 3|1, H, W)` in ``[0, 1]`` → :math:`(B, C, H, W)`.
        - :meth:`invert_features`: :math:`(B, C_Φ, h, w)` or :math:`(B, D)` → :math:`(B, C, H, W)`.
        ``C`` is the decoder's ``out_channels``.

    Convention:
        Reconstructions are the decoder's output clamped to ``[0, 1]``. A grey decoder (``out_channels=1``)
        inverts the grey image: :meth:`forward` turns colour input grey (0.299 R + 0.587 G + 0.114 B)
        before Φ, as it was trained. Gradients are not switched off: wrap calls in ``torch.no_grad()``.

    Example:
        >>> inverter = LearnedInverter.from_bundle("hog")  # doctest: +SKIP
        >>> inverter(torch.rand(2, 3, 96, 80)).shape  # doctest: +SKIP
        torch.Size([2, 3, 96, 80])
    """

    def __init__(
        self, representation: Representation, decoder: Decoder, manifest: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.representation, self.decoder = representation, decoder
        self.manifest: dict[str, Any] = dict(manifest or {})

    @classmethod
    def from_bundle(
        cls, bundle: PathLike, *, device: torch.device | str | None = None, representation: Representation | None = None
    ) -> "LearnedInverter":
        """Load a bundle (:func:`~.bundles.load_bundle`) with its representation, in eval mode on ``device``.

        Args:
            bundle: a shipped name (``"hog"``, ``"efficientnet_lite0:stage4"``) or a bundle file
                (:func:`~.bundles.bundle_file` resolves it).
            device: where to put the inverter (default: the CPU).
            representation: use this Φ instead of rebuilding the recorded one; it must have the bundle's
                spec and params (e.g. the same ``weights`` for a CNN). ``weights="random"`` rebuilds the
                same seeded weights the decoder was trained on.

        Raises:
            BundleError: no such bundle; as :func:`~.bundles.load_bundle`; a representation that does not
                match the bundle.
        """
        path = bundle_file(bundle)
        name = f"bundle {str(path)!r}"
        if representation is None:
            manifest, state = load_bundle(path)
            representation = _rebuild_representation(manifest, name)
        else:
            manifest, state = load_bundle(path, representation.spec, expected_params=representation.params)
        size = tuple(manifest["image_size"])
        try:
            shape = representation.output_shape(*size)
        except ValueError as err:
            raise BundleError(f"{name}: its image size {size} does not suit {manifest['spec']}: {err}") from None
        if list(shape) != manifest["feature_shape"]:
            raise BundleError(f"{name} records features {manifest['feature_shape']} for {size} images, "
                              f"but {manifest['spec']} gives {list(shape)}")
        decoder = meta_decoder(manifest, DecoderConfig(**manifest["decoder"]))
        decoder.load_state_dict(state, assign=True)
        # channels-last convolutions: faster on CPU (oneDNN; scripts/benchmark_inference.py), the same within 1e-6
        decoder = decoder.to(memory_format=torch.channels_last)
        return cls(representation, decoder, manifest).to(device).eval()

    def invert_features(self, features: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        """Reconstruct ``output_size`` images in ``[0, 1]`` from a batch of features."""
        offset = self.representation.grid_offset(*output_size)
        return self.decoder(features, output_size, offset).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``images`` from their features, at their own size."""
        if self.decoder.config.out_channels == 1:
            images = to_grey(images)
        return self.invert_features(self.representation(images), tuple(images.shape[-2:]))


def shipped_reconstruction(representation: Representation, features: torch.Tensor, output_size: tuple[int, int],
                           channels: int) -> torch.Tensor | None:
    """The shipped inverter's reconstructions of ``features`` (Φ of images of ``output_size``), on their device.

    The inverter is the bundle in the package's ``checkpoints/`` named after ``representation``'s spec, recorded
    with its params (a network's other weights have none).

    Shape:
        ``features`` ``(B, *Φ shape)`` → ``(B, channels, H, W)`` in ``[0, 1]`` (grey or repeated to ``channels``),
        or ``None`` where no inverter of ``representation`` is shipped.
    """
    path = shipped_bundles().get(representation.spec)
    if path is None or params_differ(read_manifest(path)["params"], representation.params):
        return None
    inverter = LearnedInverter.from_bundle(path, representation=representation, device=features.device)
    with torch.no_grad():
        images = inverter.invert_features(features, output_size)
    if images.shape[1] != channels:
        images = to_grey(images) if channels == 1 else images.expand(-1, channels, -1, -1)
    return images
