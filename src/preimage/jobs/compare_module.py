"""The comparison as a Lightning predict loop: images are sharded over processes, records gathered to rank 0.

:class:`CompareModule.predict_step` takes a batch of image-set items and, for every representation, runs
its methods (``gd``, ``learned``, ``hybrid``: :mod:`.methods`, through the same :func:`~.methods.reconstruct`
as ``preimage invert``) on them, returning one record per image × representation × method: the
reconstruction (CPU tensor) and its timing. Nothing is scored here:
feature_error's normalizer is over the whole image set, so scoring happens after gathering.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import Dataset

from ..inversion.methods import HybridMethod, LearnedMethod, Method, reconstruct


class ImageSetDataset(Dataset):
    """The prepared images of a comparison, grey and/or RGB: item ``i`` is ``{"index": i, "images": {grey: (C, H, W)}}``
    with a key ``True`` (grey) and/or ``False`` (RGB)."""

    def __init__(self, images: Mapping[bool, Sequence[torch.Tensor]]) -> None:
        self.images = {grey: list(v) for grey, v in images.items()}
        self.length = len(next(iter(self.images.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "images": {grey: v[i] for grey, v in self.images.items()}}


def collate_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as a list: images may differ in size (they are grouped by size in the step)."""
    return items


class CompareModule(pl.LightningModule):
    """Runs every representation's methods on each predict batch; see the module docstring.

    Args:
        methods: per representation, the methods to run (:mod:`.methods`), each naming its records.
        grey: per representation, whether it takes the grey images (else RGB).
    """

    def __init__(self, methods: Sequence[Sequence[Method]], grey: Sequence[bool]) -> None:
        super().__init__()
        self.methods = [list(m) for m in methods]
        self.grey = list(grey)
        # registered, so that Lightning moves Φ and the decoders to the device
        self.modules_ = nn.ModuleList([m.representation for ms in self.methods for m in ms] +
                                      [m.inverter for ms in self.methods for m in ms if isinstance(m, LearnedMethod)] +
                                      [m.learned.inverter for ms in self.methods for m in ms if isinstance(m, HybridMethod)])

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int,
                     dataloader_idx: int = 0) -> list[dict[str, Any]]:
        indices = [int(it["index"]) for it in batch]
        records = []
        for methods, grey in zip(self.methods, self.grey):
            images = [it["images"][grey] for it in batch]
            for method in methods:
                results = reconstruct(method, images, self.device, len(images), indices)
                for i, (recon, seconds, loss) in zip(indices, results):
                    records.append({"index": i, "representation": method.representation.spec, "method": method.name,
                                    "reconstruction": recon[0].detach().cpu().float(), "seconds": seconds,
                                    "final_data_loss": None if loss is None else float(loss[0])})
        return records


def gather_records(local: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Every process's records on global rank 0 (None elsewhere), de-duplicated by image × representation ×
    method (a distributed sampler may repeat items)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        if dist.get_rank() != 0:
            return None
        local = [r for part in gathered for r in part]
    unique: dict[tuple[int, str, str], dict[str, Any]] = {}
    for r in local:
        unique.setdefault((r["index"], r["representation"], r["method"]), r)
    return list(unique.values())
