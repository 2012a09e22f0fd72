"""EfficientNet-Lite0 on the CPU as it was built and as Φ runs it, measured side by side in one run.

``EfficientNetLite0Layer`` runs its network on a channels-last copy of its input on the CPU (``channels_last``,
oneDNN's faster convolutions) and with its batch norms folded into the convolutions (``fold_batch_norms``); this
measures what each buys, against the same representation with the contiguous layout and the unfolded network
(the weights file's); the column Φ is the layer as built (channels-last but at the stem, folded). In alternating
rounds, each figure the fastest of ``--rounds``, so that load from other processes, which only adds time, hits no
variant more:

- accuracy: each variant's features and pixel gradient (of the features' squared sum) against the unfolded network's
  in float64, relative error (norm of the difference over the norm), on 2 random 227-px images;
- Φ forward and forward + backward (the gradient of the features' squared sum with respect to the pixels, what
  GD asks of Φ at every step), ms per batch, at batch 1 and ``--batch`` on 224-px random images;
- other families (``--zoo``): Φ forward + backward of torchvision/timm layers, whose traced networks have their
  batch norms folded too (``fold_graph_batch_norms``; they run contiguous), against the unfolded trace;
- GD: whole runs of the presets ``tuned`` and ``fast`` on the first ``--photos`` built-in test photos at 224 px
  (colour), seconds per image, and ``fast``'s time over ``tuned``'s under each layout (the two share Φ, so a faster
  Φ leaves more of ``fast``'s time to its own per-step work: its pyramid and Adam).

    .venv/bin/python scripts/benchmark_network.py [--layers stem stage2 stage4 stage6 head logits]
        [--gd-layers stage4 logits] [--zoo torchvision:resnet18:layer3 ...] [--photos 2] [--batch 6] [--rounds 3]
        [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from preimage import build_representation, keep_freed_memory
from preimage.imagesets import load_image_set
from preimage.inversion.gd import invert_gd
from preimage.inversion.presets import gd_config
from preimage.representations.efficientnet_lite import efficientnet_lite0_network
from preimage.representations.model_zoo import NodeOutput, ZooModel, returned_nodes

#: name → (channels_last, batch norms folded); Φ: the layer's own layout (channels-last but at the stem), folded
VARIANTS = {"contiguous": (False, False), "channels-last": (True, False), "Φ": (None, True)}


def set_variant(rep, networks: dict[bool, torch.nn.Module], name: str) -> None:
    channels_last, folded = VARIANTS[name]
    rep.channels_last = networks["channels_last"] if channels_last is None else channels_last
    rep.network = networks[folded]


def variants_of(layer: str):
    """``efficientnet_lite0:<layer>``, its network unfolded and folded, and its own layout."""
    rep = build_representation(f"efficientnet_lite0:{layer}")
    return rep, {False: efficientnet_lite0_network(layer), True: rep.network, "channels_last": rep.channels_last}


def zoo_variants(spec: str):
    """A ``torchvision:``/``timm:`` layer (random weights: the same speed), its traced network unfolded and folded."""
    family, model, node = spec.split(":", 2)
    rep = build_representation(spec, weights="random")
    zoo = ZooModel(family)
    network = zoo.build(model, "random")
    return rep, {False: NodeOutput(zoo.cut(network, returned_nodes(zoo.nodes(network), node)), node), True: rep.network}


def phi_ms(rep, images: torch.Tensor, backward: bool) -> float:
    """Milliseconds of one Φ forward (and backward) on ``images``."""
    x = images.clone().requires_grad_(backward)
    tic = time.perf_counter()
    if backward:
        rep(x).square().sum().backward()
    else:
        with torch.no_grad():
            rep(x)
    return 1000 * (time.perf_counter() - tic)


def features_and_gradient(rep, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = images.clone().requires_grad_(True)
    features = rep(x)
    (grad,) = torch.autograd.grad(features.square().sum(), x)
    return features.detach().double(), grad.double()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="*", default=["stem", "stage2", "stage4", "stage6", "head", "logits"])
    parser.add_argument("--gd-layers", nargs="*", default=["stage4", "logits"])
    parser.add_argument("--zoo", nargs="*",
                        default=["torchvision:resnet18:layer3", "torchvision:mobilenet_v3_large:features.12"],
                        help="torchvision/timm layers whose traced batch norms are folded (timed unfolded and folded)")
    parser.add_argument("--photos", type=int, default=2)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does: GD's freed tensors are not faulted back in at every step
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads; fastest of {args.rounds} alternating rounds\n")
    names = list(VARIANTS)
    print("Accuracy against the unfolded network in float64 (relative error of the features / of the pixel gradient)\n")
    print("| layer | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for layer in args.layers:
        rep, networks = variants_of(layer)
        images = torch.rand(2, 3, 227, 227, generator=torch.Generator().manual_seed(1))
        reference = copy.deepcopy(rep)  # the unfolded network in float64
        reference.network = copy.deepcopy(networks[False])
        exact = features_and_gradient(reference.double(), images.double())
        cells = []
        for name in names:
            set_variant(rep, networks, name)
            ours = features_and_gradient(rep, images)
            cells.append(f"{relative(ours[0], exact[0]):.1e} / {relative(ours[1], exact[1]):.1e}")
        print(f"| {layer} | " + " | ".join(cells) + " |", flush=True)
    print()
    print("| layer | batch | pass | " + " | ".join(f"{n} ms" for n in names) + " | speed-up: "
          + ", ".join(names[1:]) + " |\n|---|---|---|" + "---|" * (len(names) + 1))
    for layer in args.layers:
        rep, networks = variants_of(layer)
        for batch in (1, args.batch):
            images = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            for backward in (False, True):
                best = {name: float("inf") for name in VARIANTS}
                for name in VARIANTS:  # one-off set-up (oneDNN primitives) outside the rounds
                    set_variant(rep, networks, name)
                    phi_ms(rep, images, backward)
                for _ in range(args.rounds):
                    for name in VARIANTS:
                        set_variant(rep, networks, name)
                        best[name] = min(best[name], phi_ms(rep, images, backward))
                base = best["contiguous"]
                print(f"| {layer} | {batch} | {'forward+backward' if backward else 'forward'} | "
                      + " | ".join(f"{best[n]:.1f}" for n in names) + " | "
                      + ", ".join(f"{base / best[n]:.2f}×" for n in names[1:]) + " |", flush=True)
    if args.zoo:
        print("\nOther families' traced networks, contiguous, forward+backward ms (random weights)\n")
        print("| layer | batch | unfolded ms | folded (Φ) ms | speed-up |\n|---|---|---|---|---|")
    for spec in args.zoo:
        rep, networks = zoo_variants(spec)
        for batch in (1, args.batch):
            images = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            for folded in (False, True):  # one-off set-up outside the rounds
                rep.network = networks[folded]
                phi_ms(rep, images, True)
            best = {folded: float("inf") for folded in (False, True)}
            for _ in range(args.rounds):
                for folded in (False, True):
                    rep.network = networks[folded]
                    best[folded] = min(best[folded], phi_ms(rep, images, True))
            a, b = best[False], best[True]
            print(f"| {spec} | {batch} | {a:.1f} | {b:.1f} | {a / b:.2f}× |", flush=True)
    if not args.gd_layers:
        return
    photos = torch.stack(load_image_set("builtin", size=224, grey=False)[2][: args.photos])
    print(f"\nGD on {len(photos)} test photos at 224 px (seconds per image)\n")
    print("| layer | preset | " + " | ".join(f"{n} s" for n in names) + " | speed-up: " + ", ".join(names[1:])
          + " |\n|---|---|" + "---|" * (len(names) + 1))
    for layer in args.gd_layers:
        rep, networks = variants_of(layer)
        best = {(preset, name): float("inf") for preset in ("tuned", "fast") for name in VARIANTS}
        for _ in range(args.rounds):
            for preset in ("tuned", "fast"):
                config = gd_config(preset, rep)
                for name in VARIANTS:
                    set_variant(rep, networks, name)
                    seconds = invert_gd(rep, photos, config, progress=False).seconds
                    best[preset, name] = min(best[preset, name], seconds / len(photos))
        for preset in ("tuned", "fast"):
            base = best[preset, "contiguous"]
            print(f"| {layer} | {preset} | " + " | ".join(f"{best[preset, n]:.2f}" for n in names) + " | "
                  + ", ".join(f"{base / best[preset, n]:.2f}×" for n in names[1:]) + " |", flush=True)
        print(f"| {layer} | fast over tuned | " + " | ".join(f"{best['fast', n] / best['tuned', n]:.3f}" for n in names)
              + " | |", flush=True)


if __name__ == "__main__":
    main()
