"""napari sample data: the bundled abdominal CT with its 8 organ labels (aligned)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
SAMPLE_CT = DATA_DIR / "ct_abdomen.nii.gz"
SAMPLE_LABELS = DATA_DIR / "ct_abdomen_labels.nii.gz"


def abdominal_ct() -> list[tuple]:
    """Image + Labels layer tuples of the packaged sample (TotalSegmentator data, Apache-2.0)."""
    from ._reader import volume_layer_data
    from .io import read_volume

    image = volume_layer_data(read_volume(SAMPLE_CT))
    labels = volume_layer_data(read_volume(SAMPLE_LABELS))
    image[1]["name"], labels[1]["name"] = "abdominal CT", "organs"
    return [image, labels]
