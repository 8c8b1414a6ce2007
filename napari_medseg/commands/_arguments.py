"""Command-line options shared by several ``medseg`` commands."""

from __future__ import annotations

import argparse


def add_keep_islands_argument(parser: argparse.ArgumentParser) -> None:
    """``--keep-islands``: skip the largest-component post-processing (``napari_medseg.postprocess``)."""
    parser.add_argument("--keep-islands", action="store_true",
                        help="keep every predicted piece of an organ (default: each organ of a built-in label set "
                             "keeps only its largest 3D piece, which removes islands far from the organ; the "
                             "papers' tables are without it)")
