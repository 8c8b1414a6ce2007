"""Why the docks run torch on one thread: fine-tuning speed against which threads used torch before.

PyTorch's OpenMP runtime gives every thread that runs a parallel operation its own
team of workers.  This measures the optimiser steps of ``--seconds`` of DCAU-Net
fine-tuning (the sample CT, 5 reference slices, from scratch, fp32, all cores)
run on a new thread after:

* ``none``: nothing (torch imported, no parallel operation yet);
* ``main``: one parallel operation on the main thread (a napari dock, a console);
* ``thread``: a segmentation on another thread that stays alive (napari's worker pool);
* ``same``: a segmentation on the very thread that then fine-tunes (``napari_medseg.compute_thread``).

Each case runs in its own process.

    python bench/omp_threads.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _machine import cpu_name  # bench/_machine.py (scripts run as python bench/NAME.py)

CASES = ("none", "main", "thread", "same")


def one_case(case: str, seconds: float) -> int:
    """Steps of one fine-tune in this process after ``case``'s earlier torch use."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.io import read_volume
    from napari_medseg.progress import drive
    from napari_medseg.retrain.datastore import CorrectionStore
    from napari_medseg.retrain.loop import StartFrom, next_version_path, retrain_volume

    image, reference = read_volume(SAMPLE_CT), read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    slices = [5, 10, 14, 19, 24]

    def fine_tune(tmp) -> int:
        return drive(retrain_volume(image.array, reference, slices,
                                    start=StartFrom(model_name="dcaunet", label_set="synapse", modality="ct"),
                                    spacing=image.geometry.spacing, source="omp_threads",
                                    options=dict(device="cpu", time_budget_s=seconds, precision="fp32"),
                                    store=CorrectionStore(Path(tmp) / "store"), replay=False,
                                    output=next_version_path(None, directory=tmp, stem="omp"))).finetune.steps

    def earlier_use():
        return torch.randn(4_000_000).mul(2).sum()  # one parallel operation, as any segmentation makes

    executor = ThreadPoolExecutor(max_workers=1)
    if case == "main":
        earlier_use()
    elif case == "thread":
        keep = threading.Event()
        threading.Thread(target=lambda: (earlier_use(), keep.wait()), daemon=True).start()
        time.sleep(1.0)
    elif case == "same":
        executor.submit(earlier_use).result()
    with tempfile.TemporaryDirectory() as tmp:
        return executor.submit(fine_tune, tmp).result()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps({"steps": one_case(args.case, args.seconds)}))
        return 0
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; {args.seconds:g} s of fine-tuning per case", flush=True)
    rows = []
    for repeat in range(args.repeats):
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, "--case", case, "--seconds", str(args.seconds)],
                                 capture_output=True, text=True, encoding="utf-8", check=True)
            steps = json.loads(out.stdout.strip().splitlines()[-1])["steps"]
            rows.append(dict(case=case, repeat=repeat, steps=steps, load=os.getloadavg()[0]))
            print(f"{case:>6}: {steps} steps (load {rows[-1]['load']:.1f})", flush=True)
    path = Path(__file__).resolve().parent / "results" / f"omp_threads-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(dict(machine=cpu_name(), seconds=args.seconds, rows=rows), indent=1))
    print(f"rows: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
