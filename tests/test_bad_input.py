"""Issue 11: bad inputs never lose work, never give silent wrong results, and fail in one line.

Each test names the defect it reproduces (numbers from the issue).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _segment_helpers import save_tiny
from napari_medseg.cli import main
from napari_medseg.labels import SYNAPSE

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
needs_non_root = pytest.mark.skipif(ROOT, reason="root ignores file permissions")


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _small_ct(path: Path, seed: int = 0) -> Path:
    """A (64, 64, 6) int16 CT-like NIfTI (fast to segment with a tiny model)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-1000, 400, size=(64, 64, 6)).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0]))
    img.set_qform(img.affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("bad_ck") / "ck.safetensors", "dcaunet", seed=4)


def _one_line_error(capsys, code, name="segment") -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"medseg {name}: error:"), err
    assert "Traceback" not in err
    return err


# ---- 1: a batch never overwrites an input, and its output names are unique -------------------------------

def test_batch_output_into_input_folder_keeps_both_inputs(ck, tmp_path, capsys):
    d = tmp_path / "cases"
    d.mkdir()
    _small_ct(d / "a.nii", seed=1)
    _small_ct(d / "a.nii.gz", seed=2)
    before = {p.name: _digest(p) for p in d.iterdir()}
    assert main(["segment", str(d), "-o", str(d), "-c", str(ck)]) == 0, capsys.readouterr().err
    assert {p.name: _digest(p) for p in d.iterdir() if p.name in before} == before
    assert {"a_nii.nii.gz", "a_nii_gz.nii.gz"} <= {p.name for p in d.iterdir()}


def test_batch_nrrd_and_mha_of_one_case_get_two_outputs(ck, tmp_path, capsys):
    import SimpleITK as sitk

    d = tmp_path / "cases"
    d.mkdir()
    for i, ext in enumerate(("nrrd", "mha")):
        arr = np.random.default_rng(i).integers(-1000, 400, size=(6, 64, 64)).astype(np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(d / f"case.{ext}"))
    out = tmp_path / "out"
    assert main(["segment", str(d), "-o", str(out), "-c", str(ck)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case_mha.nii.gz", "case_nrrd.nii.gz"]


def test_overwrite_never_replaces_an_input(ck, tmp_path, capsys):
    ct = _small_ct(tmp_path / "ct.nii.gz")
    before = _digest(ct)
    code = main(["segment", str(ct), "-o", str(ct), "-c", str(ck), "--overwrite"])
    err = _one_line_error(capsys, code)
    assert "input of this run" in err and _digest(ct) == before


# ---- 2 + 14: the napari writer never replaces a source image; its refusals say why ------------------------

def test_napari_writer_refuses_a_source_image(sample_ct, tmp_path):
    import shutil

    from napari.layers import Labels
    from napari.plugins import _initialize_plugins

    from napari_medseg._writer import SaveRefused

    _initialize_plugins()  # what napari.Viewer() does: discover the npe2 writers
    from napari_medseg.io import layer_kwargs, read_volume

    ct = tmp_path / "ct.nii.gz"
    shutil.copy(sample_ct, ct)
    before = _digest(ct)
    plain = Labels(np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(SaveRefused, match="not written by napari-medseg"):
        plain.save(str(ct), plugin="napari-medseg")
    # a Labels layer read from a labels file (its source is that file, not the CT)
    lb = tmp_path / "lb.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(nib.load(ct).shape, np.uint8), nib.load(ct).affine), str(lb))
    vol = read_volume(lb)
    layer = Labels(vol.array, **{k: v for k, v in layer_kwargs(vol).items() if k in ("metadata", "scale", "translate", "name")})
    with pytest.raises(SaveRefused, match="not written by napari-medseg"):
        layer.save(str(ct), plugin="napari-medseg")
    assert _digest(ct) == before and not (tmp_path / "ct.json").exists()
    # its own earlier output may be replaced (saving twice is normal)
    out = tmp_path / "seg.nii.gz"
    assert layer.save(str(out), plugin="napari-medseg") == [str(out)]
    assert layer.save(str(out), plugin="napari-medseg") == [str(out)]


def test_napari_image_writer_saves_nifti_in_the_source_geometry_and_says_why_it_refuses(sample_ct, dicom_dir, tmp_path):
    import shutil

    from napari.layers import Image
    from napari.plugins import _initialize_plugins

    from napari_medseg._writer import SaveRefused
    from napari_medseg.io import layer_kwargs, read_volume

    _initialize_plugins()
    ct = tmp_path / "ct.nii.gz"
    shutil.copy(sample_ct, ct)
    before = _digest(ct)
    for source in (ct, dicom_dir):  # a NIfTI, and a DICOM series saved as NIfTI
        vol = read_volume(source)
        layer = Image(vol.array, **{k: v for k, v in layer_kwargs(vol).items()
                                    if k in ("metadata", "scale", "translate", "name")})
        out = tmp_path / f"{Path(source).name.split('.')[0]}_image.nii.gz"
        assert layer.save(str(out), plugin="napari-medseg") == [str(out)]
        back = read_volume(out)
        np.testing.assert_array_equal(back.array, vol.array)  # same voxels, same canonical order
        np.testing.assert_allclose(back.geometry.world_affine(), vol.geometry.world_affine(), atol=1e-4)  # same mm
        assert layer.save(str(out), plugin="napari-medseg") == [str(out)]  # its own output may be replaced
    np.testing.assert_allclose(nib.load(tmp_path / "ct_image.nii.gz").affine, nib.load(ct).affine, atol=1e-5)
    vol = read_volume(ct)
    layer = Image(vol.array, **{k: v for k, v in layer_kwargs(vol).items() if k in ("metadata", "scale", "translate")})
    with pytest.raises(SaveRefused, match="refusing to overwrite the source image"):
        layer.save(str(ct), plugin="napari-medseg")
    other = tmp_path / "someone.nii.gz"
    shutil.copy(sample_ct, other)
    with pytest.raises(SaveRefused, match="not written by napari-medseg"):
        layer.save(str(other), plugin="napari-medseg")
    with pytest.raises(SaveRefused, match="one frame"):
        Image(np.zeros((2, 3, 4, 5), np.float32)).save(str(tmp_path / "cine.nii.gz"), plugin="napari-medseg")
    assert _digest(ct) == before
    # the uncertainty map (float16) is saved as float32
    unc = Image(np.full(vol.array.shape, 0.25, np.float16), metadata=layer.metadata, scale=layer.scale,
                translate=layer.translate)
    assert unc.save(str(tmp_path / "unc.nii.gz"), plugin="napari-medseg")
    assert nib.load(tmp_path / "unc.nii.gz").get_data_dtype() == np.float32


# ---- 3: prune validates its arguments ---------------------------------------------------------------------

def test_prune_keep_last_negative_is_refused(tmp_path, capsys):
    from napari_medseg.retrain.datastore import CorrectionStore

    store = CorrectionStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    for i in range(2):
        store.add(rng.normal(size=(1, 8, 8)).astype(np.float32), np.ones((1, 8, 8), np.uint8), [i],
                  spacing=(1, 1, 1), source=f"s{i}", label_set=SYNAPSE.to_dict())
    for bad in (["--keep-last", "-1"], ["--keep-last", "0"], ["--id", "nope"]):
        code = main(["datastore", "prune", "--store", str(store.root), *bad])
        assert "keep-last" in _one_line_error(capsys, code, "datastore") or bad[0] == "--id"
    assert len(store.entries()) == 2


@pytest.mark.parametrize("kind", ["non_empty", "file"])
def test_datastore_export_refusals_are_one_line(kind, tmp_path, capsys):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    code = main(["datastore", "export", "--store", str(tmp_path / "store"), "-o", str(out)])
    _one_line_error(capsys, code, "datastore")
    assert (out.read_text() == "x") if kind == "file" else (out / "keep.txt").read_text() == "mine"


# ---- 4: label values are checked, never cast blindly ------------------------------------------------------

@pytest.mark.parametrize(
    "dtype, value, shown",
    [(np.uint16, 257, "257"), (np.float32, 4.995, "4.995"), (np.float32, np.nan, "NaN"), (np.int16, -1, "-1")],
)
def test_label_values_name_the_value_and_slice(dtype, value, shown):
    from napari_medseg.labels import check_label_values

    labels = np.zeros((5, 4, 4), dtype)
    labels[3, 1, 2] = value
    with pytest.raises(ValueError, match=rf"slice 3 holds label value {shown}\b"):
        check_label_values(labels)
    assert check_label_values(labels, slices=[0, 1]).dtype == np.uint8  # only the named slices count


def test_label_values_outside_the_label_set():
    from napari_medseg.labels import check_label_values

    labels = np.zeros((2, 4, 4), np.uint8)
    labels[1, 0, 0] = 9
    with pytest.raises(ValueError, match="slice 1 holds label value 9.*synapse"):
        check_label_values(labels, label_set=SYNAPSE)
    labels[1, 0, 0] = 8
    assert check_label_values(labels, label_set=SYNAPSE).max() == 8


def test_finetune_refuses_float_labels_before_training(ck, tmp_path, capsys):
    ct = _small_ct(tmp_path / "ct.nii.gz")
    img = nib.load(ct)
    lab = np.zeros(img.shape, np.float32)
    lab[10:20, 10:20, 2] = 4.995
    nib.save(nib.Nifti1Image(lab, img.affine), str(tmp_path / "lab.nii.gz"))
    out = tmp_path / "new.safetensors"
    code = main(["finetune", "--image", str(ct), "--labels", str(tmp_path / "lab.nii.gz"), "--slices", "2",
                 "--checkpoint", str(ck), "--steps", "2", "--store", str(tmp_path / "store"), "-o", str(out)])
    err = _one_line_error(capsys, code, "finetune")
    assert "4.995" in err and "slice" in err
    assert not out.exists() and not (tmp_path / "store").exists()


# ---- 5: damaged weights are refused ------------------------------------------------------------------------

def _damaged_copy(ck: Path, dst: Path, damage) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(ck), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k, v in tensors.items() if v.is_floating_point() and v.ndim > 1)
    tensors[key] = damage(tensors[key])
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("kind", ["nan", "int8"])
def test_damaged_weights_are_refused(kind, ck, tmp_path, capsys):
    import torch

    damage = {"nan": lambda t: t.fill_(float("nan")), "int8": lambda t: t.to(torch.int8)}[kind]
    bad = _damaged_copy(ck, tmp_path / f"{kind}.safetensors", damage)
    ct = _small_ct(tmp_path / "ct.nii.gz")
    code = main(["segment", str(ct), "-o", str(tmp_path / "seg.nii.gz"), "-c", str(bad)])
    err = _one_line_error(capsys, code)
    assert ("NaN" in err) if kind == "nan" else ("int8" in err and "not a float" in err)
    assert not (tmp_path / "seg.nii.gz").exists()


def test_safetensors_entry_without_offsets(ck, tmp_path):
    import json
    import struct

    from napari_medseg.checkpoint import CheckpointError, read_checkpoint_info

    raw = ck.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    key = next(k for k in header if k != "__metadata__")
    del header[key]["data_offsets"]
    text = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    with pytest.raises(CheckpointError, match="data_offsets"):
        read_checkpoint_info(bad)


# ---- 6 + 8: NIfTI header checks ----------------------------------------------------------------------------

def test_zero_pixdim_warns(tmp_path):
    from napari_medseg.io import VolumeWarning, read_volume

    img = nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4))
    img.set_qform(np.eye(4), code=1)
    img.set_sform(None, code=0)
    path = tmp_path / "z.nii"
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    raw[88:92] = np.float32(0.0).tobytes()  # pixdim[3] (nibabel would rewrite it from the qform on save)
    path.write_bytes(bytes(raw))
    with pytest.warns(VolumeWarning, match=r"pixdim\[3\]=0"):
        read_volume(path)


@pytest.mark.parametrize("shape, dtype", [((1200, 1200, 1400), np.int16), ((1290, 1290, 1290), np.float64)])
def test_tiny_gzip_claiming_a_huge_volume_is_refused_fast(shape, dtype, tmp_path):
    from napari_medseg.io import VolumeReadError, read_volume

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(np.eye(4), code=1)
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * 64))
    assert path.stat().st_size < 200
    t0 = time.monotonic()
    with pytest.raises(VolumeReadError, match="more than a .*compressed file can hold"):
        read_volume(path)
    assert time.monotonic() - t0 < 2.0


def test_tiny_mha_claiming_a_huge_volume_is_refused(tmp_path):
    import zlib

    from napari_medseg.io import VolumeReadError, read_volume

    path = tmp_path / "huge.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 1200 1200 1400\nElementType = MET_SHORT\n"
                     b"CompressedData = True\nElementDataFile = LOCAL\n" + zlib.compress(b"\0" * 100))
    with pytest.raises(VolumeReadError, match="compressed file can hold"):
        read_volume(path)


def test_view_refuses_a_missing_path_before_napari_starts(tmp_path, capsys):
    code = main(["view", str(tmp_path / "nope.nii.gz")])
    assert "does not exist" in _one_line_error(capsys, code, "view")


def test_header_larger_than_free_memory_is_refused(tmp_path, monkeypatch):
    import napari_medseg.io.nifti as nifti
    from napari_medseg.io import VolumeReadError, read_volume

    path = _small_ct(tmp_path / "ct.nii")
    monkeypatch.setattr(nifti, "available_memory", lambda: 1000)
    with pytest.raises(VolumeReadError, match="memory"):
        read_volume(path)


# ---- 9: one-line errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["existing_folder", "under_file", "frame", "bad_batch_size", "checkpoint_dir"])
def test_segment_refusals_are_one_line_and_early(case, ck, tmp_path, capsys):
    ct = _small_ct(tmp_path / "ct.nii.gz")
    (tmp_path / "folder.nii.gz").mkdir()
    (tmp_path / "afile").write_text("x")
    args = {
        "existing_folder": ["-o", str(tmp_path / "folder.nii.gz"), "-c", str(ck)],
        "under_file": ["-o", str(tmp_path / "afile" / "seg.nii.gz"), "-c", str(ck)],
        "frame": ["-o", str(tmp_path / "seg.nii.gz"), "-c", str(ck), "--frame", "99"],
        "bad_batch_size": ["-o", str(tmp_path / "seg.nii.gz"), "-c", str(ck), "--batch-size", "0"],
        "checkpoint_dir": ["-o", str(tmp_path / "seg.nii.gz"), "-c", str(tmp_path)],
    }[case]
    code = main(["segment", str(ct), *args])
    _one_line_error(capsys, code)
    assert "->" not in capsys.readouterr().out
    assert not (tmp_path / "seg.nii.gz").exists()


def test_frame_out_of_range_is_one_line(ck, tmp_path, capsys):
    rng = np.random.default_rng(0)
    cine = rng.integers(-1000, 400, size=(64, 64, 6, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(cine, np.diag([0.8, 0.8, 3.0, 1.0])), str(tmp_path / "cine.nii.gz"))
    code = main(["segment", str(tmp_path / "cine.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"), "-c", str(ck),
                 "--frame", "99"])
    assert "frame 99 out of range" in _one_line_error(capsys, code) and not (tmp_path / "seg.nii.gz").exists()


@needs_non_root
def test_read_only_output_folder_is_refused_before_work(ck, tmp_path, capsys):
    ct = _small_ct(tmp_path / "ct.nii.gz")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main(["segment", str(ct), "-o", str(ro / "seg.nii.gz"), "-c", str(ck)])
        assert "not writable" in _one_line_error(capsys, code)
    finally:
        ro.chmod(0o755)


def test_unexpected_error_is_one_line_and_debug_shows_traceback(monkeypatch, capsys):
    import napari_medseg.commands.view as view

    def boom(args):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(view, "run", boom)
    err = _one_line_error(capsys, main(["view"]), "view")
    assert "RuntimeError: something broke" in err
    assert main(["view", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("MEDSEG_DEBUG", "1")
    assert main(["view"]) == 2
    assert "Traceback" in capsys.readouterr().err


# ---- 10 + 11: existing outputs, and refusals before the work ----------------------------------------------

def test_existing_output_and_its_sidecar_are_kept(ck, tmp_path, capsys):
    ct = _small_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "ref.nii.gz"
    out.write_bytes(b"reference labels")
    code = main(["segment", str(ct), "-o", str(out), "-c", str(ck)])
    assert "already exists" in _one_line_error(capsys, code) and out.read_bytes() == b"reference labels"
    out2, side = tmp_path / "new.nii.gz", tmp_path / "new.json"
    side.write_text("{}")
    code = main(["segment", str(ct), "-o", str(out2), "-c", str(ck)])
    assert "new.json" in _one_line_error(capsys, code) and not out2.exists() and side.read_text() == "{}"
    assert main(["segment", str(ct), "-o", str(out2), "-c", str(ck), "--overwrite"]) == 0
    assert nib.load(out2).shape == (64, 64, 6)


@pytest.mark.parametrize("name", ["exists.safetensors", "model.pt"])
def test_finetune_output_refused_before_training(name, ck, tmp_path, capsys):
    ct = _small_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / name
    if name.startswith("exists"):
        out.write_bytes(b"old")
    img = nib.load(ct)
    lab = np.zeros(img.shape, np.uint8)
    lab[20:40, 20:40, 2] = 5  # valid truth: without the early check, 60 s of training would run first
    nib.save(nib.Nifti1Image(lab, img.affine), str(tmp_path / "lab.nii.gz"))
    t0 = time.monotonic()
    code = main(["finetune", "--image", str(ct), "--labels", str(tmp_path / "lab.nii.gz"), "--slices", "2", "--checkpoint", str(ck),
                 "--time-budget", "60", "--store", str(tmp_path / "store"), "-o", str(out)])
    _one_line_error(capsys, code, "finetune")
    assert time.monotonic() - t0 < 30  # refused before the 60 s budget
    assert not (tmp_path / "store").exists()


# ---- 12: a batch tries every input; temp files are not inputs ---------------------------------------------

def test_batch_continues_past_a_bad_volume_and_skips_temp_files(ck, tmp_path, capsys):
    d = tmp_path / "cases"
    d.mkdir()
    _small_ct(d / "a.nii.gz", seed=1)
    (d / "b.nii.gz").write_bytes(b"")  # 0 bytes
    _small_ct(d / "c.nii.gz", seed=3)
    (d / ".c.nii.gz.partial-x1y2.nii.gz").write_bytes(b"")  # left by a killed write
    out = tmp_path / "out"
    code = main(["segment", str(d), "-o", str(out), "-c", str(ck)])
    err = _one_line_error(capsys, code)
    assert "1 of 3 inputs failed" in err and "b.nii.gz" in err and "partial" not in err
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz", "c.nii.gz"]


def test_temp_file_is_not_read_as_a_volume(tmp_path):
    from napari_medseg.io import VolumeReadError, read_volume

    tmp = _small_ct(tmp_path / ".seg.nii.gz.partial-abc.nii.gz")
    with pytest.raises(VolumeReadError, match="temporary file"):
        read_volume(tmp)


# ---- 14: messages that say what is wrong -------------------------------------------------------------------

def test_affine_mismatch_is_not_shown_as_two_equal_shapes(ck, tmp_path, capsys):
    ct = _small_ct(tmp_path / "ct.nii.gz")
    img = nib.load(ct)
    shifted = img.affine.copy()
    shifted[:3, 3] += 25.0
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), shifted), str(tmp_path / "lab.nii.gz"))
    code = main(["finetune", "--image", str(ct), "--labels", str(tmp_path / "lab.nii.gz"), "--slices", "2",
                 "--checkpoint", str(ck), "--steps", "2", "-o", str(tmp_path / "n.safetensors")])
    assert "same shape, different position" in _one_line_error(capsys, code, "finetune")


def test_symlink_loop_is_not_called_missing(tmp_path):
    from napari_medseg.io import VolumeReadError, read_volume

    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(loop)
    with pytest.raises(VolumeReadError) as info:
        read_volume(loop)
    assert "does not exist" not in str(info.value) and "symbolic links" in str(info.value)


@needs_non_root
def test_permission_error_is_not_called_corrupt(tmp_path):
    from napari_medseg.io import VolumeReadError, read_volume

    ct = _small_ct(tmp_path / "ct.nii.gz")
    ct.chmod(0)
    try:
        with pytest.raises(VolumeReadError, match="ermission denied") as info:
            read_volume(ct)
        assert "corrupt" not in str(info.value)
    finally:
        ct.chmod(0o644)


# ---- atomic writes under SIGTERM ---------------------------------------------------------------------------

def test_sigterm_during_a_write_removes_the_temp_file(tmp_path):
    target = tmp_path / "out.nii.gz"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from napari_medseg.atomic import atomic_write\n"
        "def write(tmp):\n"
        "    Path(tmp).write_bytes(b'half')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        f"atomic_write({str(target)!r}, write, suffix='.nii.gz')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case, reason", [("empty", "0 bytes"), ("temp", "temporary file")])
def test_viewer_open_says_why(case, reason, tmp_path):
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    path = {"empty": tmp_path / "a.nii.gz", "temp": tmp_path / ".s.nii.gz.partial-1.nii.gz"}[case]
    if case == "empty":
        path.write_bytes(b"")
    else:
        _small_ct(path)
    with pytest.raises(Exception, match=reason):
        ViewerModel().open(str(path), plugin="napari-medseg")


def test_evaluate_keeps_an_existing_csv(tmp_path, capsys):
    out = tmp_path / "metrics.csv"
    out.write_text("mine")
    code = main(["evaluate", "--predictions", str(tmp_path), "--images", str(tmp_path), "--labels", str(tmp_path),
                 "--label-set", "synapse", "--out", str(out)])
    assert "already exists" in _one_line_error(capsys, code, "evaluate") and out.read_text() == "mine"
