"""export/bench.py: no heavy import at module level, FLOPs formula vs torch's counter, the theoretical
peak from fixed /proc/cpuinfo texts, the measured GEMM at tiny sizes, a clear error for a missing
export, and an end-to-end run on tiny repetitions writing json / md / png."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.artifacts import ModelInfo, write_model_info
from distill.data import DataSpec
from export import bench
from export.bench import (
    BenchError,
    bert_flops,
    best_gemm,
    check_load,
    cpu_peak,
    limit_shares,
    machine_limits,
    measure_gemm,
    parse_gemm_size,
)
from export.onnx_export import main as export_main

REPO = Path(__file__).resolve().parents[1]
TINY_REPS = ["--warmup=1", "--reps_b1=4", "--reps_fixed=2", "--fixed_len=32", "--batches=1", "--batch_size=4",
             "--threads=1", "--gemm_sizes=16x32x16,4x32x64", "--gemm_repeats=2", "--gemm_sample_gflop=0.0001"]
ROW_KEYS = {
    "model", "variant", "runtime", "precision", "size_mb", "dev_accuracy", "mean_dev_len",
    "p50_b1_ms", "p90_b1_ms", "p99_b1_ms", "p50_fixed_ms", "p90_fixed_ms", "p99_fixed_ms",
    "throughput_ex_s", "gflop_per_ex_mean_len", "gflop_per_ex_fixed", "gflops_b1", "gflops_fixed",
    "gflops_batch", "speedup_p50_b1", "speedup_p50_fixed", "speedup_throughput",
    "torch", "onnxruntime", "transformers", "cpu_model", "threads", "date", "loadavg_1m_before_bench",
    "loadavg_1m_after_row", "peak_fp32_gflops", "peak_int8_gops", "best_gemm_fp32_gflops", "best_gemm_int8_gops",
    "fma_units_assumed", "clock_ghz", "limit_basis", "limit_peak_gflops", "limit_best_gemm_gflops",
    "pct_of_peak_batch", "pct_of_best_gemm_batch",
}

# /proc/cpuinfo of a 2-vCPU AMD EPYC (Zen 2) guest: AVX2 + FMA, no AVX-512, no VNNI, no cpufreq
AMD_EPYC_AVX2 = "\n\n".join(f"""processor\t: {i}
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7B12
cpu MHz\t\t: {mhz}
physical id\t: 0
siblings\t: 2
core id\t\t: {i}
cpu cores\t: 2
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ht syscall nx mmxext pni pclmulqdq ssse3 fma cx16 \
sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm sse4a bmi1 avx2 smep bmi2 rdseed adx \
sha_ni clwb xsaveopt xsavec xgetbv1 clzero""" for i, mhz in enumerate(("2449.998", "2450.000"))) + "\n"

# one processor of an Intel Xeon Gold 6338 (Ice Lake SP): AVX-512 with VNNI
INTEL_AVX512_VNNI = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
cpu MHz\t\t: 1800.000
physical id\t: 0
cpu cores\t: 32
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl \
avx512ifma avx512vbmi avx512_vbmi2 gfni vaes avx512_vnni avx512_bitalg avx512_vpopcntdq
"""


def _model_dir(out: Path, tiny_bert_dir: Path, data_dir: Path, layers: int) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=2, id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1})
    model.bert.encoder.layer = model.bert.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    write_model_info(out, ModelInfo(role=out.name, task="classification", labels=["0", "1"], max_length=64,
                                    data=DataSpec(path=str(data_dir))))


@pytest.fixture(scope="module")
def models_run(tmp_path_factory, tiny_bert_dir, sst2_small) -> Path:
    """teacher/ (4 layers) and student/ (2 layers), not exported."""
    run = tmp_path_factory.mktemp("bench_run")
    _model_dir(run / "teacher", tiny_bert_dir, sst2_small, layers=4)
    _model_dir(run / "student", tiny_bert_dir, sst2_small, layers=2)
    return run


@pytest.fixture(scope="module")
def exported_run(models_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bench_exported") / "run"
    shutil.copytree(models_run, run)
    assert export_main(["--run-dir", str(run)]) == 0
    return run


def test_module_imports_no_torch_onnxruntime_or_numpy():
    # thread env vars must be set before these load, so importing the module must not load them
    code = "import sys, export.bench; print([m for m in ('torch', 'onnxruntime', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bert_flops_matches_torch_flop_counter(tiny_bert_dir):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=3, attn_implementation="eager").eval()
    c = model.config
    for length in (7, 16):
        ids = torch.randint(1000, 2000, (1, length))
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        # the counter sees the matmuls only: exactly what the formula counts
        assert bert_flops(c.num_hidden_layers, c.hidden_size, c.intermediate_size, 3, length) == counter.get_total_flops()
    # MiniLM-L6 (H=384, I=1536, 6 layers, 2 labels) at 128 tokens: 6*(8LH²+4L²H+4LHI) + 2H² + 2HC
    assert bert_flops(6, 384, 1536, 2, 128) == 6 * 478_150_656 + 294_912 + 1_536


def test_cpu_peak_amd_epyc_avx2():
    peak = cpu_peak(AMD_EPYC_AVX2, cores=2, fma_units=2)
    assert (peak.cpu_model, peak.vector_isa, peak.fp32_lanes, peak.flops_per_fma) == ("AMD EPYC 7B12", "avx2/fma", 8, 2)
    assert peak.ghz == 2.45 and "'cpu MHz', highest of 2 processors" in peak.clock_source
    assert peak.fp32_gflops == pytest.approx(2 * 8 * 2 * 2 * 2.45) == pytest.approx(156.8)
    assert peak.int8_isa is None and peak.int8_ops_per_instr is None and peak.int8_gops is None
    assert "fma_units=2 is assumed" in peak.note and "no avx512_vnni / avx_vnni" in peak.note
    # 4 threads on 2 physical cores: the peak still counts 4, and says it is overstated
    assert cpu_peak(AMD_EPYC_AVX2, cores=4, fma_units=1).fp32_gflops == pytest.approx(156.8)
    assert "SMT siblings" in cpu_peak(AMD_EPYC_AVX2, cores=4, fma_units=1).note


def test_cpu_peak_intel_avx512_vnni():
    # cpufreq's max (kHz) wins over 'cpu MHz' (the current clock) and over the model name's nominal
    peak = cpu_peak(INTEL_AVX512_VNNI, cores=4, fma_units=2, max_freq_khz="3200000\n")
    assert (peak.vector_isa, peak.fp32_lanes, peak.ghz) == ("avx512f", 16, 3.2)
    assert "cpuinfo_max_freq" in peak.clock_source
    assert peak.fp32_gflops == pytest.approx(4 * 16 * 2 * 2 * 3.2) == pytest.approx(819.2)
    assert (peak.int8_isa, peak.int8_ops_per_instr) == ("avx512_vnni", 128)
    assert peak.int8_gops == pytest.approx(4 * 128 * 2 * 3.2) == pytest.approx(3276.8)
    assert cpu_peak(INTEL_AVX512_VNNI, cores=4, fma_units=2).ghz == 1.8  # no cpufreq: 'cpu MHz'
    no_mhz = INTEL_AVX512_VNNI.replace("cpu MHz\t\t: 1800.000\n", "")
    nominal = cpu_peak(no_mhz, cores=1, fma_units=1)
    assert nominal.ghz == 2.0 and "nominal" in nominal.clock_source
    assert nominal.fp32_gflops == pytest.approx(64.0) and nominal.int8_gops == pytest.approx(256.0)


def test_cpu_peak_avx_vnni_and_missing_inputs():
    # a 256-bit AVX-VNNI part (Alder Lake-like): half the int8 ops per instruction
    text = "model name\t: 12th Gen Intel(R) Core(TM) i7-12700\ncpu MHz\t\t: 2100.000\nflags\t\t: sse avx2 fma avx_vnni\n"
    peak = cpu_peak(text, cores=1, fma_units=2)
    assert (peak.fp32_lanes, peak.int8_isa, peak.int8_ops_per_instr) == (8, "avx_vnni", 64)
    assert peak.fp32_gflops == pytest.approx(1 * 8 * 2 * 2 * 2.1) and peak.int8_gops == pytest.approx(64 * 2 * 2.1)
    empty = cpu_peak("", cores=2, fma_units=2)  # no /proc/cpuinfo: no flags, no clock
    assert (empty.cpu_model, empty.vector_isa, empty.fp32_lanes, empty.ghz) == ("unknown", "none", 1, None)
    assert empty.fp32_gflops is None and empty.int8_gops is None and "no clock" in empty.note


def test_limit_shares_pick_the_rows_precision():
    limits = {"peak_fp32_gflops": 400.0, "peak_int8_gops": 1600.0, "best_gemm_fp32_gflops": 200.0,
              "best_gemm_int8_gops": 800.0}
    fp32 = limit_shares("fp32-O2", 100.0, limits)
    assert (fp32["limit_basis"], fp32["pct_of_peak_batch"], fp32["pct_of_best_gemm_batch"]) == ("fp32", 25.0, 50.0)
    int8 = limit_shares("int8-dynamic", 400.0, limits)
    assert (int8["limit_basis"], int8["pct_of_peak_batch"], int8["pct_of_best_gemm_batch"]) == ("int8", 25.0, 50.0)
    no_vnni = limit_shares("int8-dynamic", 400.0, {**limits, "peak_int8_gops": None, "best_gemm_int8_gops": None})
    assert (no_vnni["limit_basis"], no_vnni["pct_of_peak_batch"]) == ("fp32 (no VNNI)", 100.0)
    assert limit_shares("fp32", 1.0, {**limits, "peak_fp32_gflops": None})["pct_of_peak_batch"] is None


def test_measure_gemm_tiny_sizes():
    gemm = measure_gemm(threads=1, sizes=["8x16x8", "4x32x12"], repeats=2, sample_gflop=1e-5, int8=True)
    assert [(g["runtime"], g["precision"], g["size"]) for g in gemm] == [
        (rt, p, size) for size in ("8x16x8", "4x32x12")
        for rt, p in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))]
    for g in gemm:
        assert len(g["samples_gflops"]) == 2 and g["median_gflops"] > 0 and g["calls_per_sample"] >= 1
    best = best_gemm(gemm, "fp32")
    assert best["median_gflops"] == max(g["median_gflops"] for g in gemm if g["precision"] == "fp32")
    peak = cpu_peak(INTEL_AVX512_VNNI, cores=1, fma_units=2)
    limits = machine_limits(peak, gemm)
    assert limits["best_gemm_int8_gops"] == best_gemm(gemm, "int8")["median_gflops"]
    assert limits["peak_fp32_gflops"] == peak.fp32_gflops
    no_int8 = measure_gemm(threads=1, sizes=["8x16x8"], repeats=1, sample_gflop=1e-5, int8=False)
    assert [g["precision"] for g in no_int8] == ["fp32", "fp32"] and best_gemm(no_int8, "int8") is None
    assert parse_gemm_size("32x384x1536") == (32, 384, 1536)
    with pytest.raises(BenchError, match="expected MxKxN"):
        parse_gemm_size("32x384")


def test_load_warning():
    load, warning = check_load(cores=2, fraction=0.0)
    assert load >= 0 and (warning is None) == (load <= 0)
    _, warning = check_load(cores=2, fraction=1e9)
    assert warning is None


def test_missing_export_names_path_and_make_export(models_run):
    with pytest.raises(BenchError, match=r"onnx/teacher/o2/model.onnx is missing: run `make export`"):
        bench.main(["--run-dir", str(models_run), *TINY_REPS])
    with pytest.raises(BenchError, match="must include teacher"):
        bench.main(["--run-dir", str(models_run), "--models=student"])


def test_bench_end_to_end(exported_run):
    shutil.copytree(exported_run / "student", exported_run / "student_ce")  # a model without an export
    assert bench.main(["--run-dir", str(exported_run), *TINY_REPS]) == 0
    out = exported_run / "bench"
    result = json.loads((out / "bench.json").read_text())
    rows = result["rows"]
    assert [(r["model"], r["variant"]) for r in rows] == [
        (m, v) for m in ("teacher", "student") for v in ("pytorch_fp32", "ort_fp32_o2", "ort_int8")]
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["threads"] == 1 and r["n_b1"] == 4 and r["n_fixed"] == 2 and r["fixed_len"] == 32
        assert r["p50_b1_ms"] > 0 and r["throughput_ex_s"] > 0 and r["size_mb"] > 0
        assert r["p50_b1_ms"] <= r["p90_b1_ms"] <= r["p99_b1_ms"]
    assert rows[0]["speedup_p50_b1"] == 1.0 and rows[0]["speedup_throughput"] == 1.0
    teacher_acc = json.loads((exported_run / "onnx" / "teacher" / "validation.json").read_text())
    assert rows[2]["dev_accuracy"] == teacher_acc["variants"]["int8"]["figures"]["accuracy"]
    # student has 2 of the teacher's 4 layers: per-layer FLOPs dominate, so about half
    assert rows[3]["gflop_per_ex_fixed"] < 0.6 * rows[0]["gflop_per_ex_fixed"]
    assert any("student_ce" in w and "make export" in w for w in result["warnings"])
    machine = result["machine"]
    vnni = machine["peak"]["int8_isa"] is not None
    assert machine["peak"]["cores"] == 1 and machine["peak"]["fma_units"] == 2
    assert [g["size"] for g in machine["gemm"]] == [s for s in ("16x32x16", "4x32x64") for _ in range(2 + vnni)]
    for r in rows:
        int8 = r["variant"] == "ort_int8"
        assert r["limit_basis"] == ("int8" if int8 and vnni else "fp32 (no VNNI)" if int8 else "fp32")
        assert r["limit_best_gemm_gflops"] > 0
        assert r["pct_of_best_gemm_batch"] == pytest.approx(100 * r["gflops_batch"] / r["limit_best_gemm_gflops"])
        if r["limit_peak_gflops"] is not None:
            assert r["pct_of_peak_batch"] == pytest.approx(100 * r["gflops_batch"] / r["limit_peak_gflops"])
    md = (out / "bench.md").read_text()
    assert md.count("| teacher |") == 3 and md.count("| student |") == 3 and "speed-up" in md
    assert "theoretical fp32 peak: 1 cores" in md and "(assumed: --fma_units)" in md
    assert "% peak / % GEMM" in md and "% of GEMM" not in md and "| onnxruntime | fp32 | 16x32x16 |" in md
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    here = machine["int8"]["kernel_path"]  # the CPU facts int8 figures rest on, and the target validated
    for r in rows[2::3]:
        assert (r["int8_target"], r["int8_validated_on"], r["int8_kernel_path"]) == ("portable", here, here)
        assert r["int8_over_o2_b1"] > 0 and r["int8_over_o2_throughput"] > 0
    assert f"int8 kernel path here: {here}; teacher's int8 model was quantised for target portable" in md


def test_runs_as_a_script(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    proc = subprocess.run(
        [sys.executable, "export/bench.py", "--run-dir", str(run), *TINY_REPS, "--models=teacher"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((run / "bench" / "bench.json").read_text())["rows"]
    assert len(rows) == 3 and "already imported" not in proc.stderr
