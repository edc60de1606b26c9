"""Benchmark of the KD loss, forward + backward: the fused Triton kernel against eager PyTorch,
torch.compile of the same eager function, and Liger-Kernel's KL-div + cross-entropy.

GPU run (the numbers that mean something):

    python benchmarks/bench_kd_loss.py [--out results.json]

    N = 8192 rows, V in {2, 32000, 128000}, fp32 and bf16. Per variant: median forward+backward
    time over many reps (CUDA events, after warm-up), peak memory above the inputs
    (torch.cuda.max_memory_allocated after a reset), and achieved bandwidth
    (bytes of student + teacher read once + gradient written once) / time, also as a fraction
    of this device's copy bandwidth (a large tensor .copy_, bytes read + written / time).

CPU smoke test (checks the script and the kernel run; the times are the Triton interpreter's,
not performance numbers):

    TRITON_INTERPRET=1 python benchmarks/bench_kd_loss.py --smoke

    N = 64, V in {2, 1000}; wall-clock timing, no memory / bandwidth, no torch.compile.

Every variant is first checked against ``distill.losses.kd_loss_reference`` (the spec) on the
first rows of the batch: the last two columns are the max abs difference of the loss and of the
gradient.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from distill.losses import (  # noqa: E402  (after the path fix above)
    DEFAULT_TEMPERATURE,
    DEFAULT_W_CE,
    DEFAULT_W_KD,
    IGNORE_INDEX,
    kd_loss_reference,
)

INTERPRET = bool(triton.knobs.runtime.interpret)
HAS_CUDA = torch.cuda.is_available() and not INTERPRET
HAS_LIGER = importlib.util.find_spec("liger_kernel") is not None

T, W_KD, W_CE = DEFAULT_TEMPERATURE, DEFAULT_W_KD, DEFAULT_W_CE
CHECK_ROWS = 256  # rows compared against the reference before timing


def eager_kd_loss(s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss as one would write it in plain PyTorch (no row_mask). Upcasts to fp32 like the
    reference, so every variant computes to the same precision. s, t: (N, V); labels: (N,)."""
    s32, t32 = s.float(), t.float()  # (N, V)
    kd = F.kl_div(
        F.log_softmax(s32 / T, dim=-1), F.log_softmax(t32 / T, dim=-1),
        log_target=True, reduction="batchmean",
    )
    ce = F.cross_entropy(s32, labels, ignore_index=IGNORE_INDEX)
    return W_KD * T**2 * kd + W_CE * ce


def fused_kd_loss(s, t, labels):
    from distill.kd_loss_triton import kd_loss_fused

    return kd_loss_fused(s, t, labels, temperature=T, w_kd=W_KD, w_ce=W_CE, ignore_index=IGNORE_INDEX).loss


def make_liger_kd_loss():
    """Liger's KL-div (on log-probs it does not compute itself) and its cross-entropy (on raw
    logits), back to back."""
    from liger_kernel.transformers import LigerCrossEntropyLoss, LigerKLDIVLoss

    kl = LigerKLDIVLoss(reduction="batchmean", log_target=True)
    ce = LigerCrossEntropyLoss(ignore_index=IGNORE_INDEX)

    def liger_kd_loss(s, t, labels):
        log_p_s = F.log_softmax(s.float() / T, dim=-1)  # (N, V)
        log_p_t = F.log_softmax(t.float() / T, dim=-1)  # (N, V)
        return W_KD * T**2 * kl(log_p_s, log_p_t) + W_CE * ce(s, labels)

    return liger_kd_loss


def variants(smoke: bool) -> list[tuple[str, object, str | None]]:
    """(name, fn or None, reason when skipped)."""
    out = [("fused (triton)", fused_kd_loss, None), ("eager", eager_kd_loss, None)]
    if smoke:
        out.append(("torch.compile(eager)", None, "skipped: smoke run"))
    else:
        out.append(("torch.compile(eager)", torch.compile(eager_kd_loss, dynamic=False), None))
    if not HAS_LIGER:
        out.append(("liger kl_div + ce", None, "skipped: liger_kernel not installed"))
    elif not HAS_CUDA:
        out.append(("liger kl_div + ce", None, "skipped: needs CUDA"))
    else:
        out.append(("liger kl_div + ce", make_liger_kd_loss(), None))
    return out


def make_inputs(n, v, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    s = torch.randn(n, v, generator=g, device=device, dtype=torch.float32).mul_(3).to(dtype)  # (N, V)
    t = torch.randn(n, v, generator=g, device=device, dtype=torch.float32).mul_(3).to(dtype)  # (N, V)
    labels = torch.randint(0, v, (n,), generator=g, device=device)  # (N,)
    labels[torch.rand(n, generator=g, device=device) < 0.1] = IGNORE_INDEX  # some unlabelled rows
    return s, t, labels


def fwd_bwd(fn, s, t, labels):
    s.grad = None
    fn(s, t, labels).backward()


def check(fn, s, t, labels) -> tuple[float, float]:
    """Max |Δ| of the loss and of the student gradient against the reference, on the first rows."""
    k = min(CHECK_ROWS, s.shape[0])
    s_k = s.detach()[:k].clone().requires_grad_(True)
    ref_s = s_k.detach().clone().requires_grad_(True)
    loss = fn(s_k, t[:k], labels[:k])
    loss.backward()
    ref = kd_loss_reference(ref_s, t[:k], labels[:k], temperature=T, w_kd=W_KD, w_ce=W_CE,
                            ignore_index=IGNORE_INDEX).loss
    ref.backward()
    return (loss.detach().float() - ref.detach()).abs().item(), (s_k.grad.float() - ref_s.grad.float()).abs().max().item()


def time_ms(fn, s, t, labels, warmup, reps) -> float:
    """Median forward+backward time in ms."""
    for _ in range(warmup):
        fwd_bwd(fn, s, t, labels)
    times = []
    if HAS_CUDA:
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in events:
            s.grad = None  # outside the timed region
            start.record()
            fn(s, t, labels).backward()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(reps):
            s.grad = None
            t0 = time.perf_counter()
            fn(s, t, labels).backward()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib(fn, s, t, labels) -> float:
    """Peak memory of one forward+backward above what was allocated before it (inputs), MiB."""
    s.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn(s, t, labels).backward()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_bandwidth_gbps(nbytes=2**30, reps=20) -> float:
    """Device copy bandwidth: (bytes read + bytes written) / time of a large .copy_, GB/s."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        y.copy_(x)
        end.record()
    torch.cuda.synchronize()
    ms = statistics.median(start.elapsed_time(end) for start, end in events)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes; runs on CPU under TRITON_INTERPRET=1")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--reps", type=int, default=None, help="timed reps (default 100 on GPU, 3 in smoke)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up reps (default 10 on GPU, 1 in smoke)")
    args = ap.parse_args(argv)

    if not HAS_CUDA and not INTERPRET:
        print("No CUDA device: run the CPU smoke test as `TRITON_INTERPRET=1 python "
              "benchmarks/bench_kd_loss.py --smoke`.", file=sys.stderr)
        return 2
    if not HAS_CUDA and not args.smoke:
        print("Without CUDA only --smoke is meaningful (the interpreter is not a performance number).",
              file=sys.stderr)
        return 2

    device = "cuda" if HAS_CUDA else "cpu"
    n, vocab_sizes = (64, (2, 1000)) if args.smoke else (8192, (2, 32000, 128000))
    reps = args.reps or (3 if args.smoke else 100)
    warmup = args.warmup or (1 if args.smoke else 10)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    env = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "device": torch.cuda.get_device_name() if HAS_CUDA else f"CPU ({platform.processor() or platform.machine()}), Triton interpreter",
        "mode": "smoke (interpreter)" if INTERPRET else ("smoke" if args.smoke else "full"),
    }
    copy_gbps = copy_bandwidth_gbps() if HAS_CUDA else None
    env["copy_GBps"] = copy_gbps

    to_run = variants(args.smoke)
    rows = []
    for v in vocab_sizes:
        for dname, dtype in dtypes.items():
            if not args.smoke:
                # Two compiles per config (check rows, full batch) x 6 configs would pass dynamo's
                # recompile limit (8) and silently fall back to eager; start each config afresh.
                torch._dynamo.reset()
            s, t, labels = make_inputs(n, v, dtype, device)
            s.requires_grad_(True)
            # One read of s and t, one write of the gradient: the least traffic any variant needs.
            min_bytes = 3 * s.numel() * s.element_size()
            for name, fn, skip in to_run:
                row = {**env, "variant": name, "N": n, "V": v, "dtype": dname, "status": skip or "ok",
                       "median_ms": None, "peak_MiB": None, "GBps": None, "frac_copy": None,
                       "max_dloss": None, "max_dgrad": None, "reps": reps}
                if fn is not None:
                    row["max_dloss"], row["max_dgrad"] = check(fn, s, t, labels)
                    row["median_ms"] = time_ms(fn, s, t, labels, warmup, reps)
                    if HAS_CUDA:
                        row["peak_MiB"] = peak_mib(fn, s, t, labels)
                        row["GBps"] = min_bytes / (row["median_ms"] * 1e-3) / 1e9
                        row["frac_copy"] = row["GBps"] / copy_gbps
                rows.append(row)
                print(f"  {name:22s} N={n} V={v} {dname}: {row['status']}, "
                      f"{fmt(row['median_ms'], '.3f')} ms", file=sys.stderr)
            del s, t, labels
            if HAS_CUDA:
                torch.cuda.empty_cache()

    print(f"\n{env['device']} | torch {env['torch']} | triton {env['triton']} | {env['date']} | "
          f"mode: {env['mode']} | copy bandwidth: {fmt(copy_gbps, '.0f')} GB/s\n")
    header = ["variant", "N", "V", "dtype", "status", "median ms (fwd+bwd)", "peak MiB", "GB/s",
              "of copy BW", "max abs Δloss", "max abs Δgrad"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [r["variant"], r["N"], r["V"], r["dtype"], r["status"], fmt(r["median_ms"], ".3f"),
                 fmt(r["peak_MiB"], ".0f"), fmt(r["GBps"], ".0f"), fmt(r["frac_copy"], ".0%"),
                 fmt(r["max_dloss"], ".1e"), fmt(r["max_dgrad"], ".1e")]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
        print(f"\nwrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
