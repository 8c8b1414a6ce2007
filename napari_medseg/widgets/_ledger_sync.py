"""Keep a Labels layer's :class:`SliceLedger` next to the layer, shared by the Segment and Retrain docks.

The ledger lives in ``layer.metadata["medseg_ledger"]`` (an object, not
saved with the labels); ``layer.metadata["medseg"]["locked_slices"]`` mirrors
its locked slices as a plain list.  Because the ledger finds edits by
comparing with the model's output, edits made while no dock was open are
still found.
"""

from __future__ import annotations

import numpy as np

from napari_medseg.retrain.ledger import SliceLedger

KEY = "medseg_ledger"


def ledger_for(layer) -> SliceLedger:
    """The layer's ledger; a new one takes the layer's current labels as the model output."""
    ledger = layer.metadata.get(KEY)
    data = np.asarray(layer.data)
    if not isinstance(ledger, SliceLedger) or ledger.shape != data.shape:
        ledger = SliceLedger(data.shape)
        if data.any():
            ledger.record_model_output(data.astype(np.uint8, copy=False))
        layer.metadata[KEY] = ledger
    return ledger


def refresh(layer) -> SliceLedger:
    """Re-derive edits from the layer's data and mirror ``locked_slices`` into its metadata."""
    ledger = ledger_for(layer)
    ledger.update_from(np.asarray(layer.data))
    medseg = dict(layer.metadata.get("medseg", {}))
    medseg["locked_slices"] = ledger.locked
    layer.metadata["medseg"] = medseg
    return ledger


def record_prediction(layer, slices) -> SliceLedger:
    """Tell the ledger that ``slices`` of the layer now hold fresh model output."""
    ledger = ledger_for(layer)
    ledger.record_model_output(np.asarray(layer.data).astype(np.uint8, copy=False), slices)
    return refresh(layer)
