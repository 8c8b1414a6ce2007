"""napari-medseg: organ segmentation for CT and MRI in napari.

Importing this package is cheap: torch, timm and Qt load only when a widget,
reader or command needs them.
"""

__version__ = "0.1.0"

from napari_medseg._torch_compat import cap_onednn_isa as _cap_onednn_isa

_cap_onednn_isa()  # before any bf16 matmul: AMX advertised but not enabled -> SIGILL
