"""Command-line options shared by several ``medseg`` commands."""

from __future__ import annotations

import argparse
import math


def add_postprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """``--keep-islands`` and ``--z-sigma MM``: what happens between the model's probabilities and the labels."""
    from napari_medseg.zsmooth import Z_SIGMA_MM

    parser.add_argument("--keep-islands", action="store_true",
                        help="keep every predicted piece of an organ (default: each organ of a built-in label set "
                             "keeps only its largest 3D piece, which removes islands far from the organ; the "
                             "papers' tables are without it)")
    parser.add_argument("--z-sigma", type=_sigma_mm, default=Z_SIGMA_MM, metavar="MM",
                        help=f"smooth the probabilities across slices with a Gaussian of this sigma in mm before "
                             f"the argmax (default {Z_SIGMA_MM:g}; 0 = off, as in the papers' tables; needs the "
                             f"volume's slice thickness)")


def postprocess_options(args: argparse.Namespace) -> dict:
    """``segment_volume`` keywords from :func:`add_postprocess_arguments`' options."""
    return dict(largest_component=not args.keep_islands, z_sigma_mm=args.z_sigma)


def _sigma_mm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of mm >= 0 (0 = off), got {text}")
    return value
