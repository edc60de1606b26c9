"""CPU benchmark of the teacher and students: PyTorch eager fp32 vs ONNX Runtime fp32-O2 vs int8.

    python export/bench.py --run-dir runs/demo [--threads=2] [--reps_b1=1000] [--key=value ...]
    python -m export.bench --run-dir runs/demo

Per model (teacher, student, and student_ce when exported) and variant, one flat row with:
  latency at batch 1 over real dev sentences (dynamic length, no padding): p50/p90/p99 ms
  latency at batch 1 at a fixed 128 tokens (dev sentences padded/truncated to 128): p50/p90/p99 ms
  throughput at batch 32 (consecutive dev rows padded to the batch's longest): examples/s
  file size (MB), dev accuracy (from the export's validation.json, measured on the whole dev split)
  analytic FLOPs per example (see ``bert_flops``) at the mean real dev length and at 128 tokens,
  the GFLOP/s each timing achieved, and the batch-32 GFLOP/s as a share of the machine's limits:
  the theoretical peak (``cpu_peak``: cores x vector lanes x 2 x FMA units x clock, from
  /proc/cpuinfo) and the best measured GEMM (``measure_gemm``: torch and ONNX Runtime matmuls at a
  few sizes); int8 rows against the int8 (VNNI) figures when the CPU has VNNI, fp32 ones otherwise
  speed-ups as ratios against the teacher in PyTorch fp32 measured in the same run
  versions (torch, onnxruntime, transformers), CPU model, threads, date, load average
Dev rows are cut as each model was trained (distill.json's long_text; under chunks every figure is
per chunk row, and bench.md says how many rows a dev text becomes). Token classifiers (distill.json
task ``ner``): a row is a dev sentence, its words aligned to sub-tokens as in training
(distill/ner.py), so batch-1 latency is per sentence and throughput in sentences/s; the quality
column is the entity F1 (seqeval, micro) from validation.json, and each row also keeps the token
accuracy as ``dev_accuracy``.
Tokenisation is done before timing; each timed call is one forward pass (PyTorch: numpy -> torch
tensors + model(**inputs) under inference_mode; ONNX Runtime: session.run on numpy arrays).

Outputs: runs/<RUN>/bench/bench.json (rows, plus "machine": the peak with its inputs and every
GEMM measurement), bench.md (limits and table), bench.png (dev accuracy vs p50 latency at batch 1,
one labelled point per variant); then the README.md model cards of every model timed and of its
variants are rewritten with these latencies (distill/model_card.py).
Rows are cut at the max length each model's export was validated at (validation.json); an explicit
``--max_length`` overrides it, with a warning line naming both.

Thread settings must be in the environment before torch / onnxruntime / numpy are imported, so
this module imports none of them at top level: ``main`` parses the arguments, sets
OMP_NUM_THREADS etc., and only then imports them (plus torch.set_num_threads and ORT's
intra_op_num_threads, which also cover the case where torch was already imported by a caller).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: numpy is imported after the thread settings (see above)
    import numpy as np

if __package__ in (None, ""):  # run as a script (python export/bench.py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import apply_overrides, atomic_save_figure, atomic_write_text  # noqa: E402  (stdlib-only)
from distill.errors import PipelineError  # noqa: E402
from distill.int8 import machine_facts, mismatch_warning, read_quantization  # noqa: E402  (stdlib-only)
from distill.layout import (  # noqa: E402  (stdlib-only)
    BENCH_INT8,
    BENCH_O2,
    BENCH_PYTORCH,
    INT8,
    O2,
    STUDENT,
    STUDENT_CE,
    TEACHER,
    bench_dir,
    onnx_file,
    onnx_model_dir,
    onnx_variant_dir,
    read_validation,
    stage_dir,
    validation_path,
)
from distill.lock import stage_lock  # noqa: E402  (stdlib-only)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS")
VARIANTS = (  # (name, runtime, precision, export sub-folder or None for the PyTorch model dir)
    (BENCH_PYTORCH, "pytorch", "fp32", None),
    (BENCH_O2, "onnxruntime", "fp32-O2", O2),
    (BENCH_INT8, "onnxruntime", "int8-dynamic", INT8),
)
OPTIONAL_MODELS = (STUDENT_CE,)  # benchmarked when exported, skipped (with a note) otherwise
BASELINE = (TEACHER, BENCH_PYTORCH)  # speed-ups are ratios against this row


@dataclass
class BenchConfig:
    """Flat benchmark settings; every field can be overridden as --key=value."""

    # models to time; empty: teacher and student (required) plus student_ce when its export exists
    models: list[str] = field(default_factory=list)
    # intra-op threads for torch and ONNX Runtime (and OMP/MKL env); 0: all cores of this process
    threads: int = 0
    # untimed calls per variant before timing (first calls allocate and pick kernels)
    warmup: int = 20
    # timed batch-1 calls on dev rows in file order (cycling), each sentence at its own length;
    # 1000 covers SST-2's 872 dev rows once, so p99 rests on ~10 samples
    reps_b1: int = 1000
    # timed batch-1 calls at fixed_len tokens (padding masked, compute is full length)
    reps_fixed: int = 200
    # the fixed sequence length of the second latency figure
    fixed_len: int = 128
    # truncation length of the dev rows; None: the one each model's export was validated at (its
    # validation.json, which each variant's distill.json also records); a different one is named in a warning
    max_length: int | None = None
    # timed batches for the throughput figure (27 x 32 = 864 rows, about SST-2's dev split)
    batches: int = 27
    # rows per throughput batch
    batch_size: int = 32
    # warn (and record) when the 1-minute load average exceeds this fraction of the cores
    busy_load_fraction: float = 0.5
    # int8 must be at least this many times fp32-O2's speed (batch 1 or throughput) to be called worth it
    int8_worth_ratio: float = 1.2
    # vector FMA instructions one core issues per cycle, for the theoretical peak. An ASSUMPTION: no
    # CPU flag says it. 2 fits Intel Xeon Gold 6xxx / Platinum (two 512-bit FMA units), Intel
    # Haswell and later AVX2 parts, AMD Zen 2/3 and Zen 5 server parts; 1 fits Xeon Bronze/Silver and
    # Skylake/Cascade Lake Gold 5xxx (one 512-bit unit) and AMD Zen 4, whose 512-bit ops run as two
    # 256-bit halves. Too high a value only lowers the '% of peak' column
    fma_units: int = 2
    # GEMM shapes "MxKxN" (A: M x K activations, B: K x N weights) for the measured limit;
    # 32x384x1536 is a MiniLM (H=384, I=1536) FFN up-projection at batch 1 and 32 tokens
    gemm_sizes: list[str] = field(default_factory=lambda: [
        "256x256x256", "512x512x512", "1024x1024x1024", "32x384x1536"])
    # timed samples per runtime x size; each size's figure is their median
    gemm_repeats: int = 7
    # work per timed sample, GFLOP: a sample repeats the matmul until it has done this much
    # (256x256x256 alone is 0.034 GFLOP, ~0.1 ms, too short to time on its own)
    gemm_sample_gflop: float = 0.5


class BenchError(RuntimeError, PipelineError):
    """Something the benchmark needs is missing (an export, a model directory, validation.json)."""


# ---------------------------------------------------------------------------------------------
# environment, before any heavy import


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_thread_env(threads: int) -> None:
    """OMP/MKL/... thread counts; effective only if torch/onnxruntime/numpy are not imported yet."""
    for var in THREAD_ENV:
        os.environ[var] = str(threads)


def check_load(cores: int, fraction: float) -> tuple[float, str | None]:
    """(1-minute load average, a warning when it exceeds fraction * cores, else None)."""
    load = os.getloadavg()[0]
    if load > fraction * cores:
        return load, (f"machine busy: 1-minute load average {load:.2f} > {fraction:g} x {cores} cores; "
                      "latencies will be inflated and noisy")
    return load, None


CPUINFO = Path("/proc/cpuinfo")
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz, boost included


@dataclass
class CpuPeak:
    """The theoretical compute peak of the cores the benchmark uses, with every input it rests on."""

    # "model name" of the first processor in /proc/cpuinfo
    cpu_model: str
    # cores counted: the benchmark's thread count (one thread per core)
    cores: int
    # the widest vector ISA in the flags: avx512f, avx2/fma, sse (or asimd on ARM), none
    vector_isa: str
    # fp32 values per vector register of that ISA: 16 (512-bit), 8 (256-bit), 4 (128-bit), 1
    fp32_lanes: int
    # FLOPs of one fused multiply-add per lane: a multiply and an add
    flops_per_fma: int
    # vector FMA instructions per core per cycle: ASSUMED (BenchConfig.fma_units), not read
    fma_units: int
    # the clock, GHz; None when no source gave one
    ghz: float | None
    # where ghz came from
    clock_source: str
    # cores x fp32_lanes x flops_per_fma x fma_units x ghz; None without a clock
    fp32_gflops: float | None
    # avx512_vnni or avx_vnni (VPDPBUSD, u8 x s8 dot products into s32); None without either flag
    int8_isa: str | None
    # int ops of one VPDPBUSD: 64 u8 x s8 multiply-adds = 128 at 512 bits, 64 at 256 bits
    int8_ops_per_instr: int | None
    # cores x int8_ops_per_instr x fma_units x ghz, GOP/s; None without VNNI or without a clock
    int8_gops: float | None
    # what is assumed or missing, in words
    note: str


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    """/proc/cpuinfo as one {key: value} per processor block."""
    blocks = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        block = {}
        for line in chunk.splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                block[key.strip()] = value.strip()
        if block:
            blocks.append(block)
    return blocks


def cpu_peak(cpuinfo: str, cores: int, fma_units: int, max_freq_khz: str | None = None) -> CpuPeak:
    """The theoretical fp32 (and int8 VNNI) peak from /proc/cpuinfo text and, when given, the text
    of cpufreq's cpuinfo_max_freq (kHz). Pure: ``read_cpu_peak`` supplies the files."""
    blocks = _cpuinfo_blocks(cpuinfo) or [{}]
    first = blocks[0]
    model = first.get("model name", "unknown")
    flags = set((first.get("flags") or first.get("Features") or "").split())  # Features: ARM
    if "avx512f" in flags:
        isa, lanes = "avx512f", 16
    elif "avx2" in flags or "fma" in flags:
        isa, lanes = "/".join(f for f in ("avx2", "fma") if f in flags), 8
    elif "sse" in flags or "asimd" in flags:
        isa, lanes = ("sse" if "sse" in flags else "asimd"), 4
    else:
        isa, lanes = "none", 1
    notes = [f"fma_units={fma_units} is assumed, not read from the CPU"]
    if isa in ("sse", "asimd", "none"):
        notes.append(f"{isa}: no FMA instruction counted; fma_units stands for multiply + add pipes")

    mhz = [float(b["cpu MHz"]) for b in blocks if "cpu MHz" in b]
    nominal = re.search(r"@\s*([0-9.]+)\s*GHz", model)
    if max_freq_khz is not None and max_freq_khz.strip():
        ghz, source = int(max_freq_khz.strip()) / 1e6, f"{MAX_FREQ} (the highest clock, boost included)"
    elif mhz:
        ghz = max(mhz) / 1e3
        source = (f"/proc/cpuinfo 'cpu MHz', highest of {len(mhz)} processors: the current clock (under a "
                  "hypervisor usually the host's nominal one); boost can run above it")
    elif nominal:
        ghz, source = float(nominal.group(1)), "the model name's nominal clock; boost can run above it"
    else:
        ghz, source = None, "none: no cpufreq max, no 'cpu MHz', no '@ x GHz' in the model name"
        notes.append("no clock, so no theoretical peak")

    physical = {(b.get("physical id"), b.get("cpu cores")) for b in blocks if "cpu cores" in b}
    physical_cores = sum(int(c) for _, c in physical) if physical else None
    if physical_cores is not None and cores > physical_cores:
        notes.append(f"{cores} threads on {physical_cores} physical cores: SMT siblings share FMA units, "
                     "so the peak is overstated")

    if "avx512_vnni" in flags:
        int8_isa, int8_ops = "avx512_vnni", 128
    elif "avx_vnni" in flags:
        int8_isa, int8_ops = "avx_vnni", 64
    else:
        int8_isa, int8_ops = None, None
        notes.append("no avx512_vnni / avx_vnni flag: no int8 peak; int8 rows are read against fp32 figures")
    flops_per_fma = 2
    fp32 = None if ghz is None else cores * lanes * flops_per_fma * fma_units * ghz
    int8 = None if ghz is None or int8_ops is None else cores * int8_ops * fma_units * ghz
    return CpuPeak(cpu_model=model, cores=cores, vector_isa=isa, fp32_lanes=lanes, flops_per_fma=flops_per_fma,
                   fma_units=fma_units, ghz=ghz, clock_source=source, fp32_gflops=fp32, int8_isa=int8_isa,
                   int8_ops_per_instr=int8_ops, int8_gops=int8, note="; ".join(notes))


def read_cpu_peak(cores: int, fma_units: int) -> CpuPeak:
    """``cpu_peak`` of this machine's /proc/cpuinfo and cpufreq max (each read when present)."""
    text = CPUINFO.read_text() if CPUINFO.is_file() else ""
    max_freq = MAX_FREQ.read_text() if MAX_FREQ.is_file() else None
    return cpu_peak(text, cores, fma_units, max_freq)


def parse_gemm_size(size: str) -> tuple[int, int, int]:
    """"MxKxN" -> (M, K, N)."""
    parts = size.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise BenchError(f"gemm size {size!r}: expected MxKxN with positive integers, e.g. 32x384x1536")
    m, k, n = (int(p) for p in parts)
    return m, k, n


def _ort_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def _ort_matmul(m: int, k: int, n: int, int8: bool, threads: int, rng):
    """A one-node ONNX Runtime session (MatMul, or MatMulInteger u8 x s8 -> s32 with an activation
    zero point, as dynamic quantization runs it) with B a constant initializer like a model's
    weights, and a call running it on a random A (M, K)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if int8:
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(128, np.uint8), "a_zero")]
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zero"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        a = rng.standard_normal((m, k), dtype=np.float32)
        inits = [numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")]
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), _ort_options(threads),
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"A": a})


def measure_gemm(threads: int, sizes: list[str], repeats: int, sample_gflop: float, int8: bool) -> list[dict]:
    """One record per runtime x precision x size: torch fp32 matmul, ONNX Runtime fp32 MatMul and,
    when ``int8``, ONNX Runtime MatMulInteger (u8 x s8), all on ``threads`` threads. A sample runs the
    matmul ``calls`` times (enough for ``sample_gflop``); the record keeps every sample's GFLOP/s
    (int8: GOP/s, a multiply-add = 2) and their median. After one untimed sample (warm-up)."""
    import numpy as np
    import torch

    if repeats < 1:
        raise BenchError(f"gemm_repeats={repeats}: need at least one timed sample per size")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out = []
    for size in sizes:
        m, k, n = parse_gemm_size(size)
        a, b = torch.randn(m, k), torch.randn(k, n)
        candidates = [("torch", "fp32", lambda a=a, b=b: torch.matmul(a, b)),
                      ("onnxruntime", "fp32", _ort_matmul(m, k, n, False, threads, rng))]
        if int8:
            candidates.append(("onnxruntime", "int8", _ort_matmul(m, k, n, True, threads, rng)))
        work = 2 * m * k * n
        calls = max(1, round(sample_gflop * 1e9 / work))
        for runtime, precision, call in candidates:
            samples = []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                for _ in range(calls):
                    call()
                if i:  # sample 0 is the warm-up
                    samples.append(work * calls / (time.perf_counter() - t0) / 1e9)
            out.append({"runtime": runtime, "precision": precision, "size": f"{m}x{k}x{n}", "m": m, "k": k,
                        "n": n, "calls_per_sample": calls, "samples_gflops": [round(x, 2) for x in samples],
                        "median_gflops": statistics.median(samples)})
    return out


def best_gemm(measurements: list[dict], precision: str) -> dict | None:
    """The measurement with the highest median GFLOP/s of that precision; None when there is none."""
    own = [r for r in measurements if r["precision"] == precision]
    return max(own, key=lambda r: r["median_gflops"]) if own else None


def machine_limits(peak: CpuPeak, measurements: list[dict]) -> dict:
    """The peaks and best measured GEMMs every row is read against (None where not available), plus
    the assumed FMA units and the clock, as flat row fields."""
    fp32, int8 = best_gemm(measurements, "fp32"), best_gemm(measurements, "int8")
    return {"peak_fp32_gflops": peak.fp32_gflops, "peak_int8_gops": peak.int8_gops,
            "best_gemm_fp32_gflops": None if fp32 is None else fp32["median_gflops"],
            "best_gemm_int8_gops": None if int8 is None else int8["median_gflops"],
            "fma_units_assumed": peak.fma_units,
            "clock_ghz": peak.ghz}


def limit_shares(precision: str, gflops: float, limits: dict) -> dict:
    """A row's GFLOP/s against the peak and the best measured GEMM of its own precision: int8 rows
    against the int8 figures when the CPU has VNNI (there is an int8 GEMM), fp32 ones otherwise."""
    if precision.startswith("int8") and limits["best_gemm_int8_gops"] is not None:
        basis, peak, gemm = "int8", limits["peak_int8_gops"], limits["best_gemm_int8_gops"]
    else:
        basis = "fp32" if not precision.startswith("int8") else "fp32 (no VNNI)"
        peak, gemm = limits["peak_fp32_gflops"], limits["best_gemm_fp32_gflops"]
    return {"limit_basis": basis, "limit_peak_gflops": peak, "limit_best_gemm_gflops": gemm,
            "pct_of_peak_batch": None if peak is None else 100 * gflops / peak,
            "pct_of_best_gemm_batch": None if gemm is None else 100 * gflops / gemm}


# ---------------------------------------------------------------------------------------------
# FLOPs


def bert_flops(num_layers: int, hidden: int, intermediate: int, num_labels: int, seq_len: float,
               token_head: bool = False) -> float:
    """Forward FLOPs of one example of a BERT classifier at sequence length L (a multiply-add = 2).

    per layer:  QKV projections 3 * 2LH^2, attention scores QK^T 2L^2H, scores x V 2L^2H,
                attention output projection 2LH^2, FFN 2LHI + 2LIH
              = 8LH^2 + 4L^2H + 4LHI
    head:       pooler 2H^2 + classifier 2HC (``token_head``, a token classifier: 2LHC, no pooler)
    total:      N * (8LH^2 + 4L^2H + 4LHI) + 2H^2 + 2HC
    Left out (O(LH) per layer, <1% here): embeddings, biases, LayerNorm, softmax, GELU."""
    L, H, F = float(seq_len), float(hidden), float(intermediate)  # F: the formula's I
    per_layer = 8 * L * H * H + 4 * L * L * H + 4 * L * H * F
    if token_head:
        return num_layers * per_layer + 2 * L * H * num_labels
    return num_layers * per_layer + 2 * H * H + 2 * H * num_labels


# ---------------------------------------------------------------------------------------------
# runners


def resolve_models(run_dir: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """(models to benchmark, notes about optional models skipped). Teacher is always required:
    it is the baseline of the speed-ups."""
    notes: list[str] = []
    if names:
        models = list(names)
        if TEACHER not in models:
            raise BenchError("--models must include teacher: speed-ups are ratios against teacher/pytorch_fp32")
    else:
        models = [TEACHER, STUDENT]
        for name in OPTIONAL_MODELS:
            if validation_path(run_dir, name).is_file():
                models.append(name)
            elif stage_dir(run_dir, name).is_dir():
                notes.append(f"{name}: model directory present but no export at {onnx_model_dir(run_dir, name)}; "
                             "skipped (run `make export` to include it)")
    for model in models:
        if not (stage_dir(run_dir, model) / "config.json").is_file():
            raise BenchError(f"{stage_dir(run_dir, model)}: no model directory (config.json missing)")
        report = validation_path(run_dir, model)
        for sub in (O2, INT8):
            path = onnx_file(run_dir, model, sub)
            if not path.is_file():
                raise BenchError(f"{path} is missing: run `make export` "
                                 f"(python -m export.onnx_export --run-dir {run_dir}) first")
        if not report.is_file():
            raise BenchError(f"{report} is missing: run `make export` "
                             f"(python -m export.onnx_export --run-dir {run_dir}) first")
    return models, notes


def make_runner(kind: str, path: Path, threads: int, task: str = "classification"):
    """A callable feed -> logits (B, C) numpy (task ner: (B, L, C)), where feed maps input names
    to (B, L) int64."""
    if kind == "pytorch":
        import torch

        from distill.modeling import auto_model_class

        model = auto_model_class(task).from_pretrained(path).eval()

        def run_torch(feed):
            with torch.inference_mode():
                return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()

        return run_torch
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), _ort_options(threads), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run_ort(feed):
        return session.run(["logits"], {n: feed[n] for n in names})[0]

    return run_ort


def file_size_mb(kind: str, path: Path) -> float:
    if kind == "pytorch":
        files = list(path.glob("*.safetensors")) or list(path.glob("pytorch_model*.bin"))
        return sum(f.stat().st_size for f in files) / 1e6
    extra = [p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]  # external data
    return (path.stat().st_size + sum(p.stat().st_size for p in extra)) / 1e6


def time_calls(run, feeds) -> list[float]:
    """Seconds of each call run(feed), in order."""
    out = []
    for feed in feeds:
        t0 = time.perf_counter()
        run(feed)
        out.append(time.perf_counter() - t0)
    return out


def prepare_inputs(tokenizer, texts, pairs, max_length: int, cfg: BenchConfig, long_text=None, sentences=None):
    """Tokenised feeds (all int64 numpy), the dev rows cut as the model was trained
    (``distill.tokens.encode`` with its ``long_text``; under chunks a "row" is one chunk, so every
    figure is per chunk row): b1 list of (1, L_i); fixed list of (1, fixed_len); batches list of
    (batch_size, L_b); plus the real lengths (R,) of every model row of the dev split and the rows
    per dev row (1.0 unless chunks). ``sentences`` (a distill.ner_data.TokenSplit: a token
    classifier's dev split): the rows are its sentences, words aligned as in training."""
    import numpy as np

    from distill.data import Split
    from distill.ner import align_words
    from distill.tokens import encode

    split = Split(texts=texts, labels=None, source="dev", text_pairs=pairs)
    if sentences is not None:
        rows = align_words(tokenizer, sentences, None, max_length).tokens
        fixed_rows = align_words(tokenizer, sentences, None, cfg.fixed_len).tokens
    else:
        rows = encode(tokenizer, split, None, max_length, long_text=long_text)
        fixed_rows = encode(tokenizer, split, None, cfg.fixed_len, long_text=long_text)
    type_ids = "token_type_ids" in tokenizer.model_input_names

    def enc(encoded, picks, width=None):
        return encoded.arrays(np.asarray(picks) % len(encoded), type_ids=type_ids, width=width)

    b1 = [enc(rows, [i]) for i in range(cfg.reps_b1)]
    fixed = [enc(fixed_rows, [i], width=cfg.fixed_len) for i in range(cfg.reps_fixed)]
    batches = [enc(rows, [b * cfg.batch_size + j for j in range(cfg.batch_size)]) for b in range(cfg.batches)]
    warm = [enc(rows, [i]) for i in range(cfg.warmup)]
    return b1, fixed, batches, warm, np.asarray(rows.lengths), len(rows) / max(rows.documents, 1)


# ---------------------------------------------------------------------------------------------
# main: the machine's limits, each model's inputs, each variant timed, the results written


@dataclass
class Machine:
    """What every row is read against, measured once before the first timing."""

    peak: CpuPeak  # the theoretical peak and every input it rests on
    gemm: list[dict]  # measure_gemm's records, one per runtime x precision x size
    facts: dict  # distill.int8.machine_facts(): the int8 kernel path this machine takes
    limits: dict  # machine_limits: the peaks and best measured GEMMs as flat row fields
    common: dict  # the fields every row shares: versions, CPU model, cores, threads, date, limits
    load0: float  # the 1-minute load average before the first timing
    busy: bool  # that load exceeded busy_load_fraction x the cores (a warning says so)


@dataclass
class ModelInputs:
    """One model's dev rows as timed feeds, cut as it was trained and validated, and the figures
    its rows carry beside the timings."""

    run_dir: Path  # runs/<RUN>
    model: str  # teacher, student, student_ce
    task: str  # distill.json's task: classification | ner (rows are then dev sentences)
    b1: list[dict]  # reps_b1 feeds of (1, L_i) int64, each dev row at its own length (cycling)
    fixed: list[dict]  # reps_fixed feeds of (1, fixed_len)
    batches: list[dict]  # `batches` feeds of (batch_size, L_b), padded to each batch's longest row
    warm: list[dict]  # warmup feeds of (1, L_i), untimed
    lengths: np.ndarray  # (R,) real token lengths of every model row of the dev split
    rows_per_text: float  # model rows per dev text (1.0 unless long_text=chunks)
    long_text: str  # distill.json's long_text mode
    max_length: int  # the length rows are cut at (bench_max_length)
    export_max_length: int  # the length its export was validated at
    layers: int  # num_hidden_layers of its config.json
    hidden: int  # hidden_size
    flops: Callable[[float], float]  # analytic forward FLOPs of one example at a length (bert_flops)
    accuracy: dict  # bench variant -> dev accuracy from validation.json (ner: token accuracy)
    entity_f1: dict  # bench variant -> dev entity F1 (token classifiers only; empty otherwise)
    quantization: dict | None  # its int8 variant's quantization.json

    @property
    def ner(self) -> bool:
        return self.task == "ner"


def bench(run_dir: Path, cfg: BenchConfig, threads: int, command: str) -> list[dict]:
    """Time every model x variant; write bench.json / bench.md / bench.png; return the rows."""
    import torch

    torch.set_num_threads(threads)
    models, warnings = resolve_models(run_dir, cfg.models)
    machine = measure_machine(cfg, threads, warnings)
    rows: list[dict] = []
    for model in models:
        inputs = model_inputs(run_dir, model, cfg, machine, warnings)
        for spec in VARIANTS:
            rows.append(time_variant(inputs, spec, cfg, machine, threads))
    warnings += int8_verdicts(rows, cfg.int8_worth_ratio)
    add_speedups(rows)
    write_results(run_dir, rows, warnings, command=command, cfg=cfg, machine=machine)
    from distill.model_card import refresh_cards

    for model in models:  # their README.md now carry these latencies (distill/model_card.py)
        for note in refresh_cards(run_dir / model):
            print(f"note: {note}", file=sys.stderr)
    return rows


def _warn(warnings: list[str], line: str) -> None:
    warnings.append(line)
    print(f"WARNING: {line}", file=sys.stderr)


def measure_machine(cfg: BenchConfig, threads: int, warnings: list[str]) -> Machine:
    """The load before timing (a busy machine is warned about), the theoretical peak, the measured
    GEMMs (printed) and the fields every row shares."""
    import onnxruntime
    import torch
    import transformers

    cores = available_cores()
    load0, busy = check_load(cores, cfg.busy_load_fraction)
    if busy:
        _warn(warnings, busy)
    peak = read_cpu_peak(threads, cfg.fma_units)
    facts = machine_facts()  # the int8 kernel path this machine takes (distill/int8.py)
    gemm = measure_gemm(threads, cfg.gemm_sizes, cfg.gemm_repeats, cfg.gemm_sample_gflop,
                        int8=peak.int8_isa is not None)
    for line in limit_lines(peak, gemm):
        print(line, flush=True)
    limits = machine_limits(peak, gemm)
    common = {
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__, "cpu_model": peak.cpu_model, "cores": cores,
        "threads": threads, "date": _dt.datetime.now().isoformat(timespec="seconds"), **limits,
    }
    return Machine(peak=peak, gemm=gemm, facts=facts, limits=limits, common=common, load0=load0,
                   busy=busy is not None)


def model_inputs(run_dir: Path, model: str, cfg: BenchConfig, machine: Machine, warnings: list[str]) -> ModelInputs:
    """``model``'s dev rows tokenised as it was trained, cut at the length its export was validated
    at (or --max_length, warned about), its size for the FLOPs, and the quality of each variant from
    its validation.json; an int8 model quantised for another kernel path than this machine's is warned about."""
    from transformers import AutoConfig, AutoTokenizer

    from distill.artifacts import read_model_info
    from distill.data import load_dataset
    from distill.ner_data import load_ner_dataset

    model_dir = stage_dir(run_dir, model)
    info = read_model_info(model_dir)
    validation = read_validation(validation_path(run_dir, model))
    export_max_length = info.max_length if validation.max_length is None else validation.max_length
    max_length, mismatch = bench_max_length(model, cfg.max_length, export_max_length)
    if mismatch:
        _warn(warnings, mismatch)
    ner = info.task == "ner"  # a token classifier: rows are dev sentences, quality is entity F1
    data = load_ner_dataset(info.data) if ner else load_dataset(info.data)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    long_text = info.long_text
    if ner:
        b1, fixed, batches, warm, lengths, rows_per_text = prepare_inputs(
            tokenizer, [" ".join(s) for s in data.dev.sentences], None, max_length, cfg, long_text, data.dev)
    else:
        b1, fixed, batches, warm, lengths, rows_per_text = prepare_inputs(
            tokenizer, data.dev.texts, data.dev.text_pairs, max_length, cfg, long_text)
    hf = AutoConfig.from_pretrained(model_dir)
    flops = lambda L, hf=hf, ner=ner: bert_flops(  # noqa: E731
        hf.num_hidden_layers, hf.hidden_size, hf.intermediate_size, hf.num_labels, L, token_head=ner)
    key = "token_accuracy" if ner else "accuracy"
    accuracy = {variant: validation.figure(sub, key) for variant, _, _, sub in VARIANTS}
    entity_f1 = {variant: validation.figure(sub, "entity_f1") for variant, _, _, sub in VARIANTS} if ner else {}
    quantization = read_quantization(onnx_variant_dir(run_dir, model, INT8))
    mismatch = mismatch_warning(quantization, machine.facts)
    if mismatch:
        _warn(warnings, f"{model}: {mismatch}")
    return ModelInputs(run_dir=run_dir, model=model, task=info.task, b1=b1, fixed=fixed, batches=batches, warm=warm,
                       lengths=lengths, rows_per_text=rows_per_text, long_text=long_text.mode, max_length=max_length,
                       export_max_length=export_max_length, layers=hf.num_hidden_layers, hidden=hf.hidden_size,
                       flops=flops, accuracy=accuracy, entity_f1=entity_f1, quantization=quantization)


def _ms_percentile(seconds: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(seconds) * 1e3, q))


def time_variant(inputs: ModelInputs, spec: tuple[str, str, str, str | None], cfg: BenchConfig, machine: Machine, threads: int) -> dict:
    """One row: ``spec`` (a VARIANTS entry: name, runtime, precision, export sub-folder) of the model
    timed at batch 1 (real lengths), at fixed_len and in batches, with its FLOPs, size and quality,
    printed as one line."""
    variant, runtime, precision, sub = spec
    model, run_dir, flops, pct = inputs.model, inputs.run_dir, inputs.flops, _ms_percentile
    path = stage_dir(run_dir, model) if sub is None else onnx_file(run_dir, model, sub)
    run = make_runner(runtime, path, threads, inputs.task)
    t_start = time.perf_counter()
    time_calls(run, inputs.warm + inputs.fixed[:1] + inputs.batches[:1])
    t_b1 = time_calls(run, inputs.b1)
    t_fixed = time_calls(run, inputs.fixed)
    t_batch = time_calls(run, inputs.batches)
    del run
    b1_lens = [f["input_ids"].shape[1] for f in inputs.b1]
    batch_work = sum(f["input_ids"].shape[0] * flops(f["input_ids"].shape[1]) for f in inputs.batches)
    mean_len = float(inputs.lengths.mean())
    load1 = os.getloadavg()[0]  # informational: includes this benchmark's own threads
    row = {
        "run_dir": str(run_dir), "model": model, "variant": variant, "runtime": runtime,
        "precision": precision, "path": str(path), "size_mb": round(file_size_mb(runtime, path), 2),
        "dev_accuracy": inputs.accuracy[variant], "dev_rows": len(inputs.lengths), "task": inputs.task,
        **({"dev_entity_f1": inputs.entity_f1[variant]} if inputs.ner else {}),
        **(int8_fields(inputs.quantization, machine.facts) if sub == INT8 else {}),
        "layers": inputs.layers, "hidden": inputs.hidden,
        "mean_dev_len": round(mean_len, 2), "max_length": inputs.max_length,
        "export_max_length": inputs.export_max_length,
        "long_text": inputs.long_text, "rows_per_dev_text": round(inputs.rows_per_text, 3),
        "p50_b1_ms": pct(t_b1, 50), "p90_b1_ms": pct(t_b1, 90), "p99_b1_ms": pct(t_b1, 99),
        "n_b1": len(t_b1),
        "p50_fixed_ms": pct(t_fixed, 50), "p90_fixed_ms": pct(t_fixed, 90),
        "p99_fixed_ms": pct(t_fixed, 99), "n_fixed": len(t_fixed), "fixed_len": cfg.fixed_len,
        "throughput_ex_s": len(t_batch) * cfg.batch_size / sum(t_batch), "batch_size": cfg.batch_size,
        "n_batches": len(t_batch),
        "gflop_per_ex_mean_len": flops(mean_len) / 1e9, "gflop_per_ex_fixed": flops(cfg.fixed_len) / 1e9,
        "gflops_b1": sum(flops(L) for L in b1_lens) / sum(t_b1) / 1e9,
        "gflops_fixed": flops(cfg.fixed_len) * len(t_fixed) / sum(t_fixed) / 1e9,
        "gflops_batch": batch_work / sum(t_batch) / 1e9,
        **machine.common,
        "loadavg_1m_before_bench": round(machine.load0, 2),
        "loadavg_1m_after_row": round(load1, 2), "busy_before_bench": machine.busy,
        "wall_s": round(time.perf_counter() - t_start, 2),
    }
    row.update(limit_shares(precision, row["gflops_batch"], machine.limits))
    quality = f"F1 {row['dev_entity_f1']:.4f}" if inputs.ner else f"acc {row['dev_accuracy']:.4f}"
    print(f"{model:>10s} {variant:13s} p50 b1 {row['p50_b1_ms']:7.2f} ms  p50 {cfg.fixed_len} "
          f"{row['p50_fixed_ms']:7.2f} ms  {row['throughput_ex_s']:8.1f} ex/s  {quality}  "
          f"{row['size_mb']:.1f} MB  ({row['wall_s']:.1f} s, load {row['loadavg_1m_after_row']:.2f})", flush=True)
    return row


def add_speedups(rows: list[dict]) -> None:
    """Each row's speed-ups: ratios against the teacher's PyTorch fp32 row of the same run (>1: faster)."""
    base = next(r for r in rows if (r["model"], r["variant"]) == BASELINE)
    for r in rows:
        r["speedup_p50_b1"] = base["p50_b1_ms"] / r["p50_b1_ms"]
        r["speedup_p50_fixed"] = base["p50_fixed_ms"] / r["p50_fixed_ms"]
        r["speedup_throughput"] = r["throughput_ex_s"] / base["throughput_ex_s"]


def write_results(run_dir: Path, rows: list[dict], warnings: list[str], *, command: str, cfg: BenchConfig,
                  machine: Machine) -> None:
    """bench/bench.json (rows, warnings, the machine's peak, GEMMs and int8 facts), bench.md and bench.png."""
    out_dir = bench_dir(run_dir)
    facts = {"peak": dataclasses.asdict(machine.peak), "gemm": machine.gemm, "int8": machine.facts}
    result = {"command": command, "config": dataclasses.asdict(cfg), "warnings": warnings, "machine": facts,
              "rows": rows}
    atomic_write_text(out_dir / "bench.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out_dir / "bench.md", render_markdown(rows, warnings, command, cfg, machine.peak, machine.gemm))
    plot(rows, out_dir / "bench.png")
    for w in warnings:
        print(f"note: {w}", file=sys.stderr)
    print(f"wrote {out_dir / 'bench.json'}, bench.md, bench.png")


def bench_max_length(model: str, given: int | None, recorded: int) -> tuple[int, str | None]:
    """(the length to time ``model`` at, a one-line warning or None): ``given`` (--max_length) when set,
    else ``recorded``, the length its export was validated at; a given length that differs is named."""
    if given is None or given == recorded:
        return recorded, None
    return given, (f"{model}: --max_length={given} differs from the {recorded} tokens its export was validated at "
                   f"(onnx/{model}/validation.json): timed at {given}, so its figures and the validated ones differ")


def int8_fields(quantization: dict | None, facts: dict) -> dict:
    """What an int8 row's figures rest on: the target it was quantised for, the kernel path it was
    validated on and the one it ran on here."""
    return {"int8_target": None if quantization is None else quantization["name"],
            "int8_validated_on": None if quantization is None else quantization["validated_on"]["kernel_path"],
            "int8_kernel_path": facts["kernel_path"]}


def int8_verdicts(rows: list[dict], worth_ratio: float) -> list[str]:
    """One line per model whose int8 variant is not at least ``worth_ratio`` x faster than its
    fp32-O2 variant at batch 1 or in throughput on this machine (say so plainly: the smaller file
    is then its only gain)."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        own = {r["variant"]: r for r in rows if r["model"] == model}
        if BENCH_INT8 not in own or BENCH_O2 not in own:
            continue
        int8, o2 = own[BENCH_INT8], own[BENCH_O2]
        b1, batch = o2["p50_b1_ms"] / int8["p50_b1_ms"], int8["throughput_ex_s"] / o2["throughput_ex_s"]
        int8["int8_over_o2_b1"], int8["int8_over_o2_throughput"] = round(b1, 3), round(batch, 3)
        if max(b1, batch) < worth_ratio:
            lines.append(f"{model}: int8 is not worth it on this CPU ({int8.get('int8_kernel_path', '?')} path): "
                         f"{b1:.2f}x fp32-O2's speed at batch 1, {batch:.2f}x at batch {int8['batch_size']} "
                         f"(under {worth_ratio:g}x); serve the O2 model here unless its size matters")
    return lines


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{unit}"


def limit_lines(peak: CpuPeak, gemm: list[dict]) -> list[str]:
    """Markdown lines: the theoretical peaks with their inputs, then the measured GEMM table."""
    clock = f"{_fmt(peak.ghz, '.3f')} GHz ({peak.clock_source})"
    lines = [
        f"- theoretical fp32 peak: {peak.cores} cores (threads) x {peak.fp32_lanes} fp32 lanes "
        f"({peak.vector_isa}) x {peak.flops_per_fma} FLOPs per FMA x {peak.fma_units} FMA units per core "
        f"(assumed: --fma_units) x {clock} = **{_fmt(peak.fp32_gflops, '.1f')} GFLOP/s**",
        (f"- theoretical int8 peak: {peak.cores} cores x {peak.int8_ops_per_instr} int ops per VPDPBUSD "
         f"({peak.int8_isa}) x {peak.fma_units} units (assumed) x {_fmt(peak.ghz, '.3f')} GHz = "
         f"**{_fmt(peak.int8_gops, '.1f')} GOP/s**") if peak.int8_isa else
        "- theoretical int8 peak: none (no avx512_vnni / avx_vnni flag); int8 rows are read against the "
        "fp32 figures",
        f"- notes on the peak: {peak.note}",
        f"- measured GEMM on {peak.cores} threads (B a constant weight; GFLOP/s, int8: GOP/s; median of "
        f"{len(gemm[0]['samples_gflops']) if gemm else 0} samples per size):",
        "",
        "| runtime | precision | M x K x N | median | samples min-max |",
        "|---|---|---|---|---|",
    ]
    for g in gemm:
        lines.append(f"| {g['runtime']} | {g['precision']} | {g['size']} | {g['median_gflops']:.1f} | "
                     f"{min(g['samples_gflops']):.1f}-{max(g['samples_gflops']):.1f} |")
    lines.append("")
    for precision in ("fp32", "int8"):
        best = best_gemm(gemm, precision)
        if best is not None:
            lines.append(f"- best measured {precision} GEMM: **{best['median_gflops']:.1f}** "
                         f"({best['runtime']}, {best['size']})")
    return lines


def render_markdown(rows: list[dict], warnings: list[str], command: str, cfg: BenchConfig, peak: CpuPeak,
                    gemm: list[dict]) -> str:
    r0 = rows[0]
    lines = [
        "# CPU benchmark", "",
        f"`{command}`", "",
        f"- date {r0['date']}; CPU {r0['cpu_model']} ({r0['cores']} cores); threads {r0['threads']}",
        f"- torch {r0['torch']}, onnxruntime {r0['onnxruntime']}, transformers {r0['transformers']}",
        *[f"- int8 kernel path here: {r['int8_kernel_path']}; {r['model']}'s int8 model was quantised for target "
          f"{r['int8_target']} and validated on the {r['int8_validated_on']} path" for r in rows if "int8_target" in r],
        f"- 1-minute load average: {r0['loadavg_1m_before_bench']:.2f} before the first timing; the load "
        "column is after each row and includes this benchmark's own threads",
        f"- batch-1 dynamic: {cfg.reps_b1} dev rows; fixed {cfg.fixed_len} tokens: {cfg.reps_fixed} calls; "
        f"throughput: {cfg.batches} batches of {cfg.batch_size}; {cfg.warmup} warm-up calls",
        "- speed-ups are ratios against teacher / pytorch_fp32 in this run (>1: faster)",
        *[f"- {r['model']} uses long_text=chunks: its timings, throughput and mean length are per chunk row; "
          f"a dev text is {r['rows_per_dev_text']:.2f} rows on average (its cost: that many times a row's)"
          for r in rows if r["long_text"] == "chunks" and r["variant"] == BENCH_PYTORCH],
        "- GFLOP/ex: analytic, N(8LH²+4L²H+4LHI)+2H²+2HC, at the mean dev length / at "
        f"{cfg.fixed_len}; GFLOP/s b32 counts the padded batch",
        f"- '% peak / % GEMM': the batch-{cfg.batch_size} GFLOP/s against the theoretical peak / the best "
        "measured GEMM of the row's precision (int8 rows: the int8 figures, counting int ops; marked "
        "'fp32' where the CPU has no VNNI and there are no int8 figures)",
        "",
        "## The machine's limits", "",
        *limit_lines(peak, gemm),
        "",
        "## Results", "",
    ]
    lines += [f"> WARNING: {w}" for w in warnings] + ([""] if warnings else [])
    score, score_name = _score_column(rows)
    head = ["model", "variant", score_name, "MB", "b1 p50/p90/p99 ms", f"{cfg.fixed_len} tok p50/p90/p99 ms",
            f"b{cfg.batch_size} ex/s", "GFLOP/ex (mean/fixed)", "GFLOP/s b1/fixed/batch",
            "% peak / % GEMM", "speed-up b1/fixed/batch", "load after"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        share = f"{_fmt(r['pct_of_peak_batch'], '.0f', '%')} / {_fmt(r['pct_of_best_gemm_batch'], '.0f', '%')}"
        if r["precision"].startswith("int8") and r["limit_basis"] != "int8":
            share += " (fp32)"
        lines.append("| " + " | ".join([
            r["model"], r["variant"], f"{r[score]:.4f}", f"{r['size_mb']:.1f}",
            f"{r['p50_b1_ms']:.2f} / {r['p90_b1_ms']:.2f} / {r['p99_b1_ms']:.2f}",
            f"{r['p50_fixed_ms']:.2f} / {r['p90_fixed_ms']:.2f} / {r['p99_fixed_ms']:.2f}",
            f"{r['throughput_ex_s']:.1f}",
            f"{r['gflop_per_ex_mean_len']:.4g} / {r['gflop_per_ex_fixed']:.4g}",
            f"{r['gflops_b1']:.1f} / {r['gflops_fixed']:.1f} / {r['gflops_batch']:.1f}",
            share,
            f"{r['speedup_p50_b1']:.2f}x / {r['speedup_p50_fixed']:.2f}x / {r['speedup_throughput']:.2f}x",
            f"{r['loadavg_1m_after_row']:.2f}",
        ]) + " |")
    return "\n".join(lines) + "\n"


def _score_column(rows: list[dict]) -> tuple[str, str]:
    """(row key, column name) of the quality figure: dev accuracy, or entity F1 for token classifiers."""
    return ("dev_entity_f1", "entity F1") if "dev_entity_f1" in rows[0] else ("dev_accuracy", "dev acc")


def plot(rows: list[dict], path: Path) -> None:
    """Dev accuracy (token classifiers: entity F1) vs p50 latency at batch 1, one labelled point per
    model x variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {BENCH_PYTORCH: "o", BENCH_O2: "s", BENCH_INT8: "^"}
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    score, _ = _score_column(rows)
    for r in rows:
        ax.scatter(r["p50_b1_ms"], r[score] * 100, marker=markers.get(r["variant"], "x"), s=50,
                   color=colours[r["model"]])
        ax.annotate(f"{r['model']}/{r['variant']}", (r["p50_b1_ms"], r[score] * 100),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("p50 latency, batch 1, dev sentences (ms)")
    ax.set_ylabel("dev entity F1 (%)" if score == "dev_entity_f1" else "dev accuracy (%)")
    r0 = rows[0]
    ax.set_title(f"{r0['cpu_model']}, {r0['threads']} threads", fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2, y=0.15)  # room for the labels of the outermost points
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)


def main(argv: list[str]) -> int:
    """CLI: --run-dir DIR plus --key=value overrides of BenchConfig (e.g. --threads=2)."""
    parser = argparse.ArgumentParser(prog="python export/bench.py", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--run-dir", required=True, type=Path, help="runs/<RUN> with onnx/ from `make export`")
    args, overrides = parser.parse_known_args(argv)
    cfg = apply_overrides(BenchConfig(), overrides)
    with stage_lock(bench_dir(args.run_dir)):  # one benchmark per run (two would also time each other)
        threads = cfg.threads or available_cores()
        set_thread_env(threads)  # before the first import of numpy / torch / onnxruntime (in bench)
        already = [m for m in ("torch", "onnxruntime", "numpy") if m in sys.modules]
        if already:
            print(f"note: {', '.join(already)} already imported; thread env vars may not apply, "
                  f"using torch.set_num_threads({threads}) and ORT intra_op_num_threads={threads}", file=sys.stderr)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        command = " ".join(["python export/bench.py", *argv])
        bench(args.run_dir, cfg, threads, command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
