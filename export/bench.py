"""CPU benchmark of the teacher and students: PyTorch eager fp32 vs ONNX Runtime fp32-O2 vs int8.

    python export/bench.py --run-dir runs/demo [--threads=2] [--reps_b1=1000] [--key=value ...]
    python -m export.bench --run-dir runs/demo

Per model (teacher, student, and student_ce when exported) and variant, one flat row with:
  latency at batch 1 over real dev sentences (dynamic length, no padding): p50/p90/p99 ms
  latency at batch 1 at a fixed 128 tokens (dev sentences padded/truncated to 128): p50/p90/p99 ms
  throughput at batch 32 (consecutive dev rows padded to the batch's longest): examples/s
  file size (MB), dev accuracy (from the export's validation.json, measured on the whole dev split)
  analytic FLOPs per example (see ``bert_flops``) at the mean real dev length and at 128 tokens,
  and the GFLOP/s each timing achieved
  speed-ups as ratios against the teacher in PyTorch fp32 measured in the same run
  versions (torch, onnxruntime, transformers), CPU model, threads, date, load average
Tokenisation is done before timing; each timed call is one forward pass (PyTorch: numpy -> torch
tensors + model(**inputs) under inference_mode; ONNX Runtime: session.run on numpy arrays).

Outputs: runs/<RUN>/bench/bench.json (rows), bench.md (table), bench.png (dev accuracy vs p50
latency at batch 1, one labelled point per variant).

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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python export/bench.py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import apply_overrides, atomic_write_text  # noqa: E402  (stdlib-only imports)
from distill.errors import PipelineError  # noqa: E402

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS")
VARIANTS = (  # (name, runtime, precision, export sub-folder or None for the PyTorch model dir)
    ("pytorch_fp32", "pytorch", "fp32", None),
    ("ort_fp32_o2", "onnxruntime", "fp32-O2", "o2"),
    ("ort_int8", "onnxruntime", "int8-dynamic", "int8"),
)
OPTIONAL_MODELS = ("student_ce",)  # benchmarked when exported, skipped (with a note) otherwise
BASELINE = ("teacher", "pytorch_fp32")  # speed-ups are ratios against this row


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
    # timed batches for the throughput figure (27 x 32 = 864 rows, about SST-2's dev split)
    batches: int = 27
    # rows per throughput batch
    batch_size: int = 32
    # warn (and record) when the 1-minute load average exceeds this fraction of the cores
    busy_load_fraction: float = 0.5


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


def gemm_gflops(threads: int, n: int = 1024, repeats: int = 10) -> float:
    """The machine's practical fp32 limit: median GFLOP/s of an n x n x n torch matmul on
    ``threads`` threads. Every variant's achieved GFLOP/s is read against this."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e9


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


# ---------------------------------------------------------------------------------------------
# FLOPs


def bert_flops(num_layers: int, hidden: int, intermediate: int, num_labels: int, seq_len: float) -> float:
    """Forward FLOPs of one example of a BERT classifier at sequence length L (a multiply-add = 2).

    per layer:  QKV projections 3 * 2LH^2, attention scores QK^T 2L^2H, scores x V 2L^2H,
                attention output projection 2LH^2, FFN 2LHI + 2LIH
              = 8LH^2 + 4L^2H + 4LHI
    head:       pooler 2H^2 + classifier 2HC
    total:      N * (8LH^2 + 4L^2H + 4LHI) + 2H^2 + 2HC
    Left out (O(LH) per layer, <1% here): embeddings, biases, LayerNorm, softmax, GELU."""
    L, H, F = float(seq_len), float(hidden), float(intermediate)  # F: the formula's I
    per_layer = 8 * L * H * H + 4 * L * L * H + 4 * L * H * F
    return num_layers * per_layer + 2 * H * H + 2 * H * num_labels


# ---------------------------------------------------------------------------------------------
# runners


def resolve_models(run_dir: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """(models to benchmark, notes about optional models skipped). Teacher is always required:
    it is the baseline of the speed-ups."""
    notes: list[str] = []
    if names:
        models = list(names)
        if "teacher" not in models:
            raise BenchError("--models must include teacher: speed-ups are ratios against teacher/pytorch_fp32")
    else:
        models = ["teacher", "student"]
        for name in OPTIONAL_MODELS:
            if (run_dir / "onnx" / name / "validation.json").is_file():
                models.append(name)
            elif (run_dir / name).is_dir():
                notes.append(f"{name}: model directory present but no export at {run_dir / 'onnx' / name}; "
                             "skipped (run `make export` to include it)")
    for model in models:
        if not (run_dir / model / "config.json").is_file():
            raise BenchError(f"{run_dir / model}: no model directory (config.json missing)")
        report = run_dir / "onnx" / model / "validation.json"
        for sub in ("o2", "int8"):
            path = run_dir / "onnx" / model / sub / "model.onnx"
            if not path.is_file():
                raise BenchError(f"{path} is missing: run `make export` "
                                 f"(python -m export.onnx_export --run-dir {run_dir}) first")
        if not report.is_file():
            raise BenchError(f"{report} is missing: run `make export` "
                             f"(python -m export.onnx_export --run-dir {run_dir}) first")
    return models, notes


def make_runner(kind: str, path: Path, threads: int):
    """A callable feed -> logits (B, C) numpy, where feed maps input names to (B, L) int64."""
    if kind == "pytorch":
        import torch
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path).eval()

        def run_torch(feed):
            with torch.inference_mode():
                return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()

        return run_torch
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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


def prepare_inputs(tokenizer, texts, pairs, max_length: int, cfg: BenchConfig):
    """Tokenised feeds (all int64 numpy): b1 list of (1, L_i); fixed list of (1, fixed_len);
    batches list of (batch_size, L_b); plus the real lengths (R,) of the whole dev split."""
    import numpy as np

    def enc(rows, **kw):
        out = tokenizer([texts[i] for i in rows], None if pairs is None else [pairs[i] for i in rows],
                        truncation=True, return_tensors="np", **kw)
        return {k: v.astype(np.int64) for k, v in out.items()}

    n = len(texts)
    lengths = np.array([len(x) for x in tokenizer(texts, pairs, truncation=True, max_length=max_length)["input_ids"]])
    b1 = [enc([i % n], max_length=max_length) for i in range(cfg.reps_b1)]
    fixed = [enc([i % n], max_length=cfg.fixed_len, padding="max_length") for i in range(cfg.reps_fixed)]
    batches = [enc([(b * cfg.batch_size + j) % n for j in range(cfg.batch_size)], max_length=max_length,
                   padding=True) for b in range(cfg.batches)]
    warm = [enc([i % n], max_length=max_length) for i in range(cfg.warmup)]
    return b1, fixed, batches, warm, lengths


# ---------------------------------------------------------------------------------------------
# main


def bench(run_dir: Path, cfg: BenchConfig, threads: int, command: str) -> list[dict]:
    """Time every model x variant; write bench.json / bench.md / bench.png; return the rows."""
    import numpy as np
    import onnxruntime
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from distill.artifacts import read_model_info
    from distill.data import load_dataset

    torch.set_num_threads(threads)
    cores = available_cores()
    models, warnings = resolve_models(run_dir, cfg.models)
    load0, busy = check_load(cores, cfg.busy_load_fraction)
    if busy:
        warnings.append(busy)
        print(f"WARNING: {busy}", file=sys.stderr)
    common = {
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__, "cpu_model": cpu_model(), "cores": cores,
        "threads": threads, "date": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    pct = lambda xs, q: float(np.percentile(np.asarray(xs) * 1e3, q))  # noqa: E731  seconds -> ms
    common["machine_fp32_gemm_gflops"] = round(gemm_gflops(threads), 1)

    rows: list[dict] = []
    for model in models:
        model_dir = run_dir / model
        info = read_model_info(model_dir)
        max_length = info.max_length
        data = load_dataset(info.data)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        b1, fixed, batches, warm, lengths = prepare_inputs(
            tokenizer, data.dev.texts, data.dev.text_pairs, max_length, cfg)
        hf = AutoConfig.from_pretrained(model_dir)
        flops = lambda L, hf=hf: bert_flops(  # noqa: E731
            hf.num_hidden_layers, hf.hidden_size, hf.intermediate_size, hf.num_labels, L)
        validation = json.loads((run_dir / "onnx" / model / "validation.json").read_text())
        accuracy = {
            "pytorch_fp32": validation["pytorch_fp32"]["accuracy"],
            "ort_fp32_o2": validation["variants"]["o2"]["figures"]["accuracy"],
            "ort_int8": validation["variants"]["int8"]["figures"]["accuracy"],
        }
        mean_len = float(lengths.mean())
        for variant, runtime, precision, sub in VARIANTS:
            path = model_dir if sub is None else run_dir / "onnx" / model / sub / "model.onnx"
            run = make_runner(runtime, path, threads)
            t_start = time.perf_counter()
            time_calls(run, warm + fixed[:1] + batches[:1])
            t_b1 = time_calls(run, b1)
            t_fixed = time_calls(run, fixed)
            t_batch = time_calls(run, batches)
            b1_lens = [f["input_ids"].shape[1] for f in b1]
            batch_work = sum(f["input_ids"].shape[0] * flops(f["input_ids"].shape[1]) for f in batches)
            load1 = os.getloadavg()[0]  # informational: includes this benchmark's own threads
            row = {
                "run_dir": str(run_dir), "model": model, "variant": variant, "runtime": runtime,
                "precision": precision, "path": str(path), "size_mb": round(file_size_mb(runtime, path), 2),
                "dev_accuracy": accuracy[variant], "dev_rows": len(lengths),
                "layers": hf.num_hidden_layers, "hidden": hf.hidden_size,
                "mean_dev_len": round(mean_len, 2), "max_length": max_length,
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
                **common,
                "loadavg_1m_before_bench": round(load0, 2),
                "loadavg_1m_after_row": round(load1, 2), "busy_before_bench": busy is not None,
                "wall_s": round(time.perf_counter() - t_start, 2),
            }
            rows.append(row)
            print(f"{model:>10s} {variant:13s} p50 b1 {row['p50_b1_ms']:7.2f} ms  p50 {cfg.fixed_len} "
                  f"{row['p50_fixed_ms']:7.2f} ms  {row['throughput_ex_s']:8.1f} ex/s  acc "
                  f"{row['dev_accuracy']:.4f}  {row['size_mb']:.1f} MB  ({row['wall_s']:.1f} s, load "
                  f"{row['loadavg_1m_after_row']:.2f})", flush=True)
            del run

    base = next(r for r in rows if (r["model"], r["variant"]) == BASELINE)
    for r in rows:
        r["speedup_p50_b1"] = base["p50_b1_ms"] / r["p50_b1_ms"]
        r["speedup_p50_fixed"] = base["p50_fixed_ms"] / r["p50_fixed_ms"]
        r["speedup_throughput"] = r["throughput_ex_s"] / base["throughput_ex_s"]

    out_dir = run_dir / "bench"
    result = {"command": command, "config": dataclasses.asdict(cfg), "warnings": warnings, "rows": rows}
    atomic_write_text(out_dir / "bench.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out_dir / "bench.md", render_markdown(rows, warnings, command, cfg))
    plot(rows, out_dir / "bench.png")
    for w in warnings:
        print(f"note: {w}", file=sys.stderr)
    print(f"wrote {out_dir / 'bench.json'}, bench.md, bench.png")
    return rows


def render_markdown(rows: list[dict], warnings: list[str], command: str, cfg: BenchConfig) -> str:
    r0 = rows[0]
    lines = [
        "# CPU benchmark", "",
        f"`{command}`", "",
        f"- date {r0['date']}; CPU {r0['cpu_model']} ({r0['cores']} cores); threads {r0['threads']}",
        f"- torch {r0['torch']}, onnxruntime {r0['onnxruntime']}, transformers {r0['transformers']}",
        f"- 1-minute load average: {r0['loadavg_1m_before_bench']:.2f} before the first timing; the load "
        "column is after each row and includes this benchmark's own threads",
        f"- batch-1 dynamic: {cfg.reps_b1} dev rows; fixed {cfg.fixed_len} tokens: {cfg.reps_fixed} calls; "
        f"throughput: {cfg.batches} batches of {cfg.batch_size}; {cfg.warmup} warm-up calls",
        "- speed-ups are ratios against teacher / pytorch_fp32 in this run (>1: faster)",
        "- GFLOP/ex: analytic, N(8LH²+4L²H+4LHI)+2H²+2HC, at the mean dev length / at "
        f"{cfg.fixed_len}; GFLOP/s b32 counts the padded batch",
        f"- the machine's limit: an fp32 1024³ torch matmul on {r0['threads']} threads ran at "
        f"{r0['machine_fp32_gemm_gflops']:.1f} GFLOP/s; '% of GEMM' is the batch-32 GFLOP/s against it "
        "(int8 kernels can exceed it: their limit is higher)",
        "",
    ]
    lines += [f"> WARNING: {w}" for w in warnings] + ([""] if warnings else [])
    head = ["model", "variant", "dev acc", "MB", "b1 p50/p90/p99 ms", f"{cfg.fixed_len} tok p50/p90/p99 ms",
            f"b{cfg.batch_size} ex/s", "GFLOP/ex (mean/fixed)", "GFLOP/s b1/fixed/batch",
            "% of GEMM", "speed-up b1/fixed/batch", "load after"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["model"], r["variant"], f"{r['dev_accuracy']:.4f}", f"{r['size_mb']:.1f}",
            f"{r['p50_b1_ms']:.2f} / {r['p90_b1_ms']:.2f} / {r['p99_b1_ms']:.2f}",
            f"{r['p50_fixed_ms']:.2f} / {r['p90_fixed_ms']:.2f} / {r['p99_fixed_ms']:.2f}",
            f"{r['throughput_ex_s']:.1f}",
            f"{r['gflop_per_ex_mean_len']:.4g} / {r['gflop_per_ex_fixed']:.4g}",
            f"{r['gflops_b1']:.1f} / {r['gflops_fixed']:.1f} / {r['gflops_batch']:.1f}",
            f"{100 * r['gflops_batch'] / r['machine_fp32_gemm_gflops']:.0f}%",
            f"{r['speedup_p50_b1']:.2f}x / {r['speedup_p50_fixed']:.2f}x / {r['speedup_throughput']:.2f}x",
            f"{r['loadavg_1m_after_row']:.2f}",
        ]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Dev accuracy vs p50 latency at batch 1, one labelled point per model x variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"pytorch_fp32": "o", "ort_fp32_o2": "s", "ort_int8": "^"}
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["p50_b1_ms"], r["dev_accuracy"] * 100, marker=markers.get(r["variant"], "x"), s=50,
                   color=colours[r["model"]])
        ax.annotate(f"{r['model']}/{r['variant']}", (r["p50_b1_ms"], r["dev_accuracy"] * 100),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("p50 latency, batch 1, dev sentences (ms)")
    ax.set_ylabel("dev accuracy (%)")
    r0 = rows[0]
    ax.set_title(f"{r0['cpu_model']}, {r0['threads']} threads", fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2, y=0.15)  # room for the labels of the outermost points
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """CLI: --run-dir DIR plus --key=value overrides of BenchConfig (e.g. --threads=2)."""
    parser = argparse.ArgumentParser(prog="python export/bench.py", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--run-dir", required=True, type=Path, help="runs/<RUN> with onnx/ from `make export`")
    args, overrides = parser.parse_known_args(argv)
    cfg = apply_overrides(BenchConfig(), overrides)
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
