"""Label sets: which integer means which organ, and how it is drawn.

A :class:`LabelSet` maps label values (0 = background) to names and RGBA
colours (floats in [0, 1]).  ``synapse`` and ``acdc`` are built in; anything
else is a custom set made with :meth:`LabelSet.custom` or read from a
checkpoint / sidecar JSON with :meth:`LabelSet.from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RGBA = tuple[float, float, float, float]

# A qualitative palette that stays distinguishable on a grey CT window.
_PALETTE: list[RGBA] = [
    (0.90, 0.10, 0.10, 1.0),  # red
    (0.20, 0.75, 0.20, 1.0),  # green
    (0.15, 0.45, 0.95, 1.0),  # blue
    (0.00, 0.80, 0.85, 1.0),  # cyan
    (0.80, 0.50, 0.20, 1.0),  # ochre
    (0.95, 0.85, 0.10, 1.0),  # yellow
    (0.60, 0.25, 0.85, 1.0),  # purple
    (1.00, 0.55, 0.70, 1.0),  # pink
    (0.55, 0.80, 0.45, 1.0),  # light green
    (0.95, 0.60, 0.10, 1.0),  # orange
    (0.45, 0.60, 0.95, 1.0),  # light blue
    (0.75, 0.75, 0.75, 1.0),  # grey
]


@dataclass(frozen=True)
class LabelSet:
    """Names and colours of the classes a model predicts.

    Args:
        name: identifier (``"synapse"``, ``"acdc"`` or a custom name).
        names: label value -> organ name; must contain 0 (background) and be
            contiguous 0..K-1.
        colors: label value -> RGBA floats in [0, 1]; background is transparent.
    """

    name: str
    names: dict[int, str]
    colors: dict[int, RGBA] = field(default_factory=dict)

    def __post_init__(self):
        keys = sorted(self.names)
        if not keys or keys != list(range(len(keys))):
            raise ValueError(
                f"label set {self.name!r} must number its labels 0..K-1 with 0 = background; got {keys}"
            )
        if not self.colors:
            colors = {0: (0.0, 0.0, 0.0, 0.0)}
            for value in keys[1:]:
                colors[value] = _PALETTE[(value - 1) % len(_PALETTE)]
            object.__setattr__(self, "colors", colors)

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.names)

    @property
    def organs(self) -> dict[int, str]:
        """Foreground labels only (value -> name)."""
        return {k: v for k, v in self.names.items() if k != 0}

    def color_dict(self) -> dict:
        """Colour mapping for ``napari.utils.colormaps.DirectLabelColormap``."""
        mapping = {int(k): tuple(v) for k, v in self.colors.items()}
        mapping[None] = (0.0, 0.0, 0.0, 0.0)
        return mapping

    def to_dict(self) -> dict:
        """JSON-serialisable form (keys become strings)."""
        return {
            "name": self.name,
            "names": {str(k): v for k, v in self.names.items()},
            "colors": {str(k): list(v) for k, v in self.colors.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSet":
        names = {int(k): str(v) for k, v in data["names"].items()}
        colors = {int(k): tuple(float(c) for c in v) for k, v in data.get("colors", {}).items()}
        return cls(name=str(data.get("name", "custom")), names=names, colors=colors)

    @classmethod
    def numbered(cls, max_value: int) -> "LabelSet":
        """A custom set naming the values 1..``max_value`` ``"label 1"``, ``"label 2"``, ..."""
        return cls.custom([f"label {v}" for v in range(1, int(max_value) + 1)])

    @classmethod
    def from_table(cls, table: dict, name: str = "embedded") -> "LabelSet":
        """A set from ``{value: (name, rgba)}`` (e.g. a NIfTI label table); gaps get ``label k``."""
        top = max((int(v) for v in table), default=0)
        names = {0: "background"}
        names.update({v: f"label {v}" for v in range(1, top + 1)})
        colors = dict(cls.numbered(top).colors)
        for value, (organ, rgba) in table.items():
            if int(value) > 0:
                names[int(value)] = organ or f"label {value}"
                colors[int(value)] = tuple(float(c) for c in rgba)
        return cls(name=name, names=names, colors=colors)

    @classmethod
    def custom(cls, organ_names: list[str], name: str = "custom") -> "LabelSet":
        """A label set from foreground names in label order (1, 2, ...)."""
        names = {0: "background"}
        names.update({i + 1: n for i, n in enumerate(organ_names)})
        return cls(name=name, names=names)


SYNAPSE = LabelSet(
    name="synapse",
    names={
        0: "background",
        1: "aorta",
        2: "gallbladder",
        3: "kidney left",
        4: "kidney right",
        5: "liver",
        6: "pancreas",
        7: "spleen",
        8: "stomach",
    },
    colors={
        0: (0.0, 0.0, 0.0, 0.0),
        1: (0.90, 0.10, 0.10, 1.0),
        2: (0.20, 0.80, 0.20, 1.0),
        3: (0.15, 0.45, 0.95, 1.0),
        4: (0.00, 0.80, 0.85, 1.0),
        5: (0.80, 0.50, 0.20, 1.0),
        6: (0.95, 0.85, 0.10, 1.0),
        7: (0.60, 0.25, 0.85, 1.0),
        8: (1.00, 0.55, 0.70, 1.0),
    },
)

ACDC = LabelSet(
    name="acdc",
    names={0: "background", 1: "right ventricle", 2: "myocardium", 3: "left ventricle"},
    colors={
        0: (0.0, 0.0, 0.0, 0.0),
        1: (0.15, 0.45, 0.95, 1.0),
        2: (0.20, 0.80, 0.20, 1.0),
        3: (0.90, 0.10, 0.10, 1.0),
    },
)

BUILTIN: dict[str, LabelSet] = {"synapse": SYNAPSE, "acdc": ACDC}


def get_label_set(name: str) -> LabelSet:
    """A built-in label set by name (``synapse`` or ``acdc``)."""
    try:
        return BUILTIN[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown label set {name!r}; built-in sets are {sorted(BUILTIN)}, "
            "or make one with LabelSet.custom([...])"
        ) from None


# ------------------------------------------------------------ SNOMED CT codes
@dataclass(frozen=True)
class SegmentCode:
    """SNOMED CT (``SCT``) coding of one segment, as DICOM-SEG and Slicer terminology want it.

    ``category`` / ``type`` / ``modifier`` are ``(code value, code meaning)``; the
    modifier (e.g. Left) is optional.
    """

    category: tuple[str, str]
    type: tuple[str, str]
    modifier: tuple[str, str] | None = None


_ANATOMY = ("91723000", "Anatomical Structure")
_TISSUE = ("85756007", "Tissue")
_KIDNEY = ("64033007", "Kidney")

SNOMED_CODES: dict[str, dict[int, SegmentCode]] = {
    "synapse": {
        1: SegmentCode(_ANATOMY, ("15825003", "Aorta")),
        2: SegmentCode(_ANATOMY, ("28231008", "Gallbladder")),
        3: SegmentCode(_ANATOMY, _KIDNEY, ("7771000", "Left")),
        4: SegmentCode(_ANATOMY, _KIDNEY, ("24028007", "Right")),
        5: SegmentCode(_ANATOMY, ("10200004", "Liver")),
        6: SegmentCode(_ANATOMY, ("15776009", "Pancreas")),
        7: SegmentCode(_ANATOMY, ("78961009", "Spleen")),
        8: SegmentCode(_ANATOMY, ("69695003", "Stomach")),
    },
    "acdc": {
        1: SegmentCode(_ANATOMY, ("53085002", "Right ventricle")),
        2: SegmentCode(_ANATOMY, ("49848007", "Left Ventricle Myocardium")),
        3: SegmentCode(_ANATOMY, ("87878005", "Left ventricle")),
    },
}


def segment_code(label_set: LabelSet, value: int) -> SegmentCode:
    """The SNOMED coding of ``value``: exact codes for the built-in sets (when the names
    match), else the generic ``Tissue`` category and type."""
    builtin = BUILTIN.get(label_set.name)
    if builtin is not None and builtin.names == label_set.names:
        return SNOMED_CODES[builtin.name][int(value)]
    return SegmentCode(_TISSUE, _TISSUE)


def check_label_values(labels, slices=None, label_set: LabelSet | None = None, max_value: int = 255):
    """Integer label values, checked before any cast (a cast would wrap 257 to 1 and truncate 4.995 to 4).

    Args:
        labels: ``(z, y, x)`` array of any numeric dtype.
        slices: axial slice indices to check (default: all).
        label_set: when given, every value must be one of its labels.
        max_value: the largest value allowed without a label set (uint8 label maps: 255).

    Returns:
        ``labels`` as ``uint8`` (``uint16`` if ``max_value`` > 255).  Raises ``ValueError``
        naming the first bad value and its slice.
    """
    import numpy as np

    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"labels must be numbers, got dtype {labels.dtype}")
    zs = range(labels.shape[0]) if slices is None else [int(z) for z in slices]
    allowed = set(label_set.names) if label_set is not None else None
    top = max(allowed) if allowed else max_value
    for z in zs:
        if not 0 <= z < labels.shape[0]:
            continue  # the caller reports slices out of range
        plane = labels[z]
        bad = ~np.isfinite(plane) if plane.dtype.kind == "f" else np.zeros(plane.shape, bool)
        if plane.dtype.kind == "f":
            bad |= np.isfinite(plane) & (plane != np.round(plane))
        bad |= (plane < 0) | (plane > top)
        if allowed is not None and not bad.any():
            bad |= ~np.isin(plane, list(allowed))
        if bad.any():
            value = plane[bad].flat[0]
            value = "NaN" if value != value else (f"{value:g}" if plane.dtype.kind == "f" else str(int(value)))
            where = f"label set {label_set.name!r} (0..{top})" if label_set is not None else f"integer labels 0..{top}"
            raise ValueError(f"slice {z} holds label value {value}, not one of the {where}; fix the labels "
                             "(e.g. resample them with nearest neighbour) and try again")
    with np.errstate(invalid="ignore"):  # slices outside ``slices`` are not truth; NaN there casts to 0
        return labels.astype(np.uint8 if top <= 255 else np.uint16)
