"""ImageDataModule: batch shapes per split, a fixed val set, fresh training items every epoch, configs."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DistributedSampler

from preimage.photos import TEST_PHOTOS
from preimage.training.datamodule import EpochSampler, ImageDataModule

TINY = dict(crop=16, batch_size=4, train_length=8, val_size=6, test_size=4)


def test_batches_of_every_split() -> None:
    dm = ImageDataModule(**TINY)
    dm.setup()
    for loader, sizes in ((dm.train_dataloader(), [4, 4]), (dm.val_dataloader(), [4, 2]), (dm.test_dataloader(), [4])):
        batches = list(loader)
        assert [b.shape[0] for b in batches] == sizes
        for b in batches:
            assert b.shape[1:] == (3, 16, 16) and b.dtype == torch.float32
            assert float(b.min()) >= 0.0 and float(b.max()) <= 1.0
    grey = ImageDataModule(grey=True, **TINY)
    assert next(iter(grey.val_dataloader())).shape == (4, 1, 16, 16)


def test_val_fixed_train_fresh_every_epoch() -> None:
    a, b = ImageDataModule(**TINY), ImageDataModule(**TINY)
    val = [torch.cat(list(a.val_dataloader())) for _ in range(2)] + [torch.cat(list(b.val_dataloader()))]
    assert torch.equal(val[0], val[1]) and torch.equal(val[0], val[2])
    train_a, train_b = a.train_dataloader(), b.train_dataloader()
    epoch0, epoch1 = torch.cat(list(train_a)), torch.cat(list(train_a))
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch0, torch.cat(list(train_b)))  # same seed, same epoch: same items
    train_b.sampler.set_epoch(1)  # as Lightning does before each epoch
    assert torch.equal(epoch1, torch.cat(list(train_b)))
    other_seed = ImageDataModule(seed=1, **TINY)
    assert not torch.equal(epoch0, torch.cat(list(other_seed.train_dataloader())))
    assert torch.equal(val[0], torch.cat(list(other_seed.val_dataloader())))  # eval_seed keeps val fixed


def test_splits_by_source_photograph() -> None:
    dm = ImageDataModule(sources=[{"kind": "builtin"}], **TINY)
    dm.setup()
    assert set(dm.data_test.sources) == set(TEST_PHOTOS)
    assert not set(dm.data_train.sources) & set(dm.data_val.sources)
    assert not set(dm.data_train.sources) & set(dm.data_test.sources)
    mixed = ImageDataModule(**TINY)  # default: built-in photos and dead leaves
    mixed.setup("test")
    assert set(mixed.data_test.sources) == set(TEST_PHOTOS) | {"dead_leaves:test"}
    assert mixed.data_train is None and mixed.data_val is None


def test_setup_idempotent() -> None:
    dm = ImageDataModule(**TINY)
    dm.setup("fit")
    train, val = dm.data_train, dm.data_val
    dm.setup("fit")
    dm.setup()
    assert dm.data_train is train and dm.data_val is val and dm.data_test is not None


def test_from_omegaconf_with_a_folder(tmp_path) -> None:
    for i in range(6):
        arr = np.random.default_rng(i).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
    cfg = OmegaConf.create({
        "sources": [{"kind": "dead_leaves", "weight": 1.0, "shapes": ["disc", "square"]},
                    {"kind": "folder", "weight": 2.0, "root": str(tmp_path), "fractions": [0.5, 0.25, 0.25],
                     "scale": [0.5, 1.0]}],
        **TINY,
    })
    dm = ImageDataModule(**cfg)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader())).shape == (4, 3, 16, 16)
    assert dm.data_train.weights == pytest.approx((1 / 3, 2 / 3))


def test_a_source_feeds_only_its_splits(tmp_path) -> None:
    for i in range(3):
        arr = np.random.default_rng(i).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
    extra = {"kind": "folder", "root": str(tmp_path), "fractions": [1.0, 0.0, 0.0], "splits": ["train"]}
    dm = ImageDataModule(sources=[{"kind": "builtin"}, extra], **TINY)
    dm.setup()
    assert {f"{i}.png" for i in range(3)} < set(dm.data_train.sources)
    assert dm.data_val.sources == ("rocket", "gravel") and dm.data_test.sources == TEST_PHOTOS  # builtin alone
    with pytest.raises(ValueError, match="none feeds the val split"):
        only = ImageDataModule(sources=[extra], **TINY)
        only.setup("validate")


@pytest.mark.parametrize("sources, match", [
    ([{"kind": "imagenet"}], "unknown; valid"),
    ([{"kind": "builtin", "r_min": 2.0}], "unknown keys"),
    ([{"kind": "builtin", "crop": 8}], "unknown keys"),
    ([{"kind": "folder"}], "needs a root"),
    ([{"kind": "builtin", "weight": 0.0}], "positive weight"),
    ([{"kind": "builtin", "splits": "train"}], "splits must be a non-empty list"),
    ([{"kind": "builtin", "splits": ["training"]}], "splits must be a non-empty list"),
])
def test_bad_source_configs(sources, match) -> None:
    with pytest.raises(ValueError, match=match):
        ImageDataModule(sources=sources)


def test_epoch_sampler() -> None:
    s = EpochSampler(5, seed=2)
    first, second = list(s), list(s)
    assert sorted(first) == list(range(5)) and sorted(second) == list(range(5, 10))
    s.set_epoch(0)
    assert list(s) == first


def test_epoch_sampler_splits_each_epoch_as_torchs_distributed_sampler() -> None:
    """Rank r's share under DDP is what torch's DistributedSampler (no shuffle) takes from the whole epoch."""
    whole = EpochSampler(5, seed=2)
    epochs = [list(whole), list(whole)]
    for rank in (0, 1):
        share = EpochSampler(5, seed=2, rank=rank, world_size=2)
        for epoch in epochs:
            reference = [epoch[i] for i in DistributedSampler(epoch, num_replicas=2, rank=rank, shuffle=False)]
            assert list(share) == reference and len(share) == 3
    # a resume skips this rank's first items: rank 1 keeps its third, the padding (the epoch's first index)
    assert list(EpochSampler(5, seed=2, skip=2, rank=1, world_size=2)) == [epochs[0][0]]


def test_two_workers() -> None:
    dm = ImageDataModule(sources=[{"kind": "builtin"}], num_workers=2, **TINY)
    single = ImageDataModule(sources=[{"kind": "builtin"}], **TINY)
    assert torch.equal(torch.cat(list(dm.train_dataloader())), torch.cat(list(single.train_dataloader())))


def test_lightning_trainer_sees_fresh_training_and_fixed_vallist() -> None:
    seen: dict[str, list[tuple[int, float]]] = {"train": [], "val": []}

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch: torch.Tensor, _: int) -> torch.Tensor:
            seen["train"].append((self.current_epoch, float(batch.sum())))
            return self.w * batch.mean()

        def validation_step(self, batch: torch.Tensor, _: int) -> None:
            seen["val"].append((self.current_epoch, float(batch.sum())))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Probe(), ImageDataModule(**TINY))
    train = {e: [s for ep, s in seen["train"] if ep == e] for e in (0, 1)}
    val = {e: [s for ep, s in seen["val"] if ep == e] for e in (0, 1)}
    assert len(train[0]) == 2 and train[0] != train[1]
    assert len(val[0]) == 2 and val[0] == val[1]


def test_side_jitter_cuts_training_batches_only() -> None:
    dm = ImageDataModule(**{**TINY, "train_length": 64}, side_jitter=3)
    sides = {tuple(b.shape[-2:]) for b in dm.train_dataloader()}
    assert len(sides) > 1 and all(13 <= h <= 16 and 13 <= w <= 16 for h, w in sides)
    plain = torch.cat([b[..., :13, :13] for b in ImageDataModule(**{**TINY, "train_length": 64}).train_dataloader()])
    assert torch.equal(torch.cat([b[..., :13, :13] for b in dm.train_dataloader()]), plain)  # top-left kept
    assert {tuple(b.shape[-2:]) for b in dm.val_dataloader()} == {(16, 16)}
    with pytest.raises(ValueError, match="side_jitter must be below data.crop"):
        ImageDataModule(**TINY, side_jitter=16)
