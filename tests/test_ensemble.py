"""Several models trained at once and averaged: the Ensemble module, its checkpoint, and fine-tuning
its members in threads (tiny models, CPU)."""

from __future__ import annotations

import copy
import json
import threading
import time

import numpy as np
import pytest
import torch

from napari_medseg.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info, save_checkpoint
from napari_medseg.labels import SYNAPSE
from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.models.ensemble import Ensemble, member_count, paused
from napari_medseg.preprocess import Preprocessing
from napari_medseg.retrain import members as members_module
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.retrain.datastore import CorrectionStore
from napari_medseg.retrain.finetune import FinetuneData, run_finetune
from napari_medseg.retrain.loop import StartFrom, default_members, retrain_volume
from napari_medseg.retrain.members import finetune_members

from training_fixtures import sample_arrays

SMALL = Preprocessing(modality="ct", resize_policy="fixed", input_size=64)
SLICES = [6, 11, 16, 21, 26]


def _tiny(seed):
    torch.manual_seed(seed)
    return build_model("dcaunet", 9, **TINY_CONFIGS["dcaunet"])


@pytest.fixture(scope="module")
def ct(sample_ct, sample_labels):
    image, labels, _ = sample_arrays(sample_ct, sample_labels)
    return image, labels


@pytest.fixture
def data(ct):
    image, labels = ct
    return FinetuneData([image[i] for i in SLICES], [labels[i] for i in SLICES], SMALL)


def _config(**changes):
    return FinetuneConfig(**{**dict(scope="all", steps=12, batch_size=2, lr=1e-2, device="cpu"), **changes})


def test_forward_is_the_log_of_the_members_mean_softmax():
    a, b = _tiny(0).eval(), _tiny(1).eval()
    ensemble = Ensemble([a, b]).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
        got = torch.softmax(ensemble(x), 1)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(expected, torch.softmax(a(x), 1), atol=1e-3)  # the members really differ
    assert member_count(ensemble) == 2 and member_count(a) == 1
    assert ensemble.size_multiple == a.size_multiple and ensemble.config == a.config


def test_members_must_share_family_and_config():
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble([_tiny(0)])
    other = build_model("dcaunet", 4, **TINY_CONFIGS["dcaunet"])
    with pytest.raises(ValueError, match="one model family and config"):
        Ensemble([_tiny(0), other])


def test_checkpoint_round_trip_keeps_every_member(tmp_path):
    ensemble = Ensemble([_tiny(0), _tiny(1)]).eval()
    info = save_checkpoint(tmp_path / "e.safetensors", ensemble, label_set=SYNAPSE, preprocessing=SMALL)
    assert info.members == 2 and info.format_version == 2
    single = save_checkpoint(tmp_path / "s.safetensors", _tiny(0), label_set=SYNAPSE, preprocessing=SMALL)
    assert single.members == 1 and single.format_version == 1  # older readers still read single models
    model, loaded = load_checkpoint(info.path)
    assert isinstance(model, Ensemble) and loaded.members == 2
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), ensemble(x), atol=1e-6)


@pytest.mark.parametrize("members", [0, 99])
def test_a_damaged_member_count_is_refused(tmp_path, members):
    from test_checkpoint import _rewrite

    info = save_checkpoint(tmp_path / "e.safetensors", Ensemble([_tiny(0), _tiny(1)]), label_set=SYNAPSE,
                           preprocessing=SMALL)
    bad = _rewrite(info.path, tmp_path / "bad.safetensors", edit_meta=lambda m: m["model"].update(members=members))
    with pytest.raises(CheckpointError, match="members must be 1..16"):
        read_checkpoint_info(bad)


def test_members_train_at_once_on_their_own_batches(data):
    first = _tiny(0)
    ensemble = Ensemble([first, copy.deepcopy(first)])  # the same start: only their batches can tell them apart
    before = [p.detach().clone() for p in ensemble.parameters()]
    reports = []
    result = run_finetune(finetune_members(ensemble, data, _config()), reports.append)
    assert [m.steps for m in result.members] == [12, 12] and result.steps == 24
    assert [r.step for r in reports] == list(range(1, 25)) and reports[-1].fraction == 1.0
    a, b = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in ensemble.members)
    assert not torch.equal(a, b), "both members took the same batches (FinetuneConfig.member ignored)"
    assert all(not torch.equal(p0, p1) for p0, p1 in zip(before[:3], list(ensemble.parameters())[:3]))
    assert result.evaluated == [0, 1, 2, 3, 4] and result.dice_on == "training"
    assert result.dice_after > result.dice_before and result.stopped_by == "steps"
    assert torch.get_num_threads() >= 1 and not [t for t in threading.enumerate() if t.name.startswith("medseg-member")]


def test_torch_threads_are_split_while_members_train_and_restored(data, monkeypatch):
    seen = []
    inner = members_module.finetune

    def recording(*args, **kwargs):
        seen.append((torch.get_num_threads(), default_members("dcaunet", "cpu", 150)))
        return inner(*args, **kwargs)

    monkeypatch.setattr(members_module, "finetune", recording)
    torch.set_num_threads(2)
    run_finetune(finetune_members(Ensemble([_tiny(0), _tiny(1)]), data, _config(steps=2)))
    # split while they train; the default for the next fine-tune still reads the count from before the split
    assert seen == [(1, 2), (1, 2)] and torch.get_num_threads() == 2
    assert members_module.cpu_threads() == 2 and default_members("dcaunet", "cpu", 150) == 2


def test_cancel_stops_every_member_and_keeps_their_best_weights(data):
    from napari_medseg.retrain.finetune import FinetuneResult

    ensemble = Ensemble([_tiny(0), _tiny(1)])
    result = FinetuneResult()
    gen = finetune_members(ensemble, data, _config(steps=10_000), result=result)
    for p in gen:
        if p.step >= 6:
            break
    gen.close()
    assert result.stopped_by == "cancelled" and result.done
    assert all(m.stopped_by == "cancelled" and m.steps < 10_000 for m in result.members)
    assert np.isfinite(result.dice_after)
    assert not [t for t in threading.enumerate() if t.name.startswith("medseg-member")]


def test_a_members_error_reaches_the_caller(data):
    bad = FinetuneData(data.images, [np.where(lab > 0, 20, 0).astype(np.uint8) for lab in data.labels], SMALL)
    with pytest.raises(ValueError, match="labels go up to 20"):
        run_finetune(finetune_members(Ensemble([_tiny(0), _tiny(1)]), bad, _config()))
    assert not [t for t in threading.enumerate() if t.name.startswith("medseg-member")]


def test_paused_holds_the_members_between_steps(data):
    from napari_medseg.retrain.finetune import FinetuneResult

    ensemble = Ensemble([_tiny(0), _tiny(1)])
    result = FinetuneResult()
    gen = finetune_members(ensemble, data, _config(steps=10_000), result=result)
    next(gen)
    with paused(ensemble):
        held = [m.steps for m in result.members]
        time.sleep(0.5)
        assert [m.steps for m in result.members] == held
    deadline = time.monotonic() + 20
    while [m.steps for m in result.members] == held and time.monotonic() < deadline:
        next(gen)
    assert [m.steps for m in result.members] != held
    gen.close()


def test_default_members_follow_the_family_the_budget_and_the_cpu(monkeypatch):
    from napari_medseg.retrain.loop import ENSEMBLE_MIN_BUDGET_S, finetune_config

    def _time_budget(options):  # the budget prepare_model hands default_members
        return finetune_config("dcaunet", from_scratch=True, options=options).time_budget_s

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert default_members("dcaunet", "cpu", ENSEMBLE_MIN_BUDGET_S) == 2
    assert default_members("dcaunet", "cpu", ENSEMBLE_MIN_BUDGET_S - 1) == 1  # too short to pay off
    assert default_members("dcaunet", "cpu", None) == 1  # a step budget: one model's steps
    assert default_members("udfa", "cpu", ENSEMBLE_MIN_BUDGET_S) == 1
    assert _time_budget({}) == 60.0 and _time_budget({"steps": 5}) is None and _time_budget({"time_budget_s": 200}) == 200
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert default_members("dcaunet", "cpu", ENSEMBLE_MIN_BUDGET_S) == 1


def test_retrain_saves_an_ensemble_and_continues_it(ct, tmp_path):
    image, labels = ct
    store = CorrectionStore(tmp_path / "store")
    start = StartFrom(model_name="dcaunet", label_set="synapse", modality="ct", model_config=TINY_CONFIGS["dcaunet"],
                      members=2)
    options = dict(steps=4, batch_size=2, device="cpu")
    first = run_finetune(retrain_volume(image, labels, SLICES, start=start, spacing=(3.0, 3.0, 3.0), options=options,
                                        store=store, output=tmp_path / "v1.safetensors"))
    info = first.checkpoint
    assert info.members == 2 and isinstance(first.model, Ensemble)
    prov = info.provenance
    assert [m["steps"] for m in prov["members"]] == [4, 4] and prov["steps"] == 8
    assert first.labels.shape == image.shape and (first.labels[SLICES] == labels[SLICES]).all()
    header = json.loads(info.path.read_bytes()[8:8 + int.from_bytes(info.path.read_bytes()[:8], "little")])
    assert any(k.startswith("members.1.") for k in header)
    second = run_finetune(retrain_volume(image, labels, SLICES, start=StartFrom(checkpoint=info.path),
                                         spacing=(3.0, 3.0, 3.0), options=options, store=store, replay=False,
                                         output=tmp_path / "v2.safetensors", resegment=False))
    assert second.checkpoint.members == 2 and second.checkpoint.provenance["parent_sha256"] == info.sha256
    with pytest.raises(ValueError, match="holds 2 member"):
        next(retrain_volume(image, labels, SLICES, start=StartFrom(checkpoint=info.path, members=3),
                            spacing=(3.0, 3.0, 3.0), options=options, store=store))


def test_live_preview_predicts_while_members_train(ct, data):
    from napari_medseg.widgets._preview import LivePreview

    image, _ = ct
    ensemble = Ensemble([_tiny(0), _tiny(1)]).eval()  # as load_checkpoint hands it over
    preview = LivePreview(image, locked=SLICES, device="cpu", precision="fp32", every_s=0.0)
    preview.on_model(ensemble, SYNAPSE, SMALL)
    gen = finetune_members(ensemble, data, _config(steps=10_000))
    next(gen)
    shown = preview.predict(3)
    assert shown.shape == image.shape[1:] and shown.dtype == np.uint8
    assert all(m.training for m in ensemble.members)  # back in train mode for the members' next steps
    gen.close()
    assert not ensemble.training and not any(m.training for m in ensemble.members)  # its mode is handed back


def test_training_refuses_to_resume_an_ensemble(tmp_path, sample_ct, sample_labels):
    from training.engine import Trainer
    from training_fixtures import make_synapse, tiny_recipe

    info = save_checkpoint(tmp_path / "e.safetensors", Ensemble([_tiny(0), _tiny(1)]), label_set=SYNAPSE,
                           preprocessing=SMALL)
    recipe = tiny_recipe(make_synapse(tmp_path / "synapse", sample_ct, sample_labels), epochs=1)
    with pytest.raises(ValueError, match="ensemble of 2 models"):
        Trainer(recipe, tmp_path / "run", device="cpu", resume=info.path)


def test_cli_trains_the_members_it_is_asked_for(sample_ct, sample_labels, tmp_path, capsys):
    from napari_medseg.cli import main

    out = tmp_path / "e.safetensors"
    base = ["finetune", "--image", str(sample_ct), "--labels", str(sample_labels), "--slices", "10,20",
            "--device", "cpu", "--steps", "2", "--no-replay", "--store", str(tmp_path / "store")]
    assert main(base + ["--model", "dcaunet", "--label-set", "synapse", "--members", "2", "-o", str(out)]) == 0
    assert "2 + 2 steps (2 models at once)" in capsys.readouterr().out
    assert read_checkpoint_info(out).members == 2
    assert main(base + ["--model", "dcaunet", "--label-set", "synapse", "--members", "0",
                        "-o", str(tmp_path / "z.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "--members must be a positive integer" in err and len(err.strip().splitlines()) == 1, err
    assert main(base + ["--checkpoint", str(out), "--members", "3", "-o", str(tmp_path / "t.safetensors")]) == 2
    assert "holds 2 member(s), not 3" in capsys.readouterr().err
    assert not (tmp_path / "z.safetensors").exists() and not (tmp_path / "t.safetensors").exists()


def test_evaluate_and_the_worklist_segment_with_an_ensemble_checkpoint(tmp_path, sample_ct, sample_labels):
    """`medseg evaluate --checkpoint` and opening a case read an ensemble checkpoint as the averaged model:
    their labels are ``medseg segment``'s, and not those of its first member alone."""
    import csv
    import shutil

    from napari_medseg.cli import main
    from napari_medseg.io import read_volume
    from napari_medseg.progress import drive
    from napari_medseg.worklist import open_case, read_worklist

    native = Preprocessing(resize_policy="native")
    ensemble = save_checkpoint(tmp_path / "e.safetensors", Ensemble([_tiny(0), _tiny(1)]), label_set=SYNAPSE,
                               preprocessing=native).path
    first = save_checkpoint(tmp_path / "m0.safetensors", _tiny(0), label_set=SYNAPSE, preprocessing=native).path
    images, refs, preds = (tmp_path / name for name in ("images", "refs", "preds"))
    for folder in (images, refs, preds):
        folder.mkdir()
    shutil.copy(sample_ct, images / "case01_0000.nii.gz")
    shutil.copy(sample_labels, refs / "case01.nii.gz")
    segmented = {}
    for name, ckpt in (("ensemble", ensemble), ("first", first)):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["segment", str(sample_ct), "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
        segmented[name] = read_volume(out).array
    assert (segmented["ensemble"] != segmented["first"]).any()

    shutil.copy(tmp_path / "ensemble.nii.gz", preds / "case01.nii.gz")
    by_source = {}
    for source, args in (("checkpoint", ["--checkpoint", str(ensemble), "--device", "cpu"]),
                         ("predictions", ["--predictions", str(preds)])):
        out = tmp_path / f"{source}.csv"
        assert main(["evaluate", *args, "--images", str(images), "--labels", str(refs), "--label-set", "synapse",
                     "--out", str(out)]) == 0
        by_source[source] = {(r["case"], r["organ"]): r["dice"] for r in csv.DictReader(open(out))}
    assert by_source["checkpoint"] == by_source["predictions"]

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sample_ct, src / "a.nii.gz")
    opened = drive(open_case(read_worklist(src, tmp_path / "project")[0], tmp_path / "project", ensemble, device="cpu"))
    np.testing.assert_array_equal(opened.labels, segmented["ensemble"])
