"""Peak memory (and time) of the sparse-target LM loss on CPU: the materialised reference (full
(N, V) logits, autograd) against the chunked path (distill/lm_loss.py), forward + backward, with
the gradients of the hidden states and the output matrix compared.

    OMP_NUM_THREADS=1 python benchmarks/bench_lm_loss_memory.py [--n 2048 --d 576 --v 49152 --k 32 --chunks 256,128]

Each method runs in a fresh child process: its inputs are built from one seed, the process's
peak resident set (ru_maxrss) is read after the inputs exist and again after forward + backward;
the difference is the loss's peak. The children save loss and gradients; the parent compares them
with the reference's and prints one JSON line per method.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from distill.lm_loss import SparseTargets, lm_kd_chunked, lm_kd_reference

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.n, args.d, generator=g).requires_grad_(True)
    weight = (torch.randn(args.v, args.d, generator=g) * 0.05).requires_grad_(True)
    # four distinct supports of k ids, repeated over the rows
    ids = torch.stack([torch.randperm(args.v, generator=g)[: args.k] for _ in range(4)])[torch.arange(args.n) % 4]
    values = torch.log_softmax(torch.randn(args.n, args.k, generator=g), -1) + np.log(0.8)  # support mass 0.8
    tail = torch.full((args.n,), 0.2)
    labels = torch.randint(0, args.v, (args.n,), generator=g)
    base = rss_mb()
    t0 = time.perf_counter()
    if args.method == "reference":
        out = lm_kd_reference(hidden, weight, SparseTargets(ids, values, tail), labels)
    else:
        out = lm_kd_chunked(hidden, weight, SparseTargets(ids, values, tail), labels, chunk=args.chunk)
    out.loss.backward()
    seconds = time.perf_counter() - t0
    peak = rss_mb()
    np.save(Path(args.out) / "grad_h.npy", hidden.grad.numpy())
    np.save(Path(args.out) / "grad_w.npy", weight.grad.numpy())
    print(json.dumps({"loss": out.loss.item(), "kd": out.kd.item(), "ce": out.ce.item(), "base_mb": base,
                      "peak_mb": peak, "loss_peak_mb": peak - base, "seconds": seconds}))


def run(method: str, chunk: int, args, tmp: Path) -> dict:
    out = tmp / f"{method}{chunk}"
    out.mkdir()
    cmd = [sys.executable, __file__, "--child", "--method", method, "--chunk", str(chunk), "--out", str(out),
           "--n", str(args.n), "--d", str(args.d), "--v", str(args.v), "--k", str(args.k)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {"method": method, "chunk": chunk, "dir": out, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--v", type=int, default=49152)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--chunks", default="256,128")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--method", default="reference")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        ref = run("reference", 0, args, Path(tmp))
        rows = [ref] + [run("chunked", int(c), args, Path(tmp)) for c in args.chunks.split(",")]
        ref_dir = ref["dir"]
        for row in rows:
            d = row.pop("dir")
            for name in ("grad_h", "grad_w"):
                got, want = np.load(d / f"{name}.npy"), np.load(ref_dir / f"{name}.npy")
                row[f"{name}_max_abs_diff"] = float(np.abs(got - want).max())
                row[f"{name}_max_abs"] = float(np.abs(want).max())
            row["loss_diff"] = row["loss"] - ref["loss"]
            row["memory_vs_reference"] = row["loss_peak_mb"] / ref["loss_peak_mb"]
            print(json.dumps({**row, "n": args.n, "d": args.d, "v": args.v, "k": args.k}), flush=True)


if __name__ == "__main__":
    main()
