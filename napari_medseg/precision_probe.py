"""``precision="auto"`` on CPU: time fp32 against bf16 once, cache the faster, and say which.

The choice is cached in ``config_dir() / "cpu_precision.json"``, keyed by the
CPU model name and its widest vector instructions (:func:`cpu_description`: a
cloud VM named "AMD EPYC" may be a host with AVX-512 BF16 one day and one with
AVX2 only the next, where bf16 ran at 0.12x fp32), the torch version, the model family and a digest of its
architecture (``model.config`` without ``num_classes``), so a tiny test
config never decides for the full-size model.  The micro-benchmark runs in a
child process (``python -m napari_medseg.precision_probe FAMILY CONFIG_JSON``)
because some virtual machines advertise AMX but kill bf16 matmuls with
SIGILL (this project's Intel Xeon VM does): a crash then costs the child, and
the choice is fp32, with the reason.  ``$MEDSEG_CPU_PRECISION=fp32|bf16``
skips the measurement (the test suite sets fp32).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from napari_medseg.atomic import atomic_write
from napari_medseg.userdirs import config_dir

logger = logging.getLogger(__name__)

CACHE_FILE = "cpu_precision.json"
#: bf16 is picked only when at least 25% faster than fp32: on a shared CPU one probe's ratio
#: moved by +-0.3 between runs (1.50x picked, 0.87x measured by bench/models.py minutes later)
MIN_SPEEDUP = 1.25
#: timings are the minimum over interleaved repeats (timeit's rule: other jobs only ever add time)
PROBE_BATCH, PROBE_SIZE, PROBE_REPEATS = 2, 224, 5
PROBE_TIMEOUT_S = 600
ENV_OVERRIDE = "MEDSEG_CPU_PRECISION"


@dataclass(frozen=True)
class PrecisionChoice:
    """``precision`` ("fp32" | "bf16") and a one-line ``reason`` to show in the GUI, CLI or log."""

    precision: str
    reason: str


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


#: CPU flags that change which kernels fp32 and bf16 run on, widest first (x86 ``/proc/cpuinfo`` names)
ISA_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_isa() -> str:
    """The widest of :data:`ISA_FLAGS` the CPU reports (``/proc/cpuinfo``), else ``platform.machine()``."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return next((f for f in ISA_FLAGS if f in flags), "no AVX2")
    except OSError:
        pass
    return platform.machine() or "unknown ISA"


def cpu_description() -> str:
    """``"AMD EPYC (avx2)"``: the CPU's name and its widest vector ISA (for cache keys and bench reports)."""
    return f"{cpu_name()} ({cpu_isa()})"


def cache_key(family: str, config: dict) -> str:
    """``"CPU (ISA) | torch X | family <digest>"``; the digest covers the architecture, not the class count."""
    import torch

    arch = {k: v for k, v in sorted(config.items()) if k != "num_classes"}
    digest = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{cpu_description()} | torch {torch.__version__} | {family} {digest}"


def choose_precision(timings: dict) -> str:
    """``"bf16"`` when ``timings["bf16"]`` (s/batch, None = failed) beats fp32 by ``MIN_SPEEDUP``, else ``"fp32"``."""
    fp32, bf16 = timings.get("fp32"), timings.get("bf16")
    if not fp32 or not bf16:
        return "fp32"
    return "bf16" if fp32 / bf16 >= MIN_SPEEDUP else "fp32"


def _cache_path() -> Path:
    return config_dir() / CACHE_FILE


def read_cache() -> dict:
    """The cached measurements ``{key: entry}``; a damaged file is ignored with a warning."""
    path = _cache_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        warnings.warn(f"ignoring the damaged precision cache {path} ({err}); it will be measured again", stacklevel=2)
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        warnings.warn(f"ignoring the precision cache {path}: not a JSON object of entries; it will be measured again",
                      stacklevel=2)
        return {}
    return data


def _write_cache(key: str, entry: dict) -> None:
    cache = read_cache()
    cache[key] = entry
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(cache, indent=1, sort_keys=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), suffix=".json")


def _describe(family: str, entry: dict, cached: bool) -> str:
    fp32, bf16 = entry.get("fp32"), entry.get("bf16")
    if fp32 and bf16:
        speed = f"bf16 runs at {fp32 / bf16:.2f}x fp32 speed"
    else:
        speed = f"bf16 unusable ({entry.get('error') or 'not measured'})"
    when = f"measured {entry.get('date', '?')}, cached in {_cache_path()}" if cached else "measured just now"
    return f"precision auto -> {entry['precision']} for {family} on {cpu_name()}: {speed} ({when})"


def measure_in_subprocess(family: str, config: dict) -> dict:
    """Seconds per batch ``{"fp32": s, "bf16": s | None, "error": str | None}`` from a child process."""
    cmd = [sys.executable, "-m", "napari_medseg.precision_probe", family, json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"fp32": None, "bf16": None, "error": f"the probe took over {PROBE_TIMEOUT_S} s"}
    timings = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("fp32", "bf16"):
            timings[parts[0]] = float(parts[1])
    error = None
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        if proc.returncode == -signal.SIGILL:
            error = "bf16 died with SIGILL (AMX listed but unusable? ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 avoids it)"
        elif proc.returncode < 0:
            error = f"the probe died with signal {-proc.returncode}"
        else:
            error = f"the probe failed: {tail}"
    return {"fp32": timings.get("fp32"), "bf16": timings.get("bf16"), "error": error}


def cpu_auto_precision(model, measure=measure_in_subprocess) -> PrecisionChoice:
    """The faster of fp32 and bf16 for ``model``'s family on this CPU, measured once then cached.

    ``measure(family, config)`` returns seconds per batch (tests inject it).
    Logs the choice: a warning when it was just measured, info when cached.
    """
    family, config = model.model_name, dict(model.config)
    forced = os.environ.get(ENV_OVERRIDE, "").lower()
    if forced:
        if forced not in ("fp32", "bf16"):
            raise ValueError(f"${ENV_OVERRIDE} must be fp32 or bf16, got {forced!r}; unset it to measure")
        return PrecisionChoice(forced, f"precision auto -> {forced} for {family}: set by ${ENV_OVERRIDE}")
    key = cache_key(family, config)
    entry = read_cache().get(key)
    if entry and entry.get("precision") in ("fp32", "bf16"):
        choice = PrecisionChoice(entry["precision"], _describe(family, entry, cached=True))
        logger.info(choice.reason)
        return choice
    logger.warning("precision auto: timing fp32 and bf16 for %s on this CPU once (about a minute)", family)
    timings = measure(family, config)
    entry = dict(timings, precision=choose_precision(timings), date=time.strftime("%Y-%m-%d"))
    _write_cache(key, entry)
    choice = PrecisionChoice(entry["precision"], _describe(family, entry, cached=False))
    logger.warning(choice.reason)
    return choice


def time_precisions(model, batch: int = PROBE_BATCH, size: int = PROBE_SIZE, repeats: int = PROBE_REPEATS):
    """Print ``fp32 S`` then ``bf16 S`` (fastest seconds per ``(batch, 1, size, size)`` forward), interleaved runs.

    fp32 is printed before bf16 is first run, so a bf16 crash still leaves it.
    """
    import torch

    x = torch.rand(batch, 1, size, size)
    times = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        model(x)
        print("fp32", _timed(model, x, False), flush=True)
        _timed(model, x, True)  # warm-up; dies here where bf16 kernels cannot run
        for _ in range(repeats):
            times["fp32"].append(_timed(model, x, False))
            times["bf16"].append(_timed(model, x, True))
    for name in ("fp32", "bf16"):
        print(name, min(times[name]), flush=True)


def _timed(model, x, bf16: bool) -> float:
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        start = time.perf_counter()
        model(x)
        return time.perf_counter() - start


def _main(argv) -> None:
    from napari_medseg.models import build_model
    from napari_medseg.models.dinov2_weights import RandomBackboneWarning

    family, config = argv[0], json.loads(argv[1])
    warnings.simplefilter("ignore", RandomBackboneWarning)
    extra = {"backbone_weights": None} if family == "udfa" else {}  # speed does not depend on the weights
    time_precisions(build_model(family, **config, **extra).eval())


if __name__ == "__main__":
    _main(sys.argv[1:])
