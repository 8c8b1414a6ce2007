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
random-init backbone (same cost as with DINOv2 weights).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

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


def time_inference(torch, model, batch: int, size: int, precision: str, repeats: int, flops_per_batch: float):
    """Paired runs: each timed batch is followed by a timed fp32 matmul.

    Returns ``(median s/batch, median achieved/matmul ratio, median matmul FLOP/s)``;
    pairing makes the ratio robust when other processes share the cores.
    """
    x = torch.rand(batch, 1, size, size)
    a = torch.randn(2048, 2048)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    times, ratios, refs = [], [], []
    with torch.inference_mode():
        with ctx:
            model(x)  # warm-up (oneDNN primitive creation)
            model(x)
        for _ in range(repeats):
            with ctx:
                t0 = time.perf_counter()
                model(x)
                seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            a @ a
            ref = 2 * 2048**3 / (time.perf_counter() - t0)
            times.append(seconds)
            refs.append(ref)
            ratios.append(flops_per_batch / seconds / ref)
    return statistics.median(times), statistics.median(ratios), statistics.median(refs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["dcaunet", "udfa"])
    args = parser.parse_args(argv)

    import torch

    from napari_medseg.models import build_model
    from napari_medseg.models.dinov2_weights import RandomBackboneWarning

    warnings.simplefilter("ignore", RandomBackboneWarning)
    torch.manual_seed(0)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    ref = matmul_flops()
    print(f"fp32 matmul 2048^3: {ref / 1e9:.1f} GFLOP/s")
    header = (
        f"| model | params total | params trainable | GMAC/slice | precision | slices/s (batch {args.batch}) "
        "| achieved / fp32 matmul (matmul) |"
    )
    rows = [header, "|" + "---|" * 7]
    for name in args.models:
        macs, total, trainable = count_macs(torch, name, args.size)
        kwargs = {"backbone_weights": None} if name == "udfa" else {}
        model = build_model(name, 9, **kwargs).eval()
        for precision in ("fp32", "bf16"):
            seconds, ratio, ref_here = time_inference(
                torch, model, args.batch, args.size, precision, args.repeats, 2 * macs * args.batch
            )
            rows.append(
                f"| {name} | {total / 1e6:.2f}M | {trainable / 1e6:.2f}M | {macs / 1e9:.2f} | {precision} "
                f"| {args.batch / seconds:.2f} | {ratio:.2f} ({ref_here / 1e9:.0f} GFLOP/s) |"
            )
        del model
    ref_end = matmul_flops()
    print("\n".join(rows))
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes share the {os.cpu_count()} cores)")
    print(f"fp32 matmul at the end: {ref_end / 1e9:.1f} GFLOP/s (start {ref / 1e9:.1f}; a large change means the machine was busy)")


if __name__ == "__main__":
    main()
