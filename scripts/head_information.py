"""How much of stage7 EfficientNet-Lite0's head keeps: the stage7 decoder read from a stage7 map rebuilt from the head.

The head is ``h = ReLU6(a ⊙ (W z) + c)`` at every cell (a 1×1 convolution of stage7's 320 channels to 1280, batch
norm folded into ``a`` and ``c``). Where a unit lies strictly between 0 and 6, it is one linear equation on the cell's
320 stage7 values; a unit at 0 or 6 says only on which side of the clip it is. This script counts the equations per
cell, then finds, per cell, a stage7 vector ``ẑ`` that gives the head's features exactly (L-BFGS on the clip's
residual: equal where linear, the right side of 0 or 6 where clipped; started at the mean stage7 vector of the config's
training crops), and reads it with the shipped stage7 decoder. If ``ẑ`` decodes no better than the head's own decoder
reads ``h``, what the head decoder lacks is in the head's features, not in the decoder. Per set (the head's
validation crops and photos of ``--config``, and the built-in test photos at 224 px): linear units per cell, how far
``ẑ`` lies from the true stage7 map (relative L2) and how exactly it gives the head's features, and image_error of the
stage7 decoder on the true map and on ``ẑ``, of the head decoder, and of each image's own mean colour as a flat image.

    .venv/bin/python scripts/head_information.py [--config configs/train/efficientnet_lite0_layers.yaml]
        [--stage7 checkpoints/efficientnet_lite0_stage7.pt] [--head checkpoints/efficientnet_lite0_head.pt]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validation_error import validation_sets  # noqa: E402

from preimage.imagesets import load_image_set  # noqa: E402
from preimage.inversion.learned import LearnedInverter  # noqa: E402
from preimage.metrics import flat_colour, image_error  # noqa: E402


def head_affine(head: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A (1280, 320), c (1280,))``: ``head`` (the network's 1×1 convolution, batch norm or its folded identity,
    ReLU6) before its ReLU6, ``A z + c`` per cell, read off at z = 0 and at each unit vector."""
    channels = head[0].in_channels
    with torch.no_grad():
        basis = torch.cat([torch.zeros(1, channels), torch.eye(channels)])[:, :, None, None]
        pre = head[:-1](basis)[:, :, 0, 0]
    return (pre[1:] - pre[0]).T.contiguous(), pre[0]


def consistent_stage7(h: torch.Tensor, A: torch.Tensor, c: torch.Tensor, start: torch.Tensor,
                      iterations: int = 1500) -> torch.Tensor:
    """A stage7 map ``(B, 320, H, W)`` whose head features are ``h`` ``(B, 1280, H, W)``, cell by cell."""
    target = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    z = start.expand(target.shape[0], -1).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([z], max_iter=iterations, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=0, tolerance_change=0)

    def residual_energy() -> torch.Tensor:
        optimizer.zero_grad()
        pre = z @ A.T + c
        residual = torch.where(target <= 0, pre.clamp(min=0), torch.where(target >= 6, (pre - 6).clamp(max=0),
                                                                           pre - target))
        energy = residual.square().sum()
        energy.backward()
        return energy

    optimizer.step(residual_energy)
    b, _, height, width = h.shape
    return z.detach().reshape(b, height, width, -1).permute(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train/efficientnet_lite0_layers.yaml")
    parser.add_argument("--stage7", default="checkpoints/efficientnet_lite0_stage7.pt")
    parser.add_argument("--head", default="checkpoints/efficientnet_lite0_head.pt")
    args = parser.parse_args()
    stage7, head = LearnedInverter.from_bundle(args.stage7), LearnedInverter.from_bundle(args.head)
    A, c = head_affine(head.representation.network.head)  # the head inverter's own Φ, not a second copy
    sets = validation_sets(args.config, "head", [], train_crops=256)
    with torch.no_grad():
        train = torch.cat([stage7.representation(b) for b in sets.pop("training crops").split(32)])
    start = train.permute(0, 2, 3, 1).reshape(-1, train.shape[1]).mean(0)
    sets["test photos (224 px)"] = torch.stack(load_image_set("builtin", size=224, grey=False)[2])
    print("| set | images | linear head units per cell (of 1280) | ẑ vs stage7 (relative L2) | head of ẑ vs h "
          "(relative L2) | stage7 decoder, true stage7 | stage7 decoder, ẑ | head decoder | own mean colour |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for name, images in sets.items():
        with torch.no_grad():
            z = torch.cat([stage7.representation(b) for b in images.split(32)])
            h = torch.cat([head.representation(b) for b in images.split(32)])
        rebuilt = consistent_stage7(h, A, c, start)
        size = tuple(images.shape[-2:])
        with torch.no_grad():
            again = torch.nn.functional.relu6(torch.einsum("oi,bihw->bohw", A, rebuilt) + c.view(1, -1, 1, 1))
            scores = [image_error(torch.cat([inverter.invert_features(f, size) for f in features.split(32)]),
                                  images).mean()
                      for inverter, features in ((stage7, z), (stage7, rebuilt), (head, h))]
        linear = ((h > 0) & (h < 6)).sum(1).float().mean()
        print(f"| {name} | {len(images)} | {linear:.0f} | {(rebuilt - z).norm() / z.norm():.3f} | "
              f"{(again - h).norm() / h.norm():.1e} | " + " | ".join(f"{float(s):.3f}" for s in scores)
              + f" | {float(image_error(flat_colour(images), images).mean()):.3f} |", flush=True)


if __name__ == "__main__":
    main()
