"""Join inverter bundles of one representation into one bundle whose reconstruction is the mean of theirs
(``preimage.inversion.networks.DecoderEnsemble``): decoders trained differently (from their own features, stacked
on a shallower layer's) err differently, and their mean errs less. ``scripts/validation_error.py --average``
scores the mean before a bundle is written.

    .venv/bin/python scripts/ensemble_bundles.py --bundles checkpoints/efficientnet_lite0_head.pt \\
        runs/stacked_head_k1_6k/efficientnet_lite0_head/bundle.pt --out runs/head_ensemble.pt

The members must invert the same spec with the same parameters, at the same training image size, into images of
the same channels. The manifest records each member's bundle, data, steps and validation metrics; the weights are
stored in float16 when every member's are.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from preimage.inversion.bundles import BundleError, save_bundle
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import Decoder, DecoderEnsemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", required=True, help="two or more bundles (paths or shipped names)")
    parser.add_argument("--out", required=True, type=Path, help="the bundle to write")
    args = parser.parse_args()
    if len(args.bundles) < 2:
        raise SystemExit("--bundles: give two or more")
    try:  # each later bundle loaded on the first's Φ: another spec or other parameters are refused
        inverters = [LearnedInverter.from_bundle(args.bundles[0])]
        inverters += [LearnedInverter.from_bundle(b, representation=inverters[0].representation)
                      for b in args.bundles[1:]]
    except BundleError as err:
        raise SystemExit(str(err)) from None
    manifests, decoders = [i.manifest for i in inverters], [i.decoder for i in inverters]
    first = manifests[0]
    if not all(isinstance(d, Decoder) for d in decoders):
        raise SystemExit("--bundles: one of them is an ensemble already; give its members")
    try:
        ensemble = DecoderEnsemble(decoders)
    except ValueError as err:
        raise SystemExit(f"--bundles: {err}") from None
    members = [{"bundle": str(b), "data": m["data"], "steps": m["steps"], "metrics": m["metrics"]}
               for b, m in zip(args.bundles, manifests)]
    manifest = {"spec": first["spec"], "params": first["params"],
                "data": {"mean of": [m["data"] for m in manifests]},
                "steps": sum(m["steps"] for m in manifests), "metrics": {}, "members": members}
    float16 = all(m.get("weights_dtype") == "float16" for m in manifests)
    save_bundle(args.out, ensemble.float(), manifest, float16=float16)
    print(f"wrote {args.out}: the mean of {len(decoders)} decoders of {first['spec']}"
          + (" (float16 weights)" if float16 else ""))


if __name__ == "__main__":
    main()
