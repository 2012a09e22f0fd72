"""The `preimage train` job: train a learned inverter for one representation and export its bundle.

A run directory (``run_dir``, default ``runs/<name>``) holds::

    config.yaml           the resolved config of the latest invocation
    tensorboard/          the TensorBoard run (events, hparams.yaml)
    checkpoints/          best-step<N>.ckpt (lowest val/feature_error) and last.ckpt (Lightning checkpoints)
    bundle.pt             the decoder of the best checkpoint, as an inverter bundle (see inversion/learned.py)
    images-<hash>.txt     the file list of each folder source, scanned once (delete it to scan the folder again)

``resume=true`` continues from ``checkpoints/last.ckpt`` with the global step, optimizer and schedule
intact; without it, a run directory that already holds checkpoints is refused rather than overwritten.

``fit: ridge`` fits a linear decoder of vector features in closed form instead (:mod:`.ridge`): no checkpoints,
the TensorBoard run holds each penalty's validation metrics, and ``bundle.pt`` the kept one's decoder.
"""
from __future__ import annotations

import contextlib
import copy
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from weakref import proxy
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from ..outputs import refuse_foreign, write_marker
from ..runlock import launching_process, run_dir_lock
from ..config import check_finite
from ..files import atomic_path
from ..schemas import TrainConfig, merged, plain
from ..catalogue import BundleError, plain_value
from ..inversion.bundles import save_bundle
from ..inversion.learned import LearnedInverter
from ..inversion.networks import TRAINING_ONLY, Decoder, DecoderConfig, DecoderEnsemble, build_decoder
from ..representations import Representation, build_representation
from .datamodule import ImageDataModule
from .module import InverterModule, parse_settings
from .ridge import RidgeConfig, fit_ridge
from .sweep import train_layers

__all__ = ["FITS", "MONITORS", "build", "feature_scale", "resolve_config", "train"]

#: what the exported checkpoint may be chosen by (lowest on the validation set)
MONITORS = ("val/feature_error", "val/image_error", "val/loss")
#: how the decoder's weights are found: descended (Lightning), or a linear decoder's in closed form
FITS = ("gradient", "ridge")
_RESERVED_TRAINER_KEYS = ("logger", "callbacks", "default_root_dir", "enable_progress_bar")
_SCALE_SAMPLES = 256


def feature_scale(representation: Representation, dataset: torch.utils.data.Dataset, count: int = _SCALE_SAMPLES,
                  log: bool = False) -> float:
    """``1 / std`` of Φ over the first ``count`` items of ``dataset`` (4 significant digits), for ``input_scale``;
    with ``log``, of ``log(max(Φ, LOG_FLOOR))`` less each item's mean (``DecoderConfig.input_log``)."""
    n = min(count, len(dataset))
    unscaled = DecoderConfig(input_log=log).prepare
    with torch.no_grad():
        values = [unscaled(representation(torch.stack([dataset[k] for k in range(i, min(i + 32, n))]))).flatten()
                  for i in range(0, n, 32)]
    std = float(torch.cat(values).std()) if n > 1 else 0.0
    if not std > 0:
        raise ValueError(f"decoder.input_scale=auto: {representation.spec} features of the first {n} training "
                         "crops do not vary; give a number")
    return float(f"{1.0 / std:.4g}")


class _AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose files are written whole or not at all (a temporary file renamed into place), so that
    a full disk or a kill mid-write never leaves a checkpoint that does not load."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if not trainer.is_global_zero:  # only rank 0 writes; the others keep Lightning's bookkeeping
            return super()._save_checkpoint(trainer, filepath)
        with atomic_path(filepath) as temporary:
            trainer.save_checkpoint(str(temporary), self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        for logger in trainer.loggers:
            logger.after_save_checkpoint(proxy(self))


class _ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar without ``v_num`` (the logger's version, here always "tensorboard")."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return {k: v for k, v in super().get_metrics(trainer, pl_module).items() if k != "v_num"}


def resolve_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The config over :class:`~preimage.schemas.TrainConfig`'s defaults as plain values, checked: known keys of
    the right types (the schema), finite numbers, a valid trainer.

    ``grey`` is copied to ``data.grey`` and ``decoder.out_channels``; ``run_dir`` defaults to ``runs/<name>``.
    """
    container = plain(merged(TrainConfig, cfg, where="train"))
    check_finite(container)
    if container["run_dir"] is None:
        container["run_dir"] = f"runs/{container['name']}"
    grey, data, decoder = bool(container["grey"]), container["data"], container["decoder"]
    if data.get("grey", grey) != grey or decoder.get("out_channels", 1 if grey else 3) != (1 if grey else 3):
        raise ValueError(f"grey={grey} sets data.grey and decoder.out_channels: do not set them otherwise")
    data["grey"], decoder["out_channels"] = grey, 1 if grey else 3
    if container["monitor"] not in MONITORS:
        raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, got {container['monitor']!r}")
    if container["fit"] not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {container['fit']!r}")
    trainer = container["trainer"]
    reserved = sorted(set(trainer) & set(_RESERVED_TRAINER_KEYS))
    if reserved:
        raise ValueError(f"trainer.{reserved[0]} is set by `preimage train`; use the top-level keys instead")
    steps, interval = trainer.get("max_steps"), trainer.get("val_check_interval")
    if not (isinstance(steps, int) and isinstance(interval, int) and 0 < interval <= steps and steps % interval == 0):
        raise ValueError("trainer.max_steps and trainer.val_check_interval must be positive integers, max_steps a "
                         f"multiple of val_check_interval (so that the last step is checkpointed); got {steps}, {interval}")
    return container


def _best_decoder(decoder: Decoder, checkpoint: Path) -> tuple[Decoder, dict[str, Any]]:
    """A CPU copy of ``decoder`` with the weights of a Lightning checkpoint of :class:`InverterModule`, and the checkpoint."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    best = copy.deepcopy(decoder).cpu()
    best.load_state_dict({k[len("decoder."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("decoder.")})
    return best.eval(), ckpt


def _initial_decoder(c: dict[str, Any], representation: Representation) -> Decoder:
    """The decoder of bundle ``c["init"]`` for fine-tuning; its config replaces ``c["decoder"]``, whose keys must
    agree with it (``auto`` takes the bundle's value) but for those that act in training only (``TRAINING_ONLY``),
    which ``c["decoder"]`` keeps. One-line ``ValueError`` otherwise."""
    name = representation.spec if c["init"] == "shipped" else c["init"]
    try:
        bundle = LearnedInverter.from_bundle(name, representation=representation)
    except BundleError as err:
        raise ValueError(f"init={c['init']}: {err}") from None
    if isinstance(bundle.decoder, DecoderEnsemble):
        raise ValueError(f"init={c['init']}: the bundle is an ensemble of {len(bundle.decoder.members)} decoders, "
                         "which is not trained; start from one of its members' bundles")
    recorded = asdict(bundle.decoder.config)
    differ = [f"{k}={v!r} (the bundle's: {recorded.get(k)!r})" for k, v in c["decoder"].items()
              if v != "auto" and k not in TRAINING_ONLY
              and plain_value(v, "decoder") != plain_value(recorded.get(k), "decoder")]
    if differ:
        raise ValueError(f"init={c['init']}: decoder.{differ[0]}: drop the key to fine-tune the bundle's decoder")
    training_only = {k: v for k, v in c["decoder"].items() if k in TRAINING_ONLY}
    c["decoder"] = plain_value({**recorded, **training_only}, "decoder")
    return bundle.decoder


def build(c: dict[str, Any], listing_dir: Path | None = None) -> tuple[Representation, ImageDataModule, InverterModule]:
    """Φ, the data and the module (with its decoder) of a resolved config; ``decoder.input_scale: auto`` and
    ``decoder.cell: auto`` are replaced by their values in ``c``. The decoder's initial weights come from
    torch's global RNG (seed it first), or from the bundle ``init`` (whose decoder config then replaces
    ``c["decoder"]``). ``listing_dir``: where folder sources cache their file lists, unless ``data.listing_dir``
    says."""
    representation = build_representation(c["representation"], **c["representation_options"])
    try:
        datamodule = ImageDataModule(**{"listing_dir": None if listing_dir is None else str(listing_dir), **c["data"]})
    except TypeError as err:  # a key ImageDataModule does not take
        raise ValueError(f"data: {err}".replace("ImageDataModule.__init__() ", "")) from None
    crop = int(datamodule.hparams.crop)
    start = _initial_decoder(c, representation) if c["init"] is not None else None
    if c["decoder"].get("input_scale") == "auto":
        datamodule.setup("fit")
        c["decoder"]["input_scale"] = feature_scale(representation, datamodule.data_train,
                                                    log=bool(c["decoder"].get("input_log", False)))
    if c["decoder"].get("cell") == "auto":
        c["decoder"]["cell"] = representation.grid_step
    decoder = build_decoder(representation.output_shape(crop, crop), (crop, crop), **c["decoder"])
    if start is not None:
        decoder.load_state_dict(start.state_dict())
    if c["channels_last"]:
        decoder = decoder.to(memory_format=torch.channels_last)
    module = InverterModule(representation, decoder, optimizer=c["optim"], scheduler=c["scheduler"],
                            lambda_feat=c["lambda_feat"], grey=c["grey"], image_log_every=c["image_log_every"],
                            image_log_count=c["image_log_count"])
    return representation, datamodule, module


def train(cfg: DictConfig, command: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Train a decoder to invert ``cfg.representation`` and export ``<run_dir>/bundle.pt``.

    Args:
        cfg: a training config (:class:`~preimage.schemas.TrainConfig`: configs/train/*.yaml + overrides).
        command: the command line that started the run, recorded in the bundle's manifest.

    Returns:
        ``(metrics, objects)``: the validation metrics of the best checkpoint (the exported decoder);
        and ``representation``, ``datamodule``, ``module`` (its decoder holds the last weights),
        ``trainer``, ``checkpoint`` (the ModelCheckpoint callback), ``decoder`` (the best weights, on the CPU),
        ``run_dir`` and ``bundle`` (the bundle's path; None on DDP ranks other than 0, which do not write it).
        With ``fit: ridge``, ``trainer`` and ``checkpoint`` are None and the metrics are the kept penalty's.

    With ``layers`` set, one inverter per layer instead (:func:`~.sweep.train_layers`: ``objects["layers"]``).

    Raises:
        ValueError: a bad config, ``resume=true`` with no ``last.ckpt``, or a run directory that already
            holds checkpoints without ``resume=true``.
    """
    c = resolve_config(cfg)
    run_dir = Path(c["run_dir"])
    with run_dir_lock(run_dir) if launching_process() else contextlib.nullcontext():
        if c["layers"]:  # one inverter per layer, each a train() of its own in a sub-folder
            return train_layers(c, train, command)
        if c["per_layer"] or c["compare"] is not None:
            raise ValueError("per_layer and compare are for a sweep over layers: set layers=[...]")
        return (_fit_ridge if c["fit"] == "ridge" else _train)(c, run_dir, command)


def _check_resumable(last: Path, module: InverterModule) -> int:
    """The step of ``last`` (a Lightning checkpoint of this run), checked against the run's module before anything
    is written: the same representation (spec and params, where the checkpoint records them) and a decoder of the
    same shape. ``ValueError`` (one line) otherwise."""
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types on a truncated or foreign file
        raise ValueError(f"resume=true: {last} is not a checkpoint this run can read ({type(err).__name__})") from None
    rep = module.representation
    recorded = ckpt.get("representation") if isinstance(ckpt, dict) else None
    if recorded is not None and (recorded.get("spec"), recorded.get("params")) != (rep.spec, dict(rep.params)):
        raise ValueError(f"resume=true: {last} was trained on {recorded.get('spec')} {recorded.get('params')}, not "
                         f"this run's {rep.spec} {dict(rep.params)}: set another run_dir, or resume=false elsewhere")
    state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
    mine = {k: v.shape for k, v in module.state_dict().items() if k.startswith("decoder.")}
    theirs = {k: v.shape for k, v in state.items() if k.startswith("decoder.")}
    if mine != theirs:
        differ = sorted(set(mine) ^ set(theirs)) or sorted(k for k in mine if mine[k] != theirs[k])
        raise ValueError(f"resume=true: {last} holds a decoder of another shape than this run's config builds (first "
                         f"difference: {differ[0]}): resume with the config it was trained with, or set another run_dir")
    return int(ckpt.get("global_step", 0))


def _train(c: dict[str, Any], run_dir: Path, command: str | None) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`train` once the run directory is this process's."""
    ckpt_dir, last = run_dir / "checkpoints", run_dir / "checkpoints" / "last.ckpt"
    if launching_process():
        refuse_foreign(run_dir, "preimage train", last)
    if c["resume"] and not last.is_file():
        raise ValueError(f"resume=true but {last} does not exist: nothing to resume")
    if not c["resume"] and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise ValueError(f"{run_dir} already holds checkpoints: add resume=true to continue it, or set another run_dir")

    pl.seed_everything(c["seed"], workers=True, verbose=False)
    representation, datamodule, module = build(c, listing_dir=run_dir)
    resume_step = _check_resumable(last, module) if c["resume"] else None

    # Lightning's save_last only refreshes last.ckpt when the best one changes: a second callback keeps it current.
    checkpoint = _AtomicCheckpoint(dirpath=str(ckpt_dir), filename="best-step{step}", monitor=c["monitor"], mode="min",
                                 save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    latest = _AtomicCheckpoint(dirpath=str(ckpt_dir), filename=last.stem, save_top_k=1, enable_version_counter=False)
    callbacks: list[pl.Callback] = [checkpoint, latest] + ([_ProgressBar()] if c["progress"] else [])
    # purge_step: TensorBoard drops what an interrupted run logged past its last checkpoint, so no step shows twice
    logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard", default_hp_metric=False,
                               **({"purge_step": resume_step} if resume_step is not None else {}))
    try:
        trainer = pl.Trainer(**{"check_val_every_n_epoch": None, **c["trainer"]}, logger=logger, callbacks=callbacks,
                             default_root_dir=str(run_dir), enable_progress_bar=bool(c["progress"]))
    except TypeError as err:  # an argument pl.Trainer does not take
        raise ValueError(f"trainer: {err}") from None
    except Exception as err:  # Lightning's MisconfigurationException (no ValueError), a missing accelerator package
        message = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"trainer: {message}") from None
    if resume_step is not None:  # the data order goes on where the interrupted run stopped, mid-epoch too
        datamodule.resume_at(resume_step * trainer.accumulate_grad_batches)
    if trainer.is_global_zero:
        _open_run_dir(run_dir, c)
    with warnings.catch_warnings():  # Φ is in eval mode on purpose; a resumed run's folder holds checkpoints
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        # the data order resumes on its own (ImageDataModule.resume_at), which Lightning cannot see
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if c["resume"] else None)

    if not checkpoint.best_model_path:
        raise ValueError(f"no checkpoint was written to {ckpt_dir}: did validation run?")
    best, ckpt = _best_decoder(module.decoder, Path(checkpoint.best_model_path))
    metrics = dict(ckpt["val_metrics"])
    bundle = None
    if trainer.is_global_zero:
        manifest = _manifest(c, representation, datamodule, command, metrics, steps=int(ckpt["global_step"]),
                             trained_steps=int(trainer.global_step), train_seconds=module.train_seconds(),
                             checkpoint=Path(checkpoint.best_model_path).name)
        bundle = save_bundle(run_dir / "bundle.pt", best, manifest, float16=bool(c["bundle_float16"]))
    objects = {"representation": representation, "datamodule": datamodule, "module": module, "trainer": trainer,
               "checkpoint": checkpoint, "decoder": best, "run_dir": run_dir, "bundle": bundle}
    return metrics, objects


def _open_run_dir(run_dir: Path, c: dict[str, Any]) -> None:
    """Create and mark the run directory and write the resolved config to ``config.yaml``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_marker(run_dir)
    with atomic_path(run_dir / "config.yaml") as temporary:
        OmegaConf.save(OmegaConf.create(c), temporary)


def _manifest(c: dict[str, Any], representation: Representation, datamodule: ImageDataModule, command: str | None,
              metrics: dict[str, float], **fields: Any) -> dict[str, Any]:
    """The bundle manifest of a run: what it inverts, its data, config, command and validation metrics, and
    ``fields`` (steps, trained_steps, train_seconds, checkpoint, ...)."""
    return {"spec": representation.spec, "params": representation.params,
            "data": {**c["data"], "sources": datamodule.source_configs}, "metrics": metrics, **fields,
            "command": command, "config": c}


def _fit_ridge(c: dict[str, Any], run_dir: Path, command: str | None) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`train` with ``fit: ridge``: the linear decoder fitted in closed form (:mod:`.ridge`), then exported."""
    if launching_process():
        refuse_foreign(run_dir, "preimage train", run_dir / "bundle.pt")
    if (run_dir / "bundle.pt").exists():
        raise ValueError(f"{run_dir} already holds a fitted bundle: set another run_dir")
    if c["resume"] or c["init"] is not None or c["decoder"].get("input_dropout", 0.0):
        raise ValueError("fit=ridge fits the decoder in closed form, from nothing: resume, init and "
                         "decoder.input_dropout do not apply")
    if c["monitor"] == "val/loss" or c["lambda_feat"]:
        raise ValueError("fit=ridge fits the image MSE alone (lambda_feat must be 0) and chooses its penalty by "
                         "val/image_error or val/feature_error (monitor), not val/loss")
    ridge = parse_settings(RidgeConfig, c["ridge"], "ridge")
    pl.seed_everything(c["seed"], workers=True, verbose=False)
    representation, datamodule, module = build(c, listing_dir=run_dir)
    half = bool(c["bundle_float16"])
    metrics, fit = fit_ridge(representation, module.decoder, datamodule, ridge, monitor=c["monitor"], grey=c["grey"],
                             half=half, progress=bool(c["progress"]))
    _open_run_dir(run_dir, c)  # written once the fit is done: an interrupted or refused fit leaves nothing
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:  # each λ's val/ metrics, step = its index
        for step, (lam, scores) in enumerate(fit["scores"].items()):
            writer.add_scalar("ridge/lambda", float(lam), step)
            for key, value in scores.items():
                writer.add_scalar(key, value, step)
    decoder = copy.deepcopy(module.decoder).cpu().eval()
    manifest = _manifest(c, representation, datamodule, command, metrics, steps=ridge.batches,
                         trained_steps=ridge.batches, train_seconds=fit["seconds"], checkpoint=None, ridge=fit)
    bundle = save_bundle(run_dir / "bundle.pt", decoder, manifest, float16=half)
    objects = {"representation": representation, "datamodule": datamodule, "module": module, "trainer": None,
               "checkpoint": None, "decoder": decoder, "run_dir": run_dir, "bundle": bundle}
    return metrics, objects
