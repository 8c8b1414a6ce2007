"""DICOM-SEG (labelmap -> one binary segment per organ present) with highdicom.

Frames reference the source series' SOP instances: the reader keeps, per slice
``k`` of the source order, the file and its SOP Instance UID in
``Geometry.source_header`` (``files``, ``sop_instance_uids``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..labels import LabelSet, segment_code
from .geometry import Geometry

MANUFACTURER = "napari-medseg"


@dataclass(frozen=True)
class Algorithm:
    """Who made the segmentation: DICOM ``AlgorithmName``/``AlgorithmVersion`` (64 chars each)
    and free-text parameters (the full checkpoint sha256s)."""

    name: str
    version: str
    parameters: dict

    @classmethod
    def from_checkpoints(cls, infos) -> "Algorithm":
        """From :class:`~napari_medseg.checkpoint.CheckpointInfo` objects (an ensemble: several)."""
        from .. import __version__

        infos = list(infos)
        models = "+".join(dict.fromkeys(i.model_name for i in infos)) or "manual"
        shas = [i.sha256 for i in infos]
        version = f"{__version__} ckpt {shas[0][:12]}" + (f" +{len(shas) - 1}" if len(shas) > 1 else "") if shas else __version__
        params = {"napari-medseg": __version__, "model": models}
        params.update({f"checkpoint_sha256_{n}": sha for n, sha in enumerate(shas)})
        return cls(name=f"napari-medseg {models}"[:64], version=version[:64], parameters=params)

    @classmethod
    def from_checkpoint_paths(cls, paths) -> "Algorithm":
        from ..checkpoint import read_checkpoint_info

        return cls.from_checkpoints([read_checkpoint_info(p) for p in paths if Path(p).is_file()])


def srgb_to_cielab(rgb) -> tuple[float, float, float]:
    """sRGB floats in [0, 1] -> CIE L*a*b* (D65), as DICOM's RecommendedDisplayCIELabValue wants."""
    c = np.clip(np.asarray(rgb[:3], float), 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return float(116 * f[1] - 16), float(500 * (f[0] - f[1])), float(200 * (f[1] - f[2]))


def dicom_seg_ready(geometry: Geometry) -> None:
    """Raise ``ValueError`` (one line) unless ``geometry`` comes from a DICOM series this writer can reference."""
    header = geometry.source_header or {}
    if geometry.source_format != "dicom" or not header.get("files"):
        name = Path(geometry.source_path).name if geometry.source_path else "this image"
        raise ValueError(
            f"DICOM-SEG needs the source DICOM series, but {name} was read from a {geometry.source_format} "
            "source; segment the DICOM series folder, or save as .nii.gz or .seg.nrrd"
        )


def _source_datasets(geometry: Geometry) -> list:
    """The source slices (pydicom datasets, no pixel data) in source order ``k``; checks they are unchanged."""
    import pydicom

    header = geometry.source_header
    datasets = []
    for k, (file, uid) in enumerate(zip(header["files"], header["sop_instance_uids"])):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise ValueError(f"DICOM-SEG needs the source series, but slice file {file} cannot be read ({exc})") from exc
        meta = getattr(ds, "file_meta", None)
        for key, meta_key in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not ds.get(key) and meta is not None and meta.get(meta_key):
                setattr(ds, key, meta.get(meta_key))  # anonymisers sometimes blank these; the file meta keeps them
            if not ds.get(key):
                raise ValueError(f"source slice file {file} has no {key}; DICOM-SEG cannot reference it")
        if uid and ds.SOPInstanceUID != uid:
            raise ValueError(f"source slice file {file} changed since it was read (SOP Instance UID differs); reopen the series")
        datasets.append(ds)
    if len(datasets) != geometry.source_shape[2]:
        raise ValueError(f"the source series has {len(datasets)} files but the volume {geometry.source_shape[2]} slices")
    return datasets


def segment_descriptions(values, label_set: LabelSet, algorithm: Algorithm) -> list:
    """highdicom ``SegmentDescription`` for each label value (segment numbers 1..n in that order)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=codes.cid7162.ArtificialIntelligence, version=algorithm.version,
        parameters=algorithm.parameters,
    )
    out = []
    for number, value in enumerate(values, start=1):
        code = segment_code(label_set, value)
        desc = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label_set.names.get(value, f"label {value}")[:64],
            segmented_property_category=hd.sr.CodedConcept(code.category[0], "SCT", code.category[1]),
            segmented_property_type=hd.sr.CodedConcept(code.type[0], "SCT", code.type[1]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ident,
            display_color=hd.color.CIELabColor(*srgb_to_cielab(label_set.colors.get(value, (0.5, 0.5, 0.5)))),
        )
        if code.modifier:
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(code.modifier[0], "SCT", code.modifier[1])
            ]
        out.append(desc)
    return out


def write_dicom_seg(source: np.ndarray, geometry: Geometry, label_set: LabelSet, path, algorithm: Algorithm | None) -> None:
    """Write labels ``source`` ``(i, j, k)`` (source voxel order of a DICOM series) as a binary DICOM-SEG."""
    dicom_seg_ready(geometry)
    datasets = _source_datasets(geometry)
    values = [int(v) for v in np.unique(source) if v != 0]
    if not values:
        raise ValueError("the labels are empty (background only); DICOM-SEG needs at least one segment")
    lookup = np.zeros(int(source.max()) + 1, np.uint8 if len(values) < 256 else np.uint16)
    lookup[values] = np.arange(1, len(values) + 1)
    frames = np.ascontiguousarray(lookup[source].transpose(2, 1, 0))  # (k, rows = j, columns = i)
    from .. import __version__

    algorithm = algorithm or Algorithm(name="napari-medseg", version=__version__, parameters={"napari-medseg": __version__})
    try:
        seg = _segmentation(datasets, frames, values, label_set, algorithm)
    except ValueError as exc:  # highdicom checks the source series (frame of reference, geometry...)
        reason = " ".join(str(exc).split())
        raise ValueError(f"cannot build a DICOM-SEG on this series: {reason}") from exc
    seg.save_as(str(path))


def _segmentation(datasets, frames, values, label_set: LabelSet, algorithm: Algorithm):
    import highdicom as hd

    from .. import __version__

    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(values, label_set, algorithm),
        series_instance_uid=hd.UID(),
        series_number=max(int(getattr(datasets[0], "SeriesNumber", 0) or 0), 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name,
        software_versions=__version__,
        device_serial_number="0",
        content_label="MEDSEG",
        content_description=f"Segmentation by {algorithm.name}"[:64],
    )
