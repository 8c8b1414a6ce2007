"""The Retrain dock against the CLI: fine-tuning steps/s and the event loop's longest stall (issue 10).

Same task, same settings, one run: from no checkpoint, DCAU-Net, the sample CT's
reference labels on 5 evenly spaced slices, a time budget (default 30 s), CPU,
fp32, no replay.  The CLI is ``medseg finetune --no-replay`` in a subprocess; the
GUI is the real "Correct and retrain" dock in a shown napari viewer (run under
Xvfb).  Steps (of all models, when a budget of 120 s or more trains two at once) and seconds
come from each new checkpoint's provenance.  A 20 ms
QTimer (:class:`StallMeter`) records the longest gap between its ticks minus
20 ms, the event loop's longest stall: while the dock opens and for ``--settle``
seconds after (it warms the fine-tune's imports in the background), and from the
moment the *Fine-tune* click has returned (the worker started) until 1 s after
the result is applied to the layer.  The click's own time on the GUI thread
(checks, copying the labels, making the live preview's layer the first time) is
reported apart, as the click response.  The CPU seconds of the dock's process by thread
(the GUI thread, Mesa's llvmpipe threads, the rest: training) and of the CLI's process are printed too.  Run 0 is the process's first fine-tune.  Both report the mean organ Dice on the slices nobody
touched: the dock's re-segmented labels layer, and the CLI's checkpoint
re-segmenting the volume the same way (``segment_volume`` with the reference
slices locked, as the dock and ``retrain_volume`` do).  Issue 10's GUI target:
``--budget 60`` gives >= 0.85.

    xvfb-run -a -s "-screen 0 1600x1000x24" python bench/gui_vs_cli.py            # 30 s, 1 repeat
    xvfb-run -a -s "-screen 0 1600x1000x24" python bench/gui_vs_cli.py --budget 30 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from effort import untouched_dice  # bench/effort.py (scripts run as python bench/NAME.py)

TICK_MS = 20
CHECK_MS = 50  # how often StallMeter.wait checks its condition
AFTER_S = 1.0  # the stall meter runs on this long after the result is applied


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads, by kind: ``gui`` (the main thread), ``mesa`` (llvmpipe's
    rendering threads), ``other`` (the compute thread, torch's OpenMP workers, Qt's and napari's threads).
    Linux only (``/proc/self/task``); empty elsewhere."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    totals: dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return totals
    for tid in tasks:
        try:
            raw = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        kind = "gui" if int(tid) == os.getpid() else "mesa" if comm.startswith("llvmpipe") else "other"
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per kind between two :func:`thread_cpu` readings (threads that ended in between are lost)."""
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 1) for k in sorted(set(before) | set(after))}


class StallMeter:
    """The event loop's longest stall: a QTimer ticks every :data:`TICK_MS`; a stall is a gap minus the tick.

    ``status``: a callable whose text is kept with each stall over 100 ms.
    """

    def __init__(self, status=lambda: ""):
        from qtpy.QtCore import QElapsedTimer, QTimer

        self.status, self.worst_ms, self.stalls = status, 0, []
        self._clock, self._timer = QElapsedTimer(), QTimer()
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    def start(self):
        self._t0 = time.monotonic()
        self._clock.start()
        self._timer.start()

    def _tick(self):
        gap = self._clock.restart() - TICK_MS
        self.worst_ms = max(self.worst_ms, gap)
        if gap > 100:  # where the long ones happen
            self.stalls.append((round(self.seconds(), 1), gap, self.status()[:40]))

    def wait(self, done, timeout_s: float = 3600.0):
        """Run the event loop until ``done()`` (or ``timeout_s``), checked every :data:`CHECK_MS`.

        A real ``QEventLoop``, which sleeps between events as napari's own loop does.  (Until
        2026-12-07 this polled ``processEvents()`` every 2 ms, which cost the GUI thread CPU and took
        the GIL 500 times a second, a load the user's napari does not have.)"""
        from qtpy.QtCore import QEventLoop, QTimer

        def finished():
            return done() or self.seconds() >= timeout_s

        if finished():
            return
        loop, check = QEventLoop(), QTimer()
        check.setInterval(CHECK_MS)
        check.timeout.connect(lambda: loop.quit() if finished() else None)
        check.start()
        loop.exec_()
        check.stop()

    def seconds(self) -> float:
        return time.monotonic() - self._t0

    def stop(self):
        self._timer.stop()


def run_cli(budget: float, slices: list[int], work: Path, tag: str) -> dict:
    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.checkpoint import read_checkpoint_info

    out = work / f"cli-{tag}.safetensors"
    cmd = ["medseg", "finetune", "--image", str(SAMPLE_CT), "--labels", str(SAMPLE_LABELS),
           "--slices", ",".join(map(str, slices)), "--model", "dcaunet", "--label-set", "synapse",
           "--time-budget", str(budget), "--device", "cpu", "--precision", "fp32", "--no-replay",
           "--store", str(work / "cli-store"), "-o", str(out)]
    t0, usage = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall, used = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = round(used.ru_utime + used.ru_stime - usage.ru_utime - usage.ru_stime, 1)
    prov = read_checkpoint_info(out).provenance
    return {"steps": prov["steps"], "members": len(prov.get("members", [])) or 1, "seconds": prov["seconds"],
            "wall_s": wall, "cpu_s": cpu_s, "checkpoint": str(out)}


def cli_dice(checkpoint: Path, slices: list[int]) -> float:
    """Mean organ Dice on the untouched slices of the sample CT, re-segmented by ``checkpoint`` (reference locked)."""
    import numpy as np

    from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
    from napari_medseg.inference import load_checkpoints, run_segmentation, segment_volume
    from napari_medseg.io import read_volume

    image, reference = read_volume(SAMPLE_CT), read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    labels = run_segmentation(segment_volume(image.array, load_checkpoints([checkpoint]), device="cpu", locked=slices,
                                             previous=reference, uncertainty=False, spacing=image.geometry.spacing)).labels
    return untouched_dice(labels, reference, [z for z in range(reference.shape[0]) if z not in slices])


def run_gui(viewer, widget, budget: float, slices: list[int]) -> dict:
    import numpy as np

    from napari_medseg.checkpoint import read_checkpoint_info

    if "abdominal CT labels" in viewer.layers:
        viewer.layers.remove("abdominal CT labels")
    image, reference = viewer.layers["abdominal CT"], np.asarray(viewer.layers["organs"].data)
    widget.image_combo.setCurrentText(image.name)
    widget.new_labels_btn.click()
    labels = widget.labels_layer()
    labels.data[slices] = reference[slices]
    labels.refresh()
    widget.update_ledger_view(labels)
    widget.start_combo.setCurrentText("New DCAU-Net (from scratch)")
    widget.device_combo.setCurrentText("cpu")
    widget.precision_combo.setCurrentText("fp32")
    widget.budget.setValue(budget)
    widget.go_to_slice(slices[0] + 1)  # an unlocked slice on screen: the live preview runs as for a user

    cpu_before = thread_cpu()
    clicked = time.perf_counter()
    widget.fine_tune()  # what the click runs on the GUI thread before the worker starts
    click_ms = round(1e3 * (time.perf_counter() - clicked))
    if widget.worker is None:
        raise RuntimeError(f"the dock did not start: {widget.status.text()}")
    meter = StallMeter(status=widget.status.text)
    meter.start()
    meter.wait(lambda: widget.worker is None)
    done_s = meter.seconds()
    meter.wait(lambda: meter.seconds() > done_s + AFTER_S)  # the result's display and the preview's hiding
    meter.stop()
    cpu = cpu_delta(cpu_before, thread_cpu())
    path = widget.start_combo.currentText()
    if "Saved" not in widget.status.text():
        raise RuntimeError(f"the dock's fine-tune failed: {widget.status.text()}")
    prov = read_checkpoint_info(path).provenance
    return {"steps": prov["steps"], "members": len(prov.get("members", [])) or 1, "seconds": prov["seconds"],
            "wall_s": done_s, "click_ms": click_ms, "cpu_s": cpu,
            "longest_stall_ms": meter.worst_ms, "stalls_over_100ms": meter.stalls,
            "dice_untouched": untouched_dice(np.asarray(labels.data), reference,
                                             [z for z in range(reference.shape[0]) if z not in slices])}


def segment_in_dock(viewer, checkpoint: Path) -> None:
    """What a user does first: segment the image with the Segment dock (a worker thread runs torch)."""
    from qtpy.QtWidgets import QApplication

    _, dock = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    dock.image_combo.setCurrentText("abdominal CT")
    if not dock.add_checkpoint(checkpoint):
        raise RuntimeError(f"the Segment dock refused {checkpoint}: {dock.status.text()}")
    dock.segment_button.click()
    while dock.worker is not None:
        QApplication.processEvents()
        time.sleep(0.01)
    if not dock.status.text().startswith("Done"):
        raise RuntimeError(f"segmenting failed: {dock.status.text()}")


def redraw_ms(viewer, layer, repeats: int = 7) -> float:
    """Median ms of what applying a result costs the event loop in napari itself: ``layer.refresh()``
    and one forced repaint of the whole window (software OpenGL under Xvfb)."""
    from qtpy.QtWidgets import QApplication

    window = viewer.window._qt_window
    times = []
    for _ in range(repeats):
        QApplication.processEvents()
        t0 = time.perf_counter()
        layer.refresh()
        window.repaint()
        QApplication.processEvents()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of fine-tuning (default 30)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds the event loop is watched after the dock opens (default 10)")
    parser.add_argument("--json", type=Path, help="write all numbers here")
    parser.add_argument("--segment-first", action="store_true",
                        help="before each GUI fine-tune, segment the image in the Segment dock with the CLI's "
                             "checkpoint (the usual order for a user)")
    parser.add_argument("--threads-as-before", action="store_true",
                        help="run the docks' torch work on napari's worker threads, as before "
                             "napari_medseg.compute_thread (for the comparison in docs/retrain.md)")
    args = parser.parse_args(argv)
    if args.threads_as_before:
        from napari_medseg import compute_thread

        compute_thread.on_compute_thread = lambda genfunc: genfunc
        compute_thread.call = lambda fn, *a, **kw: fn(*a, **kw)

    import napari

    from napari_medseg.retrain.loop import evenly_spaced_slices

    work = Path(tempfile.mkdtemp(prefix="gui_vs_cli-"))
    os.environ["MEDSEG_DATA_DIR"] = str(work / "data")  # the dock's checkpoints and store go here
    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-medseg", "abdominal_ct")
    slices = evenly_spaced_slices(viewer.layers["organs"].data.shape[0], 5)
    opening = StallMeter()
    opening.start()
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Correct and retrain")
    opened_s = opening.seconds()
    opening.wait(lambda: False, timeout_s=args.settle)
    opening.stop()
    dock = {"open_s": opened_s, "longest_stall_ms": opening.worst_ms, "stalls_over_100ms": opening.stalls}
    print(f"dock: opened in {opened_s:.1f} s; longest stall in the {args.settle:.0f} s after: {opening.worst_ms} ms "
          f"({opening.stalls}); load {os.getloadavg()[0]:.1f}", flush=True)
    runs = []
    for r in range(args.repeats):  # alternate, so a change of machine load hits both
        cli = run_cli(args.budget, slices, work, str(r))
        if args.segment_first:
            segment_in_dock(viewer, Path(cli["checkpoint"]))
        gui = run_gui(viewer, widget, args.budget, slices)
        runs.append({"cli": cli, "gui": gui, "load": os.getloadavg()[0]})
        print(f"run {r}: CLI {cli['steps']} steps of {cli['members']} model(s) / {cli['seconds']:.1f} s; "
              f"GUI {gui['steps']} steps of {gui['members']} model(s) / {gui['seconds']:.1f} s, "
              f"Dice {gui['dice_untouched']:.3f}; "
              f"click response {gui['click_ms']} ms; longest stall while it ran {gui['longest_stall_ms']} ms, load {runs[-1]['load']:.1f}; "
              f"stalls > 100 ms (s after start, ms, status): {gui['stalls_over_100ms']}", flush=True)
        print(f"  CPU seconds: the CLI process {cli['cpu_s']} in {cli['wall_s']:.1f} s wall (start-up included); "
              f"the GUI process's threads {gui['cpu_s']} in {gui['wall_s'] + AFTER_S:.1f} s", flush=True)
    for run in runs:  # after every GUI run: torch used in this process's main thread first slowed the dock's worker
        run["cli"]["dice_untouched"] = cli_dice(Path(run["cli"]["checkpoint"]), slices)
        print(f"CLI checkpoint {Path(run['cli']['checkpoint']).name}: Dice {run['cli']['dice_untouched']:.3f}")
    redraw = redraw_ms(viewer, widget.labels_layer())
    print(f"napari's own redraw after a labels refresh (refresh + repaint of the window): median {redraw:.0f} ms",
          flush=True)
    ratio = statistics.median(g["gui"]["steps"] / g["gui"]["seconds"] / (g["cli"]["steps"] / g["cli"]["seconds"])
                              for g in runs)
    stall = max(g["gui"]["longest_stall_ms"] for g in runs)
    click = max(g["gui"]["click_ms"] for g in runs)
    print(f"slices {slices}, budget {args.budget:.0f} s, {args.repeats} repeat(s): GUI/CLI steps/s median "
          f"{ratio:.2f} (target >= 0.9); longest event-loop stall while fine-tuning {stall} ms (target <= 200), "
          f"slowest click response {click} ms; "
          f"load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv[1:], "slices": slices, "budget_s": args.budget,
                                         "dock": dock, "runs": runs,
                                         "ratio_median": ratio, "longest_stall_ms": stall, "click_ms": click,
                                         "redraw_ms": redraw}, indent=1))
    viewer.close()
    shutil.rmtree(work, ignore_errors=True)  # checkpoints and store of this run only (kept if it failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
