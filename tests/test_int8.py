"""distill/int8.py: the kernel path a CPU's flags lead ONNX Runtime to, the quantisation targets,
and the lines bench and predict print when an int8 model meets a CPU it was not validated on;
export/bench.py's verdict on whether int8 is worth it."""

from __future__ import annotations

import json

import pytest

from distill.config import ConfigError
from distill.int8 import (
    TARGETS,
    cpu_flags,
    kernel_path,
    machine_facts,
    mismatch_warning,
    read_quantization,
    target,
    write_quantization,
)
from export.bench import int8_verdicts

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse sse4_1 avx avx2 fma avx512f avx512bw avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse sse4_1 avx avx2 fma avx512f avx512bw avx512_vnni
"""
EPYC_ZEN2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse sse4_1 avx avx2 fma\n"


@pytest.mark.parametrize(("flags", "machine", "path"), [
    ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "avx512_vnni"),
    ({"avx2", "avx_vnni"}, "x86_64", "avx_vnni"),  # Alder Lake-like: 256-bit VNNI
    ({"avx2", "avx512f", "avx512bw"}, "x86_64", "avx512"),  # Skylake-SP: AVX-512 without VNNI saturates
    ({"avx2", "fma"}, "x86_64", "avx2"),
    ({"sse4_1"}, "x86_64", "sse"),
    ({"asimd", "asimddp"}, "aarch64", "arm64"),
    (set(), "riscv64", "other"),
])
def test_kernel_path_from_flags(flags, machine, path):
    assert kernel_path(flags, machine) == path


def test_machine_facts_read_the_first_processor():
    facts = machine_facts(XEON, "x86_64")
    assert facts["cpu_model"].startswith("Intel(R) Xeon(R) Platinum 8375C")
    assert facts["kernel_path"] == "avx512_vnni" and "avx512_vnni" in facts["int8_flags"]
    assert cpu_flags(EPYC_ZEN2) == ("AMD EPYC 7B12", {"fpu", "sse", "sse4_1", "avx", "avx2", "fma"})
    assert machine_facts(EPYC_ZEN2, "x86_64")["kernel_path"] == "avx2"


def test_targets_and_which_paths_they_can_saturate_on():
    assert target("portable").reduce_range and target("portable").weights == "int8"
    assert target("u8u8").weights == "uint8" and not target("u8u8").reduce_range
    assert "avx2" not in TARGETS["vnni"].saturation_free_on and "avx512" not in TARGETS["vnni"].saturation_free_on
    assert all(p in TARGETS["portable"].saturation_free_on for p in ("avx2", "avx512", "avx512_vnni", "sse"))
    with pytest.raises(ConfigError, match="--int8_target='avx9': choose one of portable, vnni, u8u8"):
        target("avx9")


def test_mismatch_lines(tmp_path):
    vnni_host, avx2_host = machine_facts(XEON, "x86_64"), machine_facts(EPYC_ZEN2, "x86_64")
    write_quantization(tmp_path, target_name="vnni", per_channel=True, operators=["MatMul"], exclude=[],
                       facts=vnni_host)
    record = read_quantization(tmp_path)
    assert json.loads((tmp_path / "quantization.json").read_text())["validated_on"]["kernel_path"] == "avx512_vnni"
    assert mismatch_warning(record, vnni_host) is None  # where it was validated: nothing to say
    line = mismatch_warning(record, avx2_host)
    assert "target 'vnni'" in line and "avx2 path, where its products can saturate" in line
    assert "--int8_target=portable" in line

    write_quantization(tmp_path, target_name="portable", per_channel=True, operators=["MatMul"], exclude=[],
                       facts=vnni_host)
    line = mismatch_warning(read_quantization(tmp_path), avx2_host)
    assert line.startswith("int8 model validated on the avx512_vnni kernel path") and "cannot saturate" in line
    assert mismatch_warning(None, avx2_host) is None  # not an int8 folder (or an older export)


def _row(model: str, variant: str, b1: float, throughput: float) -> dict:
    return {"model": model, "variant": variant, "p50_b1_ms": b1, "throughput_ex_s": throughput, "batch_size": 32,
            "int8_kernel_path": "avx2"}


def test_bench_says_when_int8_is_not_worth_it():
    rows = [_row("teacher", "ort_fp32_o2", 5.10, 300.0), _row("teacher", "ort_int8", 4.71, 330.0),
            _row("student", "ort_fp32_o2", 2.0, 900.0), _row("student", "ort_int8", 1.0, 1500.0)]
    lines = int8_verdicts(rows, worth_ratio=1.2)
    assert len(lines) == 1 and lines[0].startswith("teacher: int8 is not worth it on this CPU (avx2 path): 1.08x")
    assert rows[3]["int8_over_o2_b1"] == 2.0 and rows[3]["int8_over_o2_throughput"] == pytest.approx(1.667, abs=1e-3)
