"""The LightningDataModule of learned inverters: a weighted mixture of image sources.

Example (keys of a config equal the constructor's arguments)::

    cfg = OmegaConf.create({"sources": [{"kind": "builtin", "weight": 1.0},
                                        {"kind": "folder", "weight": 3.0, "root": "/data/imagenet/train"}],
                            "crop": 64, "batch_size": 32, "num_workers": 4})
    dm = ImageDataModule(**cfg)

Batches are float32 ``(B, 3, S, S)`` in ``[0, 1]`` (``(B, 1, S, S)`` with ``grey=True``), ``S = crop``; with
``side_jitter`` a training batch is ``(B, C, S − i, S − j)``, ``i`` and ``j`` drawn per batch.
"""
from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, default_collate

from ..config import check_int
from .augment import IntensityJitter, check_jitter
from .sources import SPLITS, BuiltinPhotos, DeadLeaves, ImageFolder, ImageSource, Mixture

__all__ = ["KINDS", "DEFAULT_SOURCES", "EpochSampler", "ImageDataModule", "SideJitter"]

#: Source kinds of the ``sources`` config and their classes.
KINDS: dict[str, type[ImageSource]] = {"builtin": BuiltinPhotos, "dead_leaves": DeadLeaves, "folder": ImageFolder}
#: The default training data: built-in photos and dead leaves, half and half.
DEFAULT_SOURCES: tuple[dict[str, Any], ...] = ({"kind": "builtin", "weight": 0.5}, {"kind": "dead_leaves", "weight": 0.5})
_SET_BY_MODULE = {"split", "crop", "length", "seed", "grey"}


class EpochSampler(DistributedSampler):
    """Indices ``epoch · length + π(i)``, ``π`` a permutation seeded by ``(seed, epoch)``: fresh items every epoch.

    Under DDP (``world_size > 1``) rank ``r`` takes every ``world_size``-th index from ``r`` on, the epoch padded
    with its first indices to a multiple of ``world_size``, as torch's ``DistributedSampler`` splits it (being
    one, Lightning leaves it unwrapped). The epoch is what :meth:`set_epoch` last set (Lightning calls it before
    every epoch), and advances by one after each iteration, for use without Lightning. ``skip`` leaves out this
    rank's first items of the first iteration only: a run resumed mid-epoch goes on with the items the
    interrupted run had not reached, so that it equals an uninterrupted run.
    """

    def __init__(self, length: int, seed: int = 0, skip: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(range(int(length)), num_replicas=int(world_size), rank=int(rank), shuffle=False,
                         seed=int(seed))  # sets epoch 0 and set_epoch
        self.length, self.skip = int(length), int(skip)

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = np.random.default_rng([self.seed, epoch]).permutation(self.length) + epoch * self.length
        order = np.resize(order, self.total_size)[self.rank::self.num_replicas]  # np.resize pads with the head
        skip, self.skip = self.skip, 0
        return iter(order[skip:].tolist())


class SideJitter:
    """A DataLoader ``collate_fn``: stack the crops, then keep the top-left ``(S − i) × (S − j)`` of the batch,
    ``i`` and ``j`` uniform in ``0 … jitter`` (one draw per batch, from a stream seeded by ``seed``; each worker
    process draws its own copy of it). Sides off a network's stride put "SAME" padding above and left of the
    map, which crops of one side never show a decoder."""

    def __init__(self, jitter: int, seed: int) -> None:
        self.jitter, self.rng = int(jitter), np.random.default_rng([int(seed), 1])

    def __call__(self, items: list[torch.Tensor]) -> torch.Tensor:
        batch = default_collate(items)
        cut = self.rng.integers(0, self.jitter + 1, size=2)
        return batch[..., : batch.shape[-2] - int(cut[0]), : batch.shape[-1] - int(cut[1])]


def _path_hash(root: str) -> str:
    """12 hex digits of the folder's absolute path: the name of its cached file list."""
    return hashlib.sha1(str(Path(root).resolve()).encode("utf-8")).hexdigest()[:12]


def _check_sources(sources: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``sources`` config as plain dicts, with kinds, weights and per-source arguments checked."""
    checked = []
    for s in sources:
        s = dict(s)
        kind = s.get("kind")
        if kind not in KINDS:
            raise ValueError(f"source kind {kind!r} unknown; valid: {', '.join(KINDS)}")
        if float(s.get("weight", 1.0)) < 0:
            raise ValueError(f"source {kind!r}: weight must be >= 0, got {s['weight']}")
        allowed = set(inspect.signature(KINDS[kind]).parameters) - _SET_BY_MODULE
        unknown = set(s) - allowed - {"kind", "weight", "splits"}
        if unknown:
            raise ValueError(f"source {kind!r}: unknown keys {sorted(unknown)}; valid: {sorted(allowed)}")
        if kind == "folder" and "root" not in s:
            raise ValueError("source 'folder' needs a root")
        splits = s.setdefault("splits", list(SPLITS))
        if isinstance(splits, str) or not splits or not set(splits) <= set(SPLITS):
            raise ValueError(f"source {kind!r}: splits must be a non-empty list of {', '.join(SPLITS)}; got {splits!r}")
        checked.append(s)
    if not checked or sum(float(s.get("weight", 1.0)) for s in checked) <= 0:
        raise ValueError("sources: need at least one source with a positive weight")
    return checked


class ImageDataModule(pl.LightningDataModule):
    """Training, validation and test crops from a weighted mixture of image sources.

    Args:
        sources: a list of ``{kind: builtin | dead_leaves | folder, weight: float (default 1), ...}``; other
            keys go to the source's class (:class:`~preimage.training.sources.BuiltinPhotos`,
            :class:`~preimage.training.sources.DeadLeaves`, :class:`~preimage.training.sources.ImageFolder`:
            ``root`` required, ``fractions``, ``validate``, ``scale``, ...), except ``splits``: the splits the
            source feeds (default all three; e.g. ``[train]`` for extra photos kept out of validation).
            Default :data:`DEFAULT_SOURCES`.
        crop: side ``S`` of the square images, in pixels.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0: load in the main process).
        train_length: training items per epoch; every epoch draws new ones.
        val_size: items of the fixed validation set.
        test_size: items of the fixed test set (built-in photos: crops of ``TEST_PHOTOS`` only).
        seed: the training stream.
        eval_seed: the fixed val/test sets, kept apart from ``seed`` so that runs with different training
            seeds are scored on the same images.
        grey: one grey channel instead of RGB.
        pin_memory: DataLoader ``pin_memory``.
        contrast: ``(low, high)``: scale the contrast of every *training* item by a factor log-uniform in
            this range (:class:`~preimage.training.augment.IntensityJitter`); ``(1, 1)``, the default, is off.
        brightness: move the mean of every *training* item by up to this much, uniformly, within the
            range that keeps its pixels in ``[0, 1]``; 0, the default, is off.
        colour: then move each channel's mean of every *training* item by up to this much, on its own, within
            the range that keeps that channel in ``[0, 1]``; 0, the default, is off.
        grey_fraction: before all that, make this share of the colour *training* items grey (drawn per item;
            each channel the luminance); 0, the default, is off. Val and test items keep their own colours,
            contrast and brightness.
        listing_dir: a folder where each ``folder`` source's list of images is cached (one file per folder,
            ``images-<hash of its path>.txt``; :func:`~preimage.training.sources.scan_images`), so that the splits
            and a resumed run share one scan; ``None``: every split scans its folders. ``preimage train`` sets it
            to the run directory.
        side_jitter: cut every *training* batch to sides ``crop − i`` by ``crop − j``, ``i``, ``j`` uniform in
            ``0 … side_jitter`` per batch (:class:`SideJitter`): a decoder then meets the padding of every input
            size (EfficientNet's "SAME" padding changes with the side's remainder by its stride). 0, the
            default, is off; validation and test keep ``crop``.

    Each split reads the same split of every source that feeds it (split by source photograph), with the same
    weights.
    """

    def __init__(
        self,
        sources: Sequence[Mapping[str, Any]] | None = None,
        crop: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
        train_length: int = 10_000,
        val_size: int = 256,
        test_size: int = 256,
        seed: int = 0,
        eval_seed: int = 0,
        grey: bool = False,
        pin_memory: bool = False,
        contrast: Sequence[float] = (1.0, 1.0),
        brightness: float = 0.0,
        colour: float = 0.0,
        grey_fraction: float = 0.0,
        side_jitter: int = 0,
        listing_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        for name, value, minimum in (("crop", crop, 1), ("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                     ("train_length", train_length, 1), ("val_size", val_size, 1),
                                     ("test_size", test_size, 1), ("seed", seed, None), ("eval_seed", eval_seed, None),
                                     ("side_jitter", side_jitter, 0)):
            check_int(f"data.{name}", value, minimum=minimum)  # before anything is built or written
        if side_jitter >= crop:
            raise ValueError(f"data.side_jitter must be below data.crop ({crop}), got {side_jitter}")
        self.source_configs = _check_sources(DEFAULT_SOURCES if sources is None else sources)
        self.jitter = check_jitter(contrast, brightness, colour, grey_fraction)
        self.data_train: ImageSource | IntensityJitter | None = None
        self.data_val: ImageSource | None = None
        self.data_test: ImageSource | None = None
        self._resume_batches = 0  # set by resume_at

    def _build(self, split: str, length: int, seed: int) -> ImageSource:
        hp = self.hparams
        parts, weights = [], []
        for s in (s for s in self.source_configs if split in s["splits"]):
            kwargs = {k: v for k, v in s.items() if k not in ("kind", "weight", "splits")}
            if s["kind"] == "folder" and hp.listing_dir is not None and "listing" not in kwargs:
                kwargs["listing"] = Path(hp.listing_dir) / f"images-{_path_hash(kwargs['root'])}.txt"
            parts.append(KINDS[s["kind"]](split=split, crop=hp.crop, length=length, seed=seed, grey=hp.grey, **kwargs))
            weights.append(float(s.get("weight", 1.0)))
        if not parts:
            raise ValueError(f"sources: none feeds the {split} split (each source's splits)")
        return parts[0] if len(parts) == 1 else Mixture(parts, weights, length=length, seed=seed)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs (all for None); those already built are kept."""
        hp = self.hparams
        if stage in (None, "fit") and self.data_train is None:
            train = self._build("train", hp.train_length, hp.seed)
            contrast, brightness, colour, grey_fraction = self.jitter
            self.data_train = train if self.jitter == check_jitter((1.0, 1.0), 0.0) else IntensityJitter(
                train, contrast, brightness, hp.seed, colour=colour, grey_fraction=grey_fraction)
        if stage in (None, "fit", "validate") and self.data_val is None:
            self.data_val = self._build("val", hp.val_size, hp.eval_seed)
        if stage in (None, "test") and self.data_test is None:
            self.data_test = self._build("test", hp.test_size, hp.eval_seed)

    def _loader(self, dataset: ImageSource | IntensityJitter, sampler: Sampler[int] | None = None,
                collate: SideJitter | None = None) -> DataLoader:
        hp = self.hparams
        return DataLoader(dataset, batch_size=hp.batch_size, sampler=sampler, shuffle=False, num_workers=hp.num_workers,
                          pin_memory=hp.pin_memory, persistent_workers=hp.num_workers > 0, collate_fn=collate)

    def resume_at(self, batches: int) -> None:
        """Make the next training loader go on after each process's first ``batches`` training batches: its
        first epoch leaves out the items the interrupted run had trained on (this rank's, under DDP)."""
        self._resume_batches = int(batches)

    def train_dataloader(self) -> DataLoader:
        """New items every epoch (:class:`EpochSampler`, this rank's share), resumed where :meth:`resume_at` says."""
        self.setup("fit")
        trainer = self.trainer  # None outside a Trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = EpochSampler(len(self.data_train), self.hparams.seed, rank=rank, world_size=world_size)
        batches, self._resume_batches = self._resume_batches, 0
        sampler.skip = batches % -(-len(sampler) // self.hparams.batch_size) * self.hparams.batch_size
        jitter = SideJitter(self.hparams.side_jitter, self.hparams.seed) if self.hparams.side_jitter else None
        return self._loader(self.data_train, sampler, jitter)

    def val_dataloader(self) -> DataLoader:
        """The fixed validation set, in order."""
        self.setup("validate")
        return self._loader(self.data_val)

    def test_dataloader(self) -> DataLoader:
        """The fixed test set, in order."""
        self.setup("test")
        return self._loader(self.data_test)
