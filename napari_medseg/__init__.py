"""napari-medseg: organ segmentation for CT and MRI in napari.

Importing this package is cheap: torch, timm and Qt load only when a widget,
reader or command needs them.
"""

__version__ = "0.1.0"
