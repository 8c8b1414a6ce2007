"""The recovery folder without napari: layer folders, the user's "saved" marker, pruning (napari_medseg.recovery)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from napari_medseg import recovery

DAY = 86400.0


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "recovery"


def test_layer_slugs_are_distinct_safe_and_per_frame():
    names = ["ct labels", "ct_labels", "ct/labels", "../x", "a" * 200, "", "ct labels (recovered)"]
    slugs = [recovery.layer_slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    assert all("/" not in s and not s.startswith(".") and len(s) <= 60 + 9 for s in slugs)
    assert recovery.layer_slug("ct labels").startswith("ct_labels-")
    assert recovery.layer_slug("cine labels", 2).endswith("-t2")
    assert recovery.layer_slug("cine labels", 2) != recovery.layer_slug("cine labels", 3)


def test_autosave_folders_lists_cases_of_both_layouts(root):
    h = "ab" * 32
    assert recovery.autosave_folders(h) == []
    for sub in ("", "x-1", "y-2"):
        (root / h / sub).mkdir(parents=True, exist_ok=True)
    (root / h / "case.json").write_text("{}")  # the first layout: one case per image
    (root / h / "y-2" / "case.json").write_text("{}")
    assert recovery.autosave_folders(h) == [root / h, root / h / "y-2"]  # x-1 has no case.json


def test_saved_marker_is_compared_with_the_snapshot_time(root):
    folder = recovery.case_folder("cd" * 32, "ct labels")
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    info = {"saved_at": (t0 + timedelta(seconds=9)).isoformat(), "snapshot_at": t0.isoformat()}
    assert recovery.last_saved(folder) is None and recovery.autosave_is_newer(info, None)
    recovery.mark_saved(folder, "/somewhere/mine.nii.gz", t0 + timedelta(seconds=1))
    marker = recovery.last_saved(folder)
    assert marker["path"] == "/somewhere/mine.nii.gz"
    assert not recovery.autosave_is_newer(info, marker)  # written after the save, but taken before it
    assert recovery.autosave_is_newer({**info, "snapshot_at": (t0 + timedelta(seconds=2)).isoformat()}, marker)
    assert recovery.autosave_is_newer({"saved_at": (t0 + timedelta(seconds=2)).isoformat()}, marker)  # older autosaves
    (folder / recovery.SAVED_JSON).write_text("{not json")
    assert recovery.last_saved(folder) is None  # a damaged marker means "never saved": the offer is made


def test_marker_only_inside_the_recovery_folder(root, tmp_path):
    outside = tmp_path / "elsewhere"
    assert recovery.mark_saved(outside, "x.nii.gz") is None
    assert not outside.exists()
    assert recovery.mark_saved(root / ".." / ".." / "elsewhere", "x.nii.gz") is None


def _image_folder(root, i: int, age_days: float, now: float):
    folder = root / f"{i:064x}" / "labels-00000000"
    folder.mkdir(parents=True)
    (folder / "case.json").write_text(json.dumps({"i": i}))
    stamp = now - age_days * DAY
    for path in (folder / "case.json", folder, folder.parent):
        os.utime(path, (stamp, stamp))
    return folder.parent


def test_prune_keeps_the_newest_and_the_young_and_those_in_use(root):
    now = time.time()
    young = [_image_folder(root, i, age_days=i, now=now) for i in range(1, 26)]  # 1..25 days: all kept
    old = [_image_folder(root, 100 + i, age_days=31 + i, now=now) for i in range(5)]
    used = old[-1]  # the oldest, but its image is open
    foreign = root / "not-a-hash"
    foreign.mkdir()
    os.utime(foreign, (now - 400 * DAY,) * 2)
    removed = recovery.prune(in_use={used.name}, now=now)
    assert sorted(removed) == sorted(old[:-1])
    assert all(p.is_dir() for p in young) and used.is_dir() and foreign.is_dir()

    for p in young[:20]:
        os.utime(p / "labels-00000000" / "case.json", (now - 60 * DAY,) * 2)
        os.utime(p / "labels-00000000", (now - 60 * DAY,) * 2)
        os.utime(p, (now - 60 * DAY,) * 2)
    removed = recovery.prune(keep_newest=3, now=now)  # newest first: young[20:] (21-25 days), used (35), 20 x 60 days
    assert used in removed and all(p.is_dir() for p in young[20:])  # 3 newest kept, the other 2 are under 30 days
    assert not any(p.is_dir() for p in young[:20])


def test_prune_age_counts_the_newest_file_inside(root):
    now = time.time()
    folder = _image_folder(root, 7, age_days=90, now=now)
    os.utime(folder / "labels-00000000" / "case.json", (now - DAY,) * 2)  # saved yesterday
    assert recovery.prune(keep_newest=0, now=now) == [] and folder.is_dir()


def test_prune_refuses_bad_arguments(root):
    with pytest.raises(ValueError, match="keep_newest >= 0"):
        recovery.prune(keep_newest=-1)
    with pytest.raises(ValueError, match="keep_days >= 0"):
        recovery.prune(keep_days=float("nan"))


def test_prune_names_a_folder_it_cannot_remove(root, monkeypatch):
    now = time.time()
    stuck = _image_folder(root, 3, age_days=90, now=now)

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(recovery.shutil, "rmtree", refuse)
    errors = []
    assert recovery.prune(keep_newest=0, now=now, errors=errors) == []
    assert len(errors) == 1 and str(stuck) in errors[0] and "Permission denied" in errors[0]
    with pytest.warns(recovery.RecoveryWarning, match="could not remove the old recovery folder"):
        recovery.prune(keep_newest=0, now=now)


def test_the_napari_writer_marks_the_layers_autosave(root, tmp_path, sample_ct):
    from napari_medseg._writer import write_labels
    from napari_medseg.io import read_volume
    from napari_medseg.io.layers import labels_layer_kwargs
    from napari_medseg.labels import SYNAPSE

    vol = read_volume(sample_ct)
    labels = (vol.array > 100).astype("uint8")
    attributes = labels_layer_kwargs(labels, vol.geometry, SYNAPSE, "ct labels")
    folder = recovery.case_folder("ef" * 32, "ct labels")
    attributes["metadata"]["medseg_recovery"] = {"folder": str(folder), "frame": None}
    before = datetime.now(timezone.utc)
    (written,) = write_labels(str(tmp_path / "mine.nii.gz"), labels, attributes)
    marker = recovery.last_saved(folder)
    assert marker["path"] == written and recovery.parse_time(marker["saved_at"]) >= before

    outside = tmp_path / "not-recovery"
    for stamp in ({"folder": str(outside)}, "not a dict", {"folder": 7}):
        attributes["metadata"]["medseg_recovery"] = stamp
        (again,) = write_labels(str(tmp_path / "again.nii.gz"), labels, attributes)  # the save itself stands
        assert again.endswith("again.nii.gz")
    assert not outside.exists()
