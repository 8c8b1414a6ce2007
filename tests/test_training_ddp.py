"""`medseg train` under torchrun: 2 CPU processes with the gloo backend (DDP + DistributedSampler)."""

import csv
import os
import subprocess
import sys

import pytest
import yaml

from napari_medseg.checkpoint import read_checkpoint_info

from training_fixtures import make_synapse, tiny_recipe


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, sample_ct, sample_labels):
    root = make_synapse(tmp_path / "Synapse", sample_ct, sample_labels, slices=range(8, 24), test_case=False)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_recipe(root, epochs=2)))
    out = tmp_path / "ddp_run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "napari_medseg.cli", "train", "--config", str(cfg), "--output-dir", str(out),
           "--max-steps", "3", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es), batch 4" in proc.stdout
    assert proc.stdout.count("stopped by max_steps at step 3") == 1  # rank 0 alone reports and saves
    info = read_checkpoint_info(out / "last.safetensors")
    assert info.provenance["world_size"] == 2 and info.provenance["step"] == 3
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "log.csv"))]
    assert steps == [1, 2, 3]  # one writer
