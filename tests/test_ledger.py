import numpy as np
import pytest

from napari_medseg.retrain.ledger import SliceLedger, SliceState


def make(shape=(6, 8, 8)):
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=shape).astype(np.uint8)
    ledger = SliceLedger(shape)
    return ledger, pred


def test_fresh_ledger_is_unlabelled_and_unlocked():
    ledger, _ = make()
    assert ledger.state(0) is SliceState.UNLABELLED
    assert ledger.locked == [] and ledger.unlocked == list(range(6))


def test_edit_detected_by_diff_and_locked():
    ledger, pred = make()
    ledger.record_model_output(pred)
    labels = pred.copy()
    labels[2, 3, 3] = (labels[2, 3, 3] + 1) % 3
    changed = ledger.update_from(labels)
    assert changed == [2]
    assert ledger.state(2) is SliceState.EDITED
    assert ledger.edited == [2] and ledger.locked == [2]
    assert 2 not in ledger.unlocked


def test_undo_back_to_model_output_unlocks():
    ledger, pred = make()
    ledger.record_model_output(pred)
    labels = pred.copy()
    labels[4] = 0
    ledger.update_from(labels)
    assert ledger.edited == [4]
    ledger.update_from(pred)
    assert ledger.edited == [] and ledger.state(4) is SliceState.PREDICTED


def test_reviewed_is_locked_and_reversible():
    ledger, pred = make()
    ledger.record_model_output(pred)
    ledger.mark_reviewed(1)
    assert ledger.state(1) is SliceState.REVIEWED and ledger.locked == [1]
    ledger.mark_reviewed(1, False)
    assert ledger.locked == []


def test_resegmentation_keeps_edited_slices_edited():
    ledger, pred = make()
    ledger.record_model_output(pred)
    labels = pred.copy()
    labels[0] = 2
    ledger.update_from(labels)
    new_pred = (pred + 1) % 3
    ledger.record_model_output(new_pred)  # default: unlocked slices only
    labels[1:] = new_pred[1:]
    assert ledger.update_from(labels) == []
    assert ledger.edited == [0]
    assert ledger.counts() == {"unlabelled": 0, "predicted": 5, "edited": 1, "reviewed": 0}


def test_painting_from_scratch_counts_as_edit():
    ledger = SliceLedger((3, 4, 4))
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[1, 0, 0] = 5
    ledger.update_from(labels)
    assert ledger.edited == [1]


def test_shape_and_index_checks():
    ledger, _ = make()
    with pytest.raises(ValueError, match="does not match"):
        ledger.update_from(np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(IndexError):
        ledger.mark_reviewed(99)
    with pytest.raises(ValueError, match="3D"):
        SliceLedger((4, 4))


def test_metadata_summary():
    ledger, pred = make()
    ledger.record_model_output(pred)
    ledger.mark_reviewed(5)
    labels = pred.copy()
    labels[3] = 0
    ledger.update_from(labels)
    assert ledger.to_metadata() == {"edited": [3], "reviewed": [5], "locked_slices": [3, 5]}
