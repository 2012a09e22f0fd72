"""The LightningModule of learned inverters (Dosovitskiy & Brox, CVPR 2016): a frozen Φ and a decoder.

Features are computed on the fly from each batch of images, so the data pipeline knows nothing of Φ. The
loss is D&B's image MSE, plus an optional feature-space term ``λ_feat · normalized_loss`` (0 by default, as
D&B) that backpropagates through Φ(reconstruction). Validation scores the whole fixed validation set with
the same metrics code as ``preimage invert`` (preimage.metrics).

Logged (TensorBoard tags): ``train/loss``, ``train/lr``, ``train/images_per_s`` (and ``train/image_mse``,
``train/feature_loss`` when ``λ_feat > 0``); ``val/loss``, ``val/feature_error`` (%), ``val/image_error``,
``val/psnr`` (dB), ``val/ssim``; the image ``val/reconstructions`` (originals above reconstructions).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from ..metrics import feature_error, image_error, normalized_loss, psnr, ssim
from ..images import to_grey
from ..inversion.networks import Decoder
from ..representations import Representation

__all__ = ["SCHEDULES", "OptimizerConfig", "SchedulerConfig", "lr_factor", "InverterModule", "parse_settings",
           "validation_metrics"]

#: Learning-rate schedules of :class:`SchedulerConfig` (after the linear warm-up).
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step")
_REPRESENTATION = "representation."


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW settings (``torch.optim.AdamW``): ``lr`` per step, decoupled ``weight_decay``, ``betas``."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.weight_decay >= 0 and len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)):
            raise ValueError(f"optimizer: need lr > 0, weight_decay >= 0 and two betas in [0, 1), got {self}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-step learning-rate factor: a linear warm-up over ``warmup_steps``, then ``name``.

    ``cosine`` decays from 1 to ``min_factor`` at the last step; ``step`` multiplies by ``gamma`` every
    ``step_size`` steps; ``constant`` stays at 1.
    """

    name: str = "cosine"
    warmup_steps: int = 0
    min_factor: float = 0.0
    step_size: int = 1000
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"scheduler: unknown name {self.name!r}; valid: {', '.join(SCHEDULES)}")
        if not (self.warmup_steps >= 0 and self.step_size >= 1 and 0 <= self.min_factor <= 1 and self.gamma > 0):
            raise ValueError(f"scheduler: need warmup_steps >= 0, step_size >= 1, 0 <= min_factor <= 1, "
                             f"gamma > 0, got {self}")


def validation_metrics(images: torch.Tensor, recon: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor) -> dict[str, float]:
    """The ``val/`` metrics of a whole validation set: originals and clamped reconstructions ``(N, C, S, S)``,
    and the scoring views of their features, Φ(originals) ``f0`` and Φ(reconstructions) ``f1``."""
    return {
        "val/feature_error": float(feature_error(f1, f0).mean()) * 100,
        "val/image_error": float(image_error(recon, images).mean()),
        "val/psnr": float(psnr(recon, images).mean()),
        "val/ssim": float(ssim(recon, images).mean()),
    }


def parse_settings(cls: type, values: Mapping[str, Any] | None, what: str) -> Any:
    """``cls(**values)`` with unknown keys refused by name."""
    values = dict(values or {})
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return cls(**values)


def lr_factor(step: int, *, total_steps: int, name: str = "cosine", warmup_steps: int = 0, min_factor: float = 0.0,
              step_size: int = 1000, gamma: float = 0.1) -> float:
    """The factor applied to the base learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    Example:
        >>> [round(lr_factor(s, total_steps=10, warmup_steps=2), 3) for s in (0, 1, 2, 6, 9)]
        [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    done = step - warmup_steps
    if name == "constant":
        return 1.0
    if name == "step":
        return gamma ** (done // step_size)
    progress = min(1.0, done / max(1, total_steps - warmup_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class InverterModule(pl.LightningModule):
    r"""Train ``decoder`` to invert the frozen ``representation`` Φ: images → Φ → decoder → images.

    Args:
        representation: Φ (frozen, eval mode); kept out of checkpoints, which hold only the decoder and
            the training state (Φ is rebuilt from its spec).
        decoder: the network to train, built for Φ's output shape and the training crop size.
        optimizer: :class:`OptimizerConfig` fields (AdamW).
        scheduler: :class:`SchedulerConfig` fields, stepped every optimizer step.
        lambda_feat: weight of ``normalized_loss(Φ(x̂), Φ(x))`` added to the image MSE (0: D&B's loss).
        grey: invert grey images (colour batches are turned grey first); the decoder must have
            ``out_channels = 1``, and 3 otherwise.
        image_log_every: log a grid of validation originals and reconstructions at the first validation
            of every ``image_log_every`` training steps (0: never).
        image_log_count: images in that grid.

    Shape:
        Batches: :math:`(B, 3|1, S, S)` in ``[0, 1]`` (the plain tensors of ``ImageDataModule``).

    Convention:
        The MSE is taken on the decoder's raw (unclamped) output. Validation metrics score the clamped
        reconstruction, as ``LearnedInverter`` and ``preimage invert`` do: ``val/feature_error`` (%) and
        ``val/image_error`` are normalized over the whole validation set (N², the mean pairwise distance of the originals' features), so the
        features are gathered over the epoch, across DDP ranks too (Lightning's distributed sampler pads
        the set to a multiple of the world size by repeating a few items); ``val/psnr`` and ``val/ssim`` are
        means over images. Flat crops whose Φ is all zero are left out of the feature term.
    """

    def __init__(
        self,
        representation: Representation,
        decoder: Decoder,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        lambda_feat: float = 0.0,
        grey: bool = False,
        image_log_every: int = 500,
        image_log_count: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["representation", "decoder"])
        self.optimizer_config: OptimizerConfig = parse_settings(OptimizerConfig, optimizer, "optimizer")
        self.scheduler_config: SchedulerConfig = parse_settings(SchedulerConfig, scheduler, "scheduler")
        if not (math.isfinite(lambda_feat) and lambda_feat >= 0):
            raise ValueError(f"lambda_feat must be a finite number >= 0, got {lambda_feat}")
        if image_log_every < 0 or image_log_count < 1:
            raise ValueError(f"need image_log_every >= 0 and image_log_count >= 1, got {image_log_every}, "
                             f"{image_log_count}")
        channels = 1 if grey else 3
        if decoder.config.out_channels != channels:
            raise ValueError(f"grey={grey} needs a decoder with out_channels={channels}, "
                             f"got {decoder.config.out_channels}")
        self.representation, self.decoder = representation, decoder
        self.lambda_feat, self.grey = float(lambda_feat), bool(grey)
        self._val: dict[str, list[torch.Tensor]] = {}
        self._grid_bucket: int | None = None
        self._tick: float | None = None
        self._fit_start, self._seconds_before = time.perf_counter(), 0.0

    # -- the shared step -------------------------------------------------------------------------------
    def model_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch through Φ and the decoder.

        Returns:
            ``images`` (B, C, S, S) as inverted (grey if ``grey``), ``features`` Φ(images), ``recon`` the
            decoder's raw output (B, C, S, S), ``loss`` (0-d), and with ``λ_feat > 0`` ``image_mse`` and
            ``feature_loss`` (0-d).
        """
        images = to_grey(batch) if self.grey else batch
        if images.shape[1] != self.decoder.config.out_channels:
            raise ValueError(f"batch of {images.shape[1]} channel(s) for a decoder of "
                             f"{self.decoder.config.out_channels}: set data.grey to match grey")
        with torch.no_grad():
            features = self.representation(images)
        size = tuple(images.shape[-2:])
        recon = self.decoder(features, size, self.representation.grid_offset(*size))
        loss = F.mse_loss(recon, images)
        out = {"images": images, "features": features, "recon": recon, "loss": loss}
        if self.lambda_feat > 0:
            out["image_mse"], out["feature_loss"] = loss, self.feature_loss(recon, features)
            out["loss"] = loss + self.lambda_feat * out["feature_loss"]
        return out

    def feature_loss(self, recon: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Mean ``normalized_loss(Φ(recon), features)`` over the images whose features are not all zero (0-d)."""
        keep = features.flatten(1).square().sum(1) > 0
        if not bool(keep.any()):
            return recon.sum() * 0.0
        return normalized_loss(self.representation(recon[keep]), features[keep]).mean().to(recon.dtype)

    # -- training --------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()

    def on_train_start(self) -> None:
        """Apply the schedule at the current step: a resumed run whose ``max_steps`` changed follows its new schedule."""
        schedule = self.lr_schedulers()
        for group, base, factor in zip(self.trainer.optimizers[0].param_groups, schedule.base_lrs, schedule.lr_lambdas):
            group["lr"] = base * factor(schedule.last_epoch)

    def on_train_epoch_start(self) -> None:
        self._tick = time.perf_counter()

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = self.model_step(batch)
        size = batch.shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=size)
        if "feature_loss" in out:
            self.log("train/image_mse", out["image_mse"], batch_size=size)
            self.log("train/feature_loss", out["feature_loss"], batch_size=size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return out["loss"]

    def on_train_batch_end(self, outputs: Any, batch: torch.Tensor, batch_idx: int) -> None:
        """Log ``train/images_per_s``: images of all ranks over the wall time since the previous step ended
        (data loading included, validation excluded)."""
        now = time.perf_counter()
        if self._tick is not None and now > self._tick:
            rate = batch.shape[0] * self.trainer.world_size / (now - self._tick)
            self.log("train/images_per_s", rate, batch_size=batch.shape[0])
        self._tick = now

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.optimizer_config
        optimizer = torch.optim.AdamW(self.decoder.parameters(), lr=opt.lr, weight_decay=opt.weight_decay,
                                      betas=opt.betas)
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(lr_factor, total_steps=total, **asdict(self.scheduler_config)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- validation ------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {"images": [], "recon": [], "f0": [], "f1": []}

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        out = self.model_step(batch)
        recon = out["recon"].clamp(0, 1)
        rep = self.representation
        for key, value in (("images", out["images"]), ("recon", recon), ("f0", rep.scoring_view(out["features"])),
                           ("f1", rep.scoring_view(rep(recon)))):
            self._val[key].append(value)
        self.log("val/loss", out["loss"], on_epoch=True, sync_dist=True, batch_size=batch.shape[0])
        if batch_idx == 0:
            self._log_grid(out["images"], recon)

    def on_validation_epoch_end(self) -> None:
        """Score the whole validation set (all ranks) with preimage.metrics."""
        val = {k: self._gather(torch.cat(v)) for k, v in self._val.items() if v}
        self._val = {}
        if not val:
            return
        self.log_dict(validation_metrics(val["images"], val["recon"], val["f0"], val["f1"]), sync_dist=True)

    def on_validation_end(self) -> None:
        self._tick = time.perf_counter()  # the throughput excludes validation

    def _gather(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (n, ...) of every rank, concatenated (world · n, ...)."""
        if self.trainer.world_size == 1:
            return values
        return self.all_gather(values).flatten(0, 1)

    def _log_grid(self, images: torch.Tensor, recon: torch.Tensor) -> None:
        """Add ``val/reconstructions`` (originals above reconstructions) at most once per ``image_log_every`` steps."""
        every = self.hparams.image_log_every
        if not every or self.trainer.sanity_checking or self.logger is None:
            return
        bucket = self.global_step // every
        experiment = getattr(self.logger, "experiment", None)
        if bucket == self._grid_bucket or not hasattr(experiment, "add_image"):
            return
        self._grid_bucket = bucket
        k = min(self.hparams.image_log_count, images.shape[0])
        grid = make_grid(torch.cat([images[:k], recon[:k]]).float().cpu(), nrow=k, padding=2, pad_value=1.0)
        experiment.add_image("val/reconstructions", grid, self.global_step)

    # -- checkpoints -----------------------------------------------------------------------------------
    def train_seconds(self) -> float:
        """Wall time spent in ``fit`` so far, over resumed runs too (s)."""
        return self._seconds_before + time.perf_counter() - self._fit_start

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop Φ from the checkpoint; record what it inverts (spec, params), the latest validation metrics and the
        training wall time."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(_REPRESENTATION)}
        checkpoint["val_metrics"] = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                                     if k.startswith("val/")}
        checkpoint["train_seconds"] = self.train_seconds()
        checkpoint["representation"] = {"spec": self.representation.spec, "params": dict(self.representation.params)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put this module's own Φ back into the state_dict to load (it was left out on saving)."""
        checkpoint["state_dict"].update({_REPRESENTATION + k: v for k, v in self.representation.state_dict().items()})
        self._seconds_before = float(checkpoint.get("train_seconds", 0.0))
