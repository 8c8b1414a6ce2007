"""Checkpoint format: safetensors + JSON header metadata, bit-exact round trip, clear refusals."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_medseg.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from napari_medseg.labels import LabelSet, get_label_set
from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.models.dinov2_weights import RandomBackboneWarning
from napari_medseg.preprocess import Preprocessing

SIZES = {"udfa": (42, 56), "dcaunet": (64, 96)}


def tiny(name, num_classes=4):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        model = build_model(name, num_classes, **TINY_CONFIGS[name])
    # make BatchNorm statistics non-trivial so the round trip covers buffers
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 1, *SIZES[name]))
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One ACDC checkpoint per model."""
    out = {}
    folder = tmp_path_factory.mktemp("ckpt")
    for name in SIZES:
        model = tiny(name)
        path = folder / f"{name}.safetensors"
        info = save_checkpoint(
            path, model, label_set=get_label_set("acdc"), preprocessing=Preprocessing(modality="mr", resize_policy="native"),
            provenance={"data": "test data", "extra": {"epochs": 3}},
        )
        out[name] = (model, path, info)
    return out


@pytest.mark.parametrize("name", sorted(SIZES))
def test_round_trip_is_bit_exact(saved, name):
    model, path, info = saved[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomBackboneWarning)  # no random-backbone warning on load
        loaded, info2 = load_checkpoint(path, label_set="acdc", model_name=name)
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x = torch.rand(2, 1, *SIZES[name])
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert info2 == info
    assert info.model_name == name and info.model_config == model.config
    assert info.label_set == get_label_set("acdc")
    assert info.preprocessing == Preprocessing(modality="mr", resize_policy="native")
    assert info.provenance["data"] == "test data" and info.provenance["extra"] == {"epochs": 3}
    assert info.provenance["parent_sha256"] is None and info.provenance["date"].startswith("20")
    assert len(info.sha256) == 64


def test_udfa_checkpoint_contains_the_frozen_backbone(saved):
    model, path, _ = saved["udfa"]
    keys = set(load_file(str(path)))
    backbone = {f"backbone.{k}" for k in model.backbone.state_dict()}
    assert backbone and backbone <= keys


def test_metadata_sits_in_the_safetensors_header(saved):
    from safetensors import safe_open

    _, path, _ = saved["dcaunet"]
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["medseg"])
    assert meta["format_version"] == 1
    assert meta["model"] == {"name": "dcaunet", "config": saved["dcaunet"][0].config}
    assert meta["label_set"]["names"]["3"] == "left ventricle"
    assert meta["label_set"]["colors"]["1"] == list(get_label_set("acdc").colors[1])
    assert meta["preprocessing"]["modality"] == "mr"


def test_loading_never_unpickles(saved, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", forbidden)
    import pickle

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    load_checkpoint(saved["dcaunet"][1])


def test_parent_chain(saved, tmp_path):
    model, parent_path, parent_info = saved["dcaunet"]
    child = save_checkpoint(
        tmp_path / "child.safetensors", model, label_set=get_label_set("acdc"),
        preprocessing=parent_info.preprocessing, parent=parent_path,
    )
    assert child.provenance["parent_sha256"] == parent_info.sha256
    grandchild = save_checkpoint(
        tmp_path / "grandchild.safetensors", model, label_set=get_label_set("acdc"),
        preprocessing=parent_info.preprocessing, parent=child,
    )
    assert read_checkpoint_info(grandchild.path).provenance["parent_sha256"] == child.sha256


def test_wrong_label_set_refused_with_what_it_contains(saved):
    path = saved["udfa"][1]
    with pytest.raises(CheckpointError, match=r"checkpoint has 4 classes \(label set 'acdc'\) but label set 'synapse' has 9; pick label set 'acdc' or retrain"):
        load_checkpoint(path, label_set="synapse")
    renamed = LabelSet.custom(["a", "b", "c"], name="mine")
    with pytest.raises(CheckpointError, match="right ventricle"):
        load_checkpoint(path, label_set=renamed)


def test_wrong_model_refused(saved):
    with pytest.raises(CheckpointError, match="holds a 'udfa' model, not 'dcaunet'"):
        load_checkpoint(saved["udfa"][1], model_name="dcaunet")


def test_save_refuses_overwrite_and_is_atomic(saved, tmp_path):
    model, _, info = saved["dcaunet"]
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, label_set="acdc", preprocessing=info.preprocessing)
    first = path.read_bytes()
    with pytest.raises(CheckpointError, match="already exists.*overwrite=True"):
        save_checkpoint(path, model, label_set="acdc", preprocessing=info.preprocessing)
    assert path.read_bytes() == first
    with pytest.raises(CheckpointError, match="JSON"):  # failure while preparing: old file intact
        save_checkpoint(path, model, label_set="acdc", preprocessing=info.preprocessing,
                        provenance={"bad": object()}, overwrite=True)
    assert path.read_bytes() == first
    save_checkpoint(path, model, label_set="acdc", preprocessing=info.preprocessing,
                    provenance={"data": "v2"}, overwrite=True)
    assert read_checkpoint_info(path).provenance["data"] == "v2"
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no temp files left
    with pytest.raises(CheckpointError, match="9"):
        save_checkpoint(tmp_path / "x.safetensors", model, label_set="synapse", preprocessing=info.preprocessing)
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_checkpoint(tmp_path / "x.pth", model, label_set="acdc", preprocessing=info.preprocessing)


def test_foreign_and_damaged_files(saved, tmp_path):
    model, path, _ = saved["dcaunet"]
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a napari-medseg checkpoint"):
        load_checkpoint(plain)

    pickled = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, pickled)
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint_info(pickled)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"hello world, this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(garbage)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def _rewrite(path, out, edit_tensors=None, edit_meta=None):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["medseg"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    save_file(tensors, str(out), metadata={"medseg": json.dumps(meta)})
    return out


def test_missing_unexpected_and_misshapen_tensors_listed(saved, tmp_path):
    path = saved["dcaunet"][1]
    missing = _rewrite(path, tmp_path / "a.safetensors", lambda t: t.pop("head.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \['head.weight'\]"):
        load_checkpoint(missing)
    extra = _rewrite(path, tmp_path / "b.safetensors", lambda t: t.update(surprise=torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['surprise'\]"):
        load_checkpoint(extra)
    shape = _rewrite(path, tmp_path / "c.safetensors", lambda t: t.update({"head.bias": torch.zeros(7)}))
    with pytest.raises(CheckpointError, match="head.bias"):
        load_checkpoint(shape)
    newer = _rewrite(path, tmp_path / "d.safetensors", edit_meta=lambda m: m.update(format_version=99))
    with pytest.raises(CheckpointError, match="newer"):
        read_checkpoint_info(newer)
    unknown = _rewrite(path, tmp_path / "e.safetensors", edit_meta=lambda m: m["model"].update(name="resnet"))
    with pytest.raises(CheckpointError, match="available models"):
        load_checkpoint(unknown)
