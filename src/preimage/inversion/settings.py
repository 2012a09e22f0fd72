"""The settings of one GD run (:class:`GDConfig`): every field a preset fills and ``gd.KEY=VALUE`` overrides."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ADAM_BETAS", "GDConfig", "MAX_ITERATIONS", "MAX_RESTARTS", "OPTIMIZERS", "PARAMETRIZATIONS", "SIGMA0_227",
           "config_from_dict"]

#: σ0 of M&V's code for a 227×227×3 image (≈ 68.9 per value); scaled with the square root of the value count.
SIGMA0_227 = 27098.1
PARAMETRIZATIONS = ("pixel", "fourier", "pyramid")
OPTIMIZERS = ("momentum", "adam")
#: Adam's default (β1, β2), Kingma & Ba's
ADAM_BETAS = (0.9, 0.999)
#: bounds checked before any work: more would not fit in memory (the energy trace, the restarts' images) or in time
MAX_ITERATIONS, MAX_RESTARTS = 10_000_000, 1000


@dataclass
class GDConfig:
    """Hyper-parameters of one GD inversion (a preset fills these; every field is overridable).

    Attributes:
        schedule: ``[(learning_rate, iterations), ...]`` piecewise-constant learning rate (see ``glide``).
        glide: the learning rate falls geometrically within each phase, from its own rate to the next phase's
            (the last phase keeps its rate), instead of staying constant: ``[[48, 180], [1, 1]]`` descends
            from 48 to 1 in 180 steps.
        momentum: momentum coefficient.
        alpha, lambda_alpha: α-norm exponent and weight.
        tv_beta, lambda_tv: TV^β exponent and weight.
        sigma0_227: σ0 for a 227×227×3 image; the value used is scaled by sqrt(C·H·W / (227·227·3)).
        pixel_mean: per-channel mean of the pixel units (0–255); one value is broadcast.
        grey: invert the grey version of the image (M&V do for HOG, HOGb and DSIFT).
        jitter: maximum random shift in pixels applied before Φ at every step (0: none); a roll, so what
            leaves one side comes back on the other.
        scale: ``(low, high)``: the image is also scaled about its centre by a factor log-uniform in this
            range before Φ at every step ((1, 1): never).
        rotate: ... and rotated by an angle uniform in ``[−rotate, rotate]`` degrees (0: never).
        parametrization: ``pixel`` (M&V: the pixels themselves), ``fourier`` (a decorrelated, scaled
            spectrum through a sigmoid, lucid's; ``decay`` its power law) or ``pyramid`` (a sum of ``levels``
            levels of halving resolution, level k weighted ``level_step^k``; Adam only). The priors act on the
            pixels in every case.
        optimizer: ``momentum`` (M&V; step ``lr · σ0² · ∇E`` in pixel space, ``lr · ∇E`` in Fourier space)
            or ``adam`` (step ``lr`` per variable at most; its moments are kept across the schedule's phases).
        adam_betas: Adam's ``(β1, β2)``, the decay rates of its gradient's mean and mean square.
        relative_step: Adam in pixel or pyramid space: each image's step is the learning rate times its
            reconstruction's contrast (the standard deviation of its pixels, at least 1 grey level) over σ0 per value
            (M&V's random start's, about 69 grey levels, whatever ``start_scale``), updated at every step: a flat,
            low-contrast image is descended in proportionally finer steps.
        surrogate: inversion only: descend through Φ's stand-in (``Representation.surrogate``): Φ's features with
            surrogate gradients (HOG: bilinear orientation binning's in place of hard binning's; HOG, HOGb and
            DSIFT: the clamp at 0.2 passing its gradient through; EfficientNet-Lite0's head: its ReLU6 passing its
            gradient through). The energy is unchanged; only its gradient differs. No effect on other CNN layers.
        clamp: keep the pixels inside the valid range after every step (M&V 2015: no; in a pyramid the finest
            level takes the correction; the Fourier image is always inside it).
        restarts: reconstructions per image, each from its own random start.
        start_scale: the random start's size over M&V's (pixels of L2 norm σ0; in Fourier space a spectrum of RMS
            0.01, lucid's); 0: a flat image of ``pixel_mean`` (mid-grey in Fourier space), which needs one restart.
        learned_start: inversion only: start from the reconstruction of the representation's shipped inverter (the
            bundle in the package's ``checkpoints/`` named after its spec, with its parameters: D&B's decoder, one
            forward pass, whose seconds count in the result's), which needs one restart; where none is shipped, or
            with a mask over the features (the decoder would read the features the mask leaves out), the start
            ``start_scale`` gives.
        backtrack: an image whose energy becomes NaN or infinite (the step too large for it) goes back to its
            lowest-energy iterate so far and descends on from there at a tenth of the rate, its momentum zeroed
            (again at each further blow-up); images whose energy stays finite descend exactly as without it.
            M&V 2015: no (such an image diverges).
        seed: seed of the random starts and jitter; image i's restart r uses ``seed + r`` whatever the batch.
    """

    schedule: list[tuple[float, int]] = field(default_factory=lambda: [(0.004, 200), (0.0004, 200), (0.00004, 200), (0.000004, 200)])
    momentum: float = 0.9
    alpha: float = 6.0
    lambda_alpha: float = 8e-10
    tv_beta: float = 2.0
    lambda_tv: float = 1.0
    sigma0_227: float = SIGMA0_227
    pixel_mean: tuple[float, ...] = (128.0,)
    grey: bool = False
    jitter: int = 0
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0
    parametrization: str = "pixel"
    decay: float = 1.0
    levels: int = 8
    level_step: float = 0.85
    optimizer: str = "momentum"
    adam_betas: tuple[float, float] = ADAM_BETAS
    relative_step: bool = False
    glide: bool = False
    surrogate: bool = False
    clamp: bool = False
    restarts: int = 1
    start_scale: float = 1.0
    learned_start: bool = False
    backtrack: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            self.schedule = [(float(lr), int(n)) for lr, n in self.schedule]
            self.pixel_mean = tuple(float(m) for m in self.pixel_mean)
            self.scale = tuple(float(f) for f in self.scale)  # type: ignore[assignment]
            self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]
        except (TypeError, ValueError):
            raise ValueError("schedule must be [[learning_rate, iterations], ...], pixel_mean a list of numbers, "
                             "scale [low, high] and adam_betas [beta1, beta2]") from None
        for name, kind in (("momentum", float), ("alpha", float), ("lambda_alpha", float), ("tv_beta", float),
                           ("lambda_tv", float), ("sigma0_227", float), ("jitter", int), ("restarts", int), ("seed", int),
                           ("rotate", float), ("decay", float), ("levels", int), ("level_step", float),
                           ("start_scale", float)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and (not math.isfinite(value) or value != int(value))):
                raise ValueError(f"GD setting {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
            setattr(self, name, kind(value))
        for name in ("grey", "clamp", "surrogate", "relative_step", "glide", "learned_start", "backtrack"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GD setting {name} must be true or false, got {getattr(self, name)!r}")
        numbers = {k: v for k, v in asdict(self).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        numbers.update({f"schedule[{i}]": lr for i, (lr, _) in enumerate(self.schedule)})
        numbers.update({f"scale[{i}]": f for i, f in enumerate(self.scale)})
        numbers.update({f"adam_betas[{i}]": b for i, b in enumerate(self.adam_betas)})
        for key, value in numbers.items():
            if not math.isfinite(value):
                raise ValueError(f"GD setting {key} must be a finite number, got {value}")
        if not self.schedule or any(n <= 0 or lr <= 0 for lr, n in self.schedule):
            raise ValueError(f"schedule must be non-empty (learning_rate > 0, iterations > 0) pairs, got {self.schedule}")
        if self.restarts < 1 or self.jitter < 0 or not 0 <= self.momentum < 1:
            raise ValueError("need restarts >= 1, jitter >= 0 and 0 <= momentum < 1")
        if self.start_scale < 0 or (self.start_scale == 0 and self.restarts > 1):
            raise ValueError(f"need start_scale >= 0, and > 0 with restarts > 1 (flat starts are all alike), got "
                             f"{self.start_scale} with {self.restarts} restart(s)")
        if self.learned_start and self.restarts > 1:
            raise ValueError(f"GD setting learned_start needs one restart (learned starts are all alike), got "
                             f"{self.restarts}")
        if self.restarts > MAX_RESTARTS or self.iterations > MAX_ITERATIONS:
            raise ValueError(f"at most {MAX_RESTARTS} restarts and {MAX_ITERATIONS:,} iterations in all, got "
                             f"{self.restarts} and {self.iterations:,}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] or self.rotate < 0:
            raise ValueError(f"need scale = [low, high] with 0 < low <= high and rotate >= 0, got {list(self.scale)} "
                             f"and {self.rotate}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"need adam_betas = [beta1, beta2], each in [0, 1), got {list(self.adam_betas)}")
        for name, valid in (("parametrization", PARAMETRIZATIONS), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"GD setting {name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if self.relative_step and (self.optimizer != "adam" or self.parametrization == "fourier"):
            raise ValueError("GD setting relative_step needs optimizer adam and parametrization pixel or pyramid")
        if self.parametrization == "pyramid" and self.optimizer != "adam":
            raise ValueError("GD setting parametrization pyramid needs optimizer adam (a momentum step would scale "
                             "each coarse level by the pixels it spans)")
        if self.levels < 1 or self.level_step <= 0:
            raise ValueError(f"need levels >= 1 and level_step > 0, got {self.levels} and {self.level_step}")

    @property
    def iterations(self) -> int:
        return sum(n for _, n in self.schedule)

    def record(self) -> dict[str, Any]:
        """The settings as JSON values, with the total iterations (what every report records of a GD run)."""
        return {**vars(self), "schedule": [list(s) for s in self.schedule], "pixel_mean": list(self.pixel_mean),
                "scale": list(self.scale), "adam_betas": list(self.adam_betas), "iterations": self.iterations}

    def sigma0(self, channels: int, height: int, width: int) -> float:
        return self.sigma0_227 * math.sqrt(channels * height * width / (227 * 227 * 3))


def config_from_dict(values: dict[str, Any]) -> GDConfig:
    """Build a :class:`GDConfig` from a plain mapping (e.g. a resolved preset); unknown keys are an error."""
    known = set(GDConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown GD settings {unknown}; valid: {sorted(known)}")
    return GDConfig(**values)
