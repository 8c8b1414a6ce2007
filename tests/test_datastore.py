import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_medseg.retrain.datastore import CorrectionStore
from napari_medseg.labels import SYNAPSE, ACDC


def _slices(n=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 100, size=(n, 10, 12)).astype(np.float32)
    labels = rng.integers(0, 9, size=(n, 10, 12)).astype(np.uint8)
    return images, labels


def test_add_list_load_roundtrip(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    images, labels = _slices()
    entry = store.add(images, labels, [3, 7], spacing=(3, 1, 1), source="patient-a", label_set=SYNAPSE.to_dict(), modality="ct")
    assert [e.id for e in store.entries()] == [entry.id]
    assert entry.slice_indices == [3, 7] and entry.num_slices == 2
    got_images, got_labels = store.load(entry)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert not any(p.name.startswith(".incoming") for p in (tmp_path / "store").iterdir())


def test_replay_filters_label_set_and_source(tmp_path):
    store = CorrectionStore(tmp_path)
    store.add(*_slices(), [0, 1], spacing=(1, 1, 1), source="a", label_set=SYNAPSE.to_dict())
    store.add(*_slices(seed=1), [2, 3], spacing=(1, 1, 1), source="b", label_set=SYNAPSE.to_dict())
    images, labels = _slices(seed=2)
    store.add(images, labels % 4, [4, 5], spacing=(1, 1, 1), source="c", label_set=ACDC.to_dict())
    replay = store.replay("synapse", exclude_source="b")
    assert [e.source for *_, e in replay] == ["a"]
    assert len(store.entries("acdc")) == 1


def test_prune(tmp_path):
    store = CorrectionStore(tmp_path)
    ids = [store.add(*_slices(seed=i), [i, i + 1], spacing=(1, 1, 1), source=f"s{i}", label_set=SYNAPSE.to_dict()).id for i in range(3)]
    assert store.prune(source="s1") == [ids[1]]
    assert store.prune(keep_last=1) == [ids[0]]
    assert [e.id for e in store.entries()] == [ids[2]]


def test_bad_input_rejected(tmp_path):
    store = CorrectionStore(tmp_path)
    images, labels = _slices()
    with pytest.raises(ValueError, match="shape"):
        store.add(images, labels[:1], [0, 1], spacing=(1, 1, 1), source="x", label_set=SYNAPSE.to_dict())
    images[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.add(images, labels, [0, 1], spacing=(1, 1, 1), source="x", label_set=SYNAPSE.to_dict())
    assert store.entries() == []


def test_export_nnunet(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    images, labels = _slices()
    store.add(images, labels, [3, 7], spacing=(3.0, 0.8, 0.7), source="a", label_set=SYNAPSE.to_dict(), modality="ct")
    out = store.export_nnunet(tmp_path / "export", "synapse")
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["labels"]["liver"] == 5
    label_files = sorted((out / "labelsTr").glob("*.nii.gz"))
    image_files = sorted((out / "imagesTr").glob("*_0000.nii.gz"))
    assert len(label_files) == len(image_files) == 2
    img = nib.load(label_files[0])
    assert img.shape == (12, 10, 1)
    np.testing.assert_allclose(img.header.get_zooms()[:2], (0.7, 0.8))
    np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, 0].T, labels[0])
    with pytest.raises(FileExistsError):
        store.export_nnunet(out, "synapse")


# ---- content identity: one voxel hash, entries deduplicated by image and slice -----------------------------

def test_voxel_hash_is_content_shape_and_dtype():
    from napari_medseg.hashing import voxel_hash

    a = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    assert voxel_hash(a) == voxel_hash(a.copy())
    assert voxel_hash(a[:, ::-1][:, ::-1]) == voxel_hash(a)  # a strided view hashes as its values
    assert voxel_hash(np.asfortranarray(a)) == voxel_hash(a)
    assert voxel_hash(a.astype(np.int32)) != voxel_hash(a)
    assert voxel_hash(a.reshape(4, 3, 2)) != voxel_hash(a)
    b = a.copy()
    b[1, 2, 3] += 1
    assert voxel_hash(b) != voxel_hash(a)


def test_same_image_merges_newer_slice_wins(tmp_path):
    store = CorrectionStore(tmp_path)
    images, labels = _slices(3)
    first = store.add(images[:2], labels[:2], [3, 7], spacing=(1, 1, 1), source="a.nii", label_set=SYNAPSE.to_dict(),
                      modality="ct", image_hash="h1")
    newer = np.full_like(labels[2], 4)
    second = store.add(images[2:], newer[None], [7], spacing=(1, 1, 1), source="copy of a.nii",
                       label_set=SYNAPSE.to_dict(), modality="ct", image_hash="h1")
    [entry] = store.entries()
    assert entry.id == second.id != first.id and entry.slice_indices == [3, 7]
    got_images, got_labels = store.load(entry)
    np.testing.assert_array_equal(got_labels[0], labels[0])  # slice 3 kept
    np.testing.assert_array_equal(got_labels[1], newer)  # slice 7: the newer correction replaced the older
    np.testing.assert_array_equal(got_images[1], images[2])
    # the same image under another label set, and another image, are separate entries
    store.add(images[:1], labels[:1] % 4, [3], spacing=(1, 1, 1), source="a.nii", label_set=ACDC.to_dict(),
              modality="ct", image_hash="h1")
    store.add(images[:1], labels[:1], [3], spacing=(1, 1, 1), source="b.nii", label_set=SYNAPSE.to_dict(),
              modality="ct", image_hash="h2")
    assert sorted((e.image_hash, e.label_set["name"]) for e in store.entries()) == [
        ("h1", "acdc"), ("h1", "synapse"), ("h2", "synapse")]


def test_plan_replay_same_label_set_and_modality_other_images(tmp_path):
    store = CorrectionStore(tmp_path)
    add = lambda src, h, **kw: store.add(*_slices(2), [1, 2], spacing=(1, 1, 1), source=src, image_hash=h,
                                         **{"label_set": SYNAPSE.to_dict(), "modality": "ct", **kw})
    add("a", "ha")
    add("b", "hb")
    add("current", "hc")
    add("mr", "hm", modality="mr")
    renamed = dict(SYNAPSE.to_dict(), names={**SYNAPSE.to_dict()["names"], "5": "hepar"})  # same name, other table
    add("other-table", "ho", label_set=renamed)
    plan = store.plan_replay(SYNAPSE.to_dict(), "ct", exclude_hash="hc")
    assert sorted(e.source for e in plan.entries) == ["a", "b"]
    assert (plan.slices, plan.patients) == (4, 2)
    assert plan.skipped == {"other label set": 1, "other modality": 1, "of this image": 1}
    assert plan.describe() == (f"store {tmp_path}: replays 4 slices of 2 patients "
                               "(skipped: 1 of this image, 1 other label set, 1 other modality)")
    assert [e.source for *_, e in store.replay(plan)] == ["a", "b"]


def test_replay_of_an_explicit_entry_with_another_label_set_is_one_line_error(tmp_path):
    store = CorrectionStore(tmp_path)
    images, labels = _slices()
    ok = store.add(images, labels, [0, 1], spacing=(1, 1, 1), source="a", label_set=SYNAPSE.to_dict(), modality="ct")
    other = store.add(images, labels % 4, [0, 1], spacing=(1, 1, 1), source="b", label_set=ACDC.to_dict(), modality="ct")
    assert [e.id for e in store.plan_replay(SYNAPSE.to_dict(), "ct", ids=[ok.id]).entries] == [ok.id]
    with pytest.raises(ValueError, match=f"entry {other.id} has label set 'acdc'") as err:
        store.plan_replay(SYNAPSE.to_dict(), "ct", ids=[ok.id, other.id])
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="is ct, the model is mr"):
        store.plan_replay(SYNAPSE.to_dict(), "mr", ids=[ok.id])
    with pytest.raises(ValueError, match="no usable datastore entry nope"):
        store.plan_replay(SYNAPSE.to_dict(), "ct", ids=["nope"])


# ---- balanced sampling: at least half of every batch from the current patient ----------------------------

@pytest.mark.parametrize("n_current, n_replay, fraction, batch", [(1, 50, 0.5, 8), (3, 40, 0.5, 7), (2, 9, 0.3, 1),
                                                                   (5, 0, 0.5, 8), (4, 100, 0.0, 6)])
def test_balanced_sampler_every_batch_at_least_half_current(n_current, n_replay, fraction, batch):
    import torch

    from napari_medseg.retrain.sampling import BalancedSampler

    sampler = BalancedSampler(n_current, n_replay, fraction)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = sampler.draw(batch, gen)
        assert idx.shape == (batch,) and 0 <= int(idx.min()) and int(idx.max()) < n_current + n_replay
        assert 2 * int((idx < n_current).sum()) >= batch
    if n_replay and fraction and batch > 1:
        assert int((idx >= n_current).sum()) == min(round(fraction * batch), batch // 2)


def test_cli_list_names_scribbled_slices(tmp_path, capsys):
    from napari_medseg.cli import main

    store = CorrectionStore(tmp_path / "store")
    images, labels = _slices(2)
    labels[labels == 255] = 0
    labels[0, :3] = 255
    store.add(images, labels, [3, 8], spacing=(3, 1, 1), source="a", label_set=SYNAPSE.to_dict(), modality="ct")
    store.add(images, labels % 9, [3, 8], spacing=(3, 1, 1), source="b", label_set=SYNAPSE.to_dict(), modality="ct")
    assert main(["datastore", "list", "--store", str(store.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("  a  [1 scribbled: replayed only by --replay-entry]") and lines[2].endswith("  b")


def test_replay_plan_leaves_recorded_scribbled_slices_out(tmp_path):
    """Entries record their slices with unlabelled pixels; the automatic plan counts them out before loading,
    ids replay them as they are, and entries written before the record are sorted out when loaded."""
    import json

    store = CorrectionStore(tmp_path / "store")
    images, labels = _slices(3)
    labels[labels == 255] = 0
    labels[1, :2] = 255  # slice 7 scribbled
    mixed = store.add(images, labels, [4, 7, 9], spacing=(3, 1, 1), source="a", label_set=SYNAPSE.to_dict(), modality="ct")
    assert mixed.unlabelled_slices == [7]
    strokes = np.full_like(labels[:1], 255)
    strokes[0, 0, :3] = 5
    only = store.add(images[:1], strokes, [2], spacing=(3, 1, 1), source="b", label_set=SYNAPSE.to_dict(), modality="ct")
    plan = store.plan_replay(SYNAPSE.to_dict(), "ct")
    assert [e.id for e in plan.entries] == [mixed.id] and plan.slices == 2 and plan.patients == 1
    assert plan.partial_left_out == {mixed.id: 1, only.id: 1}
    assert plan.describe().endswith("replays 2 slices of 1 patient; left out 2 scribbled slices "
                                    "(replay uses fully labelled ones)")
    assert store.plan_replay(SYNAPSE.to_dict(), "ct", ids=[only.id]).slices == 1  # named by id: as it is
    meta = json.loads((mixed.path / "meta.json").read_text())
    del meta["unlabelled_slices"]  # an entry written before the record
    (mixed.path / "meta.json").write_text(json.dumps(meta))
    plan = store.plan_replay(SYNAPSE.to_dict(), "ct")
    assert plan.slices == 3 and plan.partial_left_out == {only.id: 1}
    [(kept_images, kept_labels, _)] = plan.keep_fully_labelled(store.replay(plan))
    assert len(kept_labels) == 2 and not (kept_labels == 255).any() and plan.slices == 2


def test_balanced_sampler_replays_only_the_given_positions():
    import torch

    from napari_medseg.retrain.sampling import BalancedSampler

    sampler = BalancedSampler(3, 0, 0.5, replay_positions=[4, 6])
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([sampler.draw(8, gen) for _ in range(100)])
    assert set(drawn[drawn >= 3].tolist()) == {4, 6} and int((drawn < 3).sum()) == 400
    assert int((BalancedSampler(3, 0, 0.5, replay_positions=[]).draw(8, gen) < 3).sum()) == 8  # none left: all current


def test_replay_fraction_above_half_is_refused():
    from napari_medseg.retrain.config import FinetuneConfig

    assert FinetuneConfig(replay_fraction=0.5).replay_fraction == 0.5
    with pytest.raises(ValueError, match="at most 0.5"):
        FinetuneConfig(replay_fraction=0.8)


def test_finetune_batches_are_at_least_half_current_patient(monkeypatch):
    import torch

    from napari_medseg.models import TINY_CONFIGS, build_model
    from napari_medseg.preprocess import Preprocessing
    from napari_medseg.progress import drive
    from napari_medseg.retrain import sampling
    from napari_medseg.retrain.config import FinetuneConfig
    from napari_medseg.retrain.finetune import FinetuneData, finetune

    drawn = []
    original = sampling.BalancedSampler.draw
    monkeypatch.setattr(sampling.BalancedSampler, "draw",
                        lambda self, b, g: drawn.append((self.n_current, original(self, b, g))) or drawn[-1][1])
    torch.manual_seed(0)
    model = build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"])
    images, labels = _slices(2)
    labels[:, :4] = 0
    r_images, r_labels = _slices(30, seed=3)  # 15x more replayed slices than current ones
    data = FinetuneData(images=list(images * 3), labels=list(labels), preprocessing=Preprocessing("ct", resize_policy="native"),
                        replay=[(r_images, r_labels)])
    drive(finetune(model, data, FinetuneConfig(steps=4, batch_size=6, device="cpu", augment=False)))
    assert len(drawn) == 4
    for n_current, idx in drawn:
        assert n_current == 2 and 2 * int((idx < n_current).sum()) >= 6 and int((idx >= n_current).sum()) == 3


# ---- damage: named, skipped with a warning, never blocks the others ---------------------------------------

def _damaged_store(tmp_path):
    """Three good entries and three damaged ones: bad meta.json, corrupt slices.npz, missing slices.npz."""
    store = CorrectionStore(tmp_path / "store")
    entries = [store.add(*_slices(seed=i), [i, i + 1], spacing=(1, 1, 1), source=f"s{i}", label_set=SYNAPSE.to_dict(),
                         modality="ct", image_hash=f"h{i}") for i in range(6)]
    (entries[1].path / "meta.json").write_text("{not json")
    (entries[2].path / "slices.npz").write_bytes(b"PK\x03\x04 truncated")
    (entries[3].path / "slices.npz").unlink()
    return store, [entries[i] for i in (0, 4, 5)], [entries[i] for i in (1, 2, 3)]


def test_damaged_entries_are_named_and_skipped(tmp_path):
    store, good, bad = _damaged_store(tmp_path)
    with pytest.warns(UserWarning) as caught:
        listed = store.entries()
    messages = [str(w.message) for w in caught]
    assert [e.id for e in listed] == sorted([good[0].id, good[1].id, good[2].id, bad[1].id])  # npz read only on use
    assert any(str(bad[0].path / "meta.json") in m and "bad meta.json" in m for m in messages)
    assert any(str(bad[2].path / "slices.npz") in m and "missing" in m for m in messages)
    damaged = store.check()
    assert [d.path.name for d in damaged] == [e.id for e in bad]
    assert "corrupt slices.npz" in damaged[1].reason
    # replay skips them with a warning naming the file, and replays the rest
    with pytest.warns(UserWarning, match="corrupt slices.npz"):
        plan = store.plan_replay(SYNAPSE.to_dict(), "ct")
        replayed = store.replay(plan)
    assert sorted(e.id for *_, e in replayed) == sorted(e.id for e in good)
    assert plan.skipped == {"damaged": 2}
    with pytest.raises(ValueError, match=f"{bad[1].path / 'slices.npz'}: corrupt"):
        store.load(bad[1])


def test_prune_and_export_work_around_damage(tmp_path):
    store, good, bad = _damaged_store(tmp_path)
    with pytest.warns(UserWarning):
        out = store.export_nnunet(tmp_path / "export", "synapse")
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 6  # 3 good entries x 2 slices
    with pytest.warns(UserWarning, match="bad meta.json"):
        assert store.prune(keep_last=3) == [good[0].id]  # the damaged ones are named, not counted, not deleted
    assert store.prune(ids=[bad[0].id, bad[2].id]) == sorted([bad[0].id, bad[2].id])  # damaged ones by folder name
    assert [e.id for e in store.entries()] == [bad[1].id, good[1].id, good[2].id]


@pytest.mark.parametrize("keep_last", [-1, 0, 1.5, True])
def test_prune_validates_keep_last(tmp_path, keep_last):
    store = CorrectionStore(tmp_path)
    store.add(*_slices(), [0, 1], spacing=(1, 1, 1), source="a", label_set=SYNAPSE.to_dict())
    with pytest.raises(ValueError, match="keep_last must be an integer >= 1"):
        store.prune(keep_last=keep_last)
    assert len(store.entries()) == 1


def _cli_error(capsys, code) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("medseg datastore: error:"), err
    return err


def test_cli_check_list_prune_with_damage(tmp_path, capsys):
    from napari_medseg.cli import main

    store, good, bad = _damaged_store(tmp_path)
    assert main(["datastore", "check", "--store", str(store.root)]) == 2
    out = capsys.readouterr().out
    assert "6 entries" in out and "3 damaged" in out and all(e.id in out for e in bad)
    assert main(["datastore", "list", "--store", str(store.root)]) == 0
    captured = capsys.readouterr()
    assert "4 entries" in captured.out and str(bad[0].path / "meta.json") in captured.err
    assert main(["datastore", "prune", "--store", str(store.root), "--keep-last", "-1"]) == 2
    capsys.readouterr()
    assert main(["datastore", "prune", "--store", str(store.root), *sum((["--id", e.id] for e in bad), [])]) == 0
    capsys.readouterr()
    assert main(["datastore", "check", "--store", str(store.root)]) == 0
    assert "3 entries in" in capsys.readouterr().out


def test_cli_export_with_damaged_entries_warns_and_exports_the_rest(tmp_path, capsys):
    from napari_medseg.cli import main

    store, good, bad = _damaged_store(tmp_path)
    assert main(["datastore", "export", "--store", str(store.root), "-o", str(tmp_path / "export")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("medseg datastore: warning: skipped damaged datastore entry") for line in err)
    assert all(any(e.id in line for line in err) for e in bad)
    assert len(list((tmp_path / "export" / "labelsTr").glob("*.nii.gz"))) == 2 * len(good)


@pytest.mark.parametrize("kind", ["non_empty", "file", "read_only"])
def test_cli_export_refused_before_any_work(tmp_path, capsys, kind, monkeypatch):
    import os

    from napari_medseg.cli import main

    store, _, _ = _damaged_store(tmp_path)
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    elif kind == "non_empty":
        out.mkdir()
        (out / "mine.txt").write_text("mine")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out = ro / "export"
        real_access = os.access  # root may write anywhere: let the check see what a user sees
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro and mode & os.W_OK
                            else real_access(p, mode, **kw))
    err = _cli_error(capsys, main(["datastore", "export", "--store", str(store.root), "-o", str(out)]))
    assert str(out) in err or "ro" in err
    assert "damaged" not in err  # refused before the store was read
    if kind == "non_empty":
        assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_export_partial_labels_as_nnunet_ignore(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    images, labels = _slices()
    labels[0, :3] = 255  # not labelled
    entry = store.add(images, labels, [3, 7], spacing=(3, 1, 1), source="a", label_set=SYNAPSE.to_dict(), modality="ct")
    np.testing.assert_array_equal(store.load(entry)[1], labels)  # 255 kept as is
    [(_, replayed, _)] = store.replay(store.plan_replay(SYNAPSE.to_dict(), "ct"))
    assert (replayed[0, :3] == 255).all()
    out = store.export_nnunet(tmp_path / "export", "synapse")
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"]["ignore"] == 9 == max(dataset["labels"].values())
    first = nib.load(sorted((out / "labelsTr").glob("*z003.nii.gz"))[0])
    written = np.asarray(first.dataobj)[:, :, 0].T
    assert (written[:3] == 9).all() and np.array_equal(written[3:], labels[0, 3:])
    # without unlabelled pixels there is no ignore label
    clean = CorrectionStore(tmp_path / "clean")
    clean.add(*_slices(), [0, 1], spacing=(1, 1, 1), source="b", label_set=SYNAPSE.to_dict(), modality="ct")
    assert "ignore" not in json.loads((clean.export_nnunet(tmp_path / "e2", "synapse") / "dataset.json").read_text())["labels"]


# ---- medseg finetune: the store in use and what it replays are printed; re-runs never duplicate -----------

def test_cli_finetune_reruns_never_duplicate_and_print_the_store(sample_ct, sample_labels, tmp_path, capsys):
    import torch

    from napari_medseg.checkpoint import save_checkpoint
    from napari_medseg.cli import main
    from napari_medseg.io import read_volume
    from napari_medseg.models import TINY_CONFIGS, build_model
    from napari_medseg.preprocess import Preprocessing

    torch.manual_seed(0)
    tiny = save_checkpoint(tmp_path / "tiny.safetensors", build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"]),
                           label_set=SYNAPSE, preprocessing=Preprocessing(modality="ct", resize_policy="native"))
    store = CorrectionStore(tmp_path / "project-store")
    other = read_volume(sample_labels).array.astype(np.uint8)[[3, 4]]
    store.add(np.full((2, *other.shape[1:]), -50, np.float32), other, [3, 4], spacing=(3, 1, 1), source="patient-a",
              label_set=SYNAPSE.to_dict(), modality="ct", image_hash="another patient")
    (store.root / "broken").mkdir()
    (store.root / "broken" / "meta.json").write_text("{")  # a damaged entry never blocks a fine-tune
    args = ["finetune", "--image", str(sample_ct), "--labels", str(sample_labels), "--checkpoint", str(tiny.path),
            "--steps", "1", "--device", "cpu", "--store", str(store.root)]
    for run, slices in enumerate(["5,10", "10,14", "5"]):
        assert main(args + ["--slices", slices, "-o", str(tmp_path / f"run{run}.safetensors")]) == 0, capsys.readouterr().err
        out, err = capsys.readouterr()
        assert f"store {store.root}: replays 2 slices of 1 patient (skipped: 1 damaged" in out, out
        assert f"warning: skipped damaged datastore entry {store.root / 'broken' / 'meta.json'}: bad meta.json" in err, err
    mine = [e for e in store.entries() if e.image_hash != "another patient"]
    assert len(mine) == 1 and mine[0].slice_indices == [5, 10, 14]  # one entry for the image, no duplicates
    assert main(args + ["--slices", "5", "--no-replay", "-o", str(tmp_path / "off.safetensors")]) == 0
    assert f"store {store.root}: replay off (--no-replay)" in capsys.readouterr().out
    # an explicitly named entry of another label set is a one-line error
    acdc = store.add(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.uint8), [0], spacing=(1, 1, 1),
                     source="heart", label_set=ACDC.to_dict(),
                     modality="ct")
    code = main(args + ["--slices", "5", "--replay-entry", acdc.id, "-o", str(tmp_path / "x.safetensors")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "warning: skipped damaged" not in line]
    assert code == 2 and len(errors) == 1 and f"error: datastore entry {acdc.id} has label set 'acdc'" in errors[0], errors
    assert not (tmp_path / "x.safetensors").exists()
