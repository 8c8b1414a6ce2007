"""precision="auto" on CPU (measured once, cached, explained) and the bf16-friendly cross attention."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from napari_medseg import precision_probe
from napari_medseg.device import resolve_precision
from napari_medseg.models import TINY_CONFIGS
from napari_medseg.models.blocks import CrossAttention


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("MEDSEG_CPU_PRECISION", raising=False)
    return tmp_path


class FakeModel:
    model_name = "dcaunet"
    config = {"num_classes": 9, "dims": [16, 32, 48, 64]}


def counting(timings):
    calls = []

    def measure(family, config):
        calls.append((family, config))
        return dict(timings, error=None)

    return measure, calls


@pytest.mark.parametrize(
    "timings, expected",
    [
        ({"fp32": 1.0, "bf16": 0.5}, "bf16"),
        ({"fp32": 1.0, "bf16": 0.95}, "fp32"),  # under the 10% margin
        ({"fp32": 1.0, "bf16": 1.6}, "fp32"),
        ({"fp32": 1.0, "bf16": None}, "fp32"),  # bf16 crashed
        ({"fp32": None, "bf16": None}, "fp32"),
    ],
)
def test_choose_precision_picks_the_faster(timings, expected):
    assert precision_probe.choose_precision(timings) == expected


def test_cache_is_written_then_reused(config_dir, caplog):
    measure, calls = counting({"fp32": 2.0, "bf16": 1.0})
    with caplog.at_level(logging.INFO, logger="napari_medseg.precision_probe"):
        first = precision_probe.cpu_auto_precision(FakeModel(), measure=measure)
    assert first.precision == "bf16" and "2.00x" in first.reason and "measured just now" in first.reason
    assert "precision auto -> bf16" in caplog.text
    cache = json.loads((config_dir / precision_probe.CACHE_FILE).read_text())
    (key, entry), = cache.items()
    assert precision_probe.cpu_name() in key and torch.__version__ in key and "dcaunet" in key
    assert f"({precision_probe.cpu_isa()})" in key  # the same CPU name on another host ISA is another key
    assert entry["precision"] == "bf16" and entry["fp32"] == 2.0

    second = precision_probe.cpu_auto_precision(FakeModel(), measure=measure)
    assert second.precision == "bf16" and "cached in" in second.reason
    assert len(calls) == 1


def test_cache_key_ignores_class_count_but_not_architecture():
    base = precision_probe.cache_key("udfa", {"num_classes": 9, "img_size": 224})
    assert precision_probe.cache_key("udfa", {"num_classes": 4, "img_size": 224}) == base
    assert precision_probe.cache_key("udfa", {"num_classes": 9, "img_size": 56}) != base


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"k": 3}'])
def test_corrupt_cache_is_ignored_with_a_warning(config_dir, content):
    (config_dir / precision_probe.CACHE_FILE).write_text(content)
    measure, calls = counting({"fp32": 1.0, "bf16": 2.0})
    with pytest.warns(UserWarning, match="precision cache"):
        choice = precision_probe.cpu_auto_precision(FakeModel(), measure=measure)
    assert choice.precision == "fp32" and len(calls) == 1
    assert json.loads((config_dir / precision_probe.CACHE_FILE).read_text())  # rewritten, valid


def test_resolve_precision_auto_on_cpu_uses_every_model(config_dir, monkeypatch):
    picks = {"dcaunet": "bf16", "udfa": "fp32"}
    monkeypatch.setattr(precision_probe, "cpu_auto_precision",
                        lambda model: precision_probe.PrecisionChoice(picks[model.model_name], ""))
    dcau, udfa = FakeModel(), type("U", (), {"model_name": "udfa", "config": {}})()
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto", models=[dcau]) == "bf16"
    assert resolve_precision(cpu, "auto", models=[dcau, udfa]) == "fp32"
    assert resolve_precision(cpu, "auto") == "fp32"  # no model (training): unchanged
    assert resolve_precision(cpu, "fp32", models=[dcau]) == "fp32"


def test_env_override_skips_the_measurement(config_dir, monkeypatch):
    monkeypatch.setenv("MEDSEG_CPU_PRECISION", "bf16")
    measure, calls = counting({"fp32": 1.0, "bf16": 2.0})
    assert precision_probe.cpu_auto_precision(FakeModel(), measure=measure).precision == "bf16"
    assert not calls
    monkeypatch.setenv("MEDSEG_CPU_PRECISION", "fast")
    with pytest.raises(ValueError, match="fp32 or bf16"):
        precision_probe.cpu_auto_precision(FakeModel(), measure=measure)


def test_subprocess_probe_times_a_tiny_model():
    timings = precision_probe.measure_in_subprocess("dcaunet", dict(TINY_CONFIGS["dcaunet"], num_classes=3))
    assert timings["fp32"] > 0
    # bf16 either ran or its failure is named (e.g. SIGILL on VMs that advertise AMX but cannot run it)
    assert (timings["bf16"] or 0) > 0 or timings["error"]


@pytest.mark.parametrize("context_dim", [16, 8])  # packed and separate in-projection weights
def test_cross_attention_matches_multihead_attention(context_dim):
    torch.manual_seed(0)
    block = CrossAttention(16, context_dim, num_heads=4, init_scale=0.5).eval()
    with torch.no_grad():
        block.attn.in_proj_bias.normal_()
    q, ctx = torch.randn(2, 10, 16), torch.randn(2, 30, context_dim).transpose(0, 1).contiguous().transpose(0, 1)
    kv = block.norm_kv(ctx)
    ref = q + block.gamma * block.attn(block.norm_q(q), kv, kv, need_weights=False)[0]
    torch.testing.assert_close(block(q, ctx), ref, rtol=1e-5, atol=1e-5)
    assert isinstance(block.attn, nn.MultiheadAttention)  # same parameter names: old checkpoints load



def test_the_same_cpu_name_with_other_vector_instructions_is_measured_again(config_dir, monkeypatch):
    """A VM keeps its CPU name across hosts; a bf16 choice made where AVX-512 BF16 exists must not carry to AVX2."""
    fast_bf16, calls = counting({"fp32": 2.0, "bf16": 1.0})
    monkeypatch.setattr(precision_probe, "cpu_isa", lambda: "avx512_bf16")
    assert precision_probe.cpu_auto_precision(FakeModel(), measure=fast_bf16).precision == "bf16"
    slow_bf16, calls_here = counting({"fp32": 1.0, "bf16": 8.0})
    monkeypatch.setattr(precision_probe, "cpu_isa", lambda: "avx2")
    assert precision_probe.cpu_auto_precision(FakeModel(), measure=slow_bf16).precision == "fp32"
    assert len(calls) == 1 and len(calls_here) == 1
    assert len(json.loads((config_dir / precision_probe.CACHE_FILE).read_text())) == 2


def test_cpu_isa_reads_the_widest_flag(monkeypatch, tmp_path):
    import builtins

    cpuinfo = tmp_path / "cpuinfo"
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        return real_open(cpuinfo if str(path) == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n")
    assert precision_probe.cpu_isa() == "avx512_bf16" and precision_probe.cpu_description() == "AMD EPYC (avx512_bf16)"
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n")
    assert precision_probe.cpu_isa() == "avx2"
    cpuinfo.write_text("model name\t: old\nflags\t\t: fpu sse2\n")
    assert precision_probe.cpu_isa() == "no AVX2"
