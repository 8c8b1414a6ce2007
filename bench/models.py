"""Print size and CPU inference speed of both models at 224 x 224.

    python bench/models.py [--batch 8] [--repeats 3] [--models udfa dcaunet]

For each model: parameters (total, trainable), GMAC per slice (counted with
``torch.utils.flop_counter.FlopCounterMode`` on the meta device, MAC = FLOP/2:
matmuls, convolutions, attention), and slices/s for fp32 and bf16-autocast
inference at the given batch size (median of ``--repeats`` timed runs after
two warm-up runs).  The last column is the achieved FLOP/s (2 x MAC x
slices/s) divided by the FLOP/s of a 2048 x 2048 fp32 matmul timed right after
each run (median of the per-run ratios, with the median matmul FLOP/s in
brackets), so a busy shared machine affects both sides of the ratio alike.  U-DFA is timed with a
random-init backbone (same cost as with DINOv2 weights).  fp32 and bf16 runs alternate, and the
"bf16 / fp32" line gives the median of the per-pair speed ratios.

Agreement: both precisions segment the packaged sample CT (``napari_medseg/data/ct_abdomen.nii.gz``,
``fixed`` 224 policy) with the same random-weight model; printed are the share of voxels whose
label is the same, and, to show that this is not trivially high, the share of the most frequent
fp32 label and the number of labels used.

On a virtual machine that advertises AMX but faults on it (SIGILL in a bf16 matmul), run with
``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` (oneDNN then uses AVX512-BF16 only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

from _machine import cpu_name, matmul_flops  # bench/_machine.py (scripts run as python bench/NAME.py)


def count_macs(torch, name: str, size: int) -> tuple[float, int, int]:
    from torch.utils.flop_counter import FlopCounterMode

    from napari_medseg.models import build_model

    kwargs = {"backbone_weights": None} if name == "udfa" else {}
    with torch.device("meta"):
        model = build_model(name, 9, **kwargs)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, size, size, device="meta"))
    return counter.get_total_flops() / 2, total, trainable


def time_pairs(torch, model, batch: int, size: int, repeats: int, flops_per_batch: float) -> dict:
    """Alternating fp32 / bf16 runs, each followed by a timed fp32 matmul.

    Returns ``{precision: (median s/batch, median achieved/matmul ratio, median matmul FLOP/s)}``
    and ``"speedup"``: the median of the per-pair fp32/bf16 time ratios (robust on a shared machine).
    """
    x = torch.rand(batch, 1, size, size)
    a = torch.randn(2048, 2048)
    runs = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        for precision in runs:  # warm-up (oneDNN primitive creation)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                model(x)
        for _ in range(repeats):
            for precision, rows in runs.items():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    t0 = time.perf_counter()
                    model(x)
                    seconds = time.perf_counter() - t0
                t0 = time.perf_counter()
                a @ a
                ref = 2 * 2048**3 / (time.perf_counter() - t0)
                rows.append((seconds, flops_per_batch / seconds / ref, ref))
    out = {p: tuple(statistics.median(r[i] for r in rows) for i in range(3)) for p, rows in runs.items()}
    out["speedup"] = statistics.median(f[0] / b[0] for f, b in zip(runs["fp32"], runs["bf16"]))
    return out


def label_agreement(model, name: str, batch: int) -> tuple[float, float, int]:
    """``(share of equal labels, share of the commonest fp32 label, labels used)`` on the sample CT."""
    import numpy as np

    from napari_medseg.inference import run_segmentation, segment_volume
    from napari_medseg.io import read_volume
    from napari_medseg.labels import SYNAPSE
    from napari_medseg.preprocess import Preprocessing

    vol = read_volume(Path(__file__).resolve().parents[1] / "napari_medseg" / "data" / "ct_abdomen.nii.gz").array
    info = type("Info", (), {"label_set": SYNAPSE, "path": None, "model_name": name,
                             "preprocessing": Preprocessing(modality="ct", resize_policy="fixed", input_size=224)})()
    labels = {
        p: run_segmentation(segment_volume(vol, [(model, info)], device="cpu", precision=p, batch_size=batch,
                                           uncertainty=False)).labels
        for p in ("fp32", "bf16")
    }
    counts = np.bincount(labels["fp32"].ravel(), minlength=SYNAPSE.num_classes)
    return float((labels["fp32"] == labels["bf16"]).mean()), float(counts.max() / counts.sum()), int((counts > 0).sum())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["dcaunet", "udfa"])
    parser.add_argument("--no-agreement", action="store_true", help="skip the fp32/bf16 label agreement")
    parser.add_argument("--no-timing", action="store_true", help="only the label agreement")
    args = parser.parse_args(argv)

    import torch

    from napari_medseg.models import build_model
    from napari_medseg.models.dinov2_weights import RandomBackboneWarning

    warnings.simplefilter("ignore", RandomBackboneWarning)
    torch.manual_seed(0)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default")
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, oneDNN max ISA {isa}")
    ref = matmul_flops()
    print(f"fp32 matmul 2048^3: {ref / 1e9:.1f} GFLOP/s")
    header = (
        f"| model | params total | params trainable | GMAC/slice | precision | slices/s (batch {args.batch}) "
        "| achieved / fp32 matmul (matmul) |"
    )
    rows, notes = [header, "|" + "---|" * 7], []
    for name in args.models:
        macs, total, trainable = count_macs(torch, name, args.size)
        kwargs = {"backbone_weights": None} if name == "udfa" else {}
        model = build_model(name, 9, **kwargs).eval()
        if not args.no_timing:
            timed = time_pairs(torch, model, args.batch, args.size, args.repeats, 2 * macs * args.batch)
            for precision in ("fp32", "bf16"):
                seconds, ratio, ref_here = timed[precision]
                rows.append(
                    f"| {name} | {total / 1e6:.2f}M | {trainable / 1e6:.2f}M | {macs / 1e9:.2f} | {precision} "
                    f"| {args.batch / seconds:.2f} | {ratio:.2f} ({ref_here / 1e9:.0f} GFLOP/s) |"
                )
            notes.append(f"{name}: bf16 / fp32 speed {timed['speedup']:.2f}x (median of {args.repeats} paired runs)")
            print(rows[-2], rows[-1], notes[-1], sep="\n", flush=True)
        if not args.no_agreement:
            agree, majority, used = label_agreement(model, name, args.batch)
            notes.append(f"{name}: bf16 labels equal fp32 on {100 * agree:.2f}% of the sample CT's voxels "
                         f"(commonest fp32 label {100 * majority:.1f}%, {used} labels used; random weights)")
            print(notes[-1], flush=True)
        del model
    ref_end = matmul_flops()
    print("\n".join(rows + [""] + notes))
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes share the {os.cpu_count()} cores)")
    print(f"fp32 matmul at the end: {ref_end / 1e9:.1f} GFLOP/s (start {ref / 1e9:.1f}; a large change means the machine was busy)")


if __name__ == "__main__":
    main()
