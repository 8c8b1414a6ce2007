"""ITK-SNAP label description files (the text file *Segmentation > Import Label Descriptions* reads)."""

from __future__ import annotations

from ..labels import LabelSet

_HEADER = """################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
################################################
"""


def itksnap_label_text(label_set: LabelSet) -> str:
    """The label description text for ``label_set`` (0 = ``Clear Label``, colours as 0..255)."""
    lines = [_HEADER.rstrip("\n"), f'{0:>5} {0:>5} {0:>4} {0:>4} {0:>8} {0:>2} {0:>2}    "Clear Label"']
    for value in sorted(label_set.organs):
        r, g, b, a = label_set.colors[value]
        rgb = [int(round(255 * min(max(float(c), 0.0), 1.0))) for c in (r, g, b)]
        name = label_set.names[value].replace('"', "'")
        lines.append(f'{value:>5} {rgb[0]:>5} {rgb[1]:>4} {rgb[2]:>4} {float(a):>8.2f} {1:>2} {1:>2}    "{name}"')
    return "\n".join(lines) + "\n"


def read_itksnap_labels(text: str) -> dict[int, tuple[str, tuple[int, int, int], float]]:
    """``{value: (name, (r, g, b), alpha)}`` parsed from a label description file's text."""
    table = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, _, rest = line.partition('"')
        fields = head.split()
        if len(fields) != 7:
            raise ValueError(f"not an ITK-SNAP label line (7 numbers, then a quoted name): {line!r}")
        table[int(fields[0])] = (rest.rstrip('"'), tuple(int(f) for f in fields[1:4]), float(fields[4]))
    return table
