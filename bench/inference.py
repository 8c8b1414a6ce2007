"""Inference benchmark: seconds, slices/s, peak RSS and FLOP/s efficiency on CPU.

Every (model, volume, precision) run happens in its own subprocess, so the
peak RSS (``ru_maxrss``) is that run's alone.  Models are the *full-size*
default configs with random weights (U-DFA's DINOv2-base backbone is random
too: no weights can be downloaded here), which does not change the cost.
The resize policy is the papers' ``fixed`` 224 unless ``--policy native`` or
``--policy spacing`` (synthetic volumes then have ``--spacing`` mm pixels,
resampled to ``--target-spacing``).  ``--tiny`` uses the tests' tiny configs:
the engine's own memory (volume, labels, uncertainty, one batch) without the
full model's compute, e.g. the 512x512x600 CT at 0.6 mm of issue 9:

    python bench/inference.py --models dcaunet --sizes 512x512x600 --precisions fp32 --policy spacing --tiny

FLOP/s ratio = (model FLOPs per slice, counted by torch's FlopCounterMode,
x slices / seconds) / (FLOP/s of an fp32 2048^3 matmul measured in the same
process).  Pre/post-processing (resize, softmax, argmax) is in the seconds but
not in the FLOPs.

    python bench/inference.py                                    # everything
    python bench/inference.py --models dcaunet --sizes 512x512x200 --precisions fp32
    python bench/inference.py --models dcaunet --sizes 512x512x200 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_name, matmul_flops  # bench/_machine.py (scripts run as python bench/NAME.py)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CANDIDATES = [REPO.parent / "shared" / "data" / "ct_abdomen.nii.gz", REPO / "napari_medseg" / "data" / "ct_abdomen.nii.gz"]


def load_volume(size: str, sample: Path | None):
    import numpy as np

    if size == "sample":
        from napari_medseg.io import read_volume

        path = sample or next((p for p in SAMPLE_CANDIDATES if p.exists()), None)
        if path is None:
            raise SystemExit("sample CT not found; pass --sample PATH")
        return read_volume(path).array
    x, y, z = (int(v) for v in size.lower().split("x"))
    rng = np.random.default_rng(0)
    vol = np.full((z, y, x), -1000, np.int16)  # air, a body ellipse of soft tissue with noise
    yy, xx = np.mgrid[:y, :x]
    body = ((yy - y / 2) / (0.4 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 < 1
    for k in range(z):
        vol[k][body] = (40 + rng.normal(0, 30, int(body.sum()))).astype(np.int16)
    return vol


def model_flops_per_slice(model, size: tuple[int, int]) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, *size))
    return float(counter.get_total_flops())


def child(args) -> dict:
    import resource

    import torch

    from napari_medseg.inference import run_segmentation, segment_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.models import TINY_CONFIGS, build_model
    from napari_medseg.preprocess import Preprocessing, model_input_hw

    if args.threads:
        torch.set_num_threads(args.threads)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    vol = load_volume(args.size, args.sample)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # U-DFA warns that its backbone is random: that is the point here
        extra = {"backbone_weights": None} if args.model == "udfa" else {}  # random DINOv2 backbone
        if args.tiny:
            extra = {k: v for k, v in TINY_CONFIGS[args.model].items() if k != "num_classes"}
        model = build_model(args.model, SYNAPSE.num_classes, **extra).eval()
    spacing = None if args.size == "sample" else (args.spacing,) * 3
    if args.size == "sample":
        from napari_medseg.io import read_volume

        spacing = read_volume(args.sample or next(p for p in SAMPLE_CANDIDATES if p.exists())).geometry.spacing
    target = args.target_spacing if args.policy == "spacing" else None
    prep = Preprocessing(modality="ct", resize_policy=args.policy, input_size=224, target_spacing=target)
    info = type("Info", (), {"label_set": SYNAPSE, "preprocessing": prep, "path": None, "model_name": args.model})()
    hw = model_input_hw(vol.shape[1:], prep, model.size_multiple, spacing)
    flops = model_flops_per_slice(model, hw)
    load = os.getloadavg()[0]
    mm_before = matmul_flops()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        sub = vol[: args.batch_size * 2]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_segmentation(segment_volume(sub, [(model, info)], device="cpu", precision=args.precision,
                                            batch_size=args.batch_size, channels_last=args.channels_last,
                                            spacing=spacing))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18), file=sys.stderr)
    t = time.perf_counter()
    res = run_segmentation(segment_volume(vol, [(model, info)], device="cpu", precision=args.precision,
                                          batch_size=args.batch_size, channels_last=args.channels_last,
                                          spacing=spacing))
    seconds = time.perf_counter() - t
    slices = vol.shape[0]
    mm = (mm_before + matmul_flops()) / 2  # before and after: the machine is shared
    return {
        "model": args.model, "size": args.size, "shape": list(vol.shape), "precision": args.precision,
        "policy": args.policy, "target_spacing": target, "spacing": spacing, "tiny": args.tiny,
        "model_hw": list(hw), "channels_last": args.channels_last,
        "seconds": seconds, "slices_per_s": slices / seconds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "startup_rss_gb": peak_before / 1024**2,
        "gflop_per_slice": flops / 1e9, "matmul_gflops": mm / 1e9,
        "flops_ratio": flops * slices / seconds / mm, "threads": torch.get_num_threads(),
        "load_avg_1min": load,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "classes_found": int(len(set(res.labels[:: max(1, slices // 8)].ravel().tolist()))),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="udfa,dcaunet")
    p.add_argument("--sizes", default="sample,512x512x200", help="'sample' and/or XxYxZ synthetic volumes")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--policy", default="fixed", choices=["fixed", "native", "spacing"])
    p.add_argument("--spacing", type=float, default=0.6, help="in-plane mm of synthetic volumes")
    p.add_argument("--target-spacing", type=float, default=None,
                   help="mm for --policy spacing (default: the project's DEFAULT_TARGET_SPACING)")
    p.add_argument("--tiny", action="store_true", help="tiny model configs (engine memory, not model cost)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of 2 batches first")
    p.add_argument("--sample", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.target_spacing is None:
        from napari_medseg.preprocess import DEFAULT_TARGET_SPACING

        args.target_spacing = DEFAULT_TARGET_SPACING
    if args._child:
        print("RESULT " + json.dumps(child(args)))
        return 0

    import torch

    print(f"# CPU: {cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, policy={args.policy}"
          + (f" ({args.spacing} mm -> {args.target_spacing} mm)" if args.policy == "spacing" else "")
          + f"{', tiny configs' if args.tiny else ''}, batch={args.batch_size}, "
          f"channels_last={args.channels_last}", flush=True)
    rows = []
    header = "| model | volume | precision | s | slices/s | peak RSS GB | GFLOP/slice | FLOP/s vs fp32 matmul | load avg |"
    print(header + "\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for model in args.models.split(","):
        for size in args.sizes.split(","):
            for precision in args.precisions.split(","):
                cmd = [sys.executable, __file__, "--_child", "--model", model, "--size", size, "--precision", precision,
                       "--policy", args.policy, "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                       "--spacing", str(args.spacing), "--target-spacing", str(args.target_spacing)]
                cmd += ["--tiny"] * args.tiny
                cmd += ["--channels-last"] * args.channels_last + ["--profile"] * args.profile
                cmd += ["--sample", str(args.sample)] if args.sample else []
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if args.profile or proc.returncode:
                    print(proc.stderr[-6000:], file=sys.stderr)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not lines:
                    print(f"| {model} | {size} | {precision} | failed (exit {proc.returncode}) | | | | | |", flush=True)
                    continue
                r = json.loads(lines[-1][7:])
                rows.append(r)
                shape = "x".join(str(v) for v in r["shape"][::-1])
                print(f"| {model} | {size} ({shape} -> {'x'.join(map(str, r['model_hw'][::-1]))}) | {precision} | {r['seconds']:.1f} | {r['slices_per_s']:.2f} | "
                      f"{r['peak_rss_gb']:.2f} | {r['gflop_per_slice']:.2f} | {r['flops_ratio']:.2f} "
                      f"(matmul {r['matmul_gflops']:.0f} GFLOP/s) | {r['load_avg_1min']:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
