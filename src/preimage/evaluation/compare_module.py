"""The comparison as a Lightning predict loop: images are sharded over processes, records gathered to rank 0.

:class:`CompareModule.predict_step` takes a batch of image-set items and, for every representation, runs
the methods asked for (``gd``, ``learned``, ``hybrid``) on them, returning one record per image ×
representation × method: the reconstruction (CPU tensor) and its timing. Nothing is scored here:
feature_error's normalizer is over the whole image set, so scoring happens after gathering.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import Dataset

from ..common import synchronize
from ..inversion.gd import GDConfig, invert_gd
from ..inversion.learned import LearnedInverter
from ..representations import Representation


class ImageSetDataset(Dataset):
    """The prepared images of a comparison: item ``i`` is ``{"index": i, "image": (C, H, W)}``."""

    def __init__(self, images: Sequence[torch.Tensor]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "image": self.images[i]}


def collate_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as a list: images may differ in size (they are grouped by size in the step)."""
    return items


@dataclass
class Plan:
    """What to run for one representation.

    Attributes:
        spec: the representation's spec (the key of its records).
        gd: GD settings of method ``gd`` (None: not run).
        hybrid: GD settings of the ``hybrid`` refinement (None: not run).
        learned: whether method ``learned`` is recorded (the inverter also runs when only hybrid needs it).
    """

    spec: str
    gd: GDConfig | None
    hybrid: GDConfig | None
    learned: bool


class CompareModule(pl.LightningModule):
    """Runs every plan on each predict batch; see the module docstring.

    Args:
        representations: Φ per plan (frozen).
        inverters: the learned inverter per plan, or None where none is available.
        plans: one per representation.
    """

    def __init__(self, representations: Sequence[Representation], inverters: Sequence[LearnedInverter | None],
                 plans: Sequence[Plan]) -> None:
        super().__init__()
        if not len(representations) == len(inverters) == len(plans):
            raise ValueError("CompareModule: one representation and one inverter (or None) per plan")
        self.representations = nn.ModuleList(representations)
        self.inverters = nn.ModuleDict({str(k): inv for k, inv in enumerate(inverters) if inv is not None})
        self.plans = list(plans)

    def _gd(self, representation: Representation, images: torch.Tensor, config: GDConfig,
            init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
        with torch.enable_grad():  # Lightning's predict loop runs under no_grad
            res = invert_gd(representation, images, config, device=self.device, progress=False, init=init)
        return res.images[:, 0], res.data_loss[-1, :, 0], res.seconds

    def _learned(self, inverter: LearnedInverter, images: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """One forward pass per image (so that a reconstruction never depends on how the images were batched
        or sharded); returns the reconstructions and each image's seconds."""
        recons, seconds = [], []
        with torch.no_grad():
            for x in images:
                synchronize(self.device)
                start = time.perf_counter()
                recons.append(inverter(x[None])[0].cpu())  # .cpu() waits for the device
                seconds.append(time.perf_counter() - start)
        return torch.stack(recons), seconds

    def run_group(self, indices: list[int], images: torch.Tensor) -> list[dict[str, Any]]:
        """All plans on a stack of same-size images ``(n, C, H, W)``: one record per image × plan × method."""
        n = len(indices)
        images = images.to(self.device)
        records: list[dict[str, Any]] = []

        def add(spec: str, method: str, recon: torch.Tensor, seconds: Sequence[float],
                loss: torch.Tensor | None) -> None:
            for j, i in enumerate(indices):
                records.append({"index": i, "representation": spec, "method": method,
                                "reconstruction": recon[j].detach().cpu().float(), "seconds": seconds[j],
                                "final_data_loss": None if loss is None else float(loss[j])})

        for k, (rep, plan) in enumerate(zip(self.representations, self.plans)):
            if plan.gd is not None:
                recon, loss, seconds = self._gd(rep, images, plan.gd)
                add(plan.spec, "gd", recon, [seconds / n] * n, loss)  # a batch's time, shared equally
            inverter = self.inverters[str(k)] if str(k) in self.inverters else None
            if inverter is None or not (plan.learned or plan.hybrid is not None):
                continue
            start, learned_seconds = self._learned(inverter, images)
            if plan.learned:
                add(plan.spec, "learned", start, learned_seconds, None)
            if plan.hybrid is not None:  # the learned pass counts in hybrid's time
                recon, loss, seconds = self._gd(rep, images, plan.hybrid, init=start)
                add(plan.spec, "hybrid", recon, [t + seconds / n for t in learned_seconds], loss)
        return records

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int,
                     dataloader_idx: int = 0) -> list[dict[str, Any]]:
        by_size: dict[tuple[int, ...], list[dict[str, Any]]] = defaultdict(list)
        for item in batch:
            by_size[tuple(item["image"].shape)].append(item)
        records = []
        for items in by_size.values():
            records += self.run_group([int(it["index"]) for it in items], torch.stack([it["image"] for it in items]))
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
