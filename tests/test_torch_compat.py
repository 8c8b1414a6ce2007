"""The AMX guard: a CPU that advertises AMX without kernel support must not crash bf16 matmuls."""

import subprocess
import sys

from napari_medseg._torch_compat import _XTILE_BITS, amx_unusable


def test_amx_unusable_only_when_advertised_but_not_enabled():
    assert not amx_unusable(flags={"avx512f", "avx512_bf16"}, xfeatures=0x200E7)
    assert amx_unusable(flags={"amx_tile", "amx_bf16"}, xfeatures=0x200E7)  # a VM seen here
    assert not amx_unusable(flags={"amx_tile", "amx_bf16"}, xfeatures=0x200E7 | _XTILE_BITS)
    assert not amx_unusable(flags={"amx_tile"}, xfeatures=None)  # can't ask the kernel: leave oneDNN alone


def test_bf16_linear_runs_after_importing_the_package():
    code = (
        "import napari_medseg, torch\n"
        "layer = torch.nn.Linear(64, 64)\n"
        "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    out = layer(torch.randn(8, 64))\n"
        "assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"bf16 linear died (rc {run.returncode}): {run.stderr[-500:]}"
