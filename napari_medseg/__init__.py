"""napari-medseg: organ segmentation for CT and MRI in napari.

Importing this package is cheap: torch, timm and Qt load only when a widget,
reader or command needs them.
"""

__version__ = "0.1.0"

from napari_medseg._torch_compat import cap_onednn_isa as _cap_onednn_isa

_cap_onednn_isa()  # before any bf16 matmul: AMX advertised but not enabled -> SIGILL


def enable_autosave(viewer):
    """Autosave and crash-recovery offers for ``viewer``, with no dock open; returns its autosaver.

    Images opened through the plugin (File > Open, ``viewer.open``, the sample) and the
    plugin's docks turn this on by themselves.  A script that adds its own arrays with
    ``viewer.add_image`` calls it, since napari imports a plugin only when one of its
    contributions is used: an image added before or after the call whose voxels have a
    newer autosave gets the *Restore* offer, and its labels layers are autosaved.
    """
    from napari_medseg.widgets._autosave import attach

    return attach(viewer)
