"""Case state (labels + ledger + status) round-trips, survives kills mid-write, and reads without the plugin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_medseg.casestate import CaseStateError, load_case, read_case_info, save_case
from napari_medseg.hashing import voxel_hash
from napari_medseg.labels import SYNAPSE
from napari_medseg.retrain.ledger import SliceLedger, SliceState


def _case(shape=(6, 10, 12), seed=0):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 9, size=shape).astype(np.uint8)
    ledger = SliceLedger(shape)
    ledger.record_model_output(pred, slices=range(shape[0] - 1))  # last slice never predicted
    labels = pred.copy()
    labels[-1] = 0  # not segmented yet
    labels[2, 3:6, 4:8] = 7  # an edit
    ledger.update_from(labels)
    ledger.mark_reviewed(4)
    return labels, ledger


def test_voxel_hash_is_content_shape_and_dtype():
    a = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    assert voxel_hash(a) == voxel_hash(a.copy()) == voxel_hash(np.asfortranarray(a))
    assert len(voxel_hash(a)) == 64
    assert voxel_hash(a) != voxel_hash(a.astype(np.int32))
    assert voxel_hash(a) != voxel_hash(a.reshape(3, 2, 4))
    b = a.copy()
    b[1, 2, 3] += 1
    assert voxel_hash(a) != voxel_hash(b)


def test_voxel_hash_chunks_do_not_change_it(monkeypatch):
    import napari_medseg.hashing as hashing

    a = np.random.default_rng(1).integers(0, 1000, size=(9, 7, 5)).astype(np.int16)
    whole = voxel_hash(a)
    monkeypatch.setattr(hashing, "CHUNK_BYTES", 7 * 5 * 2 * 2)  # two slices per chunk
    assert voxel_hash(a) == whole


def test_ledger_state_round_trip():
    labels, ledger = _case()
    again = SliceLedger.from_state(ledger.to_state(), labels)
    assert again.edited == ledger.edited == [2]
    assert again.reviewed == ledger.reviewed == [4]
    assert again.locked == ledger.locked == [2, 4]
    assert [again.state(z) for z in range(6)] == [ledger.state(z) for z in range(6)]
    assert again.state(5) is SliceState.UNLABELLED


def test_save_load_round_trip(tmp_path):
    labels, ledger = _case()
    save_case(tmp_path / "c", labels, ledger, image_hash="abc", source_path="/x/ct.nii.gz",
              label_set=SYNAPSE.to_dict(), status="reviewed", extra={"dice": [0.5, 0.8]})
    case = load_case(tmp_path / "c")
    np.testing.assert_array_equal(case.labels, labels)
    assert case.labels.dtype == np.uint8
    assert case.ledger.edited == [2] and case.ledger.reviewed == [4]
    assert case.status == "reviewed" and case.image_hash == "abc" and case.source_path == "/x/ct.nii.gz"
    assert case.label_set == SYNAPSE.to_dict() and case.extra == {"dice": [0.5, 0.8]}


def test_case_json_counts_the_voxels_the_user_changed(tmp_path):
    labels, ledger = _case()
    model_output = ledger.to_state()["model_output"]
    expected = int((labels != model_output).sum())
    assert 0 < expected <= 12  # the 3 x 4 edit on slice 2, less any voxel the model had as 7 already
    strokes = np.zeros_like(labels)
    strokes[1, 2, 2:7] = 3
    save_case(tmp_path / "c", labels, ledger, image_hash="abc", scribbles=strokes)
    info = read_case_info(tmp_path / "c")
    assert info["changed_voxels"] == expected and info["stroke_voxels"] == 5
    assert "changed_voxels" not in load_case(tmp_path / "c").extra  # a field of its own, not an extra


def test_slice_uncertainty_round_trip_and_shape_check(tmp_path):
    labels, ledger = _case()
    scores = np.linspace(0, 1, labels.shape[0])
    save_case(tmp_path / "c", labels, ledger, image_hash="abc", slice_uncertainty=scores)
    np.testing.assert_allclose(load_case(tmp_path / "c").slice_uncertainty, scores, rtol=1e-6)
    save_case(tmp_path / "c", labels, ledger, image_hash="abc")  # a later save without it: none, not stale
    assert load_case(tmp_path / "c").slice_uncertainty is None
    with pytest.raises(ValueError, match="slice_uncertainty shape"):
        save_case(tmp_path / "c", labels, ledger, image_hash="abc", slice_uncertainty=scores[:-1])


def test_layout_is_readable_by_a_script(tmp_path):
    labels, ledger = _case()
    save_case(tmp_path, labels, ledger, image_hash="h")
    save_case(tmp_path, labels, ledger, image_hash="h")
    meta = json.loads((tmp_path / "case.json").read_text())
    assert meta["revision"] == 2 and meta["locked"] == [2, 4] and meta["status"] == "in progress"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.json", meta["state_file"]]  # old npz removed
    npz = np.load(tmp_path / meta["state_file"])
    np.testing.assert_array_equal(npz["labels"], labels)
    assert npz["reviewed"].tolist() == [False] * 4 + [True, False]


def test_bad_inputs_say_why(tmp_path):
    labels, ledger = _case()
    with pytest.raises(ValueError, match="status must be one of"):
        save_case(tmp_path, labels, ledger, image_hash="h", status="finished")
    with pytest.raises(ValueError, match="0..255"):
        save_case(tmp_path, labels.astype(np.int32) + 300, ledger, image_hash="h")
    with pytest.raises(ValueError, match="does not match"):
        save_case(tmp_path, labels[:3], ledger, image_hash="h")
    with pytest.raises(CaseStateError, match="case.json is missing"):
        load_case(tmp_path / "nothing")
    save_case(tmp_path, labels, ledger, image_hash="h")
    state = tmp_path / read_case_info(tmp_path)["state_file"]
    state.write_bytes(b"damaged")
    with pytest.raises(CaseStateError, match="missing or damaged"):
        load_case(tmp_path)


KILLER = textwrap.dedent("""
    import sys, numpy as np
    from napari_medseg.casestate import save_case
    from napari_medseg.retrain.ledger import SliceLedger
    folder, shape = sys.argv[1], (40, 256, 256)
    ledger = SliceLedger(shape)
    i = 0
    while True:
        i += 1
        labels = np.random.default_rng(i).integers(0, 9, size=shape).astype(np.uint8)  # incompressible: slow writes
        labels[0, 0, 0] = i % 256
        save_case(folder, labels, ledger, image_hash=str(i))
        print(i, flush=True)
""")


def test_sigkill_mid_write_leaves_a_complete_state(tmp_path):
    folder = tmp_path / "case"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.0, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(folder)], stdout=subprocess.PIPE, env=env, text=True)
        assert proc.stdout.readline().strip()  # at least one save completed
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        case = load_case(folder)  # never a half-written or mismatched state
        i = int(case.image_hash)
        assert case.labels[0, 0, 0] == i % 256
        expected = np.random.default_rng(i).integers(0, 9, size=(40, 256, 256)).astype(np.uint8)
        expected[0, 0, 0] = i % 256
        np.testing.assert_array_equal(case.labels, expected)


def test_scribbles_round_trip_and_are_optional(tmp_path):
    labels, ledger = _case()
    strokes = np.zeros(labels.shape, np.uint8)
    strokes[1, 2:4, 2:9] = 5  # an organ stroke
    strokes[3, 0, :] = 9  # a background stroke (K + 1)
    save_case(tmp_path / "c", labels, ledger, image_hash="h", scribbles=strokes)
    state = load_case(tmp_path / "c")
    np.testing.assert_array_equal(state.scribbles, strokes)
    assert state.scribbles.dtype == np.uint8 and "scribbled" not in state.extra
    assert read_case_info(tmp_path / "c")["scribbled"] == [1, 3]
    np.testing.assert_array_equal(state.labels, labels)  # the labels are kept apart from the strokes

    save_case(tmp_path / "c", labels, ledger, image_hash="h")  # a later save without scribbles
    assert load_case(tmp_path / "c").scribbles is None and "scribbled" not in read_case_info(tmp_path / "c")
    with pytest.raises(ValueError, match="scribbles shape"):
        save_case(tmp_path / "c", labels, ledger, image_hash="h", scribbles=strokes[:-1])
    with pytest.raises(ValueError, match="case scribbles must lie in 0..255"):
        save_case(tmp_path / "c", labels, ledger, image_hash="h", scribbles=strokes.astype(np.int16) * 100)
